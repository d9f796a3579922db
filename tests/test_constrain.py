"""Copy-constrained entity linking: the automaton on real tokenizers, then through the engine."""
from __future__ import annotations

from pathlib import Path

import pytest

from onegen.constrain import CopyConstraint, vocabulary_bytes
from onegen.engine import Engine, RunSettings
from onegen.protocols import CONTINUE, LK
from onegen.render_html import timeline_html
from onegen.render_text import copy_note, render_trace
from onegen.trace import Trace
from scripted import script, text_ids, tid
from tiny import ENTITIES, LLAMA_FIXTURES, build_bpe_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
TEXT = "Pralandar Pandane was born in Zalolora, Girgirnesh."
GOLD = ("<MENTION>Pralandar Pandane</MENTION>[LK][_CONTINUE_] was born in <MENTION>Zalolora</MENTION>[LK]"
        "[_CONTINUE_], <MENTION>Girgirnesh</MENTION>[LK][_CONTINUE_].")


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    from onegen.loading import load_tokenizer

    out = {"smollm (byte-level BPE)": load_tokenizer(ROOT / "assets" / "models" / "onegen-smol")}
    if (LLAMA_FIXTURES / "entity-linking").exists():  # SentencePiece with byte fallback
        out["llama-2"] = load_tokenizer(LLAMA_FIXTURES / "entity-linking")
    folder = tmp_path_factory.mktemp("bpe")
    out["tiny byte-level"] = build_bpe_tokenizer(folder, ["[SE]", LK, CONTINUE])
    return out


def constraint(tok, text=TEXT):
    return CopyConstraint(text, vocabulary_bytes(tok), link_id=tok.convert_tokens_to_ids(LK),
                          continue_id=tok.convert_tokens_to_ids(CONTINUE), eos_id=tok.eos_token_id)


