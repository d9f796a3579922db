"""The single-pass engine on tiny random checkpoints.

Random weights never choose retrieval tokens, so the engine's token chooser follows a list of ids
(`scripted.chooser`, `scripted.script`); every forward pass (prompt, generated tokens, inserted
documents) stays real, which is what these tests measure.
"""
from __future__ import annotations

import dataclasses
from typing import get_args

import pytest
import torch

import onegen.engine as engine_mod
from onegen.engine import (DecodeState, Engine, HiddenStateQuery, InputError, QueryContext, QueryVector,
                           RunSettings, Sampling, choose_token)
from onegen.protocols import CONTINUE, LK, PARA_CLOSE, PARA_OPEN, QR
from onegen.trace import SCHEMA, StopReason, TokenKind, Trace, TraceFormatError
from scripted import chooser, el_script, multi_hop_script, script, text_ids, tid
from tiny import ENTITIES, PARAGRAPHS, PASSAGES
from onegen.documents import Document



pytestmark = pytest.mark.usefixtures("one_thread")
# The scripted entity-linking output includes a malformed [LK] on purpose, which copy-constrained
# decoding (the default) would never let through: these tests run the free loop.
FREE = RunSettings(copy_input=False)


class Recorder:
    """Wraps DecodeState.feed: every forward call's phase and length, and the state itself."""

    def __init__(self):
        self.calls: list[tuple[str, int]] = []
        self.state: DecodeState | None = None

    def install(self, monkeypatch):
        real = DecodeState.feed

        def feed(state, ids, phase):
            self.state = state
            self.calls.append((phase, len(ids)))
            return real(state, ids, phase)

        monkeypatch.setattr(DecodeState, "feed", feed)
        return self


class Capture(HiddenStateQuery):
    """A QueryEncoder that keeps what the engine handed it."""

    def __init__(self):
        self.contexts: list[QueryContext] = []

    def __call__(self, ctx: QueryContext) -> QueryVector:
        self.contexts.append(ctx)
        return super().__call__(ctx)


def full_ids(trace: Trace) -> list[int]:
    return trace.prompt_ids + [t.id for t in trace.tokens]


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.float().flatten(), b.float().flatten(), dim=0))


# Per protocol: the candidates and a scripted output with at least one retrieval.
SCRIPTED_RUNS = [
    ("multi-hop", PARAGRAPHS, multi_hop_script),
    ("entity-linking", ENTITIES, el_script),
    ("single-hop", PASSAGES, lambda lm: text_ids(lm, "single-hop", "[Relevant] Corvale.")),
]


# -- the query vector is the generation pass's own hidden state -------------------------------------

@pytest.mark.parametrize("task,docs,make_script", SCRIPTED_RUNS)
def test_query_vector_equals_cache_free_forward(models, monkeypatch, task, docs, make_script):
    lm = models[task]
    script(monkeypatch, lm, make_script(lm))
    cap = Capture()
    trace = Engine(lm, query_encoder=cap).run_trace(task, "Where was the director of Film A born?", candidates=docs,
                                                    settings=FREE)
    assert trace.retrievals and len(cap.contexts) == len(trace.retrievals)
    ids = full_ids(trace)
    assert [t.position for t in trace.tokens] == list(range(len(trace.prompt_ids), len(ids)))
    with torch.inference_mode():
        reference = lm.backbone(input_ids=torch.tensor([ids]), use_cache=False).last_hidden_state[0]
    query_id = lm.protocol(task).query_id
    for r, ctx in zip(trace.retrievals, cap.contexts):
        assert ids[r.position] == query_id
        assert ctx.query_ids[-1] == query_id and ctx.query_ids == ids[r.position + 1 - len(ctx.query_ids):r.position + 1]
        assert cosine(ctx.hidden, reference[r.position]) > 0.9999


# -- every token is forwarded exactly once -----------------------------------------------------------

