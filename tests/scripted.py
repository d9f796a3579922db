"""Scripted token choices for engine tests on tiny random models.

Random weights never choose retrieval tokens, so `script(monkeypatch, lm, ids)` replaces
`DecodeState.logits` with one-hot logits that follow `ids` (one entry per token choice, then EOS).
Every forward pass stays real; only the choice of the next token is scripted.
"""
from __future__ import annotations

import torch

from onegen.engine import DecodeState
from onegen.protocols import LK, QR


class Script:
    """Logits that pick `ids` in order, then EOS."""

    def __init__(self, lm, ids: list[int], value: float = 100.0):
        self.ids, self.value, self.n = list(ids), value, 0
        self.vocab = lm.lm_head.out_features
        self.eos = lm.tokenizer.eos_token_id

    def __call__(self, state: DecodeState, hidden_last: torch.Tensor) -> torch.Tensor:
        tok = self.ids[self.n] if self.n < len(self.ids) else self.eos
        self.n += 1
        out = torch.zeros(self.vocab)
        out[tok] = self.value
        return out


def script(monkeypatch, lm, ids: list[int]) -> Script:
    s = Script(lm, ids)
    monkeypatch.setattr(DecodeState, "logits", lambda state, h: s(state, h))
    return s


def script_every_run(monkeypatch, lm, ids: list[int]) -> None:
    """Each run (each new DecodeState) writes `ids`, then EOS: for runners that make many runs."""
    vocab, eos = lm.lm_head.out_features, lm.tokenizer.eos_token_id

    def logits(state, hidden_last):
        n = getattr(state, "_script_step", 0)
        state._script_step = n + 1
        out = torch.zeros(vocab)
        out[ids[n] if n < len(ids) else eos] = 100.0
        return out

    monkeypatch.setattr(DecodeState, "logits", logits)


def text_ids(lm, task: str, text: str) -> list[int]:
    return lm.ptok(task).encode_data(text)


def tid(lm, token: str) -> int:
    return lm.tokenizer.convert_tokens_to_ids(token)


def multi_hop_script(lm, final_tail: str = " and more text after the answer") -> list[int]:
    """Two hops, then a final answer, then text that must never be generated."""
    qr = tid(lm, QR)
    t = lambda s: text_ids(lm, "multi-hop", s)  # noqa: E731
    return (t("First, who directed Film A?") + [qr] + t(" Ivo Brandel. Second, where was Ivo Brandel born?") + [qr]
            + t(" Corvale. <FINAL-ANSWER>Corvale</FINAL-ANSWER>") + t(final_tail))


def multi_hop_answering(lm, answer: str) -> list[int]:
    """Two hops about Film A's director, then `answer` as the final answer."""
    qr = tid(lm, QR)
    t = lambda s: text_ids(lm, "multi-hop", s)  # noqa: E731
    return (t("First, who directed Film A?") + [qr] + t(" Ivo Brandel. Second, where was he born?") + [qr]
            + t(f" {answer}. <FINAL-ANSWER>{answer}</FINAL-ANSWER>"))


def el_script(lm) -> list[int]:
    """Paris [LK], a malformed [LK] without a mention, Rome [LK]. After every [LK] the script
    proposes EOS; the protocol must force [_CONTINUE_] instead."""
    lk, eos = tid(lm, LK), lm.tokenizer.eos_token_id
    t = lambda s: text_ids(lm, "entity-linking", s)  # noqa: E731
    return (t("<MENTION>Paris</MENTION>") + [lk, eos] + t(" and") + [lk, eos] + t(" <MENTION>Rome</MENTION>")
            + [lk, eos] + t(".") + [eos])
