"""Confidence calibration: the flag on constructed score lists, the threshold rule, calibration.json
beside an index, the engine's per-retrieval and per-run fields (judged after the result checks), and
how the CLI and pages show them."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from onegen.__main__ import main as cli
from onegen.calibration import (CALIBRATION, Calibration, CalibrationError, ScoreRange, calibrate, choose_threshold,
                                read_calibration, run_confidence, run_signal, signal_value, write_calibration)
from onegen.datasets import load_dataset
from onegen.encode import build_index
from onegen.engine import Engine, IndexRetriever, RunSettings
from onegen.index import VectorIndex, content_fingerprint
from onegen.model_card import CAL_BEGIN, CAL_END, calibration_section, index_calibrations, with_section
from onegen.protocols import CONTINUE, LK
from onegen.render_html import result_html, step_html, world_html
from onegen.render_text import NO_CONFIDENT_MATCH, calibration_of, render_trace
from onegen.results import load_results
from onegen.tasks import get_task
from onegen.trace import Hit, Retrieval, Trace
from onegen.world_overview import example_questions, world_overview
from scripted import LongestSecondChooser, chooser, multi_hop_script, text_ids, tid
from tiny import ENTITIES, PARAGRAPHS, load_tiny

ASSETS = Path(__file__).resolve().parents[1] / "assets"
PASSAGES = ASSETS / "indexes" / "heldout-passages"
SINGLE_HOP_RESULTS = ASSETS / "results" / "heldout-single-hop.jsonl"

pytestmark = pytest.mark.usefixtures("one_thread")


def hits(*scores: float) -> list[Hit]:
    return [Hit(rank=i, id=f"d{i}", title=f"D{i}", score=s, text="") for i, s in enumerate(scores)]


def retrieval(step: int, *scores: float, confident: bool | None = None) -> Retrieval:
    return Retrieval(step=step, position=10 + step, token="[R]", query_text="q", query_source="hidden-state",
                     hits=hits(*scores), chosen=0 if scores else None, confident=confident)


def make_cal(threshold: float, signal: str = "top1", mode: str = "onegen", fingerprint: str = "f") -> Calibration:
    return Calibration(protocol="multi-hop", mode=mode, model_fingerprint="m", index_fingerprint=fingerprint,
                       signal=signal, threshold=threshold, rule="test", gold=ScoreRange.of([0.9, 0.95]))


# -- the flag on constructed score lists ------------------------------------------------------------

def test_signals_of_a_hit_list():
    assert signal_value(hits(0.9, 0.5), "top1") == 0.9
    assert signal_value(hits(0.9, 0.5), "margin") == pytest.approx(0.4)
    assert signal_value([], "top1") is None
    assert signal_value(hits(0.9), "margin") is None  # one hit has no margin


@pytest.mark.parametrize("scores, threshold, expected", [
    ((0.91, 0.40), 0.86, True),
    ((0.86, 0.40), 0.86, True),    # at the threshold is within the range
    ((0.85, 0.84), 0.86, False),
    ((), 0.86, False),             # nothing found is no match
])
def test_top1_flag(scores, threshold, expected):
    assert make_cal(threshold).confident(hits(*scores)) is expected


def test_margin_flag():
    cal = make_cal(0.05, signal="margin")
    assert cal.confident(hits(0.70, 0.60))
    assert not cal.confident(hits(0.95, 0.93))  # high, but two documents tie: no confident match
    assert not cal.confident(hits(0.95))


def test_a_run_is_judged_by_its_lowest_retrieval():
    rs = [retrieval(0, 0.95, 0.2), retrieval(1, 0.55, 0.5)]
    assert run_signal(rs, "top1") == 0.55
    assert run_signal([retrieval(0, 0.9), retrieval(1)], "top1") == -math.inf  # a retrieval without hits
    assert run_signal([], "top1") is None
    assert run_confidence([retrieval(0, 0.9, confident=True), retrieval(1, 0.5, confident=False)]) is False
    assert run_confidence([retrieval(0, 0.9, confident=True)]) is True
    assert run_confidence([retrieval(0, 0.9)]) is None  # no calibration judged it
    assert run_confidence([]) is None


def test_threshold_separates_in_world_from_out_of_world_runs():
    in_world = [0.88, 0.90, 0.93, 0.95, 0.97] * 4
    out_of_world = [0.50, 0.62, 0.70, 0.74]
    t, rule = choose_threshold([in_world], out_of_world, gold=in_world)
    assert t == pytest.approx((0.74 + 0.88) / 2)  # half-way across the gap
    assert "out-of-world" in rule


def test_threshold_never_flags_more_in_world_runs_than_allowed():
    in_world = [0.60] * 2 + [0.90] * 98   # two low in-world runs
    out_of_world = [0.55, 0.65, 0.70, 0.80, 0.85]
    t, _ = choose_threshold([in_world], out_of_world, gold=in_world, max_in_world_flagged=0.05)
    assert sum(v < t for v in in_world) / len(in_world) <= 0.05
    assert all(v < t for v in out_of_world)
    t0, _ = choose_threshold([in_world], out_of_world, gold=in_world, max_in_world_flagged=0.0)
    assert not any(v < t0 for v in in_world)
    assert t0 <= 0.60


def test_every_in_world_file_keeps_its_own_tolerance():
    # Pooled, 6 low runs of 200 are 3%; but they are 6% of the paraphrased file, so a threshold
    # above them is refused: each kind of input a visitor writes keeps its own 5%.
    template = [0.90] * 100
    paraphrased = [0.66] * 6 + [0.90] * 94
    out_of_world = [0.55, 0.60, 0.70, 0.70]
    t, rule = choose_threshold([template, paraphrased], out_of_world, gold=template)
    assert t == pytest.approx((0.60 + 0.66) / 2) and "each in-world file" in rule
    pooled, _ = choose_threshold([template + paraphrased], out_of_world, gold=template)
    assert pooled == pytest.approx((0.70 + 0.90) / 2)  # one file of both would flag them

def test_threshold_without_out_of_world_is_a_gold_quantile():
    gold = [0.5] + [0.9 + i / 1000 for i in range(99)]
    t, rule = choose_threshold([[]], [], gold, gold_quantile=0.01)
    assert 0.5 < t <= 0.9 and "quantile" in rule
    with pytest.raises(CalibrationError):
        choose_threshold([], [], [])


# -- calibration.json beside an index ---------------------------------------------------------------

@pytest.fixture
def passages(tmp_path) -> Path:
    folder = tmp_path / "heldout-passages"
    shutil.copytree(PASSAGES, folder)
    (folder / CALIBRATION).unlink(missing_ok=True)
    return folder


def test_calibrating_a_shipped_index_from_its_result_file(passages, capsys):
    index = VectorIndex.load(passages)
    cal = calibrate(index, [load_results(SINGLE_HOP_RESULTS)], gold_quantile=0.05)
    scores = sorted(json.loads(line)["trace"]["retrievals"][0]["hits"][0]["score"]
                    for line in SINGLE_HOP_RESULTS.read_text().splitlines())
    assert cal.gold.n <= len(scores) and cal.gold.min >= scores[0]
    assert cal.index_fingerprint == content_fingerprint(index.manifest)
    assert cal.in_world[0].runs == len(scores) and cal.in_world[0].flagged == sum(s < cal.threshold for s in scores)
    # Every run of this file chose its gold passage (recall@1 1.00), so all are gold runs.
    assert cal.in_world[0].gold_runs == len(scores) and cal.gold_run_rate == cal.in_world_rate
    assert Calibration.from_dict(json.loads(json.dumps(cal.to_dict()))) == cal
    assert [a["signal"] for a in cal.alternatives] == ["margin"]
    # The CLI writes it beside the manifest; loading reads it back and verification is unchanged.
    assert cli(["calibrate", "--index", str(passages), "--in-world", str(SINGLE_HOP_RESULTS)]) == 0
    assert "top1 threshold" in capsys.readouterr().out
    loaded = VectorIndex.load(passages, verify=True)
    assert loaded.calibration is not None and loaded.calibration_problem is None
    assert loaded.calibration.threshold == pytest.approx(read_calibration(passages, content_fingerprint(loaded.manifest)).threshold)


def test_a_cross_fit_measures_each_half_with_the_other_halfs_threshold(passages, capsys):
    from onegen.calibration import cross_fit

    rs = load_results(SINGLE_HOP_RESULTS)
    scores = [json.loads(line)["trace"]["retrievals"][0]["hits"][0]["score"]
              for line in SINGLE_HOP_RESULTS.read_text().splitlines()]
    folds = cross_fit([rs], [rs])  # a file as its own out-of-world set: only the arithmetic is checked
    assert len(folds) == 2 and all(0 <= f.in_world_rates[0] <= 1 for f in folds)
    for fold, (fit, held) in zip(folds, ((0, 1), (1, 0))):
        t, _ = choose_threshold([scores[fit::2]], scores[fit::2], [])
        assert fold.threshold == pytest.approx(t)
        assert fold.in_world_rates == [pytest.approx(sum(v < t for v in scores[held::2]) / len(scores[held::2]))]
    with pytest.raises(CalibrationError, match="out-of-world"):
        cross_fit([rs], [])
    assert cli(["calibrate", "--index", str(passages), "--in-world", str(SINGLE_HOP_RESULTS), "--out-of-world",
                str(SINGLE_HOP_RESULTS), "--dry-run", "--cross-fit"]) == 0
    assert "even -> odd: threshold" in capsys.readouterr().out


def test_result_files_of_another_index_or_task_are_refused(passages, capsys):
    index = VectorIndex.load(passages)
    multi_hop = ASSETS / "results" / "heldout-multi-hop-own-context.jsonl"
    with pytest.raises(CalibrationError, match="multi-hop result file"):
        calibrate(index, [load_results(multi_hop)])
    assert cli(["calibrate", "--index", str(passages), "--in-world", str(multi_hop), "--dry-run"]) == 2
    assert "error:" in capsys.readouterr().err
    renamed = passages.parent / "other-passages"
    passages.rename(renamed)
    with pytest.raises(CalibrationError, match="searched the index"):
        calibrate(VectorIndex.load(renamed), [load_results(SINGLE_HOP_RESULTS)])


def test_a_calibration_of_other_contents_is_ignored_with_a_reason(passages):
    write_calibration(passages, make_cal(0.8, fingerprint="0" * 32))
    index = VectorIndex.load(passages)
    assert index.calibration is None and "other contents" in index.calibration_problem
    (passages / CALIBRATION).write_text("{not json")
    index = VectorIndex.load(passages)
    assert index.calibration is None and "unreadable" in index.calibration_problem
    (passages / CALIBRATION).write_text(json.dumps({"schema": "onegen-calibration/1", "signal": "top1"}))
    assert "malformed" in VectorIndex.load(passages).calibration_problem


def test_the_model_card_lists_each_calibrated_index(passages):
    manifest = VectorIndex.load(passages).manifest
    write_calibration(passages, make_cal(0.81, fingerprint=content_fingerprint(manifest)))
    found = index_calibrations({"single-hop": str(passages)}, manifest.model_fingerprint)
    assert [name for name, _ in found] == ["heldout-passages"]
    assert index_calibrations({"single-hop": str(passages)}, "another model") == []
    card = "# m\n\n## Limits\nnone\n"
    once = with_section(card, calibration_section(found), CAL_BEGIN, CAL_END)
    assert "| `heldout-passages` | top1 | 0.8100 |" in once and once.index(CAL_END) < once.index("## Limits")
    assert with_section(once, calibration_section(found), CAL_BEGIN, CAL_END) == once  # replaced, not stacked


# -- the engine, the trace and its views ------------------------------------------------------------

@pytest.fixture(scope="module")
def multi_hop(tmp_path_factory):
    lm = load_tiny("multi-hop", tmp_path_factory.mktemp("cal"))
    return lm, build_index(lm, "multi-hop", PARAGRAPHS)


def run(lm, index, cal: Calibration | None) -> Trace:
    index.calibration = cal
    return Engine(lm, chooser=chooser(lm, multi_hop_script(lm))).run_trace(
        "multi-hop", "Where was the director of Film A born?", retriever=IndexRetriever(index))


def test_engine_marks_retrievals_below_the_threshold(multi_hop):
    lm, index = multi_hop
    plain = run(lm, index, None)
    assert [r.confident for r in plain.retrievals] == [None, None] and plain.result.confident is None
    assert "calibration" not in plain.index
    low = run(lm, index, make_cal(2.0))  # no cosine reaches 2: every retrieval is below
    assert [r.confident for r in low.retrievals] == [False, False] and low.result.confident is False
    assert low.index["calibration"]["threshold"] == 2.0
    high = run(lm, index, make_cal(-2.0))
    assert [r.confident for r in high.retrievals] == [True, True] and high.result.confident is True
    # A calibration of another mode's query vectors judges nothing.
    other = run(lm, index, make_cal(2.0, mode="two-pass"))
    assert other.result.confident is None
    assert Trace.from_json(low.to_json()) == low
    old = json.loads(low.to_json())
    for r in old["retrievals"]:
        del r["confident"]
    del old["result"]["confident"]
    assert Trace.from_dict(old).result.confident is None  # a trace written before the field loads


def test_text_and_html_mark_a_run_with_no_confident_match(multi_hop):
    lm, index = multi_hop
    low = run(lm, index, make_cal(2.0))
    text = render_trace(low)
    assert text.count(f"! {NO_CONFIDENT_MATCH}: top score") == 2
    assert "below 2.0000" in text and "calibrated:" in text.splitlines()[0]
    assert f"Answer ({NO_CONFIDENT_MATCH}): Corvale" in text
    step = step_html(low.retrievals[0], low.task, calibration=calibration_of(low))
    assert 'data-confident="false"' in step and "og-bars-low" in step and "not a confident match" in step
    result = result_html(low)
    assert "og-unconfident" in result and f"Final answer ({NO_CONFIDENT_MATCH})" in result
    fine = run(lm, index, make_cal(-2.0))
    assert NO_CONFIDENT_MATCH not in render_trace(fine).split("\n", 2)[2]
    assert "og-unconfident" not in result_html(fine) and 'data-confident="false"' not in result_html(fine)


# -- what a world holds, and files that mix tasks ---------------------------------------------------

def test_a_file_of_several_tasks_gives_each_task_its_items(tmp_path):
    mixed = tmp_path / "mixed.json"
    items = [{"task": "single-hop", "id": "s1", "question": "Q?", "answers": ["A"], "ctxs": []},
             {"task": "entity-linking", "id": "e1", "text": "Paris.", "labels": []},
             {"task": "single-hop", "id": "s2", "question": "R?", "answers": ["B"], "ctxs": []}]
    mixed.write_text(json.dumps(items))
    data = load_dataset(mixed, "single-hop")
    assert [e.id for e in data.examples] == ["s1", "s2"] and data.positions == [0, 2]
    assert "1 entity-linking" in data.warnings[0]
    assert load_dataset(mixed).task == "single-hop"  # the first item's own task
    with pytest.raises(ValueError, match="has no multi-hop items"):
        load_dataset(mixed, "multi-hop")


def test_world_overview_reads_the_index_and_the_evaluation_files(tmp_path):
    from onegen.documents import Document

    qa = {"question": "Which club did Ivo play for?", "answers": ["X"], "ctxs": []}
    (tmp_path / "singlehop.json").write_text(json.dumps([{"id": "a", **qa}]))
    (tmp_path / "singlehop-paraphrased.json").write_text(json.dumps([{"id": "a-p", **qa, "question": "ivo's club"}]))
    (tmp_path / "out-of-world.json").write_text(json.dumps([{"task": "single-hop", "id": "o", **qa}]))
    (tmp_path / "entities.jsonl").write_text(json.dumps({"id": "H1", "name": "Ivo"}) + "\n")
    docs = [Document("H1", "Ivo", "", extra={"type": "person"}), Document("H2", "Velor", "", extra={"type": "country"}),
            Document("H3", "Ada", "", extra={"type": "person"})]
    overview = world_overview(docs, tmp_path)
    assert overview.types == [("person", 2), ("country", 1)]
    assert [n.name for n in overview.names["person"]] == ["Ivo", "Ada"]
    assert [(q.wording, q.text) for q in example_questions(tmp_path)] == [
        ("template", "Which club did Ivo play for?"), ("paraphrased", "ivo's club")]
    assert overview.questions("single-hop") == ["Which club did Ivo play for?", "ivo's club"]
    page = world_html(overview, "entity-linking")
    assert "?browse=entity-linking&amp;doc=H1" in page and 'href="?browse=entity-linking"' in page
    assert "ivo&#x27;s club" in page and "paraphrased" in page and "og-measured" not in page  # no result files


def test_each_example_question_shows_how_the_model_scored_on_questions_like_it():
    """The world's description states, beside each example, the score of the bundled result file
    that asked questions of its type from its file with the app's own index; controls, free
    decoding and another index's runs are never used."""
    from onegen.app_state import AppState
    from onegen.render_html import measured_line
    from onegen.world_overview import ExampleQuestion, WorldOverview, measured_scores

    results = Path(__file__).resolve().parents[1] / "assets" / "results"
    names = ["heldout-multi-hop-paraphrased.jsonl", "heldout-multi-hop-random-paragraphs.jsonl",
             "heldout-entity-linking-free.jsonl", "heldout-entity-linking.jsonl"]
    sets = [load_results(results / n) for n in names]
    fingerprints = {rs.task: rs.run["index_fingerprint"] for rs in sets}
    lines = [json.loads(x) for x in (results / names[0]).read_text().splitlines()]
    right = sum(x["onegen"]["scores"]["em"] == 1.0 for x in lines if x["type"] == "inference")
    scores = measured_scores(sets, fingerprints)
    inference = scores["multi-hop", "inference", "multihop-paraphrased.json"]
    assert (inference.metric, inference.examples, round(inference.value * 100)) == ("EM", 100, right)
    assert scores["multi-hop", "", "multihop-paraphrased.json"].examples == len(lines) == 400
    assert {s.file for s in scores.values()} == {names[0], names[3]}  # not the control, not free decoding
    assert scores["entity-linking", "", "entity_linking.jsonl"].metric == "F1"
    assert measured_scores(sets, {"multi-hop": "another index"}) == {}

    asked = ExampleQuestion("multi-hop", "inference", "paraphrased", "Who is Ivo's mom?", "multihop-paraphrased.json")
    other = ExampleQuestion("multi-hop", "inference", "template", "Who is the mother of Ivo?", "unmeasured.json")
    page = world_html(WorldOverview([], {}, [asked, other], scores), None)
    assert f"right in {right} of 100 held-out questions like it, in wordings it never trained on" in page
    assert page.count("og-measured") == 1
    # After a run: the rates of its task and type, the training wording first.
    line = measured_line(WorldOverview([], {}, [], scores).measured_like("multi-hop", "inference"), "inference")
    assert f"this an inference question. On held-out inference questions the model was right in {right} of 100 in " \
           "wordings it never trained on." in line
    linking = WorldOverview([], {}, [], scores).measured_like("entity-linking")
    assert [w for w, _ in linking] == ["template"] and "its links scored F1 0.97 in its training wording" in \
        measured_line(linking)
    assert measured_line([]) == ""
    # The app finds the same runs for the embedded default: the indexes it loads wrote them.
    overview = AppState().world().overview
    shown = [q for q in overview.examples if (q.kind, q.wording) == ("inference", "paraphrased")]
    assert shown and overview.score(shown[0]) == inference