@pytest.mark.parametrize("task,docs,make_script", SCRIPTED_RUNS)
def test_no_token_is_forwarded_twice(models, monkeypatch, task, docs, make_script):
    lm = models[task]
    script(monkeypatch, lm, make_script(lm))
    rec = Recorder().install(monkeypatch)
    # One token per forward call (tests/test_draft.py: drafts forward more per call, keep the same ids).
    trace = Engine(lm).run_trace(task, "Where was the director of Film A born?", candidates=docs,
                                 settings=RunSettings(draft_tokens=0, copy_input=False))
    ft = trace.cost.forward_tokens
    chosen = [t for t in trace.tokens if t.kind != "inserted"]
    inserted = sum(r.inserted_tokens for r in trace.retrievals)
    assert inserted == sum(1 for t in trace.tokens if t.kind == "inserted")
    # The last chosen token (EOS, the stop string's end, or the limit) is never fed.
    expected = len(trace.prompt_ids) + len(chosen) - 1 + inserted
    cache_len = len(rec.state.decoder)
    assert ft["prompt"] + ft["generated"] + ft["inserted"] == cache_len == len(rec.state) == expected
    assert ft["query_reencoding"] == 0
    assert rec.state.ids == full_ids(trace)[:-1]
    assert rec.calls[0] == ("prompt", len(trace.prompt_ids))
    assert all(n == 1 for phase, n in rec.calls if phase == "generated")
    assert [n for phase, n in rec.calls if phase == "inserted"] == [r.inserted_tokens for r in trace.retrievals
                                                                  if r.inserted_tokens]


# -- protocol rules ----------------------------------------------------------------------------------

def test_continue_is_forced_only_after_a_closed_mention(models, monkeypatch):
    """The released rule is "</MENTION>[LK]" -> "[_CONTINUE_]": a bare [LK] is still a query but
    forces nothing (after it the script writes [_CONTINUE_] itself; after the others it proposes EOS)."""
    lm = models["entity-linking"]
    script(monkeypatch, lm, el_script(lm))
    trace = Engine(lm).run_trace("entity-linking", "Paris and Rome.", candidates=ENTITIES, settings=FREE)
    lk, cont = tid(lm, LK), tid(lm, CONTINUE)
    after_lk = [b for a, b in zip(trace.tokens, trace.tokens[1:]) if a.id == lk]
    assert len(after_lk) == 3 and len(trace.retrievals) == 3
    assert [(t.id, t.kind) for t in after_lk] == [(cont, "forced"), (cont, "generated"), (cont, "forced")]
    assert [t for t in trace.tokens if t.kind == "forced"] == [after_lk[0], after_lk[2]]
    assert trace.stop_reason == "eos"
    assert trace.result.output_text.endswith(".</s>")


def test_multi_hop_inserts_the_chosen_paragraph(models, monkeypatch):
    lm = models["multi-hop"]
    script(monkeypatch, lm, multi_hop_script(lm))
    rec = Recorder().install(monkeypatch)
    trace = Engine(lm).run_trace("multi-hop", "Where was the director of Film A born?", candidates=PARAGRAPHS)
    assert len(trace.retrievals) == 2
    by_id = {d.id: d for d in PARAGRAPHS}
    for r in trace.retrievals:
        doc = by_id[r.chosen_hit.id]
        want = f"{PARA_OPEN}wiki title: {doc.title}\ncontent: {doc.text}{PARA_CLOSE}"
        assert r.inserted_text == want
        ins = [t for t in trace.tokens if r.position < t.position <= r.position + r.inserted_tokens]
        assert all(t.kind == "inserted" for t in ins) and len(ins) == r.inserted_tokens
        # The same ids the authors' whole-string tokenisation gives (the model was trained on them).
        assert [t.id for t in ins] == lm.tokenizer(want, add_special_tokens=False).input_ids
        assert "".join(t.text for t in ins) == want
    assert trace.cost.forward_tokens["inserted"] == sum(r.inserted_tokens for r in trace.retrievals)
    assert [n for p, n in rec.calls if p == "inserted"] == [r.inserted_tokens for r in trace.retrievals]
    assert trace.retrievals[0].query_text == "First, who directed Film A?"
    assert trace.retrievals[1].query_text == "Second, where was Ivo Brandel born?"
    hops = trace.result.hops
    assert [h.question for h in hops] == [r.query_text for r in trace.retrievals]
    assert [h.title for h in hops] == [r.chosen_hit.title for r in trace.retrievals]
    assert hops[0].answer == "Ivo Brandel."


def test_at_most_max_retrievals(models, monkeypatch):
    """After the last allowed retrieval the segment runs to its stop, as in the released evaluator:
    here the next [Question Representation], which ends the run unsearched and unfed."""
    lm = models["multi-hop"]
    script(monkeypatch, lm, multi_hop_script(lm))
    rec = Recorder().install(monkeypatch)
    settings = RunSettings(max_retrievals=1, draft_tokens=0)
    trace = Engine(lm).run_trace("multi-hop", "Where was the director of Film A born?", candidates=PARAGRAPHS,
                                 settings=settings)
    qr = tid(lm, QR)
    assert len(trace.retrievals) == 1
    assert [t.id for t in trace.tokens].count(qr) == 2
    assert trace.tokens[-1].id == qr and trace.tokens[-1].kind == "generated"
    assert trace.stop_reason == "retrieval_limit"
    assert trace.result.output_text.endswith("Second, where was Ivo Brandel born?[Question Representation]")
    assert rec.state.ids == full_ids(trace)[:-1]  # the unsearched token was never fed
    assert trace.result.retrieval_limit_reached
    assert trace.settings["max_retrievals"] == 1


