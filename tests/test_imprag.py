"""ImpRAG's layer-split forward (onegen/imprag.py) on random tiny Llamas with 1-3 key-value heads."""
from __future__ import annotations

import pytest
import torch

from onegen.imprag import POOLING as POOLING_TEXT
from onegen.imprag import ImpragError, LayerSplit, SplitForward

N_LAYERS = 6


def tiny_llama(kv_heads: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=97, hidden_size=48, intermediate_size=64, num_hidden_layers=N_LAYERS,
                      num_attention_heads=6, num_key_value_heads=kv_heads, max_position_embeddings=128,
                      attn_implementation="eager")
    return LlamaForCausalLM(cfg).eval()


def ids(*xs):
    return torch.tensor(xs, dtype=torch.long)


INPUT = ids(5, 17, 33, 2, 40, 8, 61)
P1 = ids(11, 12, 13, 14)
P2 = ids(70, 71, 72)
P2_OTHER = ids(90, 3, 44)


def projections(model, layer: int, input_ids: torch.Tensor):
    """The pre-rotary query and key projections at `layer` of a plain transformers forward."""
    seen = {}
    attn = model.model.layers[layer].self_attn
    hooks = [attn.q_proj.register_forward_hook(lambda m, a, out: seen.__setitem__("q", out)),
             attn.k_proj.register_forward_hook(lambda m, a, out: seen.__setitem__("k", out))]
    try:
        with torch.no_grad():
            model(input_ids.unsqueeze(0))
    finally:
        for h in hooks:
            h.remove()
    return seen["q"][0], seen["k"][0]