def test_a_chain_s_sub_questions_give_the_world_s_question_type():
    """The model writes its sub-questions in the world's trained forms, so their shape says which
    type of question it took the input for; on the template held-out runs it agrees with the gold
    type almost always (394 of 400 when written; the rest are chains that went astray)."""
    from onegen.world_overview import chain_type

    assert chain_type(["First, who is the father of Ivo Brandel?", "Second, who is the spouse of Aron Brandel?"]) \
        == "inference"
    assert chain_type(["First, when was Velor founded?", "Second, when was Corvale founded?"]) == "comparison"
    assert chain_type(["First, who directed the film Ash?", "Second, where was Ivo Brandel born?"]) == "compositional"
    assert chain_type(["First, a?", "Second, b?", "Third, c?", "Fourth, d?"]) == "bridge_comparison"
    assert chain_type(["First, who directed the film Ash?"]) is None and chain_type([]) is None
    lines = [json.loads(x) for x in (Path(__file__).resolve().parents[1] / "assets" / "results" /
                                     "heldout-multi-hop.jsonl").read_text().splitlines()]
    agree = sum(chain_type([h["question"] for h in x["trace"]["result"]["hops"]]) == x["type"] for x in lines)
    assert agree >= 0.97 * len(lines)


# -- what an entity-linking result rests on -------------------------------------------------------

