"""VectorIndex: search, persistence, and refusal of indexes that do not fit or are damaged."""
from __future__ import annotations

import json
import os

import pytest
import torch

import onegen.index as index_mod
from onegen.documents import Document
from onegen.index import DOCUMENTS, MANIFEST, VECTORS, IndexLoadError, IndexManifest, VectorIndex, normalize

DIM = 16


def _manifest(**kw) -> IndexManifest:
    base = dict(protocol="multi-hop", model="tiny-test", model_fingerprint="f" * 32, dim=DIM, count=0, documents=0,
                build={"batch_size": 4, "note": "ünïcode"})
    return IndexManifest(**{**base, **kw})


def paragraph_index(n_docs: int = 6, sentences: int = 3, seed: int = 0) -> VectorIndex:
    """`n_docs` paragraphs with `sentences` vectors each (multi-vector, like multi-hop)."""
    g = torch.Generator().manual_seed(seed)
    docs = [Document.from_sentences(f"p{i}", f"Title {i}", [f"Sentence {j} of {i}." for j in range(sentences)],
                                    source="test") for i in range(n_docs)]
    vectors = torch.randn(n_docs * sentences, DIM, generator=g)
    owners = torch.arange(n_docs).repeat_interleave(sentences)
    return VectorIndex(vectors, docs, owners=owners, manifest=_manifest())


def entity_index(n: int = 8, seed: int = 1) -> VectorIndex:
    g = torch.Generator().manual_seed(seed)
    titles = ["Paris", "Paris Hilton", "Rome", "Roma (film)", "paris", "Berlin", "Parisian", "Lyon"][:n]
    docs = [Document(f"Q{i}", t, f"{t} is an entity.") for i, t in enumerate(titles)]
    return VectorIndex(torch.randn(n, DIM, generator=g), docs, manifest=_manifest(protocol="entity-linking"))


# -- search -----------------------------------------------------------------------------------------

def test_top_k_order_and_self_match():
    idx = entity_index()
    hits = idx.search(idx.vectors[3], k=5)[0]
    assert len(hits) == 5
    assert hits[0].doc == 3 and hits[0].score == pytest.approx(1.0, abs=1e-5)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    brute = (idx.vectors @ normalize(idx.vectors[3])).topk(5)
    assert [h.doc for h in hits] == brute.indices.tolist()
    assert idx.search(idx.vectors[3], k=100)[0].__len__() == len(idx)  # k is capped at the document count


def test_several_queries_at_once():
    idx = entity_index()
    out = idx.search(idx.vectors[[1, 5]] * 3.0, k=2)  # scale does not matter: cosine
    assert [hits[0].doc for hits in out] == [1, 5]


@pytest.mark.parametrize("make", [entity_index, paragraph_index])
def test_faiss_and_torch_backends_agree(make):
    pytest.importorskip("faiss")
    idx = make()
    queries = torch.randn(4, DIM, generator=torch.Generator().manual_seed(7))
    a, b = idx.search(queries, k=4, backend="faiss"), idx.search(queries, k=4, backend="torch")
    for ha, hb in zip(a, b):
        assert [(h.doc, h.fragment) for h in ha] == [(h.doc, h.fragment) for h in hb]
        assert [h.score for h in ha] == pytest.approx([h.score for h in hb], abs=1e-5)


def test_multi_vector_documents_map_back_with_fragment():
    idx = paragraph_index(n_docs=6, sentences=3)
    for doc, frag in [(0, 0), (4, 2), (5, 1)]:
        hits = idx.search(idx.vectors[doc * 3 + frag], k=3)[0]
        assert (hits[0].doc, hits[0].fragment) == (doc, frag)
        assert len({h.doc for h in hits}) == 3  # one hit per paragraph, its best sentence
        assert idx.documents[hits[0].doc].sentences[frag] == f"Sentence {frag} of {doc}."


