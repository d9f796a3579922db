"""The Task interface: every task answers every method on a tiny example, the metrics objects keep
the JSON keys `onegen evaluate` prints, and the modules that used to compare task names do not
any more."""
from __future__ import annotations

import dataclasses
import io
import json
import tokenize
from pathlib import Path

import pytest

from onegen.documents import Document
from onegen.error_analysis import ErrorCategory
from onegen.evaluation import EvaluationError, EvaluationSettings, ExampleRecord
from onegen.metrics import ELMetrics, ELSpanScores, EvaluatedWith, QAMetrics
from onegen.tasks import TASK_NAMES, TASKS, Task, TaskError, get_task
from onegen.trace import Hit, LinkedEntity, Result, Retrieval, TokenRecord, Trace

ROOT = Path(__file__).resolve().parents[1]

TEXT = "Paris is in France."
ITEMS = {
    "entity-linking": {"id": "d1", "title": "", "text": TEXT, "labels": [
        {"id": 0, "span": [0, 5], "entity_id": "Q90", "name": "Paris"},
        {"id": 1, "span": [12, 18], "entity_id": "Q142", "name": "France", "ambiguous": True}]},
    "multi-hop": {"_id": "q1", "type": "bridge", "question": "Where was the director of Film A born?",
                  "answer": "Corvale", "context": [["Film A", ["Film A is by Ivo."]], ["Ivo", ["Ivo was born in Corvale."]]],
                  "supporting_facts": [["Film A", 0], ["Ivo", 0]]},
    "single-hop": {"id": "s1", "question": "Where was Ivo born?", "answers": ["Corvale"],
                   "ctxs": [{"id": "w1", "title": "Ivo", "text": "Ivo was born in Corvale."}]},
}
SEGMENTS = {"entity-linking": "<MENTION>Paris</MENTION>", "multi-hop": "Film A is by Ivo. Where was Ivo born?",
            "single-hop": " Where was Ivo born? "}
QUERIES = {"entity-linking": "Paris", "multi-hop": "Where was Ivo born?", "single-hop": "Where was Ivo born?"}


def example(name):
    return get_task(name).item_parser()(json.loads(json.dumps(ITEMS[name])), 0)


def hit(id_, title):
    return Hit(rank=0, id=id_, title=title, score=0.9, text=f"text of {title}")


def finished_trace(name):
    """A run that got its example right, with the result the engine would fill."""
    if name == "entity-linking":
        rs = [Retrieval(step=i, position=pos, token="[LK]", query_text=m, query_source="hidden-state",
                        hits=[hit(qid, m)], chosen=0)
              for i, (pos, m, qid) in enumerate(((3, "Paris", "Q90"), (6, "France", "Q142")))]
        tokens = [TokenRecord(id=7, text="<MENTION>Paris</MENTION>", kind="generated", position=2),
                  TokenRecord(id=99, text="[LK]", kind="generated", position=3),
                  TokenRecord(id=7, text=" is in <MENTION>France</MENTION>", kind="generated", position=5),
                  TokenRecord(id=99, text="[LK]", kind="generated", position=6)]
        result = Result(output_text="<MENTION>Paris</MENTION>[LK][_CONTINUE_] is in "
                                    "<MENTION>France</MENTION>[LK][_CONTINUE_].",
                        entities=[LinkedEntity("Paris", 0, 5, "Q90", "Paris", 0.9, 0),
                                  LinkedEntity("France", 12, 18, "Q142", "France", 0.9, 1)])
    elif name == "multi-hop":
        rs = [Retrieval(step=i, position=10 * (i + 1), token="[QR]", query_text=q, query_source="hidden-state",
                        hits=[hit(f"q1#{i}", t)], chosen=0)
              for i, (q, t) in enumerate((("Who directed Film A?", "Film A"), ("Where was Ivo born?", "Ivo")))]
        tokens = []
        result = Result(output_text="<FINAL-ANSWER>Corvale</FINAL-ANSWER>", answer="Corvale", final_answer_found=True)
    else:
        rs = [Retrieval(step=0, position=1, token="[QR]", query_text="Where was Ivo born?",
                        query_source="hidden-state", hits=[hit("w1", "Ivo")], chosen=0)]
        tokens = [TokenRecord(id=5, text="Corvale", kind="generated", position=4)]
        result = Result(output_text="Corvale", answer="Corvale", final_answer_found=True)
    return Trace(task=name, mode="onegen", model={}, input="x", prompt_text="p", prompt_ids=[], tokens=tokens,
                 retrievals=rs, result=result, stop_reason="eos", settings={"max_retrievals": 3})


