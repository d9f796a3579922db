"""The evaluation runner on tiny random checkpoints: result-line formats, metrics, resuming, per-example
errors, and the random-paragraph control.

Random weights never write retrieval tokens, so `script` makes every run write a fixed text (the
same trick as tests/test_engine.py); the forward passes, retrievals and insertions stay real.
"""
from __future__ import annotations

import json
import re

import pytest
import torch

from onegen.__main__ import main as cli
from onegen.datasets import load_dataset
from onegen.documents import Document
from onegen.encode import build_index
from onegen.engine import DecodeState, Engine, RunSettings
from onegen.error_analysis import ENGINE_ERROR, context_document_id
from onegen.evaluation import EvaluationError, EvaluationSettings, RandomRetriever, evaluate
from onegen.metrics import el_scores_from_result_lines
from onegen.protocols import LK, QR
from tiny import HOTPOT_CONTEXT as CONTEXT, build_tiny_model, hotpot_item, load_tiny


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-eval")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models(root):
    return {t: load_tiny(t, root) for t in ("multi-hop", "entity-linking", "single-hop")}


def tid(lm, token):
    return lm.tokenizer.convert_tokens_to_ids(token)


def script(monkeypatch, lm, ids):
    """Every run (every new DecodeState) writes `ids`, then EOS."""
    vocab, eos = lm.lm_head.out_features, lm.tokenizer.eos_token_id

    def logits(state, hidden_last):
        n = getattr(state, "_script_step", 0)  # each run has its own DecodeState
        state._script_step = n + 1
        out = torch.zeros(vocab)
        out[ids[n] if n < len(ids) else eos] = 100.0
        return out

    monkeypatch.setattr(DecodeState, "logits", logits)


def multi_hop_ids(lm):
    t, qr = lm.ptok("multi-hop").encode_data, tid(lm, QR)
    return (t("First, who directed Film A?") + [qr] + t(" Ivo Brandel. Second, where was Ivo Brandel born?") + [qr]
            + t(" Corvale. <FINAL-ANSWER>Corvale</FINAL-ANSWER>"))


def el_ids(lm):
    """Paris and Rome marked and linked; the 0 after each [LK] stands at the step whose token the
    protocol forces ([_CONTINUE_])."""
    t, lk = lm.ptok("entity-linking").encode_data, tid(lm, LK)
    return t("<MENTION>Paris</MENTION>") + [lk, 0] + t(" and <MENTION>Rome</MENTION>") + [lk, 0] + t(".")


def single_hop_ids(lm):
    return [tid(lm, "[Relevant]")] + lm.ptok("single-hop").encode_data(" Corvale.") + [tid(lm, "[Utility:5]")]




def write(path, items, jsonl=False):
    path.write_text("\n".join(json.dumps(i) for i in items) + "\n" if jsonl else json.dumps(items))
    return path


def read_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- multi-hop through the CLI ---------------------------------------------------------------------

