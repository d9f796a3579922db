"""The renderers choose a view by what a trace's result holds and ask the Task for labels and flags:
no renderer compares task names, and every stop reason has words."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import get_args

import pytest

from onegen import render_html as R
from onegen.render_compare import axis_ticks
from onegen.render_text import PHASE_LABELS, STOP_REASONS, copy_note, result_block, stop_words
from onegen.tasks import TASK_NAMES, get_task
from onegen.trace import PHASES, Hop, LinkedEntity, Result, Retrieval, StopReason, Trace

RENDERERS = sorted((Path(__file__).resolve().parents[1] / "onegen").glob("render_*.py"))


def task_name_comparisons(source: str) -> list[str]:
    """Where a module spells a task name or compares something called `task` (`task ==`,
    `trace.task in (...)`)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and node.value in TASK_NAMES:
            found.append(f"line {node.lineno}: {node.value!r}")
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn))
                                                 for op in node.ops):
            for side in (node.left, *node.comparators):
                named = side.id if isinstance(side, ast.Name) else side.attr if isinstance(side, ast.Attribute) else ""
                if named == "task":
                    found.append(f"line {node.lineno}: compares {named}")
    return found


def test_the_guard_sees_a_comparison():
    assert task_name_comparisons('if trace.task == "multi-hop":\n    pass') != []
    assert task_name_comparisons('if task != other:\n    pass') != []
    assert task_name_comparisons('label = get_task(trace.task).label\nif task is None:\n    pass') == []


@pytest.mark.parametrize("path", RENDERERS, ids=lambda p: p.name)
def test_renderers_never_compare_task_names(path):
    assert task_name_comparisons(path.read_text()) == []


def _trace(task: str, result: Result, **kw) -> Trace:
    return Trace(task=task, mode="onegen", model={}, input="Paris and Rome.", prompt_text="p", prompt_ids=[1],
                 result=result, stop_reason=kw.pop("stop_reason", "eos"), **kw)


def test_the_view_follows_the_result_not_the_name():
    """A task this version does not know still shows what its result holds, under its raw name."""
    ents = _trace("future-task", Result(entities=[LinkedEntity("Paris", 0, 5, "d0", "Paris", 0.9, 0)]))
    assert "Linked mentions (1)" in R.result_html(ents) and "future-task" in R.result_html(ents)
    assert "Linked entities (1):" in result_block(ents)
    hops = _trace("future-task", Result(answer="Ivo", final_answer_found=True, hops=[Hop("who?", None, None, "Ivo.")]))
    assert "Hop 1" in R.result_html(hops) and "hop 1: 'who?'" in result_block(hops)
    refl = _trace("future-task", Result(answer="120000", reflection_tokens=["[Relevant]"]))
    assert "Reflection tokens" in R.result_html(refl) and "Reflection tokens: [Relevant]" in result_block(refl)
    nothing = _trace("multi-hop", Result(), stop_reason="context_full")
    assert "No result: the run did not finish" in R.result_html(nothing)
    assert "Answer: none" in result_block(nothing)


def test_labels_and_the_copy_constraint_come_from_the_task():
    assert R.TASK_LABELS == {name: get_task(name).label for name in TASK_NAMES}
    for name in TASK_NAMES:
        page = R.result_html(_trace(name, Result(answer="x")))
        assert get_task(name).label in page
        note = copy_note(_trace(name, Result(), settings={"copy_input": False}))
        assert bool(note) == get_task(name).copies_input


def test_every_stop_reason_and_phase_has_words():
    assert set(get_args(StopReason)) <= set(STOP_REASONS)
    assert set(PHASES) | {"total"} <= set(PHASE_LABELS)
    for reason in ("no_hits", "retrieval_limit"):
        trace = _trace("multi-hop", Result(hops=[]), stop_reason=reason)
        words, kind = stop_words(trace)
        assert kind == "warn" and "_" not in words and len(words.split()) >= 5  # a sentence, not the code
        assert f"Stopped: {words}." in result_block(trace)
        assert words in R.result_html(trace) and f'data-stop="{reason}"' in R.result_html(trace)


@pytest.mark.parametrize("lo, hi", [(0.95, 1.6), (0.97, 3.1), (0.5, 12.0), (0.9, 1.0), (0.0, 100.0), (1.2, 1.21)])
def test_axis_ticks_are_round_and_inside(lo, hi):
    ticks = axis_ticks(lo, hi)
    assert 2 <= len(ticks) <= 8 and ticks == sorted(ticks)
    assert lo - 1e-9 <= ticks[0] and ticks[-1] <= hi + 1e-9
    steps = {round(b - a, 6) for a, b in zip(ticks, ticks[1:])}
    assert len(steps) == 1


def test_a_step_that_inserts_nothing_is_explained_by_the_protocol():
    lk = Retrieval(step=0, position=3, token="[LK]", query_text="Paris", query_source="hidden-state", hits=[],
                   chosen=None)
    assert ("Entity linking only reads the query vector; the protocol forces <code>[_CONTINUE_]</code> and the "
            "model goes on rewriting the text.") in R.step_html(lk, "entity-linking")
    qr = Retrieval(step=0, position=3, token="[Question Representation]", query_text="Who?",
                   query_source="hidden-state", hits=[], chosen=None)
    for task in ("multi-hop", "future-task"):  # documents arrive after the search
        assert "Inserted into the context: nothing yet" in R.step_html(qr, task)
