"""Entity-linking span scores: mention boundaries apart from linking, and linking accuracy on the
mentions whose span is right, hand-computed and through the task's aggregate."""
from __future__ import annotations

import pytest

from onegen.datasets import parse_el_item
from onegen.evaluation import ExampleRecord
from onegen.metrics import ELSpanDocument, el_span_scores
from onegen.tasks import get_task
from onegen.trace import Hit, LinkedEntity, Result, Retrieval, Trace


def test_spans_count_boundaries_whatever_the_entity():
    doc = ELSpanDocument(gold=[((0, 5), "Q90"), ((10, 16), "Q142"), ((20, 24), "Q64")],
                         predictions=[((0, 5), "Q90"),        # right span, right entity
                                      ((10, 16), "Q30"),      # right span, wrong entity
                                      ((20, 31), "Q64"),      # span swallowed the words after it
                                      (None, "Q1")])          # not in the text
    s = el_span_scores([doc])
    assert (s.tp, s.fp, s.fn, s.linked_right) == (2, 2, 1, 1)
    assert s.precision == pytest.approx(0.5) and s.recall == pytest.approx(2 / 3)
    assert s.f1 == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert s.linking_accuracy == pytest.approx(0.5)


def test_unknown_labels_cancel_one_prediction_and_documents_stay_apart():
    docs = [ELSpanDocument(gold=[((0, 5), "Unknown"), ((6, 9), "Q1")],
                           predictions=[((0, 5), "Q7"), ((0, 5), "Q7"), ((6, 9), "Q1")]),
            ELSpanDocument(gold=[], predictions=[((6, 9), "Q1")])]
    s = el_span_scores(docs)
    # The Unknown span drops one of the two predictions there; the other is spurious, and the
    # second document's (6, 9) does not match the first's.
    assert (s.tp, s.fp, s.fn, s.linked_right) == (1, 2, 0, 1)


def test_duplicate_spans_are_a_multiset_and_no_right_span_means_no_accuracy():
    s = el_span_scores([ELSpanDocument(gold=[((0, 5), "Q1")], predictions=[((0, 5), "Q2"), ((0, 5), "Q1")])])
    assert (s.tp, s.fp, s.fn, s.linked_right) == (1, 1, 0, 1)
    empty = el_span_scores([ELSpanDocument(gold=[((0, 5), "Q1")], predictions=[])])
    assert (empty.precision, empty.recall, empty.f1, empty.linking_accuracy) == (0.0, 0.0, 0.0, None)


TEXT = "Ivo Brandel, who had come from Rome, lives in Paris."


def _record(entities):
    item = {"id": "d1", "title": "d1", "text": TEXT, "labels": [
        {"id": "m0", "span": [0, 11], "entity_id": "Q1"},
        {"id": "m1", "span": [30, 35], "entity_id": "Q220"},  # " Rome": gold spans are compared stripped
        {"id": "m2", "span": [46, 51], "entity_id": "Q90"}]}
    ex = parse_el_item(item, 0)
    rs = [Retrieval(step=i, position=i, token="[LK]", query_text=e.mention, query_source="hidden-state",
                    hits=[Hit(rank=0, id=e.entity_id, title=e.title, score=0.9, text="")], chosen=0)
          for i, e in enumerate(entities)]
    trace = Trace(task="entity-linking", mode="onegen", model={}, input=TEXT, prompt_text="", prompt_ids=[],
                  retrievals=rs, result=Result(entities=entities), stop_reason="eos")
    task = get_task("entity-linking")
    return ExampleRecord(key="d1", example=ex, trace=trace, error=None, seconds=0.1,
                         scores=task.score_example(ex, trace), categories=[], line={})


def test_aggregate_reports_spans_apart_from_the_end_to_end_score():
    # The first mention swallowed ", who had come from"; Paris links to the wrong entity.
    entities = [LinkedEntity("Ivo Brandel, who had come from", 0, 30, "Q1", "Ivo Brandel", 0.9, 0),
                LinkedEntity("Rome", 31, 35, "Q220", "Rome", 0.9, 1),
                LinkedEntity("Paris", 46, 51, "Q91", "Paris (2)", 0.9, 2)]
    m = get_task("entity-linking").aggregate([_record(entities)])
    assert (m.tp, m.fp, m.fn) == (1, 2, 2)  # only Rome is right end to end
    assert (m["span_tp"], m["span_fp"], m["span_fn"]) == (2, 1, 1)
    assert m["span_precision"] == pytest.approx(2 / 3) and m["span_recall"] == pytest.approx(2 / 3)
    assert m["linking_accuracy"] == pytest.approx(0.5)  # Rome right, Paris wrong

    from onegen.commands.evaluate import _summary
    line = _summary(m)
    assert "spans P 0.667 R 0.667 F1 0.667" in line and "linking accuracy on right spans 0.500 (2)" in line

    right = [LinkedEntity("Ivo Brandel", 0, 11, "Q1", "Ivo Brandel", 0.9, 0), *entities[1:]]
    m = get_task("entity-linking").aggregate([_record(right)])
    assert (m["span_tp"], m["span_fp"], m["span_fn"]) == (3, 0, 0) and m.f1 < 1.0  # only the link to Paris is wrong


def test_a_shipped_result_file_shows_its_spans_in_the_error_browser():
    """Result files written before span figures existed are scored from their traces."""
    from pathlib import Path

    from onegen.render_results import metrics_html
    from onegen.results import load_results

    path = Path(__file__).resolve().parents[1] / "assets" / "results" / "heldout-entity-linking.jsonl"
    if not path.exists():
        pytest.skip("no shipped entity-linking result file")
    results = load_results(path)
    m = results.metrics
    assert m["span_tp"] + m["span_fn"] == m["gold_mentions"]
    assert m["span_tp"] >= m["tp"] and 0.0 < m["linking_accuracy"] <= 1.0
    html = metrics_html(results)
    assert "span P / R / F1" in html and f"of {m['span_tp']:,}" in html
