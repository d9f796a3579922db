"""Prompt-lookup drafts: the look-up table, and the engine's promise that drafts change the number
of forward calls, never the trace."""
from __future__ import annotations

import random

import pytest
import torch

from onegen.draft import NgramDrafter
from onegen.engine import DecodeState, Engine, RunSettings
from scripted import el_script, multi_hop_script, script, text_ids
from tiny import ENTITIES, PARAGRAPHS, PASSAGES

pytestmark = pytest.mark.usefixtures("one_thread")


# -- the look-up table ------------------------------------------------------------------------------

def test_propose_follows_the_longest_earlier_match():
    d = NgramDrafter(max_ngram=3, draft_len=3)
    d.extend([1, 2, 3, 4, 5, 9, 2, 3, 7, 8])
    # Tail (8) + 2: the bigram (8, 2) never occurred; the unigram 2 last came before 3, 7, 8.
    assert d.propose(2) == [3, 7, 8]
    # Tail (7, 8) + 9: no trigram or bigram match; 9 was followed by 2, 3, 7.
    assert d.propose(9) == [2, 3, 7]
    d.extend([1, 2])
    # Tail (8, 1, 2) + 3: the trigram (1, 2, 3) occurred at the start, so 4, 5, 9 follows, not 7, 8.
    assert d.propose(3) == [4, 5, 9]
    assert d.propose(42) == []


def test_propose_stops_before_steering_tokens_and_at_the_limit():
    d = NgramDrafter(max_ngram=2, draft_len=4)
    d.extend([5, 6, 7, 99, 8, 5])
    assert d.propose(6) == [7, 99, 8, 5]
    assert d.propose(6, stop={99}) == [7]
    assert d.propose(6, limit=2) == [7, 99]
    assert d.propose(6, limit=0) == []
    with pytest.raises(ValueError):
        NgramDrafter(draft_len=0)


def test_truncate_restores_the_table_of_the_prefix():
    rng = random.Random(0)
    ids = [rng.randrange(6) for _ in range(300)]
    d = NgramDrafter(max_ngram=3, draft_len=3)
    d.extend(ids)
    for cut in (290, 200, 57, 3, 0):
        d.truncate(cut)
        fresh = NgramDrafter(max_ngram=3, draft_len=3)
        fresh.extend(ids[:cut])
        assert d.ids == fresh.ids and d._next == fresh._next
        assert all(d.propose(t) == fresh.propose(t) for t in range(6))
        d.extend(ids[cut:])  # grow back, then cut again shorter
        d.truncate(cut)


# -- the engine: same trace, fewer forward calls -----------------------------------------------------

class Calls:
    def __init__(self, monkeypatch):
        self.sizes: list[tuple[str, int]] = []
        real = DecodeState.feed

        def feed(state, ids, phase):
            self.sizes.append((phase, len(ids)))
            self.state = state
            return real(state, ids, phase)

        monkeypatch.setattr(DecodeState, "feed", feed)


def _copying_multi_hop(lm):
    # Sub-question and answer repeat earlier text, so look-ups find drafts.
    return multi_hop_script(lm, final_tail=" Film A was directed by Ivo Brandel, born in Corvale.")


CASES = [
    ("multi-hop", PARAGRAPHS, _copying_multi_hop, "Where was the director of Film A born?"),
    ("entity-linking", ENTITIES, el_script, "Paris and Rome. Paris and Rome."),
    ("single-hop", PASSAGES, lambda lm: text_ids(lm, "single-hop", "[Relevant] Corvale, Corvale, Corvale."),
     "Where was the director of Film A born?"),
]


def _run(lm, monkeypatch, task, docs, make_script, text, draft_tokens):
    script(monkeypatch, lm, make_script(lm))
    calls = Calls(monkeypatch)
    trace = Engine(lm).run_trace(task, text, candidates=docs, settings=RunSettings(draft_tokens=draft_tokens))
    monkeypatch.undo()
    return trace, calls