def test_an_entity_linking_result_rests_on_the_links_it_kept():
    from onegen.calibration import result_retrievals
    from onegen.render_text import run_confidence_words
    from onegen.trace import LinkedEntity, Result

    kept = LinkedEntity("Stona Athletic", 8, 22, "id-s", "Stona Athletic", 0.9, 0)
    refused = LinkedEntity("Believe it", 30, 40, "id-f", "Ferine Suzasane", 0.5, 1, alignment="no-shared-word")
    rs = [retrieval(0, 0.9, confident=True), retrieval(1, 0.5, confident=False)]
    trace = Trace(task="entity-linking", mode="onegen", model={}, input="x", prompt_text="p", prompt_ids=[1],
                  retrievals=rs, result=Result(entities=[kept], unlinked=[refused]))
    # The refused aside keeps its own flag, but the links shown do not stand on it.
    assert result_retrievals(trace) == [rs[0]] and run_confidence(result_retrievals(trace)) is True
    # Nothing kept: the run rests on every mention it marked, so an unknown sentence stays flagged.
    trace.result = Result(entities=[], unlinked=[kept, refused])
    assert result_retrievals(trace) == rs and run_confidence(result_retrievals(trace)) is False
    trace.result.confident = False
    assert "retrieval 2 of 2" in run_confidence_words(trace)
    # A kept link below the threshold flags the run, and only it is named.
    trace.result = Result(entities=[LinkedEntity("Believe it", 30, 40, "id-f", "F", 0.5, 1)], confident=False)
    assert result_retrievals(trace) == [rs[1]] and "retrieval 2 of 2" in run_confidence_words(trace)
    qa = Trace(task="multi-hop", mode="onegen", model={}, input="q", prompt_text="p", prompt_ids=[1], retrievals=rs)
    assert result_retrievals(qa) == rs


