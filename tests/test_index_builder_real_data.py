"""index_builder on real-looking input: a corpus given as one JSON list (non-Latin titles, a byte
order mark), files refused before any model loads, and shards sized by encoding time so that an
interrupted CPU build keeps its finished shards. Tiny random checkpoints (tests/tiny.py)."""
from __future__ import annotations

import json

import pytest

from index_builder.__main__ import main
from index_builder.build import (MAX_SHARD_VECTOR_BYTES, BuildFolder, BuildSpec, build_dir_for, run_build,
                                 shard_size_for)
from onegen.documents import Document
from onegen.encode import build_index, encode_documents
from onegen.index import VectorIndex
from tiny import build_tiny_model, load_tiny

pytestmark = pytest.mark.usefixtures("one_thread")

TITLES = ["Der Himmel über Berlin", "Москва", "東京物語", "ليالي دمشق", "🎬 Café Görlitz", "Zoë Ångström"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("real-data-models")
    return build_tiny_model("single-hop", root), root


def corpus(n: int) -> list[Document]:
    return [Document(f"d{i}", f"{TITLES[i % len(TITLES)]} {i}", f"{TITLES[i % len(TITLES)]} {i} is a film. "
                     f"It was released in {1950 + i}.") for i in range(n)]


def build(args, model_dir, out, *extra) -> int:
    return main([*map(str, args), "--task", "single-hop", "--model", str(model_dir), "--out", str(out), "--quiet",
                 *extra])


def test_a_json_list_corpus_with_a_byte_order_mark_is_indexed(model, tmp_path):
    records = [{"title": d.title, "text": d.text} for d in corpus(5)]
    path = tmp_path / "films.json"
    path.write_text("\ufeff" + json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    out = tmp_path / "idx"
    assert build(["jsonl", path], model[0], out) == 0
    idx = VectorIndex.load(out)
    assert idx.documents.titles() == [r["title"] for r in records]
    assert idx.documents.ids() == [f"films.json:{i}" for i in range(5)]
    assert idx.documents[3].text == records[3]["text"]
    reference = build_index(load_tiny("single-hop", model[1]), "single-hop", corpus(5))
    assert idx.documents.titles() == reference.documents.titles()


@pytest.mark.parametrize("content, expect", [
    ("title,text\nBerlin,a city\n", "neither JSON Lines nor a JSON list: it starts with 'title,text"),
    ('[{"title": "Berlin", "text": "a city"},', "the JSON list is not valid JSON"),
    ('[["Berlin", "a city"]]', "item 0: expected a JSON object, got a list"),
    ('{"title": "Köln"\n{"title": "Berlin", "text": "a city"}\n', "bad.json:1: not a JSON object"),
    ('{"name": "Berlin"}\n', 'bad.json:1: record needs "title" and "text"'),
    ("[]", "holds no documents"),
    ("   \n", "is empty"),
], ids=["csv", "cut-off-list", "list-of-lists", "bad-first-line", "no-title", "empty-list", "blank"])
def test_unreadable_corpora_are_refused_before_the_model_loads(tmp_path, capsys, content, expect):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    # No model exists at this path: the corpus must be refused first, with the formats accepted.
    code = build(["jsonl", path], tmp_path / "no-such-model", tmp_path / "idx")
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and expect in err, err
    assert "no-such-model" not in err and "accepted: JSON Lines" in err and "one JSON list" in err
    assert not build_dir_for(tmp_path / "idx").exists()


def test_not_utf8_is_named(tmp_path, capsys):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps({"title": "Köln", "text": "x"}, ensure_ascii=False).encode("latin-1") + b"\n")
    assert build(["jsonl", path], tmp_path / "no-such-model", tmp_path / "idx") == 2
    assert "not UTF-8 text" in capsys.readouterr().err


def test_shard_size_by_time_floor_and_memory_cap():
    # 10 documents/s for 2 minutes = 1,200 documents.
    assert shard_size_for(10.0, 2.0, batch_size=16, dim=64, vectors_per_document=1.0) == (1200, False)
    # A very slow model still gets one batch per shard.
    assert shard_size_for(0.01, 2.0, batch_size=16, dim=64, vectors_per_document=1.0) == (16, False)
    # A fast GPU on 4096-d paragraphs of 5 sentences: the shard's vectors stay within the cap.
    size, capped = shard_size_for(5000.0, 2.0, batch_size=16, dim=4096, vectors_per_document=5.0)
    assert capped and size == MAX_SHARD_VECTOR_BYTES // (4096 * 4 * 5)


def test_an_interrupted_time_sized_build_resumes_from_its_finished_shards(model, tmp_path):
    """Encoding is timed on a simulated clock (one second a document): two seconds a shard makes
    shards of two documents. The build dies while encoding its third shard; the rerun keeps the
    two finished shards and the planned size, and encodes only the rest."""
    lm = load_tiny("single-hop", model[1])
    docs = corpus(7)
    now = [0.0]
    calls: list[int] = []

    def encode(lm_, task, batch, batch_size=16):
        calls.append(len(batch))
        now[0] += len(batch)
        return encode_documents(lm_, task, batch, batch_size=batch_size)

    def dying(lm_, task, batch, batch_size=16):
        if len(calls) == 4:  # two timing calls, shards 0 and 1, then shard 2 is interrupted
            raise KeyboardInterrupt
        return encode(lm_, task, batch, batch_size=batch_size)

    spec = BuildSpec("single-hop", lm.name, lm.fingerprint, lm.hidden_size, {"name": "test"}, shard_minutes=2 / 60)
    out = tmp_path / "idx"
    with pytest.raises(KeyboardInterrupt):
        run_build(spec, out, documents=lambda: iter(docs), lm=lm, batch_size=1, progress=False, encode=dying,
                  clock=lambda: now[0])
    folder = BuildFolder(build_dir_for(out))
    state = folder.read_state()
    assert state.shard_size == 2 and state.shard_plan["documents_per_second"] == 1.0
    assert state.split_complete and state.shards == 4  # 2 + 2 + 2 + 1 documents
    assert [folder.encoded(i) for i in range(4)] == [True, True, False, False]
    assert not out.exists()

    calls.clear()
    result = run_build(spec, out, documents=lambda: iter(docs), lm=lm, batch_size=1, progress=False, encode=encode,
                       clock=lambda: now[0])
    assert calls == [2, 1]  # shards 2 and 3 only: no second timing, no finished shard redone
    built = VectorIndex.load(result.out)
    reference = build_index(lm, "single-hop", docs, batch_size=1)
    assert built.documents.ids() == reference.documents.ids()
    assert (built.vectors - reference.vectors).abs().max() < 1e-5
    plan = built.manifest.build["shard_plan"]
    assert built.manifest.build["shard_size"] == 2 and plan["minutes"] == pytest.approx(2 / 60)
