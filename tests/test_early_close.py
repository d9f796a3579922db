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


# -- mentions open only where the model opens one ------------------------------------------------------

class _OpenSecondAtStart(LongestSecondChooser):
    """At the first step the model wants [LK] (which cannot start the output) and ranks `<MENTION>`
    second; afterwards it wants to end, and its second choice copies the input."""

    def __init__(self, lm):
        from onegen.constrain import vocabulary_bytes

        super().__init__(lm, [tid(lm, LK)])
        of_id = vocabulary_bytes(lm.tokenizer).of_id
        self.opens = [i for i, b in of_id.items() if b.lstrip(b" ").startswith(b"<")]

    def __call__(self, logits, *, step, **kw):
        if step == 0:
            import torch

            from onegen.engine import choose_token
            prefs = torch.zeros_like(logits)
            prefs[self.opens] = 50.0
            prefs[self.ids[0]] = 100.0
            return choose_token(prefs, **kw)
        return super().__call__(logits, step=step, **kw)


def _opening_run(lm, **settings):
    engine = Engine(lm, chooser=_OpenSecondAtStart(lm))
    return engine.run_trace("entity-linking", TEXT, candidates=ENTITIES, settings=RunSettings(**settings))


def test_the_mask_does_not_open_a_mention_the_model_did_not_choose(models):
    lm = models["entity-linking"]
    trace = _opening_run(lm)
    assert trace.settings["model_opens"] is True
    assert trace.result.entities == [] and trace.retrievals == []
    first = trace.overrides[0]
    assert first.kind == "no_open" and first.preferred == tid(lm, LK)
    assert not trace.tokens[0].text.lstrip().startswith("<")
    assert _plain(trace, lm.tokenizer.eos_token).lstrip(" ") == TEXT  # a leading space is allowed
    assert "rather than open a mention the model did not choose" in copy_note(trace)
    assert "rather than open a mention" in timeline_html(trace.tokens, trace.retrievals, overrides=trace.overrides)


def test_with_model_opens_off_the_mask_opens_and_fills_the_mention(models):
    lm = models["entity-linking"]
    trace = _opening_run(lm, model_opens=False, early_close=False)
    assert trace.settings["model_opens"] is False
    assert [e.mention for e in trace.result.entities] == [TEXT]
    assert not any(o.kind == "no_open" for o in trace.overrides)
    # Early close alone ends that mention at the first word edge where the model wants to stop.
    assert [e.mention for e in _opening_run(lm, model_opens=False).result.entities] == ["Ivo"]


def test_a_first_choice_that_spells_an_open_tag_otherwise_may_still_open(models):
    """The model wants " <" where the input has no space: it means to open, so the mask's "<" is
    kept (an ordinary override)."""
    from onegen.constrain import CopyConstraint, vocabulary_bytes

    lm = models["entity-linking"]
    tok = lm.tokenizer
    c = CopyConstraint("Paris.", vocabulary_bytes(tok), link_id=tid(lm, LK), continue_id=tid(lm, CONTINUE),
                       eos_id=tok.eos_token_id)
    of_id = vocabulary_bytes(tok).of_id
    spaced = [i for i, b in of_id.items() if b == b" <"]
    plain = [i for i, b in of_id.items() if b == b"<"]
    assert plain and all(c.spells_open(i) for i in spaced + plain)
    assert not c.spells_open(tid(lm, LK)) and not c.spells_open(tok.eos_token_id)
    assert not any(c.spells_open(i) for i, b in of_id.items() if b in (b"Paris", b"P", b" "))
    allowed = c.allowed(c.start)
    assert set(plain) <= set(c.opening(c.start, allowed))
    assert not any(of_id.get(i, b"").startswith(b"P") for i in c.opening(c.start, allowed))
    inside = c.start
    for i in text_ids(lm, "entity-linking", "<MENTION>Pa"):
        inside = c.after(inside, i)
    assert c.opening(inside, c.allowed(inside)) == []
