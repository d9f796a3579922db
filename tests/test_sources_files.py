"""File-based corpus sources: JSON Lines, parquet dumps, the authors' entity vector pickle."""
from __future__ import annotations

import collections
import gzip
import io
import json
import operator
import os
import pickle
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from index_builder.sources import SOURCES, open_source
from index_builder.sources.jsonl import JsonlFormatError, JsonlSource, parse_db_record
from index_builder.sources.onegen_entities import (
    EntityJoinStats, UnsafePickleError, iter_entity_batches, load_entity_vectors,
)
from index_builder.sources.parquet import ParquetWikipediaSource

ENTITY_PROMPT = ("<s>Represent the entity based on its description and output it after the '[SE]' token.\n"
                 "The description of {name} is as follows:\n{description}")
DFR = "[Document Fragment Representation]"
FRAGMENT_INSTRUCTION = (f"Represent the following document fragment and output it after the '{DFR}' token. "
                        "\nHere are document fragment:\n")


def entity_line(uid: str, name: str, description: str) -> dict:
    return {"uid": uid, "messages": [
        {"role": "user", "content": ENTITY_PROMPT.format(name=name, description=description)},
        {"role": "assistant", "content": "[SE]"}]}


def write_lines(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8")
    return path


# ---------------------------------------------------------------- JSON Lines

def test_jsonl_records_with_ids_sentences_and_extra(tmp_path):
    path = write_lines(tmp_path / "docs.jsonl", [
        {"id": 7, "title": "Paris", "text": "Paris is a city.", "lang": "en"},
        {"title": "Lyon", "sentences": ["Lyon is a city.", " It is in France."]},
        "",
    ])
    docs = list(JsonlSource(path))
    assert [d.id for d in docs] == ["7", "docs.jsonl:2"]
    assert docs[0].extra == {"lang": "en"} and docs[0].sentences is None
    assert docs[1].sentences == ["Lyon is a city.", " It is in France."]
    assert docs[1].text == "Lyon is a city. It is in France."


def test_jsonl_authors_entity_db(tmp_path):
    path = write_lines(tmp_path / "db.jsonl", [
        entity_line("Q90", "Paris", 'Paris is an instance of city. It is described as "capital of France". It lies on the Seine.'),
        entity_line("Q1", "Universe", "The universe is everything.\nIt has two lines."),
    ])
    docs = list(open_source("jsonl", path=path))
    assert [(d.id, d.title) for d in docs] == [("Q90", "Paris"), ("Q1", "Universe")]
    assert docs[0].text.startswith("Paris is an instance of city.") and not docs[0].text.endswith("[SE]")
    assert docs[1].text == "The universe is everything.\nIt has two lines."
    assert docs[0].extra == {"uid": "Q90", "db_kind": "entity"}


def test_db_records_of_the_fragment_prompts():
    multihop = {"uid": "h1", "messages": [{"role": "user", "content": FRAGMENT_INSTRUCTION
                + f"wiki title: Paris\ncontent: Paris is a city.{DFR} It is big.{DFR}"}]}
    e = parse_db_record(multihop)
    assert (e.kind, e.title, e.sentences) == ("multihop", "Paris", ["Paris is a city.", " It is big."])
    assert e.text == "Paris is a city. It is big."
    selfrag = {"uid": 3, "messages": [{"role": "user", "content": FRAGMENT_INSTRUCTION + "Lyon\nLyon is a city." + DFR}]}
    e = parse_db_record(selfrag)
    assert (e.kind, e.uid, e.title, e.text) == ("selfrag", "3", "Lyon", "Lyon is a city.")
    raw = parse_db_record({"uid": "x", "messages": [{"role": "user", "content": "free "}, {"role": "assistant", "content": "text"}]})
    assert (raw.kind, raw.title, raw.text) == ("raw", "x", "free text")


def test_jsonl_bad_line_names_file_and_line(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", [{"title": "A", "text": "a"}, "{not json", ["a list"], {"text": "no title"},
                                                {"title": "B", "text": "b"}])
    with pytest.raises(JsonlFormatError, match=r"bad\.jsonl:2:"):
        list(JsonlSource(path))
    src = JsonlSource(path, skip_bad=True)
    assert [d.title for d in src] == ["A", "B"]
    assert src.stats.bad_lines == 3 and src.stats.records == 2
    assert "bad.jsonl:4" in src.stats.bad_examples[2]


def test_jsonl_streams_gzip_and_missing_file(tmp_path):
    path = tmp_path / "docs.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"title": "A", "text": "a"}) + "\n")
    assert [d.title for d in JsonlSource(path)] == ["A"]
    with pytest.raises(FileNotFoundError):
        JsonlSource(tmp_path / "nope.jsonl")


# ---------------------------------------------------------------- parquet

DUMP_TEXT = ("Paris is the capital of France. It is on the Seine.\n\n"
             "History\n\n"
             "The Parisii lived there. Romans came later.\n\n"
             "Paris grew in the Middle Ages.")


def write_dump(path: Path, rows: list[tuple]) -> Path:
    ids, urls, titles, texts = zip(*rows)
    table = pa.table({"id": list(ids), "url": list(urls), "title": list(titles), "text": list(texts)})
    pq.write_table(table, path, row_group_size=2)
    return path


def test_parquet_pages_across_glob(tmp_path):
    write_dump(tmp_path / "train-00000.parquet", [("1", "u1", "Paris", DUMP_TEXT), ("2", "u2", "Lyon", "Lyon is a city."),
                                                   ("3", "u3", "Empty", "  ")])
    write_dump(tmp_path / "train-00001.parquet", [("4", "u4", "Nice", "Nice is by the sea.")])
    src = ParquetWikipediaSource(str(tmp_path / "train-*.parquet"), batch_size=1)
    assert operator.length_hint(src) == 4
    docs = list(src)
    assert [d.id for d in docs] == ["1", "2", "4"]
    assert docs[0].text == DUMP_TEXT and docs[0].extra == {"url": "u1"}
    assert (src.stats.files, src.stats.rows, src.stats.empty_rows) == (2, 4, 1)


def test_parquet_paragraphs(tmp_path):
    path = write_dump(tmp_path / "d.parquet", [("12", "u", "Paris", DUMP_TEXT)])
    docs = list(SOURCES["parquet"](paths=path, mode="paragraphs"))
    assert [d.id for d in docs] == ["12#0", "12#1", "12#2"]
    assert docs[0].sentences == ["Paris is the capital of France.", "It is on the Seine."]
    assert docs[1].extra == {"url": "u", "paragraph": 1, "section": "History"}
    assert docs[2].text == "Paris grew in the Middle Ages."


def test_parquet_reads_in_batches_never_whole_file(tmp_path, monkeypatch):
    path = write_dump(tmp_path / "d.parquet", [(str(i), "u", f"T{i}", f"Text {i}.") for i in range(5)])
    seen_sizes = []
    real = pq.ParquetFile.iter_batches

    def spy(self, *args, **kwargs):
        for batch in real(self, *args, **kwargs):
            seen_sizes.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: pytest.fail("whole-file read"))
    assert len(list(ParquetWikipediaSource(path, batch_size=2))) == 5
    assert max(seen_sizes) <= 2