def test_no_limit_flag_below_the_limit(models, monkeypatch):
    lm = models["multi-hop"]
    script(monkeypatch, lm, multi_hop_script(lm))
    trace = Engine(lm).run_trace("multi-hop", "Where?", candidates=PARAGRAPHS, settings=RunSettings(max_retrievals=3))
    assert len(trace.retrievals) == 2 and not trace.result.retrieval_limit_reached


def test_entity_linking_reports_the_retrieval_limit(models, monkeypatch):
    lm = models["entity-linking"]
    script(monkeypatch, lm, el_script(lm))
    trace = Engine(lm).run_trace("entity-linking", "Paris and Rome.", candidates=ENTITIES,
                                 settings=RunSettings(max_retrievals=1, copy_input=False))
    assert len(trace.retrievals) == 1
    assert trace.result.retrieval_limit_reached


def test_stop_on_eos(models, monkeypatch):
    lm = models["multi-hop"]
    eos = lm.tokenizer.eos_token_id
    script(monkeypatch, lm, text_ids(lm, "multi-hop", "No retrieval needed.") + [eos] + text_ids(lm, "multi-hop", " more"))
    trace = Engine(lm).run_trace("multi-hop", "Is it?", candidates=PARAGRAPHS)
    assert trace.stop_reason == "eos"
    assert trace.tokens[-1].id == eos
    assert trace.result.output_text == "No retrieval needed.</s>"
    assert not trace.result.final_answer_found and trace.result.answer is None


def test_stop_at_complete_final_answer(models, monkeypatch):
    lm = models["multi-hop"]
    script(monkeypatch, lm, multi_hop_script(lm))
    trace = Engine(lm).run_trace("multi-hop", "Where was the director of Film A born?", candidates=PARAGRAPHS)
    assert trace.stop_reason == "final_answer"
    assert trace.result.output_text.endswith("<FINAL-ANSWER>Corvale</FINAL-ANSWER>")
    assert "more text" not in trace.result.output_text
    assert trace.result.answer == "Corvale" and trace.result.final_answer_found


def test_an_answer_opened_twice_is_read_from_its_last_opener(models, monkeypatch):
    """A model that writes <FINAL-ANSWER> inside a sub-question and again at its answer: the answer
    is what follows the second opener, not the chain and the paragraphs in between."""
    lm = models["multi-hop"]
    qr = tid(lm, QR)
    t = lambda s: text_ids(lm, "multi-hop", s)  # noqa: E731
    script(monkeypatch, lm, t("First, who directed <FINAL-ANSWER>Film A?") + [qr]
           + t(" Ivo Brandel. Second, where was Ivo Brandel born?") + [qr] + t(" Corvale. <FINAL-ANSWER>Corvale</FINAL-ANSWER>"))
    trace = Engine(lm).run_trace("multi-hop", "Where was the director of Film A born?", candidates=PARAGRAPHS)
    assert trace.stop_reason == "final_answer" and trace.result.output_text.count("<FINAL-ANSWER>") == 2
    assert trace.result.answer == "Corvale" and trace.result.final_answer_found


def test_stop_at_max_new_tokens(models, monkeypatch):
    lm = models["multi-hop"]
    script(monkeypatch, lm, text_ids(lm, "multi-hop", "word " * 40))
    trace = Engine(lm).run_trace("multi-hop", "Is it?", candidates=PARAGRAPHS, settings=RunSettings(max_new_tokens=7))
    assert trace.stop_reason == "max_new_tokens" and len(trace.tokens) == 7


HOSTILE = "Say [LK] and </s> then <paragraph>x</paragraph> [Question Representation] [_CONTINUE_] <s>"