def encode(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def walk(c, ids, may_link=True):
    """Feed ids one by one; the index of the first refused one, or None."""
    st = c.start
    for k, i in enumerate(ids):
        if i not in c.allowed(st, may_link=may_link):
            return k
        st = c.after(st, i, may_link=may_link)
        assert st, "allowed() and after() disagree"
    return None


@pytest.mark.parametrize("name", ["smollm (byte-level BPE)", "llama-2", "tiny byte-level"])
def test_the_gold_annotation_is_allowed_at_every_step(tokenizers, name):
    if name not in tokenizers:
        pytest.skip("../shared fixtures absent")
    tok = tokenizers[name]
    c = constraint(tok)
    for out in (" " + GOLD, GOLD):  # with and without the leading space SentencePiece writes
        ids = encode(tok, out) + [tok.eos_token_id]
        assert walk(c, ids) is None
    # Non-ASCII text: bytes of one character may come from several tokens.
    text = "Zoë Ünïcode met 東京 in Zürich."
    ids = encode(tok, "<MENTION>Zoë Ünïcode</MENTION>[LK][_CONTINUE_] met 東京 in Zürich.") + [tok.eos_token_id]
    assert walk(constraint(tok, text), ids) is None


@pytest.mark.parametrize("bad,why", [
    (" was born in Zalolora, Girginesh.", "misspelt name"),
    ("Pralandar Pandane was born in Zalolora.", "dropped text"),
    ("Pralandar Pandane was born in Zalolora, Girgirnesh. And more.", "added text"),
    ("<MENTION></MENTION>", "empty mention"),
    ("<MENTION>Pralandar</MENTION> Pandane", "a mention without [LK]"),
    ("<MENTION>Pralandar <MENTION>Pandane", "nested mention"),
])
def test_leaving_the_input_is_refused(tokenizers, bad, why):
    tok = tokenizers["smollm (byte-level BPE)"]
    c = constraint(tok)
    prefix = "" if not bad.startswith(" was") else "<MENTION>Pralandar Pandane</MENTION>"
    ids = encode(tok, prefix)
    if prefix:
        ids += [tok.convert_tokens_to_ids(LK), tok.convert_tokens_to_ids(CONTINUE)]
    ids += encode(tok, bad) + [tok.eos_token_id]
    assert walk(c, ids) is not None, why


def test_protocol_tokens_only_where_the_format_has_them(tokenizers):
    tok = tokenizers["smollm (byte-level BPE)"]
    c = constraint(tok, "Paris.")
    lk, cont, eos = tok.convert_tokens_to_ids(LK), tok.convert_tokens_to_ids(CONTINUE), tok.eos_token_id
    st = c.start
    assert lk not in c.allowed(st) and eos not in c.allowed(st) and cont not in c.allowed(st)
    for i in encode(tok, "<MENTION>Paris</MENTION>"):
        st = c.after(st, i)
    assert c.allowed(st) == [lk]  # right after </MENTION>: [LK] and nothing else
    st = c.after(st, lk)
    assert c.allowed(st) == [cont]
    st = c.after(c.after(st, cont), encode(tok, ".")[0])
    assert c.allowed(st) == [eos]  # the whole input copied: only the end


def test_no_new_mention_once_retrievals_are_used_up(tokenizers):
    tok = tokenizers["smollm (byte-level BPE)"]
    c = constraint(tok, "Paris and Rome.")
    plain = encode(tok, "Paris and Rome.") + [tok.eos_token_id]
    assert walk(c, plain, may_link=False) is None
    assert walk(c, encode(tok, "Paris and <MENTION>Rome"), may_link=False) is not None


# -- through the engine -------------------------------------------------------------------------------

def _misspelling_script(lm):
    """A model that marks both cities but misspells Rome and appends a word."""
    lk = tid(lm, LK)
    t = lambda s: text_ids(lm, "entity-linking", s)  # noqa: E731
    return (t("<MENTION>Paris</MENTION>") + [lk, lm.tokenizer.eos_token_id] + t(" and <MENTION>Rone</MENTION>")
            + [lk, lm.tokenizer.eos_token_id] + t(". Amen.") + [lm.tokenizer.eos_token_id])


def test_engine_output_is_the_input_with_tags(models, monkeypatch):
    lm = models["entity-linking"]
    text = "Paris and Rome."
    script(monkeypatch, lm, _misspelling_script(lm))
    free = Engine(lm).run_trace("entity-linking", text, candidates=ENTITIES, settings=RunSettings(copy_input=False))
    assert "Rone" in free.result.output_text and free.overrides == []
    assert free.settings["copy_input"] is False

    script(monkeypatch, lm, _misspelling_script(lm))
    trace = Engine(lm).run_trace("entity-linking", text, candidates=ENTITIES)
    out = trace.result.output_text
    plain = out.replace("<MENTION>", "").replace("</MENTION>", "").replace(LK, "").replace(CONTINUE, "")
    assert plain.replace(lm.tokenizer.eos_token, "").strip() == text
    assert trace.stop_reason == "eos" and trace.settings["copy_input"] is True
    assert [e.mention for e in trace.result.entities][0] == "Paris"
    # The mask overrode the model where it misspelt and where it would have written past the end.
    assert trace.overrides
    by_pos = {t.position: t for t in trace.tokens}
    for o in trace.overrides:
        assert by_pos[o.position].id == o.chosen != o.preferred
    assert "Copy constraint on: it overrode the model" in copy_note(trace)
    assert "Copy constraint on" in render_trace(trace)
    assert 'class="og-override"' in timeline_html(trace.tokens, trace.retrievals, overrides=trace.overrides)
    assert Trace.from_json(trace.to_json()) == trace


def test_drafts_do_not_change_a_constrained_output(models, monkeypatch):
    lm = models["entity-linking"]
    text = "Paris and Rome. Paris and Rome."
    outs = []
    for drafts in (0, 2):
        script(monkeypatch, lm, _misspelling_script(lm))
        tr = Engine(lm).run_trace("entity-linking", text, candidates=ENTITIES, settings=RunSettings(draft_tokens=drafts))
        outs.append(([t.id for t in tr.tokens], [(o.position, o.preferred) for o in tr.overrides]))
    assert outs[0] == outs[1]


def test_a_model_that_copies_needs_no_override(models, monkeypatch):
    lm = models["entity-linking"]
    lk = tid(lm, LK)
    t = lambda s: text_ids(lm, "entity-linking", s)  # noqa: E731
    script(monkeypatch, lm, t("<MENTION>Paris</MENTION>") + [lk, 0] + t(" and Rome.") + [lm.tokenizer.eos_token_id])
    trace = Engine(lm).run_trace("entity-linking", "Paris and Rome.", candidates=ENTITIES)
    assert trace.overrides == [] and copy_note(trace) == "Copy constraint on; the model copied the input on its own."


def test_old_traces_without_overrides_still_load(models, monkeypatch):
    lm = models["entity-linking"]
    script(monkeypatch, lm, _misspelling_script(lm))
    d = Engine(lm).run_trace("entity-linking", "Paris and Rome.", candidates=ENTITIES).to_dict()
    d.pop("overrides")
    d["settings"].pop("copy_input")
    back = Trace.from_dict(d)
    assert back.overrides == [] and copy_note(back) == ""


@pytest.mark.parametrize("name", ["smollm (byte-level BPE)", "llama-2", "tiny byte-level"])
def test_a_mention_of_only_blanks_can_never_close(tokenizers, name):
    """`<MENTION> </MENTION>` or a mention of a zero-width character is no mention."""
    if name not in tokenizers:
        pytest.skip("../shared fixtures absent")
    tok = tokenizers[name]
    for text, blank_prefix in [("Paris  is big.", "Paris"), ("Paris\u200b\ufeff is big.", "Paris")]:
        c = constraint(tok, text)
        st = c.start
        for i in encode(tok, blank_prefix + "<MENTION>"):
            st = c.after(st, i)
        assert st
        rest = text[len(blank_prefix):]
        blanks = rest[:len(rest) - len(rest.lstrip(" \u200b\ufeff"))]
        for ch in blanks:  # copy the blanks inside the open mention, byte by byte
            for b in ch.encode("utf-8"):
                st = c._bytes(st, b, True)
            assert st
        assert not any(b == ord("<") for s in st for b in c._next_bytes(s, True) if s.inside), text


@pytest.mark.parametrize("name", ["smollm (byte-level BPE)", "llama-2", "tiny byte-level"])
def test_trailing_invisible_characters_need_not_be_copied(tokenizers, name):
    """A KORE50-style sentence ending in U+FEFF: the run may end before it, and it never becomes a
    mention."""
    if name not in tokenizers:
        pytest.skip("../shared fixtures absent")
    tok = tokenizers[name]
    c = constraint(tok, "Paris is big.\ufeff\n")
    st = c.start
    for i in encode(tok, "<MENTION>Paris</MENTION>"):
        st = c.after(st, i)
    st = c.after(st, tok.convert_tokens_to_ids(LK))
    st = c.after(st, tok.convert_tokens_to_ids(CONTINUE))
    for i in encode(tok, " is big."):
        assert i in c.allowed(st)
        st = c.after(st, i)
    assert tok.eos_token_id in c.allowed(st)
    opened = st
    for i in encode(tok, "<MENTION>"):
        opened = c.after(opened, i)
    # Inside a mention opened before the U+FEFF, nothing visible is left: it can never close.
    for b in "\ufeff\n".encode("utf-8"):
        opened = c._bytes(opened, b, True)
    assert opened and not any(s.content for s in opened)


def test_engine_ends_before_a_trailing_bom_without_linking_it(models, monkeypatch):
    """Through the engine: a model that wants to end right after the visible text may."""
    lm = models["entity-linking"]
    t = lambda s: text_ids(lm, "entity-linking", s)  # noqa: E731
    script(monkeypatch, lm, t("<MENTION>Paris</MENTION>") + [tid(lm, LK), tid(lm, CONTINUE)] + t(" is big.")
           + [lm.tokenizer.eos_token_id])
    trace = Engine(lm).run_trace("entity-linking", "Paris is big.\ufeff", candidates=ENTITIES)
    assert trace.stop_reason == "eos"
    assert not trace.overrides  # the constraint let the model end where it wanted to
    assert "\ufeff" not in trace.result.output_text
    assert [e.mention for e in trace.result.entities] == ["Paris"]
