"""Input normalization: typed names take the index's case, an unfinished input gets its closing
mark, every edit is recorded in the trace, and a run reads the normalized text only when the model
(or the run) asks for it."""
from __future__ import annotations

import json

import pytest

from onegen.engine import Engine, RunSettings
from onegen.input_normalization import NameCaser, normalize_input
from onegen.render_html import result_html
from onegen.render_text import input_note, result_block
from onegen.replay import Choice, replay
from onegen.result_checks import CHECKS
from onegen.trace import Trace
from scripted import el_script, script
from tiny import ENTITIES

pytestmark = pytest.mark.usefixtures("one_thread")

TITLES = ["Clasen Grolane", "Derno Grolane", "Thosona (city)", "Orchard", "Orchard over Nagon", "It",
          "The Night of Haltandel"]


def read(text: str, closing: str = "?"):
    return normalize_input(text, NameCaser.from_titles(TITLES), closing=closing)


def test_a_typed_name_takes_the_index_case_and_keeps_its_place():
    r = read("who is clasen grolane's mom")
    assert r.text == "who is Clasen Grolane's mom?"
    name, mark = r.edits
    assert (name.start, name.end, name.before, name.after, name.kind) == (7, 21, "clasen grolane", "Clasen Grolane",
                                                                        "name_case")
    assert r.text[name.start:name.end] == name.after  # same positions: a span means the same characters
    assert (mark.start, mark.after, mark.kind) == (27, "?", "closing_mark")


def test_the_longest_name_wins_and_a_disambiguated_title_names_its_name():
    assert read("we saw orchard over nagon in thosona.").text == "we saw Orchard over Nagon in Thosona."
    assert [e.after for e in read("an orchard grows").edits] == ["Orchard", "?"]


@pytest.mark.parametrize("text", [
    "Who is Clasen Grolane?",  # already as the index spells it
    "what is it?",  # a title of three letters or fewer would recase every "it"
    "who are the grolanes?",  # whole words only: "grolanes" is not a name
    "clasen  grolane?",  # other spacing than the name's: only case may differ
])
def test_what_is_not_a_case_slip_of_a_name_stays(text):
    assert read(text).edits == []


def test_two_titles_differing_only_in_case_recase_neither():
    caser = NameCaser.from_titles(["Harvest Moon", "HARVEST MOON"])
    assert normalize_input("harvest moon?", caser, closing="?").edits == []


@pytest.mark.parametrize("text, closing, expected", [
    ("Mendorina Puzanard: mother", "?", "Mendorina Puzanard: mother?"),
    ("We flew to Bomora  ", ".", "We flew to Bomora.  "),  # trailing spaces stay after the mark
    ("born in 1827", ".", "born in 1827."),
    ("Tell me the country.", "?", "Tell me the country."),
    ('he said "Thosona"', ".", 'he said "Thosona"'),  # ends in a quote: left as typed
    ("", "?", ""),
])
def test_an_unfinished_input_gets_its_closing_mark(text, closing, expected):
    assert normalize_input(text, None, closing=closing).text == expected


@pytest.mark.parametrize("text", ["who is clasen grolane's mom", "THE NIGHT OF HALTANDEL by derno grolane",
                                  "Thosona", "what is it"])
def test_normalizing_twice_changes_nothing_and_the_trace_gives_back_the_typed_text(text):
    once = read(text)
    assert read(once.text).edits == []
    trace = Trace(task="multi-hop", mode="onegen", model={}, input=once.text, prompt_text="p", prompt_ids=[1],
                  input_edits=once.edits or None)
    assert trace.typed_input == text
    assert Trace.from_json(trace.to_json()) == trace


def test_a_trace_without_edits_writes_no_new_key():
    trace = Trace(task="multi-hop", mode="onegen", model={}, input="Who?", prompt_text="p", prompt_ids=[1])
    assert "input_edits" not in json.loads(trace.to_json())
    assert trace.typed_input == "Who?"


def test_the_setting_is_one_of_the_models_declared_ones():
    assert CHECKS["input_normalization"] == ("off", "normalize")


# -- runs ------------------------------------------------------------------------------------------

TYPED = "ivo brandel lives in paris"


def _run(models, monkeypatch, setting):
    lm = models["entity-linking"]
    script(monkeypatch, lm, el_script(lm))
    return Engine(lm).run_trace("entity-linking", TYPED, candidates=ENTITIES,
                                settings=RunSettings(copy_input=True, input_normalization=setting))


def test_a_normalizing_run_reads_the_index_spelling_and_says_so(models, monkeypatch):
    trace = _run(models, monkeypatch, "normalize")
    assert trace.input == "Ivo Brandel lives in Paris."
    assert trace.typed_input == TYPED
    assert trace.settings["input_normalization"] == "normalize"
    assert [e.kind for e in trace.input_edits] == ["name_case", "name_case", "closing_mark"]
    # The copy constraint copies what the model read.
    plain = trace.result.output_text
    for tag in ("<MENTION>", "</MENTION>", "[LK]", "[_CONTINUE_]", "</s>"):
        plain = plain.replace(tag, "")
    assert plain == trace.input
    # A linked mention is what was typed at its span, so it scores against the typed gold surfaces.
    assert all(e.mention == TYPED[e.start:e.end] for e in trace.result.entities)
    assert trace.result.entities and any(e.mention != trace.input[e.start:e.end] for e in trace.result.entities)
    note = input_note(trace)
    assert "'ivo brandel' as 'Ivo Brandel'" in note and "'.' added" in note
    assert note in result_block(trace)
    assert "Read as" in result_html(trace)
    assert Trace.from_json(trace.to_json()) == trace


def test_a_run_without_it_reads_the_typed_text(models, monkeypatch):
    trace = _run(models, monkeypatch, "off")
    assert trace.input == TYPED and trace.input_edits is None
    assert trace.settings["input_normalization"] == "off"
    assert input_note(trace) == "" and "Read as" not in result_block(trace)


def test_a_model_that_declares_nothing_reads_the_typed_text(models, monkeypatch):
    lm = models["entity-linking"]  # a tiny checkpoint: no onegen_model.json settings
    script(monkeypatch, lm, el_script(lm))
    trace = Engine(lm).run_trace("entity-linking", TYPED, candidates=ENTITIES, settings=RunSettings())
    assert trace.input == TYPED and trace.settings["input_normalization"] == "off"


def test_a_replay_reads_what_its_original_read(models, monkeypatch):
    trace = _run(models, monkeypatch, "normalize")
    lm = models["entity-linking"]
    script(monkeypatch, lm, el_script(lm))
    c = replay(trace, lm, ENTITIES, step=0, choice=Choice.parse("0"))
    assert c.replayed.input == trace.input
    assert c.replayed.input_edits == trace.input_edits
    assert c.replayed.typed_input == TYPED



def test_a_batched_run_reads_what_a_single_run_reads(models):
    from onegen.batch import BatchEngine, BatchJob
    from scripted import chooser

    lm = models["entity-linking"]
    settings = RunSettings(copy_input=True, input_normalization="normalize")
    job = BatchJob("entity-linking", TYPED, candidates=ENTITIES, settings=settings, chooser=chooser(lm, el_script(lm)))
    [r] = BatchEngine(lm, batch_size=2).run_all([job])
    assert r.error is None, r.error
    assert r.trace.input == "Ivo Brandel lives in Paris." and r.trace.typed_input == TYPED