@pytest.mark.parametrize("task,docs", [("entity-linking", ENTITIES), ("multi-hop", PARAGRAPHS)])
def test_user_text_with_protocol_tokens_stays_text(models, monkeypatch, task, docs):
    lm = models[task]
    specials = set(lm.tokenizer.get_added_vocab().values()) | {lm.tokenizer.bos_token_id, lm.tokenizer.eos_token_id}
    copied = text_ids(lm, task, HOSTILE)  # the model echoes the user's text, as plain tokens
    eos = lm.tokenizer.eos_token_id
    script(monkeypatch, lm, copied + [eos])
    trace = Engine(lm).run_trace(task, HOSTILE, candidates=docs)
    template_specials = [i for i in trace.prompt_ids if i in specials]
    benign = Engine(lm).prompt_ids(task, "hello")[1]
    assert template_specials == [i for i in benign if i in specials]
    assert trace.retrievals == []
    assert trace.stop_reason == "eos" and len(trace.tokens) == len(copied) + 1
    assert trace.result.output_text == HOSTILE + "</s>"


def test_empty_input_is_refused(models):
    engine = Engine(models["multi-hop"])
    for text in ("", "   \n"):
        with pytest.raises(InputError, match="empty"):
            engine.run_trace("multi-hop", text, candidates=PARAGRAPHS)


def test_input_longer_than_context_is_refused(models):
    lm = models["multi-hop"]
    with pytest.raises(InputError, match=r"too long: its prompt has [\d,]+ tokens .* at most 1,024"):
        Engine(lm).run_trace("multi-hop", "word " * 1500, candidates=PARAGRAPHS)
    with pytest.raises(InputError, match="characters"):
        Engine(lm).run_trace("multi-hop", "a" * (engine_mod.MAX_INPUT_CHARS + 1), candidates=PARAGRAPHS)


def test_no_documents_is_refused(models):
    with pytest.raises(InputError, match="no documents"):
        Engine(models["multi-hop"]).run_trace("multi-hop", "Where?", candidates=[])


# -- the trace ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("task,docs,make_script", SCRIPTED_RUNS)
def test_trace_json_round_trip(models, monkeypatch, task, docs, make_script):
    lm = models[task]
    script(monkeypatch, lm, make_script(lm))
    trace = Engine(lm).run_trace(task, "Paris and Rome, Ünïcode.", candidates=docs,
                                 settings=RunSettings(top_k=2, copy_input=False, sampling=Sampling(temperature=0.7, seed=3)))
    assert trace.stop_reason in get_args(StopReason) and {t.kind for t in trace.tokens} <= set(get_args(TokenKind))
    back = Trace.from_json(trace.to_json())
    assert back == trace
    assert Trace.from_json(trace.to_json(indent=2)) == trace
    assert back.to_json() == trace.to_json()


def test_trace_with_another_schema_is_refused(models, monkeypatch):
    lm = models["multi-hop"]
    script(monkeypatch, lm, multi_hop_script(lm))
    d = Engine(lm).run_trace("multi-hop", "Where?", candidates=PARAGRAPHS).to_dict()
    assert d["schema"] == SCHEMA
    for bad in ("onegen-trace/2", None):
        with pytest.raises(TraceFormatError, match="unsupported trace schema"):
            Trace.from_dict({**d, "schema": bad})
    with pytest.raises(TraceFormatError, match="not valid JSON"):
        Trace.from_json("{not json")


def test_hits_ordered_by_score_and_chosen_marked(models, monkeypatch):
    lm = models["multi-hop"]
    script(monkeypatch, lm, multi_hop_script(lm))
    trace = Engine(lm).run_trace("multi-hop", "Where?", candidates=PARAGRAPHS, settings=RunSettings(top_k=3))
    for r in trace.retrievals:
        assert [h.rank for h in r.hits] == [0, 1, 2]
        scores = [h.score for h in r.hits]
        assert scores == sorted(scores, reverse=True)
        assert len({h.id for h in r.hits}) == 3  # one hit per paragraph, not per sentence
        assert r.chosen == 0 and r.chosen_hit is r.hits[0]
        assert all(h.fragment in (0, 1) for h in r.hits)
    two = Engine(lm)
    script(monkeypatch, lm, multi_hop_script(lm))
    assert all(len(r.hits) == 2 for r in two.run_trace("multi-hop", "Where?", candidates=PARAGRAPHS,
                                                      settings=RunSettings(top_k=2)).retrievals)


def test_entities_linked_by_position(models, monkeypatch):
    lm = models["entity-linking"]
    script(monkeypatch, lm, el_script(lm))
    text = "Paris and Rome."
    trace = Engine(lm).run_trace("entity-linking", text, candidates=ENTITIES, settings=FREE)
    assert [r.query_text for r in trace.retrievals] == ["Paris", "", "Rome"]
    ents = trace.result.entities
    # The malformed [LK] (no mention) links nothing and does not shift Rome onto its vector.
    assert [(e.mention, e.start, e.end, e.retrieval) for e in ents] == [("Paris", 0, 5, 0), ("Rome", 10, 14, 2)]
    for e in ents:
        hit = trace.retrievals[e.retrieval].chosen_hit
        assert (e.entity_id, e.title, e.score) == (hit.id, hit.title, hit.score)
        assert text[e.start:e.end] == e.mention


