"""The query lens, the layer view and the attention view of finished runs (onegen/lens.py,
onegen/attention_read.py) on tiny random models with scripted choices, and once on the embedded
model: the lens at a retrieval token reproduces the run's own score, shares sum to one, the
layer view refuses big indexes, and every view survives a JSON round trip."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from onegen.attention_read import AttentionRead, attention_read, inserted_paragraphs
from onegen.engine import Engine, RunSettings
from onegen.encode import build_index
from onegen.lens import (LayerView, QueryLens, WhyError, layer_readings, layer_view, query_lens, trace_sequence)
from scripted import chooser, el_script, multi_hop_script, text_ids
from tiny import ENTITIES, PARAGRAPHS, PASSAGES, load_tiny

pytestmark = pytest.mark.usefixtures("one_thread")

CASES = {
    "multi-hop": (PARAGRAPHS, "Where was the director of Film A born?", multi_hop_script),
    "single-hop": (PASSAGES, "How many inhabitants does Corvale have?",
                   lambda lm: text_ids(lm, "single-hop", "[Relevant] Corvale has 120000 inhabitants.")),
    "entity-linking": (ENTITIES, "Paris and Rome are cities.", el_script),
}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-lens")


def run(task, root, **settings):
    lm = load_tiny(task, root, layers=3)
    docs, text, script = CASES[task]
    index = build_index(lm, task, docs)  # the same vectors as the run's own candidates
    trace = Engine(lm, chooser=chooser(lm, script(lm))).run_trace(
        task, text, candidates=docs, settings=RunSettings(top_k=3, **settings))
    assert trace.retrievals, "the script writes retrieval tokens"
    return lm, index, trace


@pytest.mark.parametrize("task", list(CASES))
def test_the_lens_at_each_retrieval_token_reproduces_the_runs_own_search(task, root):
    lm, index, trace = run(task, root)
    lens = query_lens(lm, trace, index)
    assert lens.forward_tokens == len(trace_sequence(trace)) == len(trace.prompt_ids) + len(trace.tokens)
    assert lens.searches == len(lens.tokens)
    written = [t for t in trace.tokens if t.kind != "inserted"]
    extra = len(lens.tokens) - len(written)  # single-hop: its query token ends the prompt
    assert extra == (1 if task == "single-hop" else 0)
    queries = {t.position: t for t in lens.queries}
    assert sorted(queries) == sorted(r.position for r in trace.retrievals)
    for r in trace.retrievals:
        q = queries[r.position]
        assert q.top[0].id == r.hits[0].id and q.agrees is True and q.retrieval == r.step
        assert q.score == pytest.approx(r.hits[0].score, abs=2e-4)
        assert [h.id for h in q.top] == [h.id for h in r.hits[:3]]
    assert all(len(t.top) == min(3, len(index)) for t in lens.tokens)
    assert all(t.score == t.top[0].score for t in lens.tokens)


def test_the_lens_matches_a_reference_forward_by_hand(root):
    """Every token's top score equals cosine(final-norm state, best document vector) computed here
    from the model's own forward, not through the lens's code path."""
    lm, index, trace = run("multi-hop", root)
    lens = query_lens(lm, trace, index)
    ids = torch.tensor([trace.prompt_ids + [t.id for t in trace.tokens]])
    with torch.inference_mode():
        states = lm.model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0]
    q = torch.nn.functional.normalize(states.float(), dim=-1)
    sims = q @ index.vectors.T  # [S, vectors]
    per_doc = torch.full((len(sims), len(index)), float("-inf")).scatter_reduce(
        1, index.owners.expand(len(sims), -1), sims, reduce="amax")
    for t in lens.tokens:
        assert t.score == pytest.approx(float(per_doc[t.position].max()), abs=1e-5)
        assert t.top[0].id == index.documents[int(per_doc[t.position].argmax())].id


def test_the_lens_refuses_another_models_trace_and_a_shuffled_one(root):
    lm, index, trace = run("multi-hop", root)
    other = load_tiny("multi-hop", root, layers=2)
    with pytest.raises(WhyError, match="not by the loaded"):
        query_lens(other, trace, index)
    trace.tokens[3].position += 1
    with pytest.raises(WhyError, match="feeding order"):
        query_lens(lm, trace, index)


def test_the_layer_view_ranks_the_chosen_document_at_every_layer(root):
    lm, index, trace = run("multi-hop", root)
    view = layer_view(lm, trace, index, step=0)
    assert len(view.layers) == layer_readings(lm) == 4
    last = view.layers[-1]
    r = trace.retrievals[0]
    # The last reading is the real query against the index's own vectors.
    assert last.rank == 1 and last.top_id == r.hits[0].id == view.chosen_id
    assert last.top_score == pytest.approx(r.hits[0].score, abs=2e-4)
    assert all(1 <= row.rank <= len(index) for row in view.layers)
    again = layer_view(lm, trace, index, step=1)
    assert again.cached and again.forward_tokens == trace.retrievals[1].position + 1
    with pytest.raises(WhyError, match="no retrieval step 9"):
        layer_view(lm, trace, index, step=8)


def test_the_layer_view_keeps_its_vectors_on_disk_for_the_next_process(root, monkeypatch, tmp_path):
    from safetensors.torch import save_file

    import onegen.lens as lens

    monkeypatch.setattr(lens, "layer_cache_dir", lambda: tmp_path)
    lm, index, trace = run("multi-hop", root)
    lens._LAYER_CACHE.clear()
    assert not lens.layer_vectors_kept(lm, index)
    cold = layer_view(lm, trace, index, step=0)
    path = lens.layer_cache_path(lm.fingerprint, index.fingerprint)
    assert not cold.cached and path.is_file()
    lens._LAYER_CACHE.clear()
    assert lens.layer_vectors_kept(lm, index)  # on disk only
    assert cold.forward_tokens > trace.retrievals[0].position + 1  # the documents were encoded
    lens._LAYER_CACHE.clear()  # as a new process: nothing in memory
    warm = layer_view(lm, trace, index, step=0)
    assert warm.cached and warm.forward_tokens == trace.retrievals[0].position + 1
    assert warm.layers == cold.layers
    # A file made for other weights (or cut short) is refused, removed and rebuilt.
    vectors, tokens, _ = lens.layer_document_vectors(lm, "multi-hop", index)
    meta = {**lens._cache_key("another-model", index.fingerprint, vectors.shape), "tokens": str(tokens)}
    for broken in (lambda: save_file({"vectors": vectors}, str(path), metadata=meta),
                   lambda: path.write_bytes(path.read_bytes()[:100]),
                   lambda: save_file({"vectors": vectors[:, :1].contiguous()}, str(path), metadata={
                       **meta, "model_fingerprint": lm.fingerprint})):
        broken()
        lens._LAYER_CACHE.clear()
        again = layer_view(lm, trace, index, step=0)
        assert not again.cached and again.layers == cold.layers
        assert lens.read_layer_cache(lm.fingerprint, index.fingerprint, vectors.shape) is not None  # rewritten


def test_the_layer_view_refuses_a_big_index_with_a_message(root, monkeypatch):
    lm, index, trace = run("multi-hop", root)
    monkeypatch.setattr("onegen.lens.MAX_LAYER_CELLS", len(index) * layer_readings(lm) - 1)
    with pytest.raises(WhyError, match=r"3 documents x 4 layers = 12, over the limit of 11"):
        layer_view(lm, trace, index, step=0)


@pytest.mark.parametrize("task", ["multi-hop", "single-hop"])
def test_attention_shares_and_rest_sum_to_one_per_token(task, root):
    lm, index, trace = run(task, root)
    read = attention_read(lm, trace)
    paragraphs = inserted_paragraphs(trace)
    assert read.paragraphs == paragraphs and len(paragraphs) == sum(1 for r in trace.retrievals if r.inserted_tokens)
    assert [p.title for p in paragraphs] == [r.chosen_hit.title for r in trace.retrievals if r.inserted_tokens]
    assert read.tokens and read.forward_tokens == len(trace_sequence(trace))
    for t in read.tokens:
        assert t.position >= paragraphs[0].end and trace.tokens[t.index].kind != "inserted"
        assert sum(t.shares) + t.rest == pytest.approx(1.0, abs=1e-4)
        assert all(0 <= s <= 1 for s in t.shares)
        assert len(t.groups) == len(read.groups)
        # The overall shares are the layer-weighted mean of the groups' shares.
        sizes = [g.last - g.first + 1 for g in read.groups]
        for j in range(len(paragraphs)):
            mixed = sum(n * g[j] for n, g in zip(sizes, t.groups)) / sum(sizes)
            assert t.shares[j] == pytest.approx(mixed, abs=1e-5)
    # A paragraph inserted later gets nothing from tokens written before it.
    for t in read.tokens:
        for j, p in enumerate(paragraphs):
            if p.start > t.position:
                assert t.shares[j] == 0


def test_attention_matches_the_models_own_attention_output(root):
    """The shares equal those from transformers' own `output_attentions` with eager attention."""
    lm, index, trace = run("multi-hop", root)
    read = attention_read(lm, trace)
    assert lm.model.config._attn_implementation != "eager"  # put back after the view
    ids = torch.tensor([trace_sequence(trace)])
    lm.model.set_attn_implementation("eager")
    try:
        with torch.inference_mode():
            att = lm.model(input_ids=ids, output_attentions=True).attentions
    finally:
        lm.model.set_attn_implementation("sdpa")
    mean = torch.stack([a[0].mean(0) for a in att]).mean(0)  # [S, S]
    for t in read.tokens:
        for p, share in zip(read.paragraphs, t.shares):
            assert share == pytest.approx(float(mean[t.position, p.start:p.end].sum()), abs=1e-5)