def test_cli_multi_hop_lines_and_metrics(models, root, tmp_path, monkeypatch, capsys):
    lm = models["multi-hop"]
    script(monkeypatch, lm, multi_hop_ids(lm))
    data = write(tmp_path / "dev.json", [
        hotpot_item("a", "Corvale"),
        hotpot_item("b", "Velor", type_="comparison"),
        hotpot_item("c", "Corvale Town", answer_id="Q5"),  # right through its 2Wiki alias
    ])
    aliases = write(tmp_path / "id_aliases.json", [{"Q_id": "Q5", "aliases": ["Corvale"], "demonyms": []}], jsonl=True)
    out = tmp_path / "result.jsonl"
    rc = cli(["evaluate", "--task", "multi-hop", "--data", str(data), "--aliases", str(aliases), "--out", str(out),
              "--model", str(build_tiny_model("multi-hop", root)), "--device", "cpu", "--top-k", "2", "--quiet"])
    assert rc == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["examples"] == 3 and metrics["errors"] == 0 and metrics["no_final_answer"] == 0
    assert metrics["em"] == pytest.approx(2 / 3)
    assert metrics["by_type"]["bridge"]["em"] == 1.0 and metrics["by_type"]["comparison"]["em"] == 0.0
    assert metrics["stop_reasons"] == {"final_answer": 3}
    assert set(metrics["retrieval"]) == {"hop_1", "hop_2"} and metrics["retrieval"]["hop_1"]["n"] == 3
    assert metrics["seconds_total"] > 0 and metrics["seconds_per_example_median"] > 0

    lines = read_lines(out)
    assert [line["_id"] for line in lines] == ["a", "b", "c"]
    for line in lines:
        # The authors' fields: the item, "input" = prompt, "output" = prompt + generation.
        assert line["input"].endswith("Here is a question: Where was the director of Film A born?")
        assert line["output"].startswith(line["input"])
        assert line["output"][len(line["input"]):].count("<FINAL-ANSWER>Corvale</FINAL-ANSWER>") == 1
        assert line["trace"]["schema"] == "onegen-trace/1" and len(line["trace"]["retrievals"]) == 2
        hits = [r["hits"] for r in line["trace"]["retrievals"]]
        assert all(len(h) == 2 and h[0]["id"].startswith(line["_id"] + ":") for h in hits)  # own context only
        assert line["onegen"]["key"] == line["_id"]
    # Hop recall is what the chosen hits say, against the supporting-fact titles.
    chosen_ok = [[r["hits"][0]["title"] in ("Film A", "Ivo Brandel") for r in line["trace"]["retrievals"]]
                 for line in lines]
    assert metrics["retrieval"]["hop_1"]["recall@1"] == pytest.approx(sum(c[0] for c in chosen_ok) / 3)
    assert [line["onegen"]["scores"]["em"] for line in lines] == [1.0, 0.0, 1.0]
    wrong = [c["name"] for c in lines[1]["onegen"]["categories"]]
    misses = [n for n in wrong if n.startswith("retrieval miss at hop")]
    assert wrong == (misses or ["right retrieval but wrong answer"])
    assert lines[0]["onegen"]["categories"] == []