def record(name, trace):
    task, ex = get_task(name), example(name)
    scores = task.score_example(ex, trace)
    return ExampleRecord(key=ex.id, example=ex, trace=trace, error=None, seconds=0.5, scores=scores,
                         categories=task.categorize(ex, trace), line=task.result_line(ex, trace, 99))


@pytest.mark.parametrize("name", TASK_NAMES)
def test_every_task_answers_every_method(name):
    task = get_task(name)
    assert isinstance(task, Task) and task.name == name == task.spec.name and task.label
    assert task.index_kind in ("entities", "paragraphs", "passages")
    assert task.default_candidates == task.candidate_modes[0] and set(task.candidate_modes) <= {"context", "index"}
    assert task.query_text(SEGMENTS[name]) == QUERIES[name]

    ex = example(name)
    assert isinstance(ex, task.example_class) and task.looks_like(ITEMS[name])
    task.expect(ex)
    text = task.example_input(ex)
    assert text in (TEXT, ITEMS[name].get("question"))
    if "context" in task.candidate_modes:
        docs = task.context_documents(ex)
        assert docs and all(isinstance(d, Document) for d in docs)
        assert all(bool(d.sentences) == task.spec.vectors_per_sentence for d in docs)
    else:
        with pytest.raises(TaskError):
            task.context_documents(ex)

    trace = finished_trace(name)
    scores = task.score_example(ex, trace)
    assert scores["f1"] == 1.0
    task.keep_recorded_scores(scores, {}, None)
    assert task.categorize(ex, trace) == []
    line = task.result_line(ex, trace, 99)
    assert {k: line[k] for k in ITEMS[name]} == ITEMS[name]  # the test item, unchanged, then the outputs
    assert set(line) - set(ITEMS[name]) == ({"output", "output_qid", "trace"} if name == "entity-linking"
                                            else {"input", "output", "trace"})
    failed = task.result_line(ex, None, 99)
    assert "trace" not in failed and "output" in failed

    rec = record(name, trace)
    metrics = task.aggregate([rec], result_lines=[rec.line])
    figures = metrics.to_dict()
    assert figures["task"] == name and figures["examples"] == 1 and figures["errors"] == 0
    key, label = task.headline
    assert figures[key] == 1.0 and label
    assert set(task.compared_metrics) <= set(figures)
    assert task.prediction_text(rec) and task.gold_text(ex)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_a_wrong_example_is_scored_and_categorized(name):
    task, ex = get_task(name), example(name)
    trace = finished_trace(name)
    trace.result = Result(output_text="", answer=None, entities=[])
    scores = task.score_example(ex, trace)
    assert scores["f1"] == 0.0
    cats = task.categorize(ex, trace)
    assert cats and all(isinstance(c, ErrorCategory) for c in cats)
    with pytest.raises(TypeError):
        task.categorize(example(next(n for n in TASK_NAMES if n != name)), trace)


def test_ambiguity_the_run_recorded_is_kept_when_rescoring_without_the_index():
    task, ex = get_task("entity-linking"), example("entity-linking")
    scores = task.score_example(ex, finished_trace("entity-linking"))
    assert scores["ambiguous"] == 1 and scores["ambiguous_correct"] == 1  # the label marked "ambiguous"
    task.keep_recorded_scores(scores, {"ambiguous": 2, "ambiguous_correct": 1}, None)
    assert scores["ambiguous"] == 2 and scores["ambiguity_recorded"] is True


