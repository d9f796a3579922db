"""Counterfactual replay on tiny random checkpoints: the recorded prefix is prefilled once, only the
continuation is recomputed, and the changed retrieval is recorded in the replayed trace.

Token choices are scripted (tests/scripted.py): the replay follows the same script from the step
after its prefix, so what changes is the document, and with it every forward pass after it."""
from __future__ import annotations

import dataclasses

import pytest

from onegen.datasets import MultiHopExample
from onegen.engine import DecodeState, Engine, RunSettings, Sampling
from onegen.index import VectorIndex
from onegen.replay import Choice, ReplayError, gold_choice, replay
from onegen.tasks import get_task
from onegen.trace import Trace
from scripted import el_script, multi_hop_script, script, text_ids
from tiny import ENTITIES, PARAGRAPHS, PASSAGES, hotpot_item

pytestmark = pytest.mark.usefixtures("one_thread")
FREE = RunSettings(copy_input=False, top_k=3)
QUESTION = "Where was the director of Film A born?"
CASES = {
    "multi-hop": (PARAGRAPHS, multi_hop_script),
    "entity-linking": (ENTITIES, el_script),
    "single-hop": (PASSAGES, lambda lm: text_ids(lm, "single-hop", "[Relevant] Corvale.")),
}


def original(models, monkeypatch, task, settings=FREE):
    lm = models[task]
    docs, make = CASES[task]
    script(monkeypatch, lm, make(lm))
    return lm, docs, Engine(lm).run_trace(task, QUESTION, candidates=docs, settings=settings)


class Feeds:
    """Every DecodeState.feed call's phase and ids."""

    def __init__(self, monkeypatch):
        self.calls: list[tuple[str, list[int]]] = []
        real = DecodeState.feed

        def feed(state, ids, phase):
            self.calls.append((phase, list(ids)))
            return real(state, ids, phase)

        monkeypatch.setattr(DecodeState, "feed", feed)


@pytest.mark.parametrize("task", list(CASES))
def test_rank_zero_reproduces_the_original(models, monkeypatch, task):
    lm, docs, trace = original(models, monkeypatch, task)
    c = replay(trace, lm, docs, step=0, choice=Choice.parse("0"))
    assert c.first_difference is None
    assert [t.id for t in c.replayed.tokens] == [t.id for t in trace.tokens]
    assert [r.chosen_hit.id for r in c.replayed.retrievals] == [r.chosen_hit.id for r in trace.retrievals]
    assert c.replayed.result.output_text == trace.result.output_text
    assert c.same_result and c.replayed_result == c.original_result
    assert c.replayed.stop_reason == trace.stop_reason
    r = c.replayed.replay
    assert (r.step, r.choice, r.rank, r.original) == (0, "rank", 0, trace.digest())
    assert r.document == r.original_document == trace.retrievals[0].chosen_hit.id


@pytest.mark.parametrize("task", list(CASES))
def test_only_the_continuation_is_recomputed(models, monkeypatch, task):
    lm, docs, trace = original(models, monkeypatch, task, dataclasses.replace(FREE, draft_tokens=0))
    step = len(trace.retrievals) - 1  # the last retrieval: the longest prefix
    feeds = Feeds(monkeypatch)
    c = replay(trace, lm, docs, step=step, choice=Choice.parse("1"))
    position = trace.retrievals[step].position
    full = trace.prompt_ids + [t.id for t in trace.tokens]
    # One forward of the recorded prefix, through the changed retrieval's token; nothing before it again.
    assert feeds.calls[0] == ("replay_prefix", full[:position + 1])
    assert [phase for phase, _ in feeds.calls[1:]].count("replay_prefix") == 0
    ft = c.replayed.cost.forward_tokens
    assert ft["replay_prefix"] == position + 1 == c.replayed.replay.prefix_tokens
    assert ft["prompt"] == 0
    continuation = c.continuation(c.replayed)
    # The continuation's tokens are forwarded once each (the last one, which ends the run, never).
    assert ft["generated"] + ft["inserted"] == len(continuation) - 1
    assert ft["inserted"] == sum(1 for t in continuation if t.kind == "inserted")
    assert sum(len(ids) for _, ids in feeds.calls) == c.replayed.cost.total_forward_tokens


def test_rank_k_inserts_that_document(models, monkeypatch):
    lm, docs, trace = original(models, monkeypatch, "multi-hop")
    c = replay(trace, lm, docs, step=0, choice=Choice.parse("2"))
    r = c.replayed.retrievals[0]
    other = trace.retrievals[0].hits[2]
    assert r.chosen == 2 and r.chosen_hit.id == other.id != trace.retrievals[0].chosen_hit.id
    assert f"title: {other.title}\n" in r.inserted_text and r.inserted_text != trace.retrievals[0].inserted_text
    # Everything before the changed document is the original's; the first difference is inside it
    # (after the paragraph's opening words, which every paragraph shares).
    assert c.start < c.first_difference < c.start + r.inserted_tokens
    assert c.replayed.tokens[c.first_difference].kind == "inserted"
    assert [t.id for t in c.replayed.tokens[:c.first_difference]] == [t.id for t in trace.tokens[:c.first_difference]]
    assert c.replayed.replay.document == other.id
    assert c.replayed.replay.original_document == trace.retrievals[0].chosen_hit.id
    # Later retrievals are searched afresh, with the top hit as usual.
    assert all(x.chosen == 0 for x in c.replayed.retrievals[1:])