def test_single_vector_hits_have_no_fragment():
    idx = entity_index()
    assert all(h.fragment is None for h in idx.search(idx.vectors[0], k=3)[0])


def test_bad_queries_and_empty_index():
    idx = entity_index()
    with pytest.raises(ValueError, match="query dim 8 does not match index dim 16"):
        idx.search(torch.randn(8))
    empty = VectorIndex(torch.zeros(0, DIM), [])
    assert empty.search(torch.randn(DIM), k=3) == [[]]
    with pytest.raises(ValueError, match=r"\[N, dim\]"):
        VectorIndex(torch.randn(DIM), [])
    with pytest.raises(ValueError, match="owner points past"):
        VectorIndex(torch.randn(2, DIM), [Document("a", "A", "a")], owners=torch.tensor([0, 1]))


def test_find_titles():
    idx = entity_index()
    titles = idx.documents.titles()
    found = [titles[i] for i in idx.find_titles("paris")]
    assert found[:2] == ["Paris", "paris"]  # exact (case-insensitive) matches first
    assert set(found[2:]) == {"Paris Hilton", "Parisian"}
    assert idx.find_titles("PARIS", limit=1) == [0]
    assert idx.find_titles("  ") == [] and idx.find_titles("Madrid") == []


# -- persistence ------------------------------------------------------------------------------------

def test_save_load_round_trip(tmp_path):
    idx = paragraph_index()
    path = idx.save(tmp_path / "paras")
    assert sorted(p.name for p in path.iterdir()) == sorted([MANIFEST, VECTORS, DOCUMENTS])
    back = VectorIndex.load(path, protocol="multi-hop", model_fingerprint="f" * 32, dim=DIM)
    assert torch.allclose(back.vectors, idx.vectors, atol=1e-6)  # re-normalised on load
    assert torch.equal(back.owners, idx.owners)
    assert [back.documents[i] for i in range(len(back))] == [idx.documents[i] for i in range(len(idx))]
    m = back.manifest
    assert (m.protocol, m.model, m.model_fingerprint, m.dim, m.count, m.documents, m.multi_vector) == \
        ("multi-hop", "tiny-test", "f" * 32, DIM, 18, 6, True)
    assert m.build == {"batch_size": 4, "note": "ünïcode"} and m.created
    assert set(m.files) == {VECTORS, DOCUMENTS}
    q = idx.vectors[7]
    assert [(h.doc, h.fragment) for h in back.search(q, 3)[0]] == [(h.doc, h.fragment) for h in idx.search(q, 3)[0]]
    assert back.find_titles("Title 4") == [4] and back.path == path


def test_save_replaces_an_existing_index(tmp_path):
    paragraph_index(seed=0).save(tmp_path / "idx")
    new = paragraph_index(n_docs=4, seed=5)
    new.save(tmp_path / "idx")
    back = VectorIndex.load(tmp_path / "idx")
    assert torch.allclose(back.vectors, new.vectors, atol=1e-6) and len(back) == 4
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]  # no temporary or old folders left


@pytest.mark.parametrize("kwargs,message", [
    ({"protocol": "entity-linking"}, "built for the 'multi-hop' protocol, not 'entity-linking'"),
    ({"model_fingerprint": "0" * 32}, r"built with model 'tiny-test' \(fingerprint ffffffffffff\), not the loaded "
                                      r"model \(fingerprint 000000000000\)"),
    ({"dim": 32}, "has 16-d vectors; the model produces 32-d vectors"),
])
def test_load_refuses_an_index_for_another_model(tmp_path, kwargs, message):
    path = paragraph_index().save(tmp_path / "idx")
    with pytest.raises(IndexLoadError, match=message):
        VectorIndex.load(path, **kwargs)