def test_parquet_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no parquet file matches"):
        ParquetWikipediaSource(str(tmp_path / "*.parquet"))
    pq.write_table(pa.table({"title": ["A"], "body": ["x"]}), tmp_path / "odd.parquet")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['id', 'url', 'text'\]"):
        list(ParquetWikipediaSource(tmp_path / "odd.parquet"))
    with pytest.raises(ValueError, match="mode"):
        ParquetWikipediaSource(tmp_path / "odd.parquet", mode="sentences")


# ---------------------------------------------------------------- entity vectors

UIDS = ["Q90", "Q1", "Q5", "Q64", "Q2", "Q3", "Q4"]


def authors_pickle(path: Path, vectors: torch.Tensor, uids: list[str]) -> Path:
    """The released layout: plain pickle.dumps of (bf16 tensor, uid list)."""
    path.write_bytes(pickle.dumps((vectors, uids)))
    return path


class _Reduce:
    """Pickles as `fn(*args)`: lets a test write exactly the globals it wants."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def cuda_pickle(path: Path, vectors: torch.Tensor, uids: list[str]) -> Path:
    """What pickling a CUDA tensor writes, made without a GPU: the storage payload's
    location string says "cuda:0"."""
    buf = io.BytesIO()
    torch.save(vectors._typed_storage(), buf, _use_new_zipfile_serialization=False)  # as Tensor.__reduce_ex__ does
    payload = buf.getvalue()
    assert payload.count(b"X\x03\x00\x00\x00cpu") == 1
    payload = payload.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
    storage = _Reduce(torch.storage._load_from_bytes, payload)
    tensor = _Reduce(torch._utils._rebuild_tensor_v2, storage, 0, tuple(vectors.shape), vectors.stride(),
                     False, collections.OrderedDict())
    path.write_bytes(pickle.dumps((tensor, uids)))
    return path


@pytest.fixture
def vectors() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(7, 16, generator=g).to(torch.bfloat16)


def test_load_authors_layout(tmp_path, vectors):
    loaded, uids = load_entity_vectors(authors_pickle(tmp_path / "e.pkl", vectors, UIDS))
    assert uids == UIDS and loaded.dtype == torch.bfloat16 and loaded.device.type == "cpu"
    assert torch.equal(loaded, vectors)
    torch.save((vectors, UIDS), tmp_path / "e.pt")  # a zip-format copy loads the same way
    loaded, uids = load_entity_vectors(tmp_path / "e.pt")
    assert uids == UIDS and torch.equal(loaded, vectors)


def test_load_pickle_saved_on_cuda_maps_to_cpu(tmp_path, vectors):
    path = cuda_pickle(tmp_path / "cuda.pkl", vectors, UIDS)
    if not torch.cuda.is_available():  # the stock loader cannot even open it here
        with pytest.raises(RuntimeError, match="CUDA"):
            pickle.loads(path.read_bytes())
    loaded, uids = load_entity_vectors(path)
    assert loaded.device.type == "cpu" and torch.equal(loaded, vectors) and uids == UIDS


def test_foreign_globals_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps((_Reduce(os.system, f"touch {marker}"), ["Q1"])))
    with pytest.raises(UnsafePickleError, match=r"refused global (posix|os|nt)\.system"):
        load_entity_vectors(path)
    assert not marker.exists()

    # A storage payload is itself loaded with the weights-only loader: no code there either.
    inner = pickle.dumps(_Reduce(os.system, f"touch {marker}"), protocol=2)
    path.write_bytes(pickle.dumps((_Reduce(torch.storage._load_from_bytes, inner), ["Q1"])))
    with pytest.raises(pickle.UnpicklingError):
        load_entity_vectors(path)
    assert not marker.exists()

    path.write_bytes(pickle.dumps((_Reduce(collections.Counter, "ab"), ["Q1"])))
    with pytest.raises(UnsafePickleError, match="collections.Counter"):
        load_entity_vectors(path)


def test_layout_mismatches_are_clear_errors(tmp_path, vectors):
    with pytest.raises(ValueError, match="7 vectors but 2 uids"):
        load_entity_vectors(authors_pickle(tmp_path / "a.pkl", vectors, ["Q1", "Q2"]))
    with pytest.raises(ValueError, match="2-D tensor"):
        load_entity_vectors(authors_pickle(tmp_path / "b.pkl", vectors[0], ["Q1"]))


def test_entity_batches_join_descriptions(tmp_path, vectors):
    pkl = authors_pickle(tmp_path / "e.pkl", vectors, UIDS)
    db = write_lines(tmp_path / "db.jsonl", [
        entity_line("Q1", "Universe", "Everything there is."),
        entity_line("Q999", "Unused", "No vector for this one."),
        entity_line("Q90", "Paris", "Capital of France."),
        entity_line("Q64", "Berlin", "Capital of Germany."),
    ])
    stats = EntityJoinStats()
    batches = list(iter_entity_batches(pkl, db, batch_size=3, stats=stats))
    assert [v.shape for v, _ in batches] == [(3, 16), (3, 16), (1, 16)]
    got = torch.cat([v for v, _ in batches])
    docs = [d for _, ds in batches for d in ds]
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, torch.nn.functional.normalize(vectors.float(), dim=1))
    torch.testing.assert_close(got.norm(dim=1), torch.ones(7))
    assert [d.id for d in docs] == UIDS
    assert (docs[0].title, docs[0].text) == ("Paris", "Capital of France.")
    assert (docs[1].title, docs[1].text, docs[1].extra) == ("Universe", "Everything there is.", {"uid": "Q1"})
    assert (docs[2].title, docs[2].text) == ("Q5", "")
    assert (stats.vectors, stats.with_description, stats.without_description) == (7, 3, 4)
    assert stats.db_entries_without_vector == 1 and stats.dim == 16


def test_entity_source_in_registry(tmp_path, vectors):
    src = open_source("onegen-entities", pkl_path=authors_pickle(tmp_path / "e.pkl", vectors, UIDS),
                      db_jsonl_path=None)
    assert src.precomputed_vectors
    assert [d.title for d in src] == UIDS
    assert operator.length_hint(src) == 7
    with pytest.raises(ValueError, match="unknown corpus source"):
        open_source("nope")