def test_cli_shards_concatenated_score_as_the_whole_selection(models, root, tmp_path, monkeypatch, capsys):
    lm = models["multi-hop"]
    script(monkeypatch, lm, multi_hop_ids(lm))
    data = write(tmp_path / "dev.json", [hotpot_item(k, "Corvale" if k in "ace" else "Velor") for k in "abcde"])
    common = ["evaluate", "--task", "multi-hop", "--data", str(data), "--model",
              str(build_tiny_model("multi-hop", root)), "--device", "cpu", "--top-k", "2", "--quiet"]
    parts = []
    for k in range(2):
        parts.append(tmp_path / f"part{k}.jsonl")
        assert cli(common + ["--shard", f"{k}/2", "--out", str(parts[-1])]) == 0
    capsys.readouterr()
    assert [line["_id"] for line in read_lines(parts[0])] == ["a", "c", "e"]
    assert [line["_id"] for line in read_lines(parts[1])] == ["b", "d"]
    merged = tmp_path / "all.jsonl"
    merged.write_text(parts[0].read_text() + parts[1].read_text())
    assert cli(common + ["--out", str(merged)]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["examples"] == 5 and metrics["resumed"] == 5 and metrics["em"] == pytest.approx(3 / 5)
    for bad in ("2/2", "1", "a/b", "-1/2"):
        assert cli(common + [f"--shard={bad}"]) == 2
        assert "--shard" in capsys.readouterr().err


def test_cli_refuses_bad_arguments(root, tmp_path, capsys):
    data = write(tmp_path / "dev.json", [hotpot_item("a", "Corvale")])
    model = str(build_tiny_model("multi-hop", root))
    assert cli(["evaluate", "--task", "multi-hop", "--data", str(tmp_path / "missing.json")]) == 2
    assert cli(["evaluate", "--task", "entity-linking", "--data", str(data), "--candidates", "context"]) == 2
    assert "does not apply" in capsys.readouterr().err
    assert cli(["evaluate", "--task", "multi-hop", "--data", str(data), "--model", model, "--device", "cpu",
                "--candidates", "index", "--index", str(tmp_path / "nowhere"), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli(["evaluate", "--task", "entity-linking", "--data", str(data), "--model", model]) == 2
    assert "item 0: field 'id': missing" in capsys.readouterr().err  # a HotpotQA file is not an EL file


# -- entity linking -------------------------------------------------------------------------------

ENTITIES = [
    Document("Q90", "Paris", "Paris is an instance of city. It is described as \"capital of France\"."),
    Document("Q830149", "Paris", "Paris is an instance of city. It is described as \"city in Texas\"."),
    Document("Q220", "Rome", "Rome is an instance of city. It is described as \"capital of Italy\"."),
]


def el_data(tmp_path):
    text = "Paris and Rome."
    return write(tmp_path / "el.jsonl", [
        {"id": "d1", "title": "t", "text": text, "labels": [
            {"id": 0, "span": [0, 5], "entity_id": "Q90", "name": "Paris"},
            {"id": 1, "span": [10, 14], "entity_id": "Q220", "name": "Rome", "note": "ambiguous in the source"}]},
        {"id": "d2", "title": "t", "text": text, "labels": [{"id": 0, "span": [0, 5], "entity_id": "Unknown"}]},
    ], jsonl=True)


def test_entity_linking_lines_scores_and_ambiguity(models, tmp_path, monkeypatch):
    lm = models["entity-linking"]
    index = build_index(lm, "entity-linking", ENTITIES)
    script(monkeypatch, lm, el_ids(lm))
    data = load_dataset(el_data(tmp_path), "entity-linking")
    out = tmp_path / "el-result.jsonl"
    report = evaluate(Engine(lm), "entity-linking", data.examples, index=index, out=out, progress=False)
    lines = read_lines(out)
    assert len(lines) == 2
    for line in lines:
        assert "[LK][_CONTINUE_]" in line["output"]
        assert len(line["output_qid"]) == line["output"].count("[LK]") == 2
        assert line["output_qid"] == [e["entity_id"] for e in line["trace"]["result"]["entities"]]
        assert {"id", "text", "labels"} <= set(line)
    m = report.metrics
    authors = el_scores_from_result_lines(lines)
    assert (m["precision"], m["recall"], m["f1"]) == (authors.precision, authors.recall, authors.f1)
    assert m["authors_scorer"]["f1"] == authors.f1
    # d1: "Paris" is ambiguous by the index (two documents titled Paris), "Rome" by its note;
    # d2's label is "Unknown" and not scored.
    assert m["ambiguous_mentions"] == 2
    first = report.records[0].trace.result.entities
    right = sum(e.entity_id == g for e, g in zip(first, ("Q90", "Q220")))
    assert m["ambiguous_accuracy"] == pytest.approx(right / 2)
    assert m["tp"] == right and m["fn"] == 2 - right
    assert m["fp"] == 2 - right + 1  # d2's "Rome" has no gold; its "Paris" hits the Unknown label
    # Read back without the index (the error browser, the model card): the run's ambiguity counts hold.
    from onegen.results import load_results

    back = load_results(out).metrics
    assert (back["ambiguous_mentions"], back["ambiguous_accuracy"]) == (2, m["ambiguous_accuracy"])
    assert back["ambiguity_from"] == "labels and index titles, as the run recorded them"


def test_entity_linking_lk_cut_off_by_the_token_limit(models, tmp_path, monkeypatch):
    lm = models["entity-linking"]
    index = build_index(lm, "entity-linking", ENTITIES)
    ids = el_ids(lm)
    script(monkeypatch, lm, ids)
    data = load_dataset(el_data(tmp_path), "entity-linking")
    first_lk = ids.index(tid(lm, LK))
    report = evaluate(Engine(lm), "entity-linking", data.examples[:1],
                      EvaluationSettings(run=RunSettings(max_new_tokens=first_lk + 1)), index=index, progress=False)
    line = report.records[0].line
    assert line["output"].endswith("[LK]") and line["output_qid"] == [""]


def test_entity_linking_records_the_copy_constraint_and_refuses_to_mix(models, tmp_path, monkeypatch):
    lm = models["entity-linking"]
    index = build_index(lm, "entity-linking", ENTITIES)
    t, lk = lm.ptok("entity-linking").encode_data, tid(lm, LK)
    # A model that misspells Rome: the constraint overrides it, free decoding keeps the typo.
    script(monkeypatch, lm, t("<MENTION>Paris</MENTION>") + [lk, 0] + t(" and <MENTION>Rone</MENTION>") + [lk, 0] + t("."))
    data = load_dataset(el_data(tmp_path), "entity-linking")
    out = tmp_path / "el-result.jsonl"
    report = evaluate(Engine(lm), "entity-linking", data.examples[:1], index=index, out=out, progress=False)
    assert report.metrics["copy_input"] is True and report.metrics["copy_overrides"] >= 1
    assert read_lines(out)[0]["onegen"]["run"]["copy_input"] is True
    with pytest.raises(EvaluationError, match="copy_input"):
        evaluate(Engine(lm), "entity-linking", data.examples,
                 EvaluationSettings(run=RunSettings(copy_input=False)), index=index, out=out, progress=False)
    script(monkeypatch, lm, t("<MENTION>Paris</MENTION>") + [lk, 0] + t(" and <MENTION>Rone</MENTION>") + [lk, 0] + t("."))
    free = evaluate(Engine(lm), "entity-linking", data.examples[:1],
                    EvaluationSettings(run=RunSettings(copy_input=False)), index=index, progress=False)
    assert free.metrics["copy_input"] is False and free.metrics["copy_overrides"] == 0
    assert "Rone" in free.records[0].line["output"] and "Rone" not in report.records[0].line["output"]


# -- single-hop -----------------------------------------------------------------------------------

def test_single_hop_with_ctxs_and_with_an_index(models, tmp_path, monkeypatch):
    lm = models["single-hop"]
    script(monkeypatch, lm, single_hop_ids(lm))
    ctxs = [{"id": "w1", "title": "Corvale", "text": "Corvale is a city in Velor."},
            {"id": "w2", "title": "Velor", "text": "Velor is a country."}]
    data = load_dataset(write(tmp_path / "popqa.jsonl", [
        {"id": 7, "question": "Where was Ivo born?", "answers": ["Corvale"], "ctxs": ctxs},
        {"id": 8, "question": "What is Velor?", "answers": ["a country"], "ctxs": ctxs},
    ], jsonl=True), "single-hop")
    report = evaluate(Engine(lm), "single-hop", data.examples, progress=False)
    assert [r.scores["match"] for r in report.records] == [1.0, 0.0]
    assert report.metrics["match"] == 0.5 and report.metrics["retrieval"]["hop_1"]["n"] == 2
    for r in report.records:
        assert r.line["input"].startswith("### Instruction:\n") and r.line["output"].startswith(r.line["input"])
        assert r.trace.retrievals[0].hits[0].id in ("w1", "w2")
    assert report.records[0].categories == []

    index = build_index(lm, "single-hop", [Document("g1", "Corvale", "Corvale is a city."),
                                           Document("g2", "Velor", "Velor is a country.")])
    index.save(tmp_path / "passages")
    by_index = evaluate(Engine(lm), "single-hop", data.examples, EvaluationSettings(candidates="index"),
                        index=str(tmp_path / "passages"), progress=False)
    assert all(r.trace.retrievals[0].hits[0].id in ("g1", "g2") for r in by_index.records)
    assert by_index.metrics["candidates"] == "index"
    assert (by_index.index_coverage.named, by_index.index_coverage.found) == (2, 2)


def test_an_index_without_the_datasets_documents_is_named_in_a_warning(models, tmp_path, monkeypatch, capsys):
    lm = models["single-hop"]
    script(monkeypatch, lm, single_hop_ids(lm))
    ctxs = [{"id": f"w{i}", "title": t, "text": f"{t} is a place."} for i, t in enumerate(["Köln", "Москва", "大阪"])]
    data = load_dataset(write(tmp_path / "popqa.jsonl", [
        {"id": 1, "question": "Where is Köln?", "answers": ["Deutschland"], "ctxs": ctxs}], jsonl=True), "single-hop")
    build_index(lm, "single-hop", [Document("g1", "Corvale", "Corvale is a city.")]).save(tmp_path / "world")
    capsys.readouterr()
    report = evaluate(Engine(lm), "single-hop", data.examples, EvaluationSettings(candidates="index"),
                      index=str(tmp_path / "world"), progress=False)
    err = capsys.readouterr().err
    assert report.index_coverage.mostly_missing
    # Said even without progress output: a run against the wrong corpus is worth a line.
    assert err.startswith(f"warning: index: {tmp_path / 'world'} (1 document, single-hop protocol")
    assert "Only 0 of the 3 document titles" in err


# -- resuming ---------------------------------------------------------------------------------------

class CountingEngine(Engine):
    def __init__(self, lm):
        super().__init__(lm)
        self.inputs: list[str] = []

    def run_trace(self, task, text, **kw):
        self.inputs.append(text)
        return super().run_trace(task, text, **kw)


def three_questions(tmp_path):
    items = [hotpot_item(k, "Corvale", question=f"Question {k}: where was the director of Film A born?")
             for k in ("a", "b", "c")]
    return load_dataset(write(tmp_path / "dev.json", items), "multi-hop").examples


def test_resume_skips_finished_lines_and_redoes_a_truncated_last_line(models, tmp_path, monkeypatch):
    lm = models["multi-hop"]
    script(monkeypatch, lm, multi_hop_ids(lm))
    examples = three_questions(tmp_path)
    out = tmp_path / "result.jsonl"
    fresh = evaluate(Engine(lm), "multi-hop", examples, out=out, progress=False)
    full = out.read_text().splitlines(keepends=True)
    # Killed while writing the second line: one whole line and half of the next.
    out.write_text(full[0] + full[1][: len(full[1]) // 2])
    engine = CountingEngine(lm)
    resumed = evaluate(engine, "multi-hop", examples, out=out, progress=False)
    assert engine.inputs == [examples[1].question, examples[2].question]
    text = out.read_text()
    assert text.startswith(full[0]) and text.endswith("\n")
    assert [line["onegen"]["key"] for line in read_lines(out)] == ["a", "b", "c"]
    assert resumed.metrics["resumed"] == 1
    for key in ("em", "f1", "retrieval", "examples", "errors", "error_categories"):
        assert resumed.metrics[key] == fresh.metrics[key]
    # A finished file: nothing to run, same scores.
    again = CountingEngine(lm)
    done = evaluate(again, "multi-hop", examples, out=out, progress=False)
    assert again.inputs == [] and done.metrics["resumed"] == 3 and done.metrics["em"] == fresh.metrics["em"]
    assert out.read_text() == text


def test_resume_refuses_damage_and_mixed_runs(models, tmp_path, monkeypatch):
    lm = models["multi-hop"]
    script(monkeypatch, lm, multi_hop_ids(lm))
    examples = three_questions(tmp_path)
    out = tmp_path / "result.jsonl"
    evaluate(Engine(lm), "multi-hop", examples[:2], out=out, progress=False)
    with pytest.raises(EvaluationError, match="control"):
        evaluate(Engine(lm), "multi-hop", examples, EvaluationSettings(control="random-paragraph"), out=out,
                 progress=False)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text(lines[0][:20] + "\n" + lines[1])
    with pytest.raises(EvaluationError, match="line 1 is not a complete JSON object"):
        evaluate(Engine(lm), "multi-hop", examples, out=out, progress=False)
    foreign = write(tmp_path / "theirs.jsonl", [{"_id": "a", "output": "x"}], jsonl=True)
    with pytest.raises(EvaluationError, match="not written by `onegen evaluate`"):
        evaluate(Engine(lm), "multi-hop", examples, out=foreign, progress=False)


def test_resume_compares_indexes_by_content_not_by_path(models, tmp_path, monkeypatch):
    """A renamed index folder resumes; another index under the recorded path is refused; a line
    written before fingerprints were recorded is compared through the folder it names."""
    lm = models["single-hop"]
    script(monkeypatch, lm, single_hop_ids(lm))
    ctxs = [{"id": "w1", "title": "Corvale", "text": "Corvale is a city in Velor."}]
    examples = load_dataset(write(tmp_path / "popqa.jsonl", [
        {"id": k, "question": f"Question {k}?", "answers": ["Corvale"], "ctxs": ctxs} for k in (1, 2, 3)
    ], jsonl=True), "single-hop").examples
    docs = [Document("g1", "Corvale", "Corvale is a city."), Document("g2", "Velor", "Velor is a country.")]
    build_index(lm, "single-hop", docs).save(tmp_path / "passages")
    by_index, out = EvaluationSettings(candidates="index"), tmp_path / "result.jsonl"
    evaluate(Engine(lm), "single-hop", examples[:1], by_index, index=str(tmp_path / "passages"), out=out,
             progress=False)
    assert read_lines(out)[0]["onegen"]["run"]["index_fingerprint"]

    (tmp_path / "passages").rename(tmp_path / "moved")
    engine = CountingEngine(lm)
    resumed = evaluate(engine, "single-hop", examples[:2], by_index, index=str(tmp_path / "moved"), out=out,
                       progress=False)
    assert engine.inputs == ["Question 2?"] and resumed.metrics["resumed"] == 1

    # Same path, other documents: refused, naming both folders.
    build_index(lm, "single-hop", [*docs, Document("g3", "Ivo", "Ivo is a director.")]).save(tmp_path / "passages")
    refused = r"written with the index \S*passages \(fingerprint \w+\); this run.s index .*holds other"
    with pytest.raises(EvaluationError, match=refused):
        evaluate(Engine(lm), "single-hop", examples, by_index, index=str(tmp_path / "passages"), out=out,
                 progress=False)

    # Lines from before fingerprints: the relative path they name is read from the working directory.
    lines = read_lines(out)
    for line in lines:
        run = line["onegen"]["run"]
        del run["index_fingerprint"]
        run["index"] = "moved"
    write(out, lines, jsonl=True)
    monkeypatch.chdir(tmp_path)
    engine = CountingEngine(lm)
    evaluate(engine, "single-hop", examples, by_index, index=str(tmp_path / "moved"), out=out, progress=False)
    assert engine.inputs == ["Question 3?"]
    with pytest.raises(EvaluationError, match="holds other documents or vectors"):
        evaluate(Engine(lm), "single-hop", examples, by_index, index="passages", out=out, progress=False)
    for line in lines:
        line["onegen"]["run"]["index"] = "gone"
    write(out, lines, jsonl=True)
    with pytest.raises(EvaluationError, match="the index gone, which is not here to compare"):
        evaluate(Engine(lm), "single-hop", examples, by_index, index="moved", out=out, progress=False)


def test_a_bundled_result_file_resumes_with_its_index_spelled_another_way(tmp_path, monkeypatch):
    """The bundled files name `assets/indexes/...` from the checkout; an absolute path, or a run
    from another directory, is the same index, also for a file written before runs recorded the
    index's fingerprint (where only the path identifies it)."""
    from onegen.evaluation import _check_same_run, recorded_index_fingerprint
    from onegen.index import read_manifest
    from onegen.registry import ASSETS

    path = ASSETS / "results" / "heldout-multi-hop.jsonl"
    with path.open(encoding="utf-8") as f:
        line = json.loads(f.readline())
    line["onegen"]["run"].pop("index_fingerprint", None)  # as such a file was written
    recorded = line["onegen"]["run"]
    assert recorded["index"] == "assets/indexes/heldout-paragraphs"
    monkeypatch.chdir(tmp_path)  # the recorded relative path means nothing here
    here = ASSETS / "indexes" / "heldout-paragraphs"
    fingerprint = read_manifest(here).fingerprint
    assert recorded_index_fingerprint(recorded["index"]) == fingerprint
    _check_same_run(line, {**recorded, "index": str(here.resolve()), "index_fingerprint": fingerprint}, path)
    other = read_manifest(ASSETS / "indexes" / "heldout-passages").fingerprint
    with pytest.raises(EvaluationError, match="holds other documents or vectors"):
        _check_same_run(line, {**recorded, "index": "elsewhere", "index_fingerprint": other}, path)


# -- per-example errors -----------------------------------------------------------------------------

def test_an_example_error_is_kept_in_its_line_and_the_run_goes_on(models, tmp_path, monkeypatch):
    lm = models["multi-hop"]
    script(monkeypatch, lm, multi_hop_ids(lm))
    items = [hotpot_item("a", "Corvale"), hotpot_item("long", "x", question="word " * 1500),
             hotpot_item("c", "Corvale"), {**hotpot_item("empty", "Corvale"), "context": []}]
    examples = load_dataset(write(tmp_path / "dev.json", items), "multi-hop").examples
    out = tmp_path / "result.jsonl"
    report = evaluate(Engine(lm), "multi-hop", examples, out=out, progress=False)
    lines = read_lines(out)
    assert [line["_id"] for line in lines] == ["a", "long", "c", "empty"]
    assert lines[1]["error"].startswith("InputError: the input is too long")
    assert "no documents" in lines[3]["error"]
    assert "error" not in lines[0] and "trace" not in lines[1]
    assert lines[1]["output"] == lines[1]["input"]  # the authors' scorer still reads the line
    assert report.metrics["errors"] == 2 and report.metrics["examples"] == 4
    assert report.metrics["em"] == 0.5
    assert report.metrics["error_categories"][ENGINE_ERROR] == 2
    # A rerun keeps the error lines; --retry-errors redoes them.
    engine = CountingEngine(lm)
    evaluate(engine, "multi-hop", examples, out=out, progress=False)
    assert engine.inputs == []
    evaluate(engine, "multi-hop", examples, out=out, progress=False, retry_errors=True)
    assert len(engine.inputs) == 2 and len(read_lines(out)) == 4


# -- the random-paragraph control -------------------------------------------------------------------

def test_random_retriever_is_seeded_and_stays_in_its_pool():
    docs = [Document(f"d{i}", f"T{i}", f"text {i}") for i in range(10)]
    a, b, c = RandomRetriever(docs, seed=1), RandomRetriever(docs, seed=1), RandomRetriever(docs, seed=2)
    runs_a = [[h.id for h in a.search(torch.zeros(4), 3)] for _ in range(4)]
    assert runs_a == [[h.id for h in b.search(torch.zeros(4), 3)] for _ in range(4)]
    assert runs_a != [[h.id for h in c.search(torch.zeros(4), 3)] for _ in range(4)]
    for ids in runs_a:
        assert len(set(ids)) == 3 and set(ids) <= {d.id for d in docs}
    hits = a.search(torch.zeros(4), 50)
    assert len(hits) == 10 and [h.rank for h in hits] == list(range(10))
    assert a.describe()["control"] == "random-paragraph"
    with pytest.raises(EvaluationError):
        RandomRetriever([])


def test_random_paragraph_control_inserts_random_candidates(models, tmp_path, monkeypatch):
    lm = models["multi-hop"]
    script(monkeypatch, lm, multi_hop_ids(lm))
    examples = three_questions(tmp_path)
    runs = [evaluate(Engine(lm), "multi-hop", examples, EvaluationSettings(control="random-paragraph", seed=s),
                     progress=False)
            for s in (3, 3, 4)]
    chosen = [[[r.chosen_hit.id for r in rec.trace.retrievals] for rec in run.records] for run in runs]
    assert chosen[0] == chosen[1] and chosen[0] != chosen[2]
    for rec in runs[0].records:
        tr = rec.trace
        assert tr.index["control"] == "random-paragraph"
        assert tr.cost.document_tokens == 0  # nothing encoded: the query vector is ignored
        own = {context_document_id(rec.example.id, i) for i in range(len(CONTEXT))}
        assert all(r.chosen_hit.id in own and r.inserted_tokens > 0 for r in tr.retrievals)
        assert all(re.search(r"<paragraph>wiki title: ", r.inserted_text) for r in tr.retrievals)
    assert runs[0].metrics["control"] == "random-paragraph"