def test_the_registry_and_the_dataset_detection_agree():
    from onegen.datasets import detect_task, parse_example

    assert TASK_NAMES == tuple(TASKS) and len(set(t.index_kind for t in TASKS.values())) == len(TASKS)
    for name in TASK_NAMES:
        assert detect_task(ITEMS[name]) == name
        assert isinstance(parse_example(name, ITEMS[name]), get_task(name).example_class)
    with pytest.raises(ValueError, match="unknown task"):
        get_task("ranking")


# -- the settings and metrics objects --------------------------------------------------------------

def test_evaluation_settings_pick_and_refuse_candidate_modes():
    el, mh = get_task("entity-linking"), get_task("multi-hop")
    assert EvaluationSettings().candidates_for(el) == "index"
    assert EvaluationSettings().candidates_for(mh) == "context"
    assert EvaluationSettings(candidates="index").candidates_for(mh) == "index"
    with pytest.raises(EvaluationError, match="not 'context'"):
        EvaluationSettings(candidates="context").candidates_for(el)
    with pytest.raises(EvaluationError, match="unknown candidates"):
        EvaluationSettings(candidates="web").candidates_for(mh)
    with pytest.raises(EvaluationError, match="top_k"):
        EvaluationSettings(top_k=0).check()
    with pytest.raises(EvaluationError, match="control"):
        EvaluationSettings(control="shuffle").check()


COMMON = dict(task="x", examples=2, errors=0, resumed=1, retrieval_limit_hits=0, stop_reasons={"eos": 2},
              error_categories={}, seconds_per_example_median=0.5, seconds_total=1.0)


def test_metrics_keep_the_json_keys_in_their_order():
    el = ELMetrics(**COMMON, precision=1.0, recall=0.5, f1=2 / 3, tp=1, fp=0, fn=1, gold_mentions=2,
                   predicted_mentions=1, authors_scorer={"precision": 1.0, "recall": 0.5, "f1": 2 / 3},
                   ambiguous_mentions=0, ambiguous_accuracy=None, ambiguity_from="labels",
                   run=EvaluatedWith(model="m", candidates="index", control=None, top_k=5, copy_input=True,
                                     copy_overrides=0))
    assert list(el.to_dict()) == [
        "task", "examples", "errors", "skipped", "resumed", "precision", "recall", "f1", "tp", "fp", "fn", "gold_mentions",
        "predicted_mentions", "authors_scorer", "ambiguous_mentions", "ambiguous_accuracy", "ambiguity_from",
        "retrieval_limit_hits", "stop_reasons", "error_categories", "seconds_per_example_median", "seconds_total",
        "model", "candidates", "control", "top_k", "copy_input", "copy_overrides"]
    # Span figures and the early-close setting come after the keys readers already know.
    spans = ELSpanScores(precision=1.0, recall=0.5, f1=2 / 3, tp=1, fp=0, fn=1, linked_right=1)
    el = dataclasses.replace(el, spans=spans, run=dataclasses.replace(el.run, early_close=True, model_opens=True))
    assert list(el.to_dict()) == [
        "task", "examples", "errors", "skipped", "resumed", "precision", "recall", "f1", "tp", "fp", "fn", "gold_mentions",
        "predicted_mentions", "authors_scorer", "ambiguous_mentions", "ambiguous_accuracy", "ambiguity_from",
        "span_precision", "span_recall", "span_f1", "span_tp", "span_fp", "span_fn", "linking_accuracy",
        "retrieval_limit_hits", "stop_reasons", "error_categories", "seconds_per_example_median", "seconds_total",
        "model", "candidates", "control", "top_k", "copy_input", "copy_overrides", "early_close", "model_opens"]
    assert el["linking_accuracy"] == 1.0
    qa = QAMetrics(**COMMON, em=1.0, f1=1.0, match=1.0, precision=1.0, recall=1.0, retrieval={}, no_final_answer=0)
    assert list(qa.to_dict()) == [
        "task", "examples", "errors", "skipped", "resumed", "em", "f1", "match", "precision", "recall", "retrieval",
        "no_final_answer", "retrieval_limit_hits", "stop_reasons", "error_categories",
        "seconds_per_example_median", "seconds_total"]
    # The read-only Mapping view the renderers still use.
    assert qa["em"] == 1.0 and qa.get("by_type") is None and "by_type" not in qa and dict(qa) == qa.to_dict()
    assert "em" not in QAMetrics(**COMMON).to_dict()  # nothing scored: no averages rather than a fake 0


