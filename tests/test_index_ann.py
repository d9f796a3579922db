"""Approximate index kinds: build, save/load, search, recall bookkeeping, memory estimates."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from index_builder.ann import (GB, AnnSettings, MemoryBudgetError, ann_bytes, attach_ann, check_memory,
                               estimate_memory, exact_topk, measure_recall)
from onegen.documents import Document
from onegen.index import ANN, MANIFEST, IndexLoadError, IndexManifest, VectorIndex, normalize

DIM = 32
APPROX = ("hnsw", "ivfpq", "sq8")


def clustered(n: int, dim: int = DIM, clusters: int = 40, seed: int = 0) -> torch.Tensor:
    """Unit vectors around `clusters` centres: real embeddings have structure, random ones do not."""
    g = torch.Generator().manual_seed(seed)
    centres = normalize(torch.randn(clusters, dim, generator=g))
    which = torch.randint(0, clusters, (n,), generator=g)
    return normalize(centres[which] + 0.35 * torch.randn(n, dim, generator=g) / dim ** 0.5 * 3)


def make_index(vectors: torch.Tensor, owners: torch.Tensor | None = None) -> VectorIndex:
    n_docs = int(owners.max()) + 1 if owners is not None else len(vectors)
    docs = [Document(f"d{i}", f"Title {i}", f"text {i}") for i in range(n_docs)]
    manifest = IndexManifest("single-hop", "tiny", "f" * 32, vectors.shape[1], 0, 0)
    return VectorIndex(vectors, docs, owners=owners, manifest=manifest)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus():
    return clustered(2000)


@pytest.mark.parametrize("kind", APPROX)
def test_each_kind_saves_loads_and_finds_stored_vectors(corpus, tmp_path, kind):
    idx = attach_ann(make_index(corpus), AnnSettings(kind=kind, seed=1))
    idx.save(tmp_path / kind)
    manifest = json.loads((tmp_path / kind / MANIFEST).read_text())
    assert manifest["kind"] == kind and ANN in manifest["files"]
    loaded = VectorIndex.load(tmp_path / kind)
    assert loaded.kind == kind and loaded.ann is not None and loaded.ann.index.ntotal == len(corpus)
    assert loaded.ann.params == manifest["build"]["ann"]
    rows = torch.arange(0, len(corpus), 67)
    hits = loaded.search(corpus[rows], k=3)
    assert [h[0].doc for h in hits] == rows.tolist()  # top-1 of a stored vector is itself
    assert all(h[0].score == pytest.approx(1.0, abs=1e-3) for h in hits)
    r = measure_recall(loaded, sample=100)
    assert r.sample == 100 and r.recall_at_10 >= {"hnsw": 0.9, "sq8": 0.9, "ivfpq": 0.6}[kind]


def test_approximate_kinds_keep_exact_vectors_on_disk(corpus, tmp_path):
    attach_ann(make_index(corpus), AnnSettings(kind="sq8")).save(tmp_path / "i")
    loaded = VectorIndex.load(tmp_path / "i")
    maps = Path("/proc/self/maps")
    if maps.exists():  # Linux: the vectors are a file mapping, not a copy in RAM
        assert str((tmp_path / "i" / "vectors.safetensors").resolve()) in maps.read_text()
    # Re-ranked scores are exact cosines.
    hits = loaded.search(corpus[5] + 0.01, k=5)[0]
    exact = (normalize(corpus) @ normalize(corpus[5] + 0.01)).tolist()
    assert [h.score for h in hits] == pytest.approx([exact[h.doc] for h in hits], abs=1e-5)


def test_exact_backends_still_available_on_an_approximate_index(corpus):
    idx = attach_ann(make_index(corpus), AnnSettings(kind="ivfpq", nprobe=1, rerank=0))
    q = clustered(20, seed=7)
    exact = [[h.doc for h in hits] for hits in idx.search(q, k=5, backend="torch")]
    brute = (q @ idx.vectors.T).topk(5).indices.tolist()
    assert exact == brute
    assert [[h.doc for h in hits] for hits in idx.search(q, k=5, backend="faiss")] == brute


def test_multi_vector_documents_with_an_approximate_index():
    vectors = clustered(600, seed=3)
    owners = torch.arange(200).repeat_interleave(3)  # three sentences a document
    idx = attach_ann(make_index(vectors, owners), AnnSettings(kind="hnsw"))
    hit = idx.search(vectors[3 * 17 + 2], k=4)[0]
    assert hit[0].doc == 17 and hit[0].fragment == 2
    assert len({h.doc for h in hit}) == 4


def test_flat_save_drops_the_approximate_index(corpus, tmp_path):
    idx = attach_ann(make_index(corpus[:500]), AnnSettings(kind="hnsw"))
    attach_ann(idx, AnnSettings(kind="flat")).save(tmp_path / "flat")
    assert not (tmp_path / "flat" / ANN).exists()
    assert VectorIndex.load(tmp_path / "flat").kind == "flat"


def test_load_refuses_broken_approximate_indexes(corpus, tmp_path):
    path = tmp_path / "i"
    attach_ann(make_index(corpus[:400]), AnnSettings(kind="hnsw")).save(path)
    m = json.loads((path / MANIFEST).read_text())

    (path / MANIFEST).write_text(json.dumps({**m, "kind": "lsh"}))
    with pytest.raises(IndexLoadError, match="unknown kind 'lsh'"):
        VectorIndex.load(path)
    (path / MANIFEST).write_text(json.dumps(m))

    data = (path / ANN).read_bytes()
    (path / ANN).write_bytes(data[:-10])
    with pytest.raises(IndexLoadError, match="ann.faiss has"):
        VectorIndex.load(path)
    (path / ANN).write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    with pytest.raises(IndexLoadError, match="checksum"):
        VectorIndex.load(path)
    (path / ANN).unlink()
    with pytest.raises(IndexLoadError, match="ann.faiss is missing"):
        VectorIndex.load(path)


def test_settings_resolve_for_the_corpus():
    s = AnnSettings(kind="ivfpq").resolved(1_000_000, 4096)
    assert s.nlist == 1000 and s.pq_m == 256 and s.pq_bits == 8 and s.rerank == 4
    tiny = AnnSettings(kind="ivfpq").resolved(20, 64)
    assert tiny.nlist == 1 and tiny.pq_bits == 4 and 64 % tiny.pq_m == 0 and tiny.nprobe == 1
    assert AnnSettings(kind="hnsw").resolved(10, 8).rerank == 0
    with pytest.raises(ValueError, match="unknown index kind"):
        AnnSettings(kind="annoy")
    with pytest.raises(ValueError, match="must divide"):
        AnnSettings(kind="ivfpq", pq_m=7).resolved(1000, 64)


def test_exact_topk_in_blocks_equals_one_matmul():
    v, q = clustered(1000, seed=4), clustered(7, seed=5)
    s, r = exact_topk(v, q, 10, block=64)
    s2, r2 = (q @ v.T).topk(10)
    assert torch.equal(r, r2) and torch.allclose(s, s2)


def test_recall_is_one_for_exact_and_drops_for_a_coarse_index(corpus):
    assert measure_recall(make_index(corpus), sample=50).recall_at_10 == 1.0
    coarse = attach_ann(make_index(corpus), AnnSettings(kind="ivfpq", nlist=64, nprobe=1, pq_m=2, rerank=0))
    assert measure_recall(coarse, sample=50).recall_at_10 < 0.9


# -- memory ----------------------------------------------------------------------------------------

def test_memory_per_kind_at_release_scale():
    n, d = 1_240_000, 4096
    flat, hnsw, sq8, ivfpq = (ann_bytes(k, n, d) for k in ("flat", "hnsw", "sq8", "ivfpq"))
    assert flat == pytest.approx(n * (16 + 8 * d))  # vectors + faiss's search copy
    assert sq8 < flat / 7 and ivfpq < sq8 and hnsw > flat / 2
    est = estimate_memory("flat", n, d, n, 600 * n, int(13.5 * GB), budget=32 * GB)
    assert not est.fits
    with pytest.raises(MemoryBudgetError) as e:
        check_memory(est)
    msg = str(e.value)
    assert "will not fit in memory" in msg and "--kind sq8 (about" in msg and ", fits)" in msg
    assert "--limit" in msg and "model 13.5 GB" in msg
    check_memory(estimate_memory("sq8", n, d, n, 600 * n, int(13.5 * GB), budget=32 * GB))  # fits: no error


def test_memory_refusal_when_the_model_alone_is_too_big():
    est = estimate_memory("sq8", 1000, 64, 1000, 0, 10 * GB, budget=8 * GB)
    with pytest.raises(MemoryBudgetError, match="this one alone needs 10.0 GB"):
        check_memory(est)


def test_build_records_recall_in_the_manifest(tmp_path):
    """Through the builder: approximate kinds record recall@10 and its sample size, flat does not."""
    import torch as _t

    from index_builder.__main__ import main

    vectors = clustered(500, dim=24, seed=9).to(_t.bfloat16)
    _t.save((vectors, [f"Q{i}" for i in range(500)]), tmp_path / "emb.pkl")
    for kind in ("flat", "hnsw", "ivfpq", "sq8"):
        out = tmp_path / kind
        assert main(["onegen-entities", str(tmp_path / "emb.pkl"), "--fingerprint", "c" * 32, "--out", str(out),
                     "--kind", kind, "--recall-sample", "60", "--quiet", "--shard-size", "128"]) == 0
        idx = VectorIndex.load(out)
        build = idx.manifest.build
        assert idx.kind == kind
        if kind == "flat":
            assert "recall_at_10" not in build
        else:
            assert build["recall_sample"] == 60 and 0.5 <= build["recall_at_10"] <= 1.0
            assert build["ann"] == idx.ann.params
        top = idx.search(idx.vectors[123], k=1)[0][0]
        assert top.doc == 123 and idx.documents[top.doc].id == "Q123"