def test_none_inserts_nothing_and_writes_on(models, monkeypatch):
    lm, docs, trace = original(models, monkeypatch, "multi-hop")
    c = replay(trace, lm, docs, step=0, choice=Choice.parse("none"))
    r = c.replayed.retrievals[0]
    assert r.chosen is None and r.chosen_hit is None and r.inserted_tokens == 0
    assert [h.id for h in r.hits] == [h.id for h in trace.retrievals[0].hits]  # still recorded
    after = c.continuation(c.replayed)
    assert after and after[0].kind == "generated"  # no paragraph after the retrieval token
    assert c.replayed.replay.choice == "none" and c.replayed.replay.document is None
    assert len(c.replayed.retrievals) == len(trace.retrievals)  # the loop went on to the next hop
    assert c.replayed.result.hops[0].title is None


def test_none_leaves_an_entity_unlinked(models, monkeypatch):
    lm, docs, trace = original(models, monkeypatch, "entity-linking")
    assert len(trace.result.entities) == 2
    c = replay(trace, lm, docs, step=0, choice=Choice.parse("none"))
    assert [e.mention for e in c.replayed.result.entities] == ["Rome"]
    assert c.original_result != c.replayed_result


def test_random_is_seeded_and_recorded(models, monkeypatch):
    lm, docs, trace = original(models, monkeypatch, "multi-hop", dataclasses.replace(FREE, top_k=1))
    engine = Engine(lm)
    index = engine.candidate_retriever("multi-hop", PARAGRAPHS).index
    drawn = {}
    for seed in range(6):
        c = replay(trace, engine, index, step=0, choice=Choice.parse("random", seed=seed))
        again = replay(trace, engine, index, step=0, choice=Choice.parse("random", seed=seed))
        r = c.replayed.retrievals[0]
        assert c.replayed.replay.seed == seed and c.replayed.replay.choice == "random"
        assert r.chosen_hit.id == again.replayed.retrievals[0].chosen_hit.id == c.replayed.replay.document
        assert [t.id for t in c.replayed.tokens] == [t.id for t in again.replayed.tokens]
        if r.chosen == len(trace.retrievals[0].hits):  # drawn from outside the recorded top-1: appended, scored
            assert r.hits[-1].rank == r.chosen and -1.0 <= r.hits[-1].score <= 1.0
        drawn[seed] = r.chosen_hit.id
    assert len(set(drawn.values())) > 1  # the seed decides


def test_replayed_trace_round_trips_and_old_traces_still_load(models, monkeypatch):
    lm, docs, trace = original(models, monkeypatch, "multi-hop")
    c = replay(trace, lm, docs, step=1, choice=Choice.parse("1"))
    back = Trace.from_json(c.replayed.to_json())
    assert back == c.replayed and back.replay.step == 1 and back.replay.original == trace.digest()
    assert back.cost.forward_tokens["replay_prefix"] == c.replayed.replay.prefix_tokens
    # An ordinary run has no replay key and no replay phase; a trace written before replays loads.
    d = trace.to_dict()
    assert "replay" not in d and "replay_prefix" not in d["cost"]["forward_tokens"]
    assert Trace.from_dict(d).replay is None
    assert Trace.from_json(trace.to_json()).digest() == trace.digest()


def test_bad_replays_are_refused_with_a_reason(models, monkeypatch):
    lm, docs, trace = original(models, monkeypatch, "multi-hop")
    n = len(trace.retrievals)
    with pytest.raises(ReplayError, match=f"step {n} is not a retrieval step"):
        replay(trace, lm, docs, step=n, choice=Choice.parse("0"))
    with pytest.raises(ReplayError, match="rank 3 is beyond the 3 candidates recorded at step 0"):
        replay(trace, lm, docs, step=0, choice=Choice.parse("3"))
    with pytest.raises(ReplayError, match="rank"):
        Choice.parse("second")
    with pytest.raises(ReplayError, match="another model"):
        other = dataclasses.replace(trace, model={**trace.model, "fingerprint": "0" * 32})
        replay(other, lm, docs, step=0, choice=Choice.parse("0"))
    with pytest.raises(ReplayError, match="holds no document"):
        replay(trace, lm, docs, step=0, choice=Choice("document", document="no-such-id"))
    sampled = Engine(lm).run_trace("multi-hop", QUESTION, candidates=docs,
                                   settings=dataclasses.replace(FREE, sampling=Sampling(seed=1)))
    with pytest.raises(ReplayError, match="sampled"):
        replay(sampled, lm, docs, step=0, choice=Choice.parse("0"))