def test_candidate_vectors_computed_once_per_run(models, monkeypatch):
    lm = models["multi-hop"]
    calls = []
    real = engine_mod.encode_documents

    def counting(*args, **kwargs):
        calls.append(len(args[2]))
        return real(*args, **kwargs)

    monkeypatch.setattr(engine_mod, "encode_documents", counting)
    script(monkeypatch, lm, multi_hop_script(lm))
    trace = Engine(lm).run_trace("multi-hop", "Where?", candidates=PARAGRAPHS)
    assert len(trace.retrievals) == 2
    assert calls == [len(PARAGRAPHS)]
    assert trace.cost.document_tokens > 0


# -- sampling never overrides the protocol ----------------------------------------------------------

def test_choose_token_forced_wins_under_sampling():
    logits = torch.zeros(50)
    logits[7] = -50.0  # the forced token is the least likely
    gen = torch.Generator().manual_seed(0)
    picks = {choose_token(logits, forced=7, sampling=Sampling(temperature=1.5, top_p=0.9), generator=gen)
             for _ in range(30)}
    assert picks == {7}
    # Banned tokens are never sampled.
    logits = torch.zeros(4)
    logits[2] = 10.0
    picks = {choose_token(logits, banned=[2], sampling=Sampling(), generator=gen) for _ in range(30)}
    assert 2 not in picks and picks <= {0, 1, 3}


def test_sampled_run_still_forces_continue(models, monkeypatch):
    lm = models["entity-linking"]
    script(monkeypatch, lm, el_script(lm))
    trace = Engine(lm).run_trace("entity-linking", "Paris and Rome.", candidates=ENTITIES,
                                 settings=RunSettings(copy_input=False, sampling=Sampling(temperature=1.0, top_p=0.95, seed=1)))
    lk, cont = tid(lm, LK), tid(lm, CONTINUE)
    pairs = [(a.id, b.id, b.kind) for a, b in zip(trace.tokens, trace.tokens[1:]) if a.id == lk]
    assert pairs == [(lk, cont, "forced"), (lk, cont, "generated"), (lk, cont, "forced")]  # a bare [LK] forces nothing
    assert trace.settings["decoding"] == dataclasses.asdict(Sampling(temperature=1.0, top_p=0.95, seed=1))


# -- the token chooser -------------------------------------------------------------------------------

class RecordingChooser:
    """Wraps a chooser and keeps every question the engine asked it."""

    def __init__(self, inner):
        self.inner = inner
        self.asked: list[dict] = []

    def __call__(self, logits, *, step, forced=None, banned=(), allowed=None, sampling=None, generator=None):
        tok = self.inner(logits, step=step, forced=forced, banned=banned, allowed=allowed, sampling=sampling,
                         generator=generator)
        self.asked.append({"step": step, "forced": forced, "banned": list(banned), "allowed": allowed, "tok": tok})
        return tok


def test_every_choice_goes_through_the_chooser(models):
    lm = models["entity-linking"]
    rec = RecordingChooser(chooser(lm, el_script(lm)))
    trace = Engine(lm, chooser=rec).run_trace("entity-linking", "Paris and Rome.", candidates=ENTITIES,
                                              settings=RunSettings(copy_input=False, draft_tokens=0))
    chosen = [t for t in trace.tokens if t.kind != "inserted"]
    # One question per chosen token, in order, and the answer is the token recorded.
    assert [a["step"] for a in rec.asked] == list(range(len(chosen)))
    assert [a["tok"] for a in rec.asked] == [t.id for t in chosen]
    # The protocol reaches the chooser as arguments: the forced [_CONTINUE_] after each </MENTION>[LK].
    assert [a["step"] for a in rec.asked if a["forced"] is not None] == \
        [i for i, t in enumerate(chosen) if t.kind == "forced"]
    assert all(a["forced"] == tid(lm, CONTINUE) for a in rec.asked if a["forced"] is not None)


