"""Early closing: where a mention is open and the model's first choice leaves the input, the
copy-constrained decoder ends the mention there instead of copying the skipped words into it."""
from __future__ import annotations

import pytest

from onegen.engine import Engine, RunSettings
from onegen.protocols import CONTINUE, LK
from onegen.render_html import timeline_html
from onegen.render_text import copy_note
from onegen.trace import Trace
from scripted import LongestSecondChooser, text_ids, tid
from tiny import ENTITIES

pytestmark = pytest.mark.usefixtures("one_thread")

TEXT = "Ivo Brandel, who had come from Rome, lives in Paris."


def _skipping_script(lm) -> list[int]:
    """A model that tags Ivo Brandel, then wants to skip ", who had come from" and write " Rome"
    right after the name, as if the filler were not there."""
    t = lambda s: text_ids(lm, "entity-linking", s)  # noqa: E731
    return t("<MENTION>Ivo Brandel") + t(" <MENTION>Rome</MENTION>")


def _run(lm, ids, **settings):
    engine = Engine(lm, chooser=LongestSecondChooser(lm, ids))
    return engine.run_trace("entity-linking", TEXT, candidates=ENTITIES, settings=RunSettings(**settings))


def _plain(trace, eos: str) -> str:
    out = trace.result.output_text
    for tag in ("<MENTION>", "</MENTION>", LK, CONTINUE, eos):
        out = out.replace(tag, "")
    return out


def test_the_mention_closes_where_the_model_leaves_the_input(models):
    lm = models["entity-linking"]
    ids = _skipping_script(lm)
    trace = _run(lm, ids)
    assert trace.settings["early_close"] is True
    assert [(e.mention, e.start, e.end) for e in trace.result.entities][0] == ("Ivo Brandel", 0, 11)
    # The first token the model did not get is where it wanted " <MENTION>" / " Rome" after the
    # name: recorded as an early close, the token written the start of </MENTION>.
    early = [o for o in trace.overrides if o.kind == "early_close"]
    assert len(early) == 1
    o = early[0]
    assert o.preferred == ids[len(text_ids(lm, "entity-linking", "<MENTION>Ivo Brandel"))]
    written = {t.position: t for t in trace.tokens}[o.position]
    assert written.id == o.chosen and "</MENTION>".startswith(written.text)
    assert "closed the mention early" in copy_note(trace)
    assert 'class="og-override og-early-close"' in timeline_html(trace.tokens, trace.retrievals,
                                                                 overrides=trace.overrides)
    # Still the input with tags, and the trace reads back with the override's kind.
    assert _plain(trace, lm.tokenizer.eos_token) == TEXT
    assert Trace.from_json(trace.to_json()) == trace


def test_without_early_close_the_mask_copies_the_filler_into_the_mention(models):
    lm = models["entity-linking"]
    trace = _run(lm, _skipping_script(lm), early_close=False)
    assert trace.settings["early_close"] is False
    first = trace.result.entities[0]
    assert first.mention.startswith("Ivo Brandel, who") and first.start == 0
    assert trace.overrides and all(o.kind == "mask" for o in trace.overrides)
    assert _plain(trace, lm.tokenizer.eos_token) == TEXT


def test_a_misspelt_name_is_corrected_not_cut(models):
    """The model leaves the input mid-word ("Brandal"): the mask corrects the name; the mention
    does not end inside it."""
    lm = models["entity-linking"]
    t = lambda s: text_ids(lm, "entity-linking", s)  # noqa: E731
    ids = t("<MENTION>Ivo Brandal</MENTION>") + [tid(lm, LK), tid(lm, CONTINUE)]
    trace = _run(lm, ids)
    assert trace.result.entities[0].mention == "Ivo Brandel"
    assert trace.overrides and not any(o.kind == "early_close" for o in trace.overrides)


def test_drafts_and_sampling(models):
    """Drafted guesses go through the same choice (same tokens with and without drafts); sampled
    runs have no first choice to compare with, so they never close early."""
    lm = models["entity-linking"]
    ids = _skipping_script(lm)
    runs = [_run(lm, ids, draft_tokens=n) for n in (0, 3)]
    assert [t.id for t in runs[0].tokens] == [t.id for t in runs[1].tokens]
    assert runs[0].overrides == runs[1].overrides
    from onegen.engine import Sampling

    sampled = _run(lm, ids, sampling=Sampling(temperature=1.0, seed=0))
    assert sampled.settings["early_close"] is False


def test_free_decoding_never_closes_early(models):
    lm = models["entity-linking"]
    trace = _run(lm, _skipping_script(lm), copy_input=False)
    assert trace.settings["early_close"] is False and trace.overrides == []


def test_old_overrides_without_a_kind_read_as_mask(models):
    lm = models["entity-linking"]
    d = _run(lm, _skipping_script(lm), early_close=False).to_dict()
    for o in d["overrides"]:
        o.pop("kind")
    d["settings"].pop("early_close")
    back = Trace.from_dict(d)
    assert back.overrides and all(o.kind == "mask" for o in back.overrides)