def test_entity_linking_says_it_inserts_no_paragraph(root):
    lm, index, trace = run("entity-linking", root)
    read = attention_read(lm, trace)
    assert read.tokens == [] and read.paragraphs == []
    assert "inserts no paragraph" in read.note


def test_views_round_trip_through_json(root):
    lm, index, trace = run("multi-hop", root)
    lens = query_lens(lm, trace, index)
    view = layer_view(lm, trace, index, step=0)
    read = attention_read(lm, trace)
    for obj, cls in ((lens, QueryLens), (view, LayerView), (read, AttentionRead)):
        assert cls.from_dict(json.loads(json.dumps(obj.to_dict()))) == obj
    with pytest.raises(WhyError, match="malformed"):
        QueryLens.from_dict({"tokens": [{"top": 3}]})


@pytest.mark.parametrize("task", list(CASES))
def test_one_shared_forward_gives_both_views_as_the_separate_ones(task, root):
    from onegen.attention_read import explain

    lm, index, trace = run(task, root)
    both = explain(lm, trace, index)
    lens, read = query_lens(lm, trace, index), attention_read(lm, trace)
    assert both.forward_tokens == lens.forward_tokens == len(trace_sequence(trace))
    assert [t.top[0].id for t in both.lens.tokens] == [t.top[0].id for t in lens.tokens]
    assert [t.score for t in both.lens.tokens] == pytest.approx([t.score for t in lens.tokens], abs=1e-4)
    assert len(both.read.tokens) == len(read.tokens) and both.read.note == read.note
    for a, b in zip(both.read.tokens, read.tokens):
        assert a.shares == pytest.approx(b.shares, abs=1e-6)
    assert lm.model.config._attn_implementation != "eager"