def test_drafts_are_checked_against_the_chooser(models):
    """A chooser that is a function of its arguments gives the same run with drafts as without."""
    lm = models["multi-hop"]
    ids = multi_hop_script(lm, final_tail=" Film A was directed by Ivo Brandel, born in Corvale.")
    runs = {d: Engine(lm, chooser=chooser(lm, ids)).run_trace("multi-hop", "Where was the director of Film A born?",
                                                              candidates=PARAGRAPHS, settings=RunSettings(draft_tokens=d))
            for d in (0, 3)}
    assert [(t.id, t.kind) for t in runs[3].tokens] == [(t.id, t.kind) for t in runs[0].tokens]
    assert runs[3].cost.forward_tokens["generated"] == runs[0].cost.forward_tokens["generated"]
    assert runs[3].cost.forward_tokens["draft_rejected"] > 0  # guesses were made, and some refused


def test_an_engines_chooser_wins_over_the_default(models, monkeypatch):
    lm = models["multi-hop"]
    script(monkeypatch, lm, multi_hop_script(lm))  # the default for engines without a chooser
    eos = lm.tokenizer.eos_token_id
    own = Engine(lm, chooser=chooser(lm, text_ids(lm, "multi-hop", "No.") + [eos]))
    assert own.run_trace("multi-hop", "Is it?", candidates=PARAGRAPHS).result.output_text == "No.</s>"
    assert Engine(lm).run_trace("multi-hop", "Is it?", candidates=PARAGRAPHS).stop_reason == "final_answer"


# -- protocol fidelity: the released loop's limits -----------------------------------------------------

class NoHits:
    """A retriever that finds nothing (an empty index)."""

    def search(self, vector, k):
        return []

    def describe(self):
        return {"path": "empty", "documents": 0, "vectors": 0, "protocol": "", "model_fingerprint": ""}


@pytest.mark.parametrize("task,make_script", [
    ("multi-hop", multi_hop_script),
    ("single-hop", lambda lm: text_ids(lm, "single-hop", "[Relevant] Corvale.")),
])
def test_a_retrieval_without_hits_ends_the_run(models, task, make_script):
    lm = models[task]
    trace = Engine(lm, chooser=chooser(lm, make_script(lm))).run_trace(task, "Where?", retriever=NoHits())
    assert trace.stop_reason == "no_hits" and trace.stop_reason in get_args(StopReason)
    assert len(trace.retrievals) == 1
    r = trace.retrievals[0]
    assert r.hits == [] and r.chosen is None and r.inserted_tokens == 0
    assert not any(t.kind == "inserted" for t in trace.tokens)
    assert Trace.from_json(trace.to_json()) == trace


def test_entity_linking_without_hits_writes_on(models):
    """Entity linking inserts nothing, so a retrieval without hits only links nothing."""
    lm = models["entity-linking"]
    trace = Engine(lm, chooser=chooser(lm, el_script(lm))).run_trace("entity-linking", "Paris and Rome.",
                                                                       retriever=NoHits(), settings=FREE)
    assert trace.stop_reason == "eos" and len(trace.retrievals) == 3
    assert trace.result.entities == []


def _segments(lm) -> list[list[int]]:
    """multi_hop_script's generation segments: each ends at a retrieval token or at the final answer."""
    qr = tid(lm, QR)
    ids = multi_hop_script(lm, final_tail="")
    cuts = [i + 1 for i, t in enumerate(ids) if t == qr]
    return [ids[a:b] for a, b in zip([0, *cuts], [*cuts, len(ids)])]


def test_the_token_limit_applies_to_each_segment(models):
    """Multi-hop: the released evaluator runs one `generate` per segment (the first, and each after
    an insertion), each with its own max_new_tokens; the context bound stays."""
    lm = models["multi-hop"]
    seg = [len(s) for s in _segments(lm)]
    assert len(seg) == 3 and sum(seg) > max(seg)
    run = lambda limit: Engine(lm, chooser=chooser(lm, multi_hop_script(lm))).run_trace(  # noqa: E731
        "multi-hop", "Where was the director of Film A born?", candidates=PARAGRAPHS,
        settings=RunSettings(max_new_tokens=limit))
    whole = run(max(seg))  # the run writes more than the limit, no segment does
    assert whole.stop_reason == "final_answer" and len(whole.retrievals) == 2
    assert whole.settings["max_new_tokens"] == max(seg) and whole.settings["max_new_tokens_per"] == "segment"
    assert max(seg[:2]) < seg[2] - 1
    short = run(seg[2] - 1)  # the first two segments fit, the last is cut one token short
    assert short.stop_reason == "max_new_tokens" and len(short.retrievals) == 2
    last = short.retrievals[-1]
    after = short.tokens[last.position + 1 + last.inserted_tokens - len(short.prompt_ids):]
    assert len(after) == seg[2] - 1 and all(t.kind == "generated" for t in after)


