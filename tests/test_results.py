"""Reading result files back, filtering them, comparing two runs, exporting subsets
(onegen/results.py, behind the app's error browser). Runs are real engine runs of a tiny random
model whose token choices are scripted (tests/scripted.py)."""
from __future__ import annotations

import json

import pytest

from onegen.datasets import load_dataset
from onegen.evaluation import EvaluationSettings, evaluate
from onegen.results import (ResultFileError, category_choices, compare_results, export_lines, headline,
                            load_results, outcome_of, select, summarize)
from scripted import multi_hop_answering, script_every_run, scripted_evaluation
from tiny import hotpot_item

pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def runs(models, tmp_path_factory):
    """Two result files of the same three questions: A answers "Corvale" (right, right, wrong),
    B answers "Velor" (wrong, wrong, right)."""
    root = tmp_path_factory.mktemp("results")
    data = root / "dev.json"
    data.write_text(json.dumps([hotpot_item("q1", "Corvale"),
                                hotpot_item("q2", "Corvale", question="Who was born in Corvale?"),
                                hotpot_item("q3", "Velor")]))
    examples = list(load_dataset(data, "multi-hop").examples)
    lm = models["multi-hop"]
    return {name: scripted_evaluation(lm, "multi-hop", examples, multi_hop_answering(lm, answer),
                                      EvaluationSettings(candidates="context", top_k=2), root / f"{name}.jsonl")
            for name, answer in (("a", "Corvale"), ("b", "Velor"))}


def test_a_result_file_reads_back_with_the_metrics_evaluate_printed(runs):
    report = runs["a"]
    results = load_results(report.out)
    assert results.task == "multi-hop" and results.run["mode"] == "onegen" and results.skipped == []
    assert [r.key for r in results.records] == ["q1", "q2", "q3"]
    for key in ("em", "f1", "match", "retrieval", "error_categories", "examples"):
        assert results.metrics[key] == report.metrics[key]
    assert headline(results) == ("EM", pytest.approx(2 / 3))
    assert [outcome_of(r) for r in results.records] == ["right", "right", "wrong"]
    row = summarize("multi-hop", results.records[2])
    assert (row.key, row.prediction, row.gold, row.outcome) == ("q3", "Corvale", "Velor", "wrong")
    assert row.categories  # a wrong example says why


def test_filters_by_outcome_category_and_text(runs):
    results = load_results(runs["a"].out)
    assert [r.key for r in select(results, outcome="right")] == ["q1", "q2"]
    assert [r.key for r in select(results, outcome="error")] == []
    assert [r.key for r in select(results, contains="BORN IN corvale")] == ["q2"]
    assert [r.key for r in select(results, contains="q3")] == ["q3"]
    (name, n), = [c for c in category_choices(results) if c[0] in {c.name for c in results.records[2].categories}][:1]
    assert n == 1 and [r.key for r in select(results, category=name)] == ["q3"]
    assert select(results, outcome="wrong", contains="q1") == []
    with pytest.raises(ValueError, match="outcome"):
        select(results, outcome="bad")


def test_two_runs_compared_example_by_example(runs):
    a, b = load_results(runs["a"].out), load_results(runs["b"].out)
    diff = compare_results(a, b)
    assert diff.shared == ["q1", "q2", "q3"] and diff.only_a == diff.only_b == []
    assert [f.key for f in diff.fixed] == ["q3"] and [f.key for f in diff.broken] == ["q1", "q2"]
    assert diff.both_right == diff.both_wrong == 0
    assert diff.metrics["em"] == (pytest.approx(2 / 3), pytest.approx(1 / 3))
    broke = diff.broken[0]
    assert (broke.a, broke.b) == ("right", "wrong") and broke.gained and not broke.lost
    # The same documents were retrieved (same script, same candidates): the answer changed, not retrieval.
    assert broke.retrieval == ""
    assert diff.same_tokens == 0  # every answer differs
    assert compare_results(a, load_results(runs["a"].out)).same_tokens == 3