def test_shipped_result_files_score_to_plain_json():
    from onegen.results import load_results

    files = sorted((ROOT / "assets" / "results").glob("*.jsonl"))
    if not files:
        pytest.skip("no shipped result files")
    for path in files:
        m = load_results(path).metrics
        assert json.loads(json.dumps(m.to_dict())) == m.to_dict()


# -- no module compares task names any more ---------------------------------------------------------

TASK_AGNOSTIC = [
    "onegen/evaluation.py", "onegen/results.py", "onegen/error_analysis.py", "onegen/metrics.py",
    "onegen/datasets.py", "onegen/model_card.py", "onegen/commands/evaluate.py", "onegen/commands/run.py",
    "onegen/commands/card.py", "onegen/commands/compare.py", "onegen/commands/export.py", "onegen/gold.py",
    "index_builder/sources/world.py",
    "index_builder/__main__.py", "index_builder/build.py",
]


def task_name_comparisons(source: str) -> list[str]:
    """Lines that branch on a task name literal: the literal next to ==, != or `in` on its line, a
    dict keyed by it, a `case` on it, or two task names on one line (a copied list of tasks).
    Naming one task as a value (a default, an argument) is not a comparison."""
    found = []
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline)
              if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.INDENT, tokenize.DEDENT)]
    line: list[tokenize.TokenInfo] = []
    for tok in tokens + [None]:
        if tok is not None and tok.type not in (tokenize.NEWLINE, tokenize.ENDMARKER):
            line.append(tok)
            continue
        names = [i for i, t in enumerate(line) if t.type == tokenize.STRING and _literal(t.string) in TASK_NAMES]
        compares = any(t.string in ("==", "!=", "in", "case") for t in line)
        keyed = any(i + 1 < len(line) and line[i + 1].string == ":" for i in names)
        if names and (compares or keyed or len(names) > 1):
            found.append(line[names[0]].line.strip())
        line = []
    return found


def _literal(text: str) -> str | None:
    import ast

    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    return value if isinstance(value, str) else None


def test_the_guard_catches_each_kind_of_comparison():
    assert task_name_comparisons('if task == "multi-hop":\n    pass\n')
    assert task_name_comparisons('x = "a" if t != "entity-linking" else "b"\n')
    assert task_name_comparisons('ok = task in (None, "entity-linking")\n')
    assert task_name_comparisons('LABELS = {\n    "entity-linking": "EL",\n}\n')
    assert task_name_comparisons('TASKS = ("entity-linking", "multi-hop", "single-hop")\n')
    assert task_name_comparisons('match task:\n    case "single-hop":\n        pass\n')
    assert not task_name_comparisons('load(path, "entity-linking", parse)\ntask: str = "entity-linking"\n')
    assert not task_name_comparisons('"""Docs may say: if task == "multi-hop"."""\n')


@pytest.mark.parametrize("module", TASK_AGNOSTIC)
def test_module_never_compares_task_names(module):
    assert task_name_comparisons((ROOT / module).read_text(encoding="utf-8")) == []