def test_entity_linking_has_one_segment(models):
    lm = models["entity-linking"]
    trace = Engine(lm, chooser=chooser(lm, el_script(lm))).run_trace(
        "entity-linking", "Paris and Rome.", candidates=ENTITIES, settings=RunSettings(copy_input=False, max_new_tokens=12))
    assert trace.stop_reason == "max_new_tokens" and len(trace.tokens) == 12
    assert trace.settings["max_new_tokens_per"] == "run"


def test_the_segment_after_the_last_retrieval_runs_to_its_stop(models):
    """At the retrieval limit nothing is banned: the next segment ends at EOS, at </FINAL-ANSWER>, or
    at the retrieval token, which is then not searched (stop reason "retrieval_limit")."""
    lm = models["multi-hop"]
    question = "Where was the director of Film A born?"
    done = Engine(lm, chooser=chooser(lm, multi_hop_script(lm))).run_trace(
        "multi-hop", question, candidates=PARAGRAPHS, settings=RunSettings(max_retrievals=2))
    assert done.stop_reason == "final_answer" and len(done.retrievals) == 2 and done.result.retrieval_limit_reached
    runs = {d: Engine(lm, chooser=chooser(lm, multi_hop_script(lm))).run_trace(
        "multi-hop", question, candidates=PARAGRAPHS, settings=RunSettings(max_retrievals=1, draft_tokens=d))
        for d in (0, 2)}
    for trace in runs.values():
        assert trace.stop_reason == "retrieval_limit" and len(trace.retrievals) == 1
        assert trace.tokens[-1].id == tid(lm, QR)
    assert [t.id for t in runs[2].tokens] == [t.id for t in runs[0].tokens]


def test_entity_linking_at_the_retrieval_limit_bans_lk(models):
    """Entity linking has no retrieval limit in the released loop (one `generate` per text); this
    engine's limit bans [LK] once reached, so the rest of the text is still written and, with the
    copy constraint, no mention opens that could not be linked."""
    lm = models["entity-linking"]
    for copy_input in (False, True):
        trace = Engine(lm, chooser=chooser(lm, el_script(lm))).run_trace(
            "entity-linking", "Paris and Rome.", candidates=ENTITIES,
            settings=RunSettings(max_retrievals=1, copy_input=copy_input))
        assert len(trace.retrievals) == 1 and trace.result.retrieval_limit_reached
        assert [t.id for t in trace.tokens].count(tid(lm, LK)) == 1
        assert trace.stop_reason == "eos"
        if copy_input:
            assert trace.result.output_text.count("<MENTION>") == 1


def test_copy_constrained_lk_is_always_followed_by_continue(models):
    """With the copy constraint [LK] may only follow </MENTION>, and only [_CONTINUE_] may follow it:
    the constraint and the forcing rule agree, also where the constraint made the model spell the
    tag in other tokens than its usual ones (the script desynchronises after the bare [LK])."""
    lm = models["entity-linking"]
    trace = Engine(lm, chooser=chooser(lm, el_script(lm))).run_trace("entity-linking", "Paris and Rome.",
                                                                       candidates=ENTITIES)
    lk, cont = tid(lm, LK), tid(lm, CONTINUE)
    close = text_ids(lm, "entity-linking", "</MENTION>")
    ids = [t.id for t in trace.tokens]
    at = [i for i, t in enumerate(ids) if t == lk]
    assert len(at) > 1 and all(ids[i + 1] == cont and trace.tokens[i + 1].kind == "forced" for i in at)
    assert all("".join(t.text for t in trace.tokens[:i]).endswith("</MENTION>") for i in at)
    assert any(ids[i - len(close):i] != close for i in at)  # a tag spelled in other tokens was among them


def test_characters_split_across_tokens_reach_the_output_whole(models, monkeypatch):
    """Byte-fallback tokens of one character: the output, the answer, the hop's sub-answer and the
    inserted paragraph read as text, never U+FFFD."""
    lm = models["multi-hop"]
    qr = tid(lm, QR)
    t = lambda s: text_ids(lm, "multi-hop", s)  # noqa: E731
    script(monkeypatch, lm, t("First, where was Jürgen 🎉 born?") + [qr]
           + t(" Москва 東京. <FINAL-ANSWER>Москва 🎉</FINAL-ANSWER>"))
    docs = [Document.from_sentences("p-x", "Der Himmel über Berlin", ["Jürgen was born in Москва 東京."])]
    trace = Engine(lm).run_trace("multi-hop", "Where was Jürgen born?", candidates=docs)
    assert "\ufffd" not in trace.generated_text
    assert trace.result.answer == "Москва 🎉"
    assert trace.retrievals[0].query_text == "First, where was Jürgen 🎉 born?"
    assert trace.result.hops[0].answer == "Москва 東京."
    assert "über" in "".join(tok.text for tok in trace.tokens if tok.kind == "inserted")


