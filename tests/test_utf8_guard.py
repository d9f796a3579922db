"""The UTF-8 guard: a model that writes the lead byte of a character and then anything but its
continuation bytes (a space, the end of text, a retrieval token) is masked, so no run's output
holds U+FFFD; a model that writes valid UTF-8 is never overridden."""
from __future__ import annotations

import random

import pytest

from onegen.engine import Engine
from onegen.loading import load_tokenizer
from onegen.protocols import QR
from onegen.registry import ASSETS
from onegen.utf8_guard import INVALID, STATES, after_bytes, utf8_guard
from scripted import script, text_ids, tid
from tiny import LLAMA_FIXTURES, PARAGRAPHS, load_tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def test_after_bytes_counts_owed_continuation_bytes():
    ж, 東, emoji = "Ж".encode(), "東".encode(), "🎉".encode()
    assert after_bytes(0, b"abc") == 0 and after_bytes(0, ж[:1]) != 0 and after_bytes(after_bytes(0, ж[:1]), ж[1:]) == 0
    for ch in (東, emoji):
        for cut in range(1, len(ch)):
            assert after_bytes(0, ch[:cut]) > 0 and after_bytes(after_bytes(0, ch[:cut]), ch[cut:]) == 0
    assert after_bytes(0, b"\xf4\x90") == INVALID  # past U+10FFFF
    assert after_bytes(0, b"\xed\xa0") == INVALID  # a surrogate
    assert after_bytes(0, b"\xe0\x80") == INVALID  # overlong
    assert after_bytes(0, ж[1:]) == INVALID  # a continuation byte with nothing open
    assert after_bytes(after_bytes(0, ж[:1]), b" is") == INVALID  # the character was left unfinished
    assert after_bytes(0, b"\xff") == INVALID and after_bytes(0, b"\xc0\x80") == INVALID  # never in UTF-8


def _tokenizers():
    out = [pytest.param(ASSETS / "models" / "onegen-smol", id="byte-level-bpe")]
    out.append(pytest.param(LLAMA_FIXTURES / "multi-hop", id="llama2-sentencepiece",
                            marks=pytest.mark.skipif(not LLAMA_FIXTURES.exists(), reason="no Llama-2 fixtures")))
    return out


@pytest.mark.parametrize("folder", _tokenizers())
def test_any_walk_through_unbanned_tokens_decodes_strictly(folder):
    tok = load_tokenizer(folder)
    guard = utf8_guard(tok)
    assert utf8_guard(tok) is guard  # built once per tokenizer
    ids = list(guard.vocab.of_id)
    eos = tok.eos_token_id
    assert eos in guard.banned(1) and eos not in guard.banned(0)
    rng = random.Random(0)
    banned = [set(guard.banned(p)) for p in range(len(STATES))]
    allowed = [[i for i in ids if i not in banned[p]] for p in range(len(STATES))]
    # Multi-byte pieces half the time: a walk that opens characters and must close them.
    opening = [i for i in allowed[0] if after_bytes(0, guard.vocab.of_id[i]) > 0]
    assert opening and all(allowed[p] for p in range(1, len(STATES)))
    for _ in range(200):
        pending, data = 0, b""
        for _ in range(12):
            pool = opening if pending == 0 and rng.random() < 0.5 else allowed[pending]
            choice = rng.choice(pool)
            data += guard.vocab.of_id[choice]
            pending = guard.after(pending, choice)
        while pending:  # the end of text is banned until the character is closed
            assert eos in guard.banned(pending)
            choice = rng.choice(allowed[pending])
            data += guard.vocab.of_id[choice]
            pending = guard.after(pending, choice)
        data.decode("utf-8")  # strict: raises on any broken character


def test_a_run_that_leaves_a_character_open_is_masked(tmp_path, monkeypatch):
    lm = load_tiny("multi-hop", tmp_path)
    guard = utf8_guard(lm.tokenizer)
    lead = next(i for i, b in guard.vocab.of_id.items() if b == "Ж".encode()[:1])
    t = lambda s: text_ids(lm, "multi-hop", s)  # noqa: E731
    # The script writes Ж's lead byte and then " is": the continuation byte never comes.
    script(monkeypatch, lm, t("Who is") + [lead] + t(" is here?") + [tid(lm, QR)] + t(" Ok."))
    trace = Engine(lm).run_trace("multi-hop", "Who is here?", candidates=PARAGRAPHS)
    assert "\ufffd" not in trace.result.output_text
    assert "".join(r.text for r in trace.tokens) == trace.result.output_text
    written = b"".join(guard.vocab.of_id.get(r.id, b"") for r in trace.tokens if r.kind != "inserted")
    written.decode("utf-8")
    # Where the script's " is" was masked, the model's own choice continued the character.
    i = next(k for k, r in enumerate(trace.tokens) if r.id == lead)
    assert guard.vocab.of_id[trace.tokens[i + 1].id][:1] != b" "