def test_the_gold_document_answers_whether_it_would_have_fixed_the_run(models, monkeypatch):
    lm, docs, trace = original(models, monkeypatch, "multi-hop")
    index = Engine(lm).candidate_retriever("multi-hop", PARAGRAPHS).index
    example = get_task("multi-hop").item_parser()(hotpot_item("q1", "Corvale", decomposition=[
        {"title": trace.retrievals[0].hits[1].title}, {"title": "Corvale"}]), 0)
    assert isinstance(example, MultiHopExample)
    step, choice = gold_choice(trace, example, index)
    assert (step, choice) == (0, Choice("rank", rank=1))
    c = replay(trace, lm, index, step=step, choice=choice, example=example)
    assert c.replayed.retrievals[0].chosen_hit.title == trace.retrievals[0].hits[1].title
    assert c.original_correct is not None and c.replayed_correct is not None
    # A gold paragraph outside the recorded candidates is taken from the index; none anywhere: a reason.
    small = dataclasses.replace(trace, retrievals=[dataclasses.replace(trace.retrievals[0], hits=trace.retrievals[0].hits[:1]),
                                                   *trace.retrievals[1:]])
    assert gold_choice(small, example, index)[1].kind == "document"
    with pytest.raises(ReplayError, match="neither among its recorded candidates nor in the index"):
        gold_choice(small, example, VectorIndex(index.vectors[:0], []))


def test_cost_views_name_the_replayed_prefix(models, monkeypatch):
    from onegen.render_html import cost_html
    from onegen.render_text import cost_line

    lm, docs, trace = original(models, monkeypatch, "multi-hop")
    c = replay(trace, lm, docs, step=0, choice=Choice.parse("1"))
    prefix = c.replayed.replay.prefix_tokens
    assert f"replayed prefix {prefix}" in cost_line(c.replayed) and "prompt 0" in cost_line(c.replayed)
    assert 'data-phase="replay_prefix"' in cost_html(c.replayed)
    assert "replayed prefix" not in cost_line(trace) and "replay_prefix" not in cost_html(trace)


def test_copy_constrained_linking_replays_with_its_overrides(models, monkeypatch):
    """The copy constraint's state is rebuilt from the recorded tokens, not recomputed: a replay of
    the last retrieval writes what the run wrote, its overrides included."""
    lm, docs, trace = original(models, monkeypatch, "entity-linking", RunSettings(top_k=3))
    assert trace.settings["copy_input"] and trace.overrides  # the mask overrode the script somewhere
    step = len(trace.retrievals) - 1
    c = replay(trace, lm, docs, step=step, choice=Choice.parse("0"))
    assert c.first_difference is None and c.replayed.overrides == trace.overrides
    assert c.replayed.result.entities == trace.result.entities


def test_a_named_document_from_outside_the_candidates(models, monkeypatch):
    lm, docs, trace = original(models, monkeypatch, "multi-hop", dataclasses.replace(FREE, top_k=1))
    index = Engine(lm).candidate_retriever("multi-hop", PARAGRAPHS).index
    other = next(d for d in PARAGRAPHS if d.id != trace.retrievals[0].chosen_hit.id)
    c = replay(trace, lm, index, step=0, choice=Choice("document", document=other.id))
    r = c.replayed.retrievals[0]
    assert len(r.hits) == 2 and r.chosen == 1 and r.chosen_hit.id == other.id and r.hits[1].rank == 1
    assert c.replayed.replay.choice == "document" and c.replayed.replay.document == other.id


def test_span_times_do_not_spend_the_prefilled_prefix_twice(models, monkeypatch):
    pytest.importorskip("openinference.semconv")
    from onegen.export_openinference import timeline

    lm, docs, trace = original(models, monkeypatch, "multi-hop")
    c = replay(trace, lm, docs, step=1, choice=Choice.parse("1"))
    secs = c.replayed.cost.seconds
    # The prefix's tokens take no per-token share: their time is the one prefill's, so a retrieval
    # inside the prefix starts when that prefill ends.
    starts = timeline(c.replayed).retrieval_starts
    assert starts[0] == pytest.approx(secs["replay_prefix"])
    assert starts[1] == pytest.approx(secs["replay_prefix"] + c.replayed.retrievals[0].seconds)


def test_a_replayed_trace_says_what_it_replays(models, monkeypatch):
    from onegen.render_replay import replay_sentence

    lm, docs, trace = original(models, monkeypatch, "multi-hop")
    c = replay(trace, lm, docs, step=0, choice=Choice.parse("none"))
    said = replay_sentence(Trace.from_json(c.replayed.to_json()))
    assert said.startswith(f"A replay of trace {trace.digest()}: at step 1 it used no document instead of "
                           f"{trace.retrievals[0].chosen_hit.id!r} (none)")
    assert replay_sentence(trace) == ""