@pytest.mark.parametrize("task,docs,make_script,text", CASES)
def test_drafts_leave_the_trace_unchanged(models, monkeypatch, task, docs, make_script, text):
    lm = models[task]
    plain, plain_calls = _run(lm, monkeypatch, task, docs, make_script, text, 0)
    drafted, calls = _run(lm, monkeypatch, task, docs, make_script, text, 3)
    strip = lambda t: [(r.id, r.kind, r.position, r.text) for r in t.tokens]  # noqa: E731
    assert strip(drafted) == strip(plain)
    assert drafted.stop_reason == plain.stop_reason
    assert drafted.result.output_text == plain.result.output_text
    for a, b in zip(drafted.retrievals, plain.retrievals, strict=True):
        assert (a.position, a.query_text, [h.id for h in a.hits]) == (b.position, b.query_text, [h.id for h in b.hits])
        assert [h.score for h in a.hits] == pytest.approx([h.score for h in b.hits], abs=1e-4)
    # Forward tokens: the same per phase, plus the rejected guesses, which the cache no longer holds.
    pf, df = plain.cost.forward_tokens, drafted.cost.forward_tokens
    assert pf["draft_rejected"] == 0
    assert {p: df[p] for p in ("prompt", "generated", "inserted")} == {p: pf[p] for p in ("prompt", "generated", "inserted")}
    assert sum(n for p, n in calls.sizes if p == "generated") == df["generated"] + df["draft_rejected"]
    assert calls.state.ids == plain_calls.state.ids and len(calls.state.decoder) == len(plain_calls.state.ids)
    assert drafted.settings["draft_tokens"] == 3 and plain.settings["draft_tokens"] == 0
    # And the point of it: fewer forward calls while generating.
    n_calls = lambda c: sum(1 for p, _ in c.sizes if p == "generated")  # noqa: E731
    assert max(n for p, n in calls.sizes if p == "generated") > 1
    assert n_calls(calls) < n_calls(plain_calls)


def test_a_stop_inside_a_draft_stops_where_one_token_decoding_stops(models, monkeypatch):
    """The final answer's closing tag is copied from a draft: the run ends on it, and neither the
    tag's last token nor the guesses after it stay counted as generated."""
    lm = models["multi-hop"]
    text = "Where was the director of Film A born?"
    plain, plain_calls = _run(lm, monkeypatch, "multi-hop", PARAGRAPHS, multi_hop_script, text, 0)
    drafted, calls = _run(lm, monkeypatch, "multi-hop", PARAGRAPHS, multi_hop_script, text, 4)
    assert plain.stop_reason == drafted.stop_reason == "final_answer"
    assert [t.id for t in drafted.tokens] == [t.id for t in plain.tokens]
    assert drafted.cost.forward_tokens["generated"] == plain.cost.forward_tokens["generated"]
    assert calls.state.ids == plain_calls.state.ids


def test_free_running_greedy_is_unchanged_on_a_random_model(models):
    """No script: a random model's own greedy choices, which repeat themselves and so get drafted."""
    lm = models["single-hop"]
    engine = Engine(lm)
    runs = {d: engine.run_trace("single-hop", "Corvale Corvale Corvale?", candidates=PASSAGES,
                                settings=RunSettings(draft_tokens=d, max_new_tokens=60)) for d in (0, 2)}
    assert [t.id for t in runs[2].tokens] == [t.id for t in runs[0].tokens]
    assert runs[2].cost.forward_tokens["generated"] == runs[0].cost.forward_tokens["generated"]


def test_sampling_never_drafts(models):
    from onegen.engine import Sampling

    lm = models["single-hop"]
    trace = Engine(lm).run_trace("single-hop", "Corvale?", candidates=PASSAGES,
                                 settings=RunSettings(sampling=Sampling(seed=1), max_new_tokens=20))
    assert trace.settings["draft_tokens"] == 0 and trace.cost.forward_tokens["draft_rejected"] == 0


def test_logits_of_a_refused_guess_are_reused(models, monkeypatch):
    """Each generated position's head runs once, drafted or not."""
    lm = models["entity-linking"]
    script(monkeypatch, lm, el_script(lm))
    heads = []
    real = DecodeState.logits
    monkeypatch.setattr(DecodeState, "logits", lambda state, h: heads.append(1) or real(state, h))
    trace = Engine(lm).run_trace("entity-linking", "Paris and Rome. Paris and Rome.", candidates=ENTITIES,
                                 settings=RunSettings(draft_tokens=3))
    assert trace.cost.forward_tokens["draft_rejected"] > 0
    assert len(heads) == sum(1 for t in trace.tokens if t.kind != "inserted")
    assert torch.is_grad_enabled()  # the engine's inference mode did not leak


def test_no_drafts_on_a_cache_with_sliding_window_layers():
    """Dropping a refused guess slices each layer's keys; a sliding-window layer keeps only its window,
    so such a model decodes one token per call."""
    from types import SimpleNamespace

    from transformers import LlamaConfig, MistralConfig

    from onegen.trace import Cost

    small = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, num_key_value_heads=2,
                 intermediate_size=64)
    for config, drafts in ((MistralConfig(sliding_window=8, **small), False), (LlamaConfig(**small), True)):
        lm = SimpleNamespace(model=SimpleNamespace(config=config), device=torch.device("cpu"))
        assert (DecodeState(lm, Cost(), draft_tokens=2).drafter is not None) is drafts