def test_the_cli_prints_the_lens_layers_and_attention(root, tmp_path, capsys):
    from onegen.__main__ import main

    lm, index, trace = run("multi-hop", root)
    folder = tmp_path / "index"
    index.save(folder)
    path = tmp_path / "trace.json"
    path.write_text(trace.to_json())
    out_json = tmp_path / "why.json"
    assert main(["why", str(path), "--model", lm.name, "--index", str(folder), "--layers", "2", "--attention",
                 "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("\n>> ") == len(trace.retrievals)  # the retrieval tokens are marked
    assert "retrieval tokens finding the chosen document: 2 of 2" in printed
    assert "layer view of retrieval step 2" in printed and "what it read" in printed
    saved = json.loads(out_json.read_text())
    assert QueryLens.from_dict(saved["lens"]).forward_tokens == len(trace_sequence(trace))
    assert [LayerView.from_dict(v).step for v in saved["layers"]] == [1]
    assert AttentionRead.from_dict(saved["attention"]).paragraphs == inserted_paragraphs(trace)


def test_the_cli_says_what_is_wrong(root, tmp_path, capsys):
    from onegen.__main__ import main

    lm, index, trace = run("multi-hop", root)
    path = tmp_path / "trace.json"
    path.write_text(trace.to_json())  # the run searched its own candidates, which the trace does not keep
    assert main(["why", str(path), "--model", lm.name]) == 2
    assert "pass them again with --candidates FILE" in capsys.readouterr().err
    assert main(["why", str(path), "--model", lm.name, "--layers", "7", "--index", str(tmp_path)]) == 2
    assert "the run has 2 retrieval steps" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{}")
    assert main(["why", str(tmp_path / "bad.json")]) == 2
    assert "unsupported trace schema" in capsys.readouterr().err


def test_on_the_embedded_model_the_retrieval_tokens_state_reproduces_the_runs_search():
    """One held-out multi-hop example through the shipped model and its index: the lens at each
    retrieval token scores the run's chosen paragraph as the run did (the engine decoded with the
    fused decoder over a KV cache; the lens forwards the whole sequence at once), and the answer's
    tokens read the inserted paragraphs."""
    from onegen.attention_read import explain
    from onegen.engine import IndexRetriever
    from onegen.loading import load_model
    from onegen.registry import default_index
    from onegen.index import VectorIndex

    lm = load_model(None, device="cpu")
    index = VectorIndex.load(default_index(lm.name, "multi-hop"), protocol="multi-hop", model_fingerprint=lm.fingerprint)
    text = json.loads((Path(__file__).resolve().parents[1] / "assets/examples/multi-hop.jsonl").read_text()
                      .splitlines()[0])["text"]
    trace = Engine(lm).run_trace("multi-hop", text, retriever=IndexRetriever(index))
    assert trace.retrievals
    both = explain(lm, trace, index)
    queries = {t.position: t for t in both.lens.queries}
    for r in trace.retrievals:
        q = queries[r.position]
        assert q.top[0].id == r.hits[0].id and q.agrees
        assert q.score == pytest.approx(r.hits[0].score, abs=2e-3)
    read = both.read
    assert len(read.paragraphs) == sum(1 for r in trace.retrievals if r.inserted_tokens)
    assert all(sum(t.shares) + t.rest == pytest.approx(1.0, abs=1e-4) for t in read.tokens)
    assert max(sum(t.shares) for t in read.tokens) > 0.05  # the answer reads what was inserted
