"""Answer alignment (onegen/answer_alignment.py): an answer misspelt while copying becomes the phrase
of the documents the run read that it meant, and nothing else changes."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from onegen import render_html as R
from onegen.answer_alignment import align_answer, aligned_answer
from onegen.render_text import result_block
from onegen.tasks import get_task
from onegen.trace import Hit, Result, Retrieval, Trace

PASSAGE = ("Hudroltvale is a city in Prirburora. The film Bridge over Vodra was directed by Drasmel Teprammar. "
           "Trovurgrad is a Girgirneshi town in Girgirnesh.")


@pytest.mark.parametrize("written, meant", [
    ("Pirburora", "Prirburora"),  # a letter dropped after the first
    ("Dasmel Teprammar", "Drasmel Teprammar"),  # in a name of two words
    ("Girgir", "Girgirnesh"),  # cut short: the shortest phrase that continues it, not "Girgirneshi"
    ("prirburora", None),  # there in another casing: stands as written
    ("Drasmel Teprammar", None),
    ("1967", None),  # no letter: a digit off is another number
    ("Kasgaltano", None),  # nothing close
    ("", None),
])
def test_an_answer_becomes_the_phrase_it_meant_to_copy(written, meant):
    assert aligned_answer(written, [PASSAGE]) == meant


def test_two_phrases_as_close_leave_the_answer_alone():
    assert aligned_answer("Bola", ["Bona and Bolo met."]) is None
    assert aligned_answer("Bola", ["Bona met Bona."]) == "Bona"


def test_off_changes_nothing_and_other_settings_are_refused():
    assert align_answer("Pirburora", [PASSAGE], "off") is None
    with pytest.raises(ValueError, match="answer alignment must be one of"):
        align_answer("Pirburora", [PASSAGE], "strict")


def _single_hop(answer: str, policy: str) -> Trace:
    hit = Hit(rank=0, id="p1", title="Hudroltvale", score=0.9, text=PASSAGE)
    r = Retrieval(step=0, position=10, token="[Retrieval]", query_text="q", query_source="hidden-state", hits=[hit],
                  chosen=0, inserted_text=f"<paragraph>{PASSAGE}</paragraph>", inserted_tokens=40)
    return Trace(task="single-hop", mode="onegen", model={}, input="Which country is Hudroltvale part of?",
                 prompt_text="p", prompt_ids=[1], retrievals=[r], settings={"answer_alignment": policy},
                 result=Result(answer=answer, final_answer_found=True, reflection_tokens=[]), stop_reason="eos")


def test_the_run_keeps_the_models_answer_beside_the_aligned_one():
    task = get_task("single-hop")
    trace = _single_hop("Pirburora", "snap")
    task.check_result(trace, trace.input)
    assert (trace.result.answer, trace.result.model_answer) == ("Prirburora", "Pirburora")
    assert Trace.from_json(trace.to_json()).result.model_answer == "Pirburora"
    assert "the model answered 'Pirburora'" in result_block(trace)
    html = R.result_html(trace)
    assert "og-aligned" in html and "Pirburora" in html
    from onegen.render_compare import _answer  # the Compare tab's answer row says it too
    assert "og-aligned" in _answer("onegen", trace) and "Pirburora" in _answer("onegen", trace)
    records = [SimpleNamespace(trace=trace, scores={"em": 1.0, "f1": 1.0}, example=SimpleNamespace(answers=["Prirburora"])),
               SimpleNamespace(trace=_single_hop("Prirburora", "snap"), scores={"em": 1.0, "f1": 1.0},
                               example=SimpleNamespace(answers=["Prirburora"]))]
    assert task.answers_as_written(records) == {"em": 0.5, "f1": 0.5, "changed": 1}


def test_without_the_check_the_answer_and_json_are_as_before():
    task = get_task("single-hop")
    trace = _single_hop("Pirburora", "off")
    task.check_result(trace, trace.input)
    assert trace.result.answer == "Pirburora" and trace.result.model_answer is None
    assert "model_answer" not in trace.to_dict()["result"]
    assert task.answers_as_written([SimpleNamespace(trace=trace, scores={"em": 0.0},
                                                    example=SimpleNamespace(answers=["Prirburora"]))]) is None