def test_an_entity_linking_result_with_some_confident_links_names_the_others():
    from onegen.render_html import invented_world_line
    from onegen.render_text import run_confidence_words
    from onegen.tasks import get_task
    from onegen.trace import LinkedEntity, Result

    rs = [retrieval(0, 0.9, confident=True), retrieval(1, 0.6, confident=False)]
    links = [LinkedEntity("Stona", 0, 5, "id-s", "Stona", 0.9, 0),
             LinkedEntity("Thudora", 9, 16, "id-t", "Thudora", 0.6, 1)]
    trace = Trace(task="entity-linking", mode="onegen", model={}, input="x", prompt_text="p", prompt_ids=[1],
                  retrievals=rs, result=Result(entities=links, confident=False))
    words = run_confidence_words(trace)
    assert "retrieval 2 of 2" in words and "its link ('Thudora' -> Thudora) does not rest" in words
    assert words.endswith("the other 1 link does.")
    el = get_task("entity-linking")
    partial = invented_world_line(["Stona lies in Velor."], el.asked, el.answerable, weak_links=1, links=2)
    assert "no confident match for 1 of the 2 linked mentions" in partial and "Texts it can link" in partial
    assert "nothing about this text" in invented_world_line([], el.asked, el.answerable, weak_links=2, links=2)
    # Every link in doubt, or a question: the result as a whole rests on no document of the index.
    trace.result = Result(entities=links[1:], confident=False)
    assert "so the result does not rest on a document" in run_confidence_words(trace)
    mh = get_task("multi-hop")
    assert "nothing about what you asked" in invented_world_line(["Q?"], mh.asked, mh.answerable)