@pytest.mark.parametrize("kv_heads", [1, 2, 3])
def test_query_and_passage_vectors_equal_a_plain_forward(kv_heads):
    model = tiny_llama(kv_heads)
    split = LayerSplit(bottom=2, top=4, n_layers=N_LAYERS)
    fwd = SplitForward(model, split)
    head_dim = 48 // 6
    with torch.no_grad():
        state = fwd.start(INPUT)
        pvec = fwd.passage_vector(P1)
    q, _ = projections(model, split.retrieval_layer, INPUT)
    _, k = projections(model, split.retrieval_layer, P1)
    q_last = q[-1].view(6, head_dim)
    group = 6 // kv_heads
    expected_q = torch.cat([q_last[g * group:(g + 1) * group].mean(0) for g in range(kv_heads)])
    expected_k = k[-1]
    assert state.query.shape == (kv_heads * head_dim,) == (fwd.dimension,)
    torch.testing.assert_close(state.query, expected_q)
    torch.testing.assert_close(pvec, expected_k)
    with torch.no_grad():  # several passages in one forward: each the same as alone
        many = fwd.passage_vectors([P2, P1, P2_OTHER])
    torch.testing.assert_close(many[1], pvec, rtol=1e-5, atol=1e-5)
    # the score is the pre-rotary logit of the last input token on the last passage token, averaged over
    # each group's heads and summed over the groups
    logits = torch.stack([q_last[h] @ k[-1].view(kv_heads, head_dim)[h // group] for h in range(6)])
    torch.testing.assert_close(state.query @ pvec, logits.mean() * kv_heads, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kv_heads", [1, 3])
def test_without_passages_the_split_forward_is_the_plain_forward(kv_heads):
    model = tiny_llama(kv_heads)
    fwd = SplitForward(model, LayerSplit(2, 4, N_LAYERS))
    full = torch.cat([INPUT, ids(9, 21)])
    with torch.no_grad():
        expected = model(full.unsqueeze(0)).logits[0]
        state = fwd.start(INPUT)
        got = [fwd.logits(fwd.read(state, []))[0], fwd.logits(fwd.step(state, ids(9)))[0],
               fwd.logits(fwd.step(state, ids(21)))[0]]
    torch.testing.assert_close(torch.cat(got), expected, rtol=1e-4, atol=1e-4)


def test_a_generated_token_sees_what_a_longer_input_would():
    model = tiny_llama(2)
    fwd = SplitForward(model, LayerSplit(2, 4, N_LAYERS))
    with torch.no_grad():
        state = fwd.start(INPUT)
        fwd.read(state, [P1, P2])
        stepped = fwd.step(state, ids(9))[0, -1]
        longer = fwd.start(torch.cat([INPUT, ids(9)]))
        whole = fwd.read(longer, [P1, P2])[0, -1]
    torch.testing.assert_close(stepped, whole, rtol=1e-4, atol=1e-4)


def test_passages_are_read_only_by_the_middle_group():
    model = tiny_llama(2)
    split = LayerSplit(2, 4, N_LAYERS)
    fwd = SplitForward(model, split)
    with torch.no_grad():
        a, b = fwd.start(INPUT), fwd.start(INPUT)
        la, lb = fwd.read(a, [P1, P2]), fwd.read(b, [P1, P2_OTHER])
        fwd.step(a, ids(9))
    # the input's bottom-group states and caches do not depend on the passages
    torch.testing.assert_close(a.bottom_hidden, b.bottom_hidden, rtol=0, atol=0)
    for i in split.layers("bottom"):
        torch.testing.assert_close(a.caches[i].keys[:, :, :len(INPUT)], b.caches[i].keys, rtol=0, atol=0)
    assert not torch.allclose(la, lb)  # the middle group did read them
    L, P = len(INPUT), len(P1) + len(P2)
    for i in range(N_LAYERS):
        expected = {"bottom": L + 1, "middle": P + L + 1, "top": L + 1}[split.group(i)]
        assert a.caches[i].length == expected, (i, split.group(i))
    # with an empty middle group, passages change nothing at all
    no_middle = SplitForward(model, LayerSplit(3, 3, N_LAYERS))
    with torch.no_grad():
        c, d = no_middle.start(INPUT), no_middle.start(INPUT)
        torch.testing.assert_close(no_middle.read(c, [P1, P2]), no_middle.read(d, [P2_OTHER]),
                                       rtol=1e-5, atol=1e-5)  # rotary at shifted positions: rounding only


def test_forward_tokens_per_group_are_exact_and_reader_attention_is_per_passage_per_middle_layer():
    model = tiny_llama(1)
    split = LayerSplit(1, 4, N_LAYERS)
    fwd = SplitForward(model, split)
    with torch.no_grad():
        state = fwd.start(INPUT)
        assert state.cost.to_json() == {"bottom": len(INPUT), "middle": 0, "top": 0}
        fwd.read(state, [P1, P2])
        fwd.step(state, ids(9))
        fwd.step(state, ids(4, 6))
    L, P, T = len(INPUT), len(P1) + len(P2), 3
    assert state.cost.to_json() == {"bottom": L + P + T, "middle": L + P + T, "top": L + T}
    att = state.reader_attention()
    assert len(att) == len(split.layers("middle")) and all(len(row) == 2 for row in att)
    for row in att:
        assert all(0 < x < 1 for x in row) and sum(row) < 1


def test_bad_boundaries_and_orders_are_refused_with_a_message():
    with pytest.raises(ImpragError, match="0 < b <= t <= N"):
        LayerSplit(0, 2, 4)
    with pytest.raises(ImpragError, match="0 < b <= t <= N"):
        LayerSplit(3, 2, 4)
    model = tiny_llama(1)
    with pytest.raises(ImpragError, match="has 6"):
        SplitForward(model, LayerSplit(1, 2, 4))
    fwd = SplitForward(model, LayerSplit(2, 4, N_LAYERS))
    state = fwd.start(INPUT)
    with pytest.raises(ImpragError, match="before generating"):
        fwd.step(state, ids(1))
    with pytest.raises(ImpragError, match="empty"):
        fwd.read(state, [ids()])
    assert LayerSplit.from_json(LayerSplit(2, 4, 6).to_json()) == LayerSplit(2, 4, 6)


# -- the mode in the engine: the same loop, the same Trace ----------------------------------------------

@pytest.fixture(scope="module")
def single_hop(tmp_path_factory):
    from tiny import load_tiny

    return load_tiny("single-hop", tmp_path_factory.mktemp("imprag"), layers=4)


def test_the_imprag_mode_runs_single_hop_over_the_same_loop_and_trace(single_hop):
    from onegen.engine import RunSettings
    from onegen.imprag import ImpragQuery, passage_ids
    from onegen.modes import get_mode
    from onegen.trace import Trace
    from tiny import PASSAGES

    engine = get_mode("imprag").make_engine(single_hop)
    assert isinstance(engine.query_encoder, ImpragQuery)
    split = engine.query_encoder.split
    trace = engine.run_trace("single-hop", "Where was Ivo Brandel born?", candidates=PASSAGES,
                             settings=RunSettings(top_k=2, max_new_tokens=4))
    assert trace.mode == "imprag" and len(trace.retrievals) == 1
    r = trace.retrievals[0]
    assert len(r.hits) == 2 and r.query_source == f"attention query at layer {split.retrieval_layer}"
    # the hits' scores are those of the bottom-group vectors (cosine: the index keeps unit vectors)
    fwd = SplitForward(single_hop.model, split)
    with torch.no_grad():
        q = fwd.start(trace.prompt_ids).query
        docs = {d.id: d for d in PASSAGES}
        for h in r.hits:
            p = fwd.passage_vector(passage_ids(single_hop, "single-hop", docs[h.id].title, docs[h.id].text))
            assert h.score == pytest.approx(float(torch.nn.functional.cosine_similarity(q, p, dim=0)), abs=1e-4)
    lr = r.layer_read
    assert (lr.layer, lr.bottom, lr.top, lr.n_layers) == (split.bottom - 1, split.bottom, split.top, 4)
    assert lr.dimension == q.numel() and "key-value group" in lr.pooling
    assert len(lr.reader_attention) == split.top - split.bottom and all(len(row) == 2 for row in lr.reader_attention)
    # passages never enter the sequence: no inserted tokens in the trace, every token generated
    assert all(t.kind != "inserted" for t in trace.tokens)
    ft = trace.cost.forward_tokens
    L, P, T = len(trace.prompt_ids), r.inserted_tokens, ft["generated"]
    assert ft["prompt"] == L and ft["inserted"] == P and ft["query_reencoding"] == 0
    assert trace.cost.layer_groups == {"bottom": L + P + T, "middle": L + P + T, "top": L + T}
    again = Trace.from_json(trace.to_json())
    assert again.retrievals[0].layer_read == lr and again.cost.layer_groups == trace.cost.layer_groups
    from onegen.render_text import render_trace

    text = render_trace(trace)
    assert f"query read at layer {split.bottom - 1}" in text and "Reader attention" in text
    assert f"by layer group bottom {L + P + T}, middle {L + P + T}, top {L + T}" in text


def test_a_model_that_reads_its_top_hit_lists_top_k_and_reads_one(single_hop, monkeypatch):
    """`imprag.reads` in a model's info: the search still lists top-k, the middle group reads only the
    first `reads` hits, and the trace, the step view and the text say which."""
    from onegen.engine import RunSettings
    from onegen.imprag import passage_ids
    from onegen.modes import get_mode
    from onegen.render_html import step_html
    from onegen.render_text import render_trace
    from onegen.trace import Trace
    from tiny import PASSAGES

    monkeypatch.setattr(single_hop, "info", {**(single_hop.info or {}), "imprag": {"bottom": 2, "top": 3, "reads": 1}})
    engine = get_mode("imprag").make_engine(single_hop)
    assert engine.query_encoder.reads == 1
    trace = engine.run_trace("single-hop", "Where was Ivo Brandel born?", candidates=PASSAGES,
                             settings=RunSettings(top_k=3, max_new_tokens=3))
    r = trace.retrievals[0]
    top = r.hits[0]
    assert len(r.hits) == 3 and r.read_hits == [top] and r.layer_read.read == 1
    assert r.inserted_tokens == len(passage_ids(single_hop, "single-hop", top.title, top.text))
    assert all(len(row) == 1 for row in r.layer_read.reader_attention)
    ft = trace.cost.forward_tokens
    assert trace.cost.layer_groups["middle"] == ft["prompt"] + r.inserted_tokens + ft["generated"]
    assert Trace.from_json(trace.to_json()).retrievals[0].read_hits == [top]
    assert "the top 1 of the 3 listed" in step_html(r, "single-hop")
    assert "Reader attention, the top 1 of 3 read (share per passage" in render_trace(trace)


def test_other_modes_keep_their_trace_unchanged_and_imprag_refuses_other_tasks(single_hop, tmp_path):
    from onegen.engine import RunSettings
    from onegen.modes import get_mode
    from tiny import PASSAGES, load_tiny

    trace = get_mode("onegen").make_engine(single_hop).run_trace(
        "single-hop", "Where was Ivo Brandel born?", candidates=PASSAGES, settings=RunSettings(max_new_tokens=2))
    d = trace.to_dict()
    assert "layer_groups" not in d["cost"] and all("layer_read" not in r for r in d["retrievals"])
    multi = load_tiny("multi-hop", tmp_path, layers=2)
    with pytest.raises(ImpragError, match="single-hop questions only"):
        get_mode("imprag").make_engine(multi).run_trace("multi-hop", "Where was the director of Film A born?",
                                                        candidates=PASSAGES, settings=RunSettings(max_new_tokens=3))


# -- an index of bottom-group passage vectors -----------------------------------------------------------

def test_an_index_records_its_layer_groups_and_is_refused_at_other_boundaries_or_weights(tmp_path):
    from index_builder.__main__ import main
    from onegen.engine import IndexRetriever, RunSettings
    from onegen.imprag import PassageEncoder, index_layer_split
    from onegen.index import IndexLoadError, VectorIndex, normalize
    from onegen.modes import get_mode
    from tiny import HELDOUT_WORLD, build_imprag_index, build_tiny_model, load_tiny

    folder = build_tiny_model("single-hop", tmp_path / "m", layers=4)
    out = build_imprag_index(folder, tmp_path / "idx", limit=5, layers="2,3")
    args = ["world", str(HELDOUT_WORLD), "--task", "single-hop", "--model", str(folder), "--quiet", "--limit", "5"]
    assert main([*args, "--out", str(tmp_path / "bad"), "--imprag-layers", "3,2"]) == 2
    lm = load_tiny("single-hop", tmp_path / "m", layers=4)
    split = LayerSplit(2, 3, 4)
    index = VectorIndex.load(out, protocol="single-hop", model_fingerprint=lm.fingerprint,
                             layer_split=index_layer_split(split))
    m = index.manifest
    assert m.layer_split == {"mode": "imprag", "bottom": 2, "top": 3, "n_layers": 4, "layer": 1,
                             "pooling": POOLING_TEXT} and m.model_fingerprint == lm.fingerprint
    encoder = PassageEncoder(lm, split)
    expected, _, _ = encoder(lm, "single-hop", [index.documents[i] for i in range(len(index))])
    assert m.dim == encoder.dimension
    torch.testing.assert_close(index.vectors, normalize(expected))
    for other in (index_layer_split(LayerSplit(1, 3, 4)), index_layer_split(LayerSplit(2, 4, 4)), None):
        with pytest.raises(IndexLoadError, match="layer groups b=2, t=3"):
            VectorIndex.load(out, protocol="single-hop", model_fingerprint=lm.fingerprint, layer_split=other)
    with pytest.raises(IndexLoadError, match="fingerprint"):
        VectorIndex.load(out, protocol="single-hop", model_fingerprint="0" * 32, layer_split=index_layer_split(split))
    # the mode searches it: the model's own split here is (2, 3)
    engine = get_mode("imprag").make_engine(lm)
    assert engine.query_encoder.split == split
    trace = engine.run_trace("single-hop", index.documents[0].title + "?", retriever=IndexRetriever(index),
                             settings=RunSettings(top_k=3, max_new_tokens=2))
    assert len(trace.retrievals[0].hits) == 3 and trace.index["vectors"] == 5


def test_the_cli_runs_the_mode_on_its_own_index_and_refuses_other_tasks(tmp_path, capsys):
    from onegen.__main__ import main as cli
    from onegen.trace import Trace
    from tiny import build_imprag_index, build_tiny_model

    folder = build_tiny_model("single-hop", tmp_path / "m", layers=4)
    index = build_imprag_index(folder, tmp_path / "idx")  # the model's own split
    capsys.readouterr()
    base = ["run", "--task", "single-hop", "--model", str(folder), "--index", str(index), "--text", "Who is Ivo?",
            "--max-new-tokens", "2", "--top-k", "2"]
    assert cli([*base, "--mode", "imprag", "--json"]) == 0
    trace = Trace.from_json(capsys.readouterr().out)
    assert trace.mode == "imprag" and trace.cost.layer_groups["top"] == len(trace.prompt_ids) + \
        trace.cost.forward_tokens["generated"] and len(trace.retrievals[0].layer_read.reader_attention) == 1
    assert cli([*base, "--json"]) == 2  # OneGen's queries cannot search bottom-layer key vectors
    assert "layer groups b=2, t=3" in capsys.readouterr().err
    assert cli(["run", "--task", "multi-hop", "--mode", "imprag", "--model", str(folder), "--text", "Who?"]) == 2
    assert "retrieves while it decodes" in capsys.readouterr().err
    assert cli(["evaluate", "--task", "multi-hop", "--mode", "imprag", "--data", str(tmp_path / "x.json")]) == 2
    assert "retrieves while it decodes" in capsys.readouterr().err
    data = tmp_path / "sh.json"
    data.write_text('[{"id": "a", "question": "Who is Ivo?", "answers": ["x"], "ctxs": []}]')
    assert cli(["evaluate", "--task", "single-hop", "--mode", "imprag", "--model", str(folder), "--index", str(index),
                "--candidates", "index", "--data", str(data), "--batch-size", "2"]) == 2
    assert "one example at a time" in capsys.readouterr().err
    assert cli(["evaluate", "--task", "single-hop", "--mode", "imprag", "--model", str(folder), "--index", str(index),
                "--candidates", "index", "--data", str(data), "--max-new-tokens", "2", "--quiet"]) == 0
    assert '"errors": 0' in capsys.readouterr().out  # unbatched by default


# -- centring: the same means off queries and passages -------------------------------------------------

def test_centring_is_applied_identically_to_queries_passages_and_the_index(single_hop, tmp_path):
    import dataclasses

    from onegen.engine import RunSettings
    from onegen.imprag import Centring, ImpragQuery, PassageEncoder, index_layer_split, model_split, passage_ids
    from onegen.index import IndexLoadError, VectorIndex
    from onegen.modes import get_mode
    from tiny import PASSAGES

    split = model_split(single_hop)
    fwd = SplitForward(single_hop.model, split)
    docs = {d.id: d for d in PASSAGES}
    with torch.no_grad():
        raw_p = fwd.passage_vectors([passage_ids(single_hop, "single-hop", d.title, d.text) for d in PASSAGES])
    g = torch.Generator().manual_seed(0)
    centring = Centring(tuple(torch.randn(fwd.dimension, generator=g).tolist()), tuple(raw_p.mean(0).tolist()))
    info = {"imprag": {"bottom": split.bottom, "top": split.top, "centring": centring.to_json()}}
    lm = dataclasses.replace(single_hop, info=info)
    # passages: the index builder's encoder subtracts the passage mean
    vectors, _, _ = PassageEncoder(lm)(lm, "single-hop", PASSAGES)
    torch.testing.assert_close(vectors, raw_p - torch.tensor(centring.passage_mean))
    # queries: the mode subtracts the query mean, and its hits score centred query . centred passage
    engine = get_mode("imprag").make_engine(lm)
    trace = engine.run_trace("single-hop", "Where was Ivo Brandel born?", candidates=PASSAGES,
                             settings=RunSettings(top_k=2, max_new_tokens=2))
    r = trace.retrievals[0]
    assert r.query_source.endswith(", centred")
    with torch.no_grad():
        q = centring.queries(fwd.start(trace.prompt_ids).query)
        for h in r.hits:
            d = docs[h.id]
            p = centring.passages(fwd.passage_vector(passage_ids(lm, "single-hop", d.title, d.text)))
            assert h.score == pytest.approx(float(torch.nn.functional.cosine_similarity(q, p, dim=0)), abs=1e-4)
    # the means are part of what an index records: an index of uncentred vectors is refused, and back
    assert ImpragQuery(lm).layer_split == index_layer_split(split, centring) != index_layer_split(split)
    assert ImpragQuery(lm, LayerSplit(1, 2, split.n_layers)).centring is None  # means are for the trained split
    from tiny import build_imprag_index, build_tiny_model

    folder = build_tiny_model("single-hop", tmp_path / "m", layers=4)
    out = build_imprag_index(folder, tmp_path / "idx", limit=3)
    with pytest.raises(IndexLoadError, match="centred by means"):
        VectorIndex.load(out, protocol="single-hop", layer_split=ImpragQuery(lm).layer_split)
    # a round trip through the model's JSON keeps the means; bad JSON is a message
    assert Centring.from_json(centring.to_json()).fingerprint() == centring.fingerprint()
    with pytest.raises(ImpragError, match="query_mean"):
        Centring.from_json({"query_mean": [1.0]})
    with pytest.raises(ImpragError, match="dimension"):
        Centring((1.0, 2.0), (1.0,))


@pytest.mark.parametrize("kv_heads", [1, 3])
def test_mean_pooled_vectors_equal_a_plain_forward_and_are_recorded(kv_heads):
    """`tokens="mean"`: the query is the input's query states averaged over its tokens, a passage's
    vector its key states averaged over its tokens (each passage alone), pooled per group as before;
    the split records it, and an index built with the other pooling is told apart."""
    from onegen.imprag import POOLING_MEAN, index_layer_split

    model = tiny_llama(kv_heads)
    split = LayerSplit(2, 4, N_LAYERS, "mean")
    fwd = SplitForward(model, split)
    head_dim, group = 48 // 6, 6 // kv_heads
    with torch.no_grad():
        query = fwd.start(INPUT).query
        many = fwd.passage_vectors([P2, P1])
    q, _ = projections(model, split.retrieval_layer, INPUT)
    _, k = projections(model, split.retrieval_layer, P1)
    q_mean = q.mean(0).view(6, head_dim)
    torch.testing.assert_close(query, torch.cat([q_mean[g * group:(g + 1) * group].mean(0) for g in range(kv_heads)]))
    torch.testing.assert_close(many[1], k.mean(0), rtol=1e-5, atol=1e-5)
    assert split.pooling == POOLING_MEAN and LayerSplit.from_json(split.to_json()) == split
    last = LayerSplit(2, 4, N_LAYERS)
    assert "tokens" not in last.to_json()  # the default keeps the manifests written before the choice
    assert index_layer_split(split) != index_layer_split(last)
    with pytest.raises(ImpragError, match="token pooling"):
        LayerSplit(2, 4, N_LAYERS, "first")