def test_other_protocols_tokens_are_masked(tmp_path, monkeypatch):
    """A multi-task checkpoint knows every protocol's tokens: a multi-hop run never writes a
    Self-RAG reflection token or [LK], a single-hop answer never an entity-linking token."""
    from onegen.protocols import SPECS
    from tiny import build_bpe_tokenizer, build_tiny_model, _loaded

    every = sorted({t for spec in SPECS.values() for t in spec.token_strings})
    tok_dir = tmp_path / "tok-all"
    tok_dir.mkdir()
    build_bpe_tokenizer(tok_dir, every)
    lm = _loaded(str(build_tiny_model("multi-task", tmp_path, tokenizer_dir=tok_dir)))
    t = lambda s: text_ids(lm, "multi-hop", s)  # noqa: E731
    foreign = [tid(lm, "[Relevant]"), tid(lm, LK), tid(lm, "[Utility:5]")]
    script(monkeypatch, lm, t("First, who") + foreign + t(" directed Film A?") + [tid(lm, QR)]
           + t(" Ivo. <FINAL-ANSWER>Corvale</FINAL-ANSWER>"))
    trace = Engine(lm).run_trace("multi-hop", "Where was the director of Film A born?", candidates=PARAGRAPHS)
    written = {tok.id for tok in trace.tokens if tok.kind != "inserted"}
    assert not written & set(foreign)
    assert len(trace.retrievals) == 1  # its own retrieval token still works
    script(monkeypatch, lm, [tid(lm, "[Relevant]"), tid(lm, LK), tid(lm, "[SE]")] + t(" Corvale."))
    trace = Engine(lm).run_trace("single-hop", "Where was Ivo born?", candidates=PASSAGES)
    written = [tok.id for tok in trace.tokens if tok.kind != "inserted"]
    assert written[0] == tid(lm, "[Relevant]")  # its own reflection tokens stay
    assert tid(lm, LK) not in written and tid(lm, "[SE]") not in written


def test_repeats_finds_a_short_loop_only():
    from onegen.engine import repeats

    assert repeats([5, 1, 2, 3] * 10, 32)  # a 4-gram, over and over
    assert repeats([9] * 40, 32)
    assert not repeats(list(range(40)), 32)
    assert not repeats([1, 2, 3] * 10, 32)  # too short to judge (30 tokens)
    assert not repeats([1, 2, 3, 4, 5, 6, 7, 8, 9] * 5, 32)  # period 9 > 8
    assert not repeats([9] * 40, 0)  # off


def test_a_runaway_loop_ends_with_its_own_stop_reason(models, monkeypatch):
    """A single-hop answer that repeats itself until the token limit ("Krinciltickickick...")
    ends once the loop is plain, not 200 tokens later under a success."""
    lm = models["single-hop"]
    loop = text_ids(lm, "single-hop", "kick")
    script(monkeypatch, lm, text_ids(lm, "single-hop", "[Relevant] Krincil") + loop * 200)
    trace = Engine(lm).run_trace("single-hop", "Where was Ivo born?", candidates=PASSAGES)
    assert trace.stop_reason == "repetition"
    generated = [t for t in trace.tokens if t.kind == "generated"]
    assert len(generated) < 60
    assert trace.settings["repetition_window"] == 32
    off = Engine(lm).run_trace("single-hop", "Where was Ivo born?", candidates=PASSAGES,
                               settings=RunSettings(repetition_window=0))
    assert off.stop_reason == "max_new_tokens"


@pytest.mark.parametrize("written,question", [
    ("Ivo Brandel. Second, where was John C. Reilly born?", "Second, where was John C. Reilly born?"),
    ("Corvale. Second, who founded the U.S. Steel works?", "Second, who founded the U.S. Steel works?"),
    ("First, where did Dr. Ivo Brandel study?", "First, where did Dr. Ivo Brandel study?"),
    ("He was born in St. Louis. Second, when?", "Second, when?"),
    ("It has 3.5 million people. Third, which is larger?", "Third, which is larger?"),
])
def test_sub_question_is_not_cut_at_initials_or_abbreviations(written, question):
    from onegen.tasks import get_task

    assert get_task("multi-hop").query_text(written) == question