def test_load_refuses_a_folder_that_is_not_an_index(tmp_path):
    with pytest.raises(IndexLoadError, match="not an index folder"):
        VectorIndex.load(tmp_path)
    path = paragraph_index().save(tmp_path / "idx")
    (path / VECTORS).unlink()
    with pytest.raises(IndexLoadError, match=f"incomplete: {VECTORS} is missing"):
        VectorIndex.load(path)


def test_load_refuses_a_corrupted_manifest(tmp_path):
    path = paragraph_index().save(tmp_path / "idx")
    (path / MANIFEST).write_text("{truncated")
    with pytest.raises(IndexLoadError, match="manifest.json is corrupted"):
        VectorIndex.load(path)
    raw = json.loads(json.dumps({"schema": "onegen-index/9"}))
    (path / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(IndexLoadError, match="unsupported index schema 'onegen-index/9'"):
        VectorIndex.load(path)


@pytest.mark.parametrize("name", [VECTORS, DOCUMENTS])
def test_load_refuses_a_truncated_file(tmp_path, name):
    path = paragraph_index().save(tmp_path / "idx")
    f = path / name
    size = f.stat().st_size
    with open(f, "r+b") as fh:
        fh.truncate(size // 2)
    with pytest.raises(IndexLoadError, match=rf"corrupted: {name} has {size // 2} bytes, the manifest says {size}"):
        VectorIndex.load(path)


@pytest.mark.parametrize("name", [VECTORS, DOCUMENTS])
def test_load_refuses_flipped_bytes(tmp_path, name):
    path = paragraph_index().save(tmp_path / "idx")
    f = path / name
    data = bytearray(f.read_bytes())
    mid = len(data) - 40  # inside the payload, not the header
    data[mid:mid + 4] = bytes(b ^ 0xFF for b in data[mid:mid + 4])
    f.write_bytes(bytes(data))
    with pytest.raises(IndexLoadError, match=f"corrupted: {name} does not match its checksum"):
        VectorIndex.load(path)


def test_load_refuses_a_damaged_file_without_hash_check(tmp_path):
    """With hashing skipped (huge indexes), a same-size but unreadable file still fails cleanly."""
    path = paragraph_index().save(tmp_path / "idx")
    f = path / DOCUMENTS
    f.write_bytes(b"\0" * f.stat().st_size)
    with pytest.raises(IndexLoadError, match="corrupted"):
        VectorIndex.load(path, verify=False)


def test_interrupted_save_leaves_nothing_loadable(tmp_path, monkeypatch):
    def crash(self, path):
        path.write_bytes(b"half")
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(index_mod.DocumentStore, "write", crash)
    with pytest.raises(KeyboardInterrupt):
        paragraph_index().save(tmp_path / "idx")
    assert list(tmp_path.iterdir()) == []  # no index, no temporary folder


def test_interrupted_save_keeps_the_previous_index(tmp_path, monkeypatch):
    old = paragraph_index(seed=0)
    old.save(tmp_path / "idx")
    monkeypatch.setattr(index_mod.DocumentStore, "write", lambda self, p: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        paragraph_index(seed=9).save(tmp_path / "idx")
    back = VectorIndex.load(tmp_path / "idx")
    assert torch.allclose(back.vectors, old.vectors, atol=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]


def test_failed_swap_restores_the_previous_index(tmp_path, monkeypatch):
    """A crash between moving the old folder aside and moving the new one in must not lose the old one."""
    old = paragraph_index(seed=0)
    old.save(tmp_path / "idx")
    real = os.replace
    calls = []

    def flaky(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the new folder's move into place
            raise OSError("interrupted")
        return real(src, dst)

    monkeypatch.setattr(index_mod.os, "replace", flaky)
    with pytest.raises(OSError, match="interrupted"):
        paragraph_index(seed=9).save(tmp_path / "idx")
    monkeypatch.setattr(index_mod.os, "replace", real)
    back = VectorIndex.load(tmp_path / "idx")
    assert torch.allclose(back.vectors, old.vectors, atol=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]
