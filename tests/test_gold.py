"""Result files and the gold files `onegen export --format gold` writes for them, read the way the
authors' scorers read them; dataset runs that have nothing to run stop before loading a model.

`authors_qa_scores` restates the authors' HotpotQA/2Wiki pairing rule (our own words, not their
code): result line i goes with gold item i, the gold question must be inside the line's "input",
and the answer is the second `<FINAL-ANSWER>...</FINAL-ANSWER>` of "output" (the first is the
prompt's empty pair), or the string "None" when there is none.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from onegen.__main__ import main as cli
from onegen.engine import DecodeState
from onegen.metrics import el_scores_from_result_lines, exact_match, f1_score
from onegen.protocols import QR
from onegen.results import export_lines, load_results, select
from tiny import HOTPOT_CONTEXT, HOTPOT_FACTS, build_tiny_model, load_tiny

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "assets" / "results"
_FINAL = re.compile(r"<FINAL-ANSWER>(.*?)</FINAL-ANSWER>")  # no DOTALL, as theirs

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-gold")


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def authors_qa_scores(result_lines: list[dict], gold: list[dict], aliases: list[dict] | None = None) -> dict:
    """EM and F1 over the gold items, paired with the result lines by position."""
    table = {row["Q_id"]: set(row["aliases"] + row["demonyms"]) for row in aliases or []}
    assert len(gold) == len(result_lines)
    em = f1 = 0.0
    for line, item in zip(result_lines, gold):
        assert item["question"] in line["input"], f"line of {item['_id']} is not paired with its gold item"
        found = _FINAL.findall(line["output"])
        assert found[0] == ""
        answer = found[1] if len(found) > 1 else "None"
        golds = {item["answer"]} | (table.get(item.get("answer_id"), set()) if aliases is not None else set())
        em += max(exact_match(answer, g) for g in golds)
        f1 += max(f1_score(answer, g)[0] for g in golds)
    return {"em": em / len(gold), "f1": f1 / len(gold)}


def export_gold(result: Path, out: Path, *extra: str) -> int:
    return cli(["export", "--format", "gold", str(result), "--out", str(out), *extra])


# -- the shipped result files -----------------------------------------------------------------------

def test_shipped_multi_hop_files_pair_line_by_line_with_their_gold(tmp_path, capsys):
    for name in ("heldout-multi-hop.jsonl", "heldout-multi-hop-own-context.jsonl"):
        result = RESULTS / name
        assert export_gold(result, tmp_path / "gold.json") == 0
        gold = json.loads((tmp_path / "gold.json").read_text())
        aliases = read_lines(tmp_path / "gold.aliases.jsonl")  # the world's items are in 2Wiki layout
        lines = read_lines(result)
        ours = load_results(result).metrics
        # The authors' scorers read the model's own output: the answers as written, before the checks.
        written = ours.answers_as_written or {"em": ours.em, "f1": ours.f1}
        for table in (None, aliases):  # the HotpotQA scorer, then the 2Wiki one with its alias file
            theirs = authors_qa_scores(lines, gold, table)
            assert theirs["em"] == pytest.approx(written["em"]) and theirs["f1"] == pytest.approx(written["f1"])
        assert [item["_id"] for item in gold] == [line["onegen"]["key"] for line in lines]
        positions = [line["onegen"]["position"] for line in lines]
        assert positions == sorted(positions)  # data order: the shards were put back in order
    assert "2WikiMultihopQA layout" in capsys.readouterr().out


def test_a_filtered_error_browser_export_pairs_with_its_gold(tmp_path):
    results = load_results(RESULTS / "heldout-multi-hop.jsonl")
    wrong = select(results, outcome="wrong", category="right retrieval but wrong answer")
    assert 0 < len(wrong) < len(results.records)
    subset = tmp_path / "subset.jsonl"
    export_lines(wrong, subset)
    assert export_gold(subset, tmp_path / "subset.gold.json") == 0
    gold = json.loads((tmp_path / "subset.gold.json").read_text())
    theirs = authors_qa_scores(read_lines(subset), gold)
    assert theirs["em"] == pytest.approx(load_results(subset).metrics.em)
    assert [item["_id"] for item in gold] == [r.key for r in wrong]
    keys = [r.key for r in wrong]
    assert keys == sorted(keys)  # the world's ids follow its order


def test_shipped_entity_linking_file_and_its_gold(tmp_path):
    result = RESULTS / "heldout-entity-linking.jsonl"
    assert export_gold(result, tmp_path / "gold.jsonl") == 0
    gold, lines = read_lines(tmp_path / "gold.jsonl"), read_lines(result)
    # The authors' EL scorer reads the result file alone; the gold is its test items, line for line.
    assert [(g["text"], g["labels"]) for g in gold] == [(line["text"], line["labels"]) for line in lines]
    # It reads the output, which keeps the spans the model marked: the figures before the name check.
    metrics = load_results(result).metrics
    assert el_scores_from_result_lines(lines).f1 == pytest.approx(metrics.authors_scorer["f1"])


def test_shipped_files_name_their_data_and_the_shipped_model(tmp_path):
    for path in sorted(RESULTS.glob("*.jsonl")):
        text = path.read_text(encoding="utf-8")
        assert '"runs/' not in text, f"{path.name} names a build folder"
        run = json.loads(text.splitlines()[0])["onegen"]["run"]
        assert run["data"].startswith("assets/world/heldout/") and run["skipped_items"] == 0


def test_gold_export_says_what_is_missing(tmp_path, capsys):
    lines = read_lines(RESULTS / "heldout-multi-hop-own-context.jsonl")[:2]
    moved = tmp_path / "moved.jsonl"
    for line in lines:
        line["onegen"]["run"]["data"] = str(tmp_path / "gone.json")
    moved.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert export_gold(moved, tmp_path / "g.json") == 2
    assert "gone.json, is gone; pass the file the run read with --data" in capsys.readouterr().err
    other = tmp_path / "other.json"
    other.write_text(json.dumps([{**json.loads(json.dumps(lines[0])), "question": "Another question?"}]))
    assert export_gold(moved, tmp_path / "g.json", "--data", str(other)) == 2
    assert "differs from that item of other.json in 'question'" in capsys.readouterr().err
    assert not (tmp_path / "g.json").exists()


# -- a run of our own: HotpotQA hub layout without ids, two shards merged ---------------------------

def script(monkeypatch, lm, ids):
    """Every run writes `ids`, then EOS (random weights never write retrieval tokens)."""
    vocab, eos = lm.lm_head.out_features, lm.tokenizer.eos_token_id

    def logits(state, hidden_last):
        n = getattr(state, "_script_step", 0)
        state._script_step = n + 1
        out = torch.zeros(vocab)
        out[ids[n] if n < len(ids) else eos] = 100.0
        return out

    monkeypatch.setattr(DecodeState, "logits", logits)


def hub_item(question: str, answer: str) -> dict:
    """A HotpotQA item in the datasets-hub column layout, without its id column."""
    return {"question": question, "answer": answer, "type": "bridge",
            "context": {"title": [p[0] for p in HOTPOT_CONTEXT], "sentences": [p[1] for p in HOTPOT_CONTEXT]},
            "supporting_facts": {"title": [f[0] for f in HOTPOT_FACTS], "sent_id": [f[1] for f in HOTPOT_FACTS]}}


def test_merged_shards_in_data_order_with_derived_ids_pair_with_their_gold(root, tmp_path, monkeypatch, capsys):
    lm = load_tiny("multi-hop", root)
    t = lm.ptok("multi-hop").encode_data
    script(monkeypatch, lm, t("First, who directed Film A?") + [lm.tokenizer.convert_tokens_to_ids(QR)]
           + t(" Ivo Brandel. <FINAL-ANSWER>Corvale</FINAL-ANSWER>"))
    items = [hub_item(f"Where was the director of Film A born ({k})?", "Corvale" if k % 2 else "Velor")
             for k in range(5)]
    data = tmp_path / "hub.jsonl"
    data.write_text("".join(json.dumps(i) + "\n" for i in items))
    common = ["evaluate", "--task", "multi-hop", "--data", str(data), "--model", str(build_tiny_model("multi-hop", root)),
              "--device", "cpu", "--top-k", "2", "--quiet"]
    parts = [tmp_path / "part0.jsonl", tmp_path / "part1.jsonl"]
    for k, part in enumerate(parts):
        assert cli(common + ["--shard", f"{k}/2", "--out", str(part)]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "5 of 5 items have no id" in err and "position in the file as its id" in err
    merged = tmp_path / "merged.jsonl"
    merged.write_text(parts[0].read_text() + parts[1].read_text())  # shard order: 0 2 4 1 3
    assert cli(common + ["--out", str(merged)]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    lines = read_lines(merged)
    assert [line["onegen"]["key"] for line in lines] == ["0", "1", "2", "3", "4"]
    assert [line["onegen"]["position"] for line in lines] == [0, 1, 2, 3, 4]
    assert lines[0]["onegen"]["run"]["data"] == str(data.resolve()) and metrics["skipped"] == 0

    assert export_gold(merged, tmp_path / "gold.json") == 0
    gold = json.loads((tmp_path / "gold.json").read_text())
    assert [g["_id"] for g in gold] == ["0", "1", "2", "3", "4"]
    assert gold[0]["context"] == HOTPOT_CONTEXT and gold[0]["supporting_facts"] == HOTPOT_FACTS  # list layout
    assert not (tmp_path / "gold.aliases.jsonl").exists()  # HotpotQA: no alias file
    theirs = authors_qa_scores(lines, gold)
    assert theirs["em"] == pytest.approx(metrics["em"]) == pytest.approx(2 / 5)
    assert theirs["f1"] == pytest.approx(metrics["f1"])
    # A shard file alone pairs with a gold file cut to its own items.
    assert export_gold(parts[1], tmp_path / "part1.gold.json") == 0
    part_gold = json.loads((tmp_path / "part1.gold.json").read_text())
    assert [g["_id"] for g in part_gold] == ["1", "3"]
    authors_qa_scores(read_lines(parts[1]), part_gold)


# -- nothing to run ---------------------------------------------------------------------------------

def test_skip_bad_with_every_item_bad_stops_before_loading_a_model(tmp_path, monkeypatch, capsys):
    import onegen.loading

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded for a run with nothing to run")

    monkeypatch.setattr(onegen.loading, "load_model", no_model)
    no_context = [{k: v for k, v in hub_item(f"Q{k}?", "A").items() if k != "context"} for k in range(3)]
    data = tmp_path / "bad.jsonl"
    data.write_text("".join(json.dumps(i) + "\n" for i in no_context))
    out = tmp_path / "out.jsonl"
    assert cli(["evaluate", "--task", "multi-hop", "--data", str(data), "--skip-bad", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "error: no valid example to run: all 3 items" in err and "field 'context': missing" in err
    assert not out.exists()
    good = tmp_path / "one.jsonl"
    good.write_text(json.dumps(hub_item("Q?", "A")) + "\n")
    assert cli(["evaluate", "--task", "multi-hop", "--data", str(good), "--stride", "1", "--shard", "1/2"]) == 2
    assert "the selection is empty" in capsys.readouterr().err


def test_skipped_items_count_in_the_metrics_line_and_the_run_record(root, tmp_path, monkeypatch, capsys):
    lm = load_tiny("multi-hop", root)
    script(monkeypatch, lm, lm.ptok("multi-hop").encode_data("<FINAL-ANSWER>A</FINAL-ANSWER>"))
    bad = {k: v for k, v in hub_item("Q1?", "A").items() if k != "context"}
    data = tmp_path / "mixed.jsonl"
    data.write_text("".join(json.dumps(i) + "\n" for i in (hub_item("Q0?", "A"), bad, hub_item("Q2?", "B"))))
    out = tmp_path / "out.jsonl"
    assert cli(["evaluate", "--task", "multi-hop", "--data", str(data), "--skip-bad", "--out", str(out),
                "--model", str(build_tiny_model("multi-hop", root)), "--device", "cpu", "--quiet"]) == 0
    captured = capsys.readouterr()
    metrics = json.loads(captured.out.strip().splitlines()[-1])
    assert metrics["examples"] == 2 and metrics["skipped"] == 1
    assert "2 examples, 0 errors, 1 item skipped" in captured.err
    lines = read_lines(out)
    assert [line["onegen"]["position"] for line in lines] == [0, 2]
    assert lines[0]["onegen"]["run"]["skipped_items"] == 1 and load_results(out).metrics.skipped == 1
    # Its gold skips the bad item too: line i is still gold item i.
    assert export_gold(out, tmp_path / "gold.json") == 0
    gold = json.loads((tmp_path / "gold.json").read_text())
    assert [g["question"] for g in gold] == ["Q0?", "Q2?"]


def test_compare_lists_examples_in_data_order_whatever_the_line_order(tmp_path, capsys):
    own = RESULTS / "heldout-multi-hop-own-context.jsonl"
    shuffled = tmp_path / "shuffled.jsonl"
    lines = own.read_text(encoding="utf-8").splitlines(keepends=True)
    shuffled.write_text("".join(lines[1::2] + lines[::2]), encoding="utf-8")
    assert cli(["compare", str(shuffled), str(RESULTS / "heldout-multi-hop-random-paragraphs.jsonl"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["broken"] and out["broken"] == sorted(out["broken"])  # the world's ids follow its order
    assert [r.key for r in load_results(shuffled).records] == [json.loads(line)["onegen"]["key"] for line in lines]


def test_data_order_by_recorded_positions_only_when_every_line_has_one():
    from onegen.evaluation import in_data_order

    def line(key, position=None):
        block = {"key": key} if position is None else {"key": key, "position": position}
        return {"onegen": block}

    shard_order = [line("a", 0), line("c", 2), line("b", 1)]
    assert [x["onegen"]["key"] for x in in_data_order(shard_order)] == ["a", "b", "c"]
    partly_old = [line("a"), line("c", 2), line("b", 1)]  # written before lines recorded positions
    assert in_data_order(partly_old) == partly_old
    by_key = in_data_order(partly_old, {"b": 0, "a": 1})
    assert [x["onegen"]["key"] for x in by_key] == ["b", "a", "c"]  # an unknown key keeps its place after