# -- the run's confidence is judged after the result checks -----------------------------------------

def test_a_refused_link_does_not_flag_the_run(models, monkeypatch):
    """Two linked mentions, one retrieval below the threshold: when the name check refuses that
    link, the run rests on the other one only, so it is not flagged (the engine judges the run
    after the checks)."""
    lm = models["entity-linking"]
    index = build_index(lm, "entity-linking", ENTITIES)
    retriever = IndexRetriever(index)
    t = lambda s: text_ids(lm, "entity-linking", s)  # noqa: E731
    link = [tid(lm, LK), tid(lm, CONTINUE)]
    ids = t("<MENTION>Ivo Brandel</MENTION>") + link + t(", who had come from <MENTION>Rome</MENTION>") + link
    run = lambda: Engine(lm, chooser=LongestSecondChooser(lm, ids)).run_trace(  # noqa: E731
        "entity-linking", "Ivo Brandel, who had come from Rome, lives in Paris.", retriever=retriever,
        settings=RunSettings(name_alignment="off"))
    plain = run()
    top = [r.hits[0].score for r in plain.retrievals]
    assert len(top) == 2 and top[0] != top[1] and len(plain.result.entities) == 2
    low = top.index(min(top))
    retriever.calibration = Calibration(protocol="entity-linking", mode="onegen", model_fingerprint="m",
                                        index_fingerprint="f", signal="top1", threshold=sum(top) / 2,
                                        rule="test", gold=ScoreRange.of([0.9]))
    flagged = run()
    assert [r.confident for r in flagged.retrievals] == [i != low for i in range(2)]
    assert flagged.result.confident is False  # both links kept: one rests on a low retrieval

    task = type(get_task("entity-linking"))

    def refuse_low(self, trace, text):  # stands in for the name check refusing the low link
        kept = [e for e in trace.result.entities if e.retrieval != low]
        trace.result.unlinked = [e for e in trace.result.entities if e.retrieval == low]
        trace.result.entities = kept

    monkeypatch.setattr(task, "check_result", refuse_low)
    checked = run()
    assert checked.retrievals[low].confident is False and len(checked.result.entities) == 1
    assert checked.result.confident is True
