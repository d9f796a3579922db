"""Scripted token choices for engine tests on tiny random models.

Random weights never choose retrieval tokens, so the engine's token chooser follows a list of ids
instead (`onegen.engine.ScriptedChooser`: one entry per token choice, forced steps included, then
EOS). Every forward pass stays real; only the choice of the next token is scripted.

    Engine(lm, chooser=chooser(lm, ids))   # one engine
    script(monkeypatch, lm, ids)           # every engine made during the test, e.g. by the CLI
"""
from __future__ import annotations

from onegen.engine import Engine, ScriptedChooser, choose_token
from onegen.protocols import CONTINUE, LK, QR


def chooser(lm, ids: list[int]) -> ScriptedChooser:
    """Choices that follow `ids`, then EOS; each run starts at the beginning."""
    return ScriptedChooser(ids, lm.tokenizer.eos_token_id)


def script(monkeypatch, lm, ids: list[int]) -> ScriptedChooser:
    """Make `ids` (then EOS) the choices of every engine built without a chooser of its own until
    the test ends, including engines the CLI, the evaluation or the app make; each run starts at
    the script's beginning."""
    s = chooser(lm, ids)
    monkeypatch.setattr(Engine, "default_chooser", s)
    return s


# Choices depend on the step within a run, so every run starts over: the same as `script`.
script_every_run = script


def scripted_evaluation(lm, task: str, examples, ids: list[int], settings, out, **kwargs):
    """`evaluate` with every run choosing `ids`, writing its result file to `out` (for tests that
    need result files as the evaluator writes them); the script ends with the call."""
    import pytest

    from onegen.evaluation import evaluate

    mp = pytest.MonkeyPatch()
    try:
        script(mp, lm, ids)
        return evaluate(lm, task, examples, settings, out=out, progress=False, **kwargs)
    finally:
        mp.undo()


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
    """Paris [LK], a malformed [LK] without a mention, Rome [LK]. After each `</MENTION>[LK]` the
    script proposes EOS; the protocol must force [_CONTINUE_] instead. After the bare [LK] nothing
    is forced (the released rule), so the script writes [_CONTINUE_] itself."""
    lk, cont, eos = tid(lm, LK), tid(lm, CONTINUE), lm.tokenizer.eos_token_id
    t = lambda s: text_ids(lm, "entity-linking", s)  # noqa: E731
    return (t("<MENTION>Paris</MENTION>") + [lk, eos] + t(" and") + [lk, cont] + t(" <MENTION>Rome</MENTION>")
            + [lk, eos] + t(".") + [eos])


class LongestSecondChooser(ScriptedChooser):
    """A script whose second choice is the longest token (in bytes) that does not start a tag:
    where the protocol refuses the scripted id, the masked choice copies the input in whole pieces,
    as a trained model would, rather than taking the lowest allowed id (a lone "<" that opens or
    closes a mention)."""

    def __init__(self, lm, ids: list[int]):
        from onegen.constrain import vocabulary_bytes

        super().__init__(ids, lm.tokenizer.eos_token_id)
        of_id = vocabulary_bytes(lm.tokenizer).of_id
        self.bonus = [0.0 if of_id.get(i, b"<").startswith(b"<") else len(of_id[i]) / 100
                      for i in range(len(lm.tokenizer))]

    def __call__(self, logits, *, step, forced=None, banned=(), allowed=None, sampling=None, generator=None):
        import torch

        prefs = torch.tensor(self.bonus[:logits.shape[0]] + [0.0] * max(0, logits.shape[0] - len(self.bonus)))
        prefs[self.ids[step] if step < len(self.ids) else self.eos_id] = 100.0
        return choose_token(prefs, forced=forced, banned=banned, allowed=allowed, sampling=sampling,
                            generator=generator)
