"""The Run tab's result-checks switch (AppState.stream `checks`): on, a run uses the checks its model
declares; off, the result is as the model wrote it."""
from __future__ import annotations

import pytest

pytest.importorskip("gradio")

from conftest_app import build_world, config_for, scripted_choices  # noqa: E402
from onegen.app_state import AppState  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
QUESTION = "Where was the director of Film A born?"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    world = build_world(tmp_path_factory.mktemp("app-checks"))
    return AppState(config_for(world), chooser_for=scripted_choices)


def test_the_switch_turns_the_models_checks_off_and_on(app):
    lm = app.model()
    assert app.run_trace("multi-hop", QUESTION).settings["answer_alignment"] == "off"  # declares none
    lm.info["answer_alignment"] = "snap"
    try:
        assert app.run_trace("multi-hop", QUESTION).settings["answer_alignment"] == "snap"
        assert app.run_trace("multi-hop", QUESTION, checks=False).settings["answer_alignment"] == "off"
    finally:
        del lm.info["answer_alignment"]


def test_the_switch_runs_the_typed_text_when_off(app):
    lm = app.model()
    typed = "where was the director of film a born"
    lm.info["input_normalization"] = "normalize"
    try:
        read = app.run_trace("multi-hop", typed)
        assert read.input.endswith("born?") and read.typed_input == typed
        assert [e.kind for e in read.input_edits][-1] == "closing_mark"
        as_typed = app.run_trace("multi-hop", typed, checks=False)
        assert as_typed.input == typed and as_typed.input_edits is None
    finally:
        del lm.info["input_normalization"]


def test_the_trace_viewer_shows_the_typed_input_beside_the_read_one(app):
    from onegen.ui.viewer_tab import input_html

    lm = app.model()
    lm.info["input_normalization"] = "normalize"
    try:
        trace = app.run_trace("multi-hop", "where was the director of film a born")
    finally:
        del lm.info["input_normalization"]
    html = input_html(trace)
    assert "where was the director of Film A born?" in html and "(typed: where was the director of film a born)" in html
    assert "typed:" not in input_html(app.run_trace("multi-hop", QUESTION))