def test_compare_command(runs, tmp_path, capsys):
    from onegen.__main__ import main

    assert main(["compare", str(runs["a"].out), str(runs["b"].out)]) == 0
    text = capsys.readouterr().out
    assert "3 examples in both" in text and "same tokens in 0" in text
    assert "em: 0.667 -> 0.333 (-0.333)" in text
    assert "fixed by B:\n  q3:" in text and "broken by B:\n  q1:" in text
    assert main(["compare", str(runs["a"].out), str(runs["b"].out), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert (got["fixed"], got["broken"], got["shared"]) == (["q3"], ["q1", "q2"], 3)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    assert main(["compare", str(runs["a"].out), str(bad)]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_comparison_uses_only_shared_examples_and_refuses_mismatches(runs, tmp_path):
    a = load_results(runs["a"].out)
    part = tmp_path / "part.jsonl"
    export_lines(select(load_results(runs["b"].out), contains="q3"), part)
    diff = compare_results(a, load_results(part))
    assert diff.shared == ["q3"] and diff.only_a == ["q1", "q2"]
    assert diff.metrics["em"] == (0.0, 1.0)

    other = tmp_path / "other.jsonl"
    line = json.loads(runs["a"].out.read_text().splitlines()[0])
    line["onegen"]["key"] = "zz"
    other.write_text(json.dumps(line) + "\n")
    with pytest.raises(ResultFileError, match="share no example"):
        compare_results(a, load_results(other))


def test_export_writes_the_original_lines(runs, tmp_path):
    results = load_results(runs["a"].out)
    n = export_lines(select(results, outcome="right"), tmp_path / "right.jsonl")
    original = runs["a"].out.read_text().splitlines()[:2]
    assert n == 2 and [json.loads(x) for x in (tmp_path / "right.jsonl").read_text().splitlines()] == \
        [json.loads(x) for x in original]


def test_damaged_and_foreign_files(runs, tmp_path):
    lines = runs["a"].out.read_text().splitlines()
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_text("\n".join([lines[0], "{not json", lines[1], lines[1], lines[2][:50]]) + "\n")
    results = load_results(damaged)
    assert [r.key for r in results.records] == ["q1", "q2"]
    assert len(results.skipped) == 3 and any("again" in s for s in results.skipped)

    foreign = tmp_path / "data.jsonl"
    foreign.write_text(json.dumps({"text": "a sentence", "labels": []}) + "\n")
    with pytest.raises(ResultFileError, match="no result lines"):
        load_results(foreign)
    with pytest.raises(ResultFileError, match="cannot read"):
        load_results(tmp_path / "missing.jsonl")
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ResultFileError, match="UTF-8"):
        load_results(binary)

    mixed = tmp_path / "mixed.jsonl"
    other = json.loads(lines[1])
    other["onegen"]["run"]["task"] = "single-hop"
    mixed.write_text(lines[0] + "\n" + json.dumps(other) + "\n")
    with pytest.raises(ResultFileError, match="one file holds one run"):
        load_results(mixed)


def test_progress_callback_and_the_mode_in_the_run(models, runs, tmp_path, monkeypatch):
    from onegen.baselines import make_engine
    from onegen.evaluation import EvaluationError

    lm = models["multi-hop"]
    examples = [r.example for r in load_results(runs["a"].out).records]
    calls = []
    evaluate(lm, "multi-hop", examples, EvaluationSettings(candidates="context", top_k=2), out=runs["a"].out,
             progress=False, on_progress=lambda done, total: calls.append((done, total)))
    assert calls == [(3, 3)]  # all resumed: one call, nothing run
    with pytest.raises(EvaluationError, match="mode"):  # a baseline never resumes a OneGen file
        evaluate(make_engine(lm, "two-pass"), "multi-hop", examples,
                 EvaluationSettings(candidates="context", top_k=2), out=runs["a"].out, progress=False)
    script_every_run(monkeypatch, lm, multi_hop_answering(lm, "Corvale"))
    calls.clear()
    report = evaluate(make_engine(lm, "two-pass"), "multi-hop", examples[:2],
                      EvaluationSettings(candidates="context", top_k=2), out=tmp_path / "two.jsonl",
                      progress=False, on_progress=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 2), (1, 2), (2, 2)]
    two = load_results(report.out)
    assert two.run["mode"] == "two-pass" and all(r.trace.mode == "two-pass" for r in two.records)
    diff = compare_results(load_results(runs["a"].out), two)
    assert diff.flips == [] and diff.both_right == 2  # same model, same documents: same answers


def test_rendered_results_escape_file_text(runs, tmp_path):
    from onegen import render_results as RR

    hostile = '<img src=x onerror="alert(1)">'
    line = json.loads(runs["a"].out.read_text().splitlines()[2])
    line["question"] = hostile
    line["answer"] = hostile
    path = tmp_path / f"{hostile[:4]}.jsonl"
    path.write_text(json.dumps(line) + "\n")
    results = load_results(path)
    rec = results.records[0]
    for html in (RR.metrics_html(results), RR.example_html("multi-hop", rec)):
        assert "<img" not in html and "&lt;img" in html
    row = RR.table_rows("multi-hop", results.records)[0]
    assert row[0] == "q3" and row[1] == "wrong" and row[2] == hostile  # table cells stay plain text
    diff = compare_results(load_results(runs["a"].out), load_results(runs["b"].out))
    html = RR.comparison_html(diff)
    assert "-33.3" in html  # EM 66.7 -> 33.3 over the shared examples
    assert "same tokens in both (e.g. two decoding settings)</td><td>0<" in html
    assert [r[0] for r in RR.flip_rows(diff.flips)] == ["q3", "q1", "q2"]


def test_model_card_reports_only_the_results_its_weights_wrote(models, runs, tmp_path):
    from onegen.model_card import BEGIN, END, matching_results, metrics_section, write_card_metrics

    lm = models["multi-hop"]
    results = tmp_path / "results"
    results.mkdir()
    for name in ("a", "b"):
        (results / f"heldout-{name}.jsonl").write_text(runs[name].out.read_text())
    def rewritten(name: str, **run) -> None:
        """Run A's result file under `name`, its run record changed by `run`."""
        lines = [json.loads(x) for x in runs["a"].out.read_text().splitlines()]
        for line in lines:
            line["onegen"]["run"].update(run)
        (results / name).write_text("".join(json.dumps(x) + "\n" for x in lines))

    rewritten("retrained.jsonl", model_fingerprint="0" * 32)  # another model's run of the same file
    (results / "notes.jsonl").write_text('{"text": "not a result file"}\n')

    sets = matching_results(results, lm.fingerprint)
    assert [rs.path.name for rs in sets] == ["heldout-a.jsonl", "heldout-b.jsonl"]
    section = metrics_section(sets, lm.fingerprint)
    assert "| `heldout-a.jsonl` | multi-hop, each question's own context paragraphs | 3 | **EM 0.67**" in section
    assert "| `heldout-b.jsonl` |" in section and "**EM 0.33**" in section and "retrained" not in section
    rewritten("heldout-c.jsonl", data="assets/world/heldout/multihop-paraphrased.json")
    named = metrics_section(matching_results(results, lm.fingerprint), lm.fingerprint)
    assert "| `heldout-c.jsonl` | multi-hop on `multihop-paraphrased.json`, each question's own context" in named
    (results / "heldout-c.jsonl").unlink()

    folder = tmp_path / "model"
    folder.mkdir()
    card = folder / "README.md"
    card.write_text("# tiny\n\n- Steps: 3\n\n## Limits\nIt knows nothing.\n")
    write_card_metrics(folder, sets, lm.fingerprint)
    first = card.read_text()
    assert first.index(BEGIN) < first.index(END) < first.index("## Limits") and first.endswith("It knows nothing.\n")
    write_card_metrics(folder, sets, lm.fingerprint)  # a rerun replaces the section, never stacks it
    assert card.read_text() == first
    write_card_metrics(folder, [], lm.fingerprint)
    assert "No result file of these weights was found." in card.read_text() and "heldout-a" not in card.read_text()
    with pytest.raises(FileNotFoundError, match="export the model first"):
        write_card_metrics(tmp_path / "nowhere", sets, lm.fingerprint)


def test_card_command(models, runs, tmp_path, capsys):
    from pathlib import Path

    from onegen.__main__ import main

    folder = Path(models["multi-hop"].name)
    results = tmp_path / "results"
    results.mkdir()
    (results / "a.jsonl").write_text(runs["a"].out.read_text())
    assert main(["card", str(folder), "--results", str(results)]) == 2  # no card to write into
    assert "not a local model folder with a card" in capsys.readouterr().err
    (folder / "README.md").write_text("# tiny\n")
    try:
        assert main(["card", str(folder), "--results", str(results)]) == 0
        assert "1 result file(s)" in capsys.readouterr().out
        assert "| `a.jsonl` |" in (folder / "README.md").read_text()
        assert f"result files in `{results.name}/`" in (folder / "README.md").read_text()  # no path of this machine
        assert main(["card", str(folder), "--results", str(tmp_path / "none")]) == 2
    finally:
        (folder / "README.md").unlink()
