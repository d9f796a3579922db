"""index_builder: world source, sharded resumable builds, merge, memory refusal, parallel encoding.

Builds run on tiny random checkpoints (tests/tiny.py) over small slices of the committed held-out
world, in this process. Builds in real processes (killed with SIGKILL, launched by accelerate)
are in test_index_builder_processes.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from index_builder.__main__ import main
from index_builder.build import BuildError, BuildFolder, BuildSpec, build_dir_for, merge, prepare_document, run_build
from index_builder.sources import open_source
from index_builder.sources.world import WorldSource
from onegen.documents import Document
from onegen.encode import build_index
from onegen.index import VectorIndex
from tiny import build_tiny_model, load_tiny

ROOT = Path(__file__).resolve().parents[1]
WORLD = ROOT / "assets" / "world" / "heldout"


pytestmark = pytest.mark.usefixtures("one_thread")


class _Models(dict):
    """Tiny checkpoint folders per task, made on first use."""

    def __init__(self, root: Path):
        super().__init__()
        self.root = root

    def __missing__(self, task: str) -> Path:
        self[task] = build_tiny_model(task, self.root)
        return self[task]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return _Models(tmp_path_factory.mktemp("models"))


def world_docs(task: str, n: int) -> list[Document]:
    docs = []
    for d in WorldSource(WORLD, task):
        docs.append(d)
        if len(docs) == n:
            break
    return docs


def build_cli(source_args: list[str], task: str, model: Path, out: Path, *extra: str) -> int:
    return main([*source_args, "--task", task, "--model", str(model), "--out", str(out), "--quiet", *extra])


def assert_same_index(a: VectorIndex, b: VectorIndex) -> None:
    assert a.documents.ids() == b.documents.ids()
    assert a.documents.titles() == b.documents.titles()
    for i in (0, len(a) - 1):
        assert a.documents[i] == b.documents[i]
    assert torch.equal(a.owners, b.owners)
    assert torch.allclose(a.vectors, b.vectors, atol=1e-5)
    assert (a.manifest.protocol, a.manifest.model_fingerprint, a.manifest.dim) == \
           (b.manifest.protocol, b.manifest.model_fingerprint, b.manifest.dim)


# -- world source ---------------------------------------------------------------------------------

def test_world_entities_are_names_with_their_db_descriptions():
    docs = list(open_source("world", path=WORLD, task="entity-linking"))
    assert len(docs) == 600
    rows = {json.loads(l)["id"]: json.loads(l) for l in (WORLD / "entities.jsonl").read_text().splitlines()}
    db = {json.loads(l)["uid"]: json.loads(l) for l in (WORLD / "db.jsonl").read_text().splitlines()}
    d = next(d for d in docs if rows[d.id]["title"] != rows[d.id]["name"])  # a disambiguated one
    assert d.title == rows[d.id]["name"]
    assert d.extra == {"type": rows[d.id]["type"], "short_description": rows[d.id]["short_description"],
                       "title": rows[d.id]["title"]}
    assert db[d.id]["messages"][1]["content"] == d.text + "[SE]"
    assert "[SE]" not in d.text and d.text.startswith(d.title + " is an instance of")
    assert d.sentences is None


def test_world_paragraphs_per_task():
    rows = [json.loads(l) for l in (WORLD / "paragraphs.jsonl").read_text().splitlines()]
    mh = list(WorldSource(WORLD, "multi-hop"))
    sh = list(WorldSource(WORLD, "single-hop"))
    assert [d.id for d in mh] == [d.id for d in sh] == [r["id"] for r in rows]
    assert mh[5].sentences == rows[5]["sentences"] and mh[5].title == rows[5]["title"]
    assert mh[5].text == rows[5]["text"]
    assert sh[5].sentences is None and (sh[5].title, sh[5].text) == (rows[5]["title"], rows[5]["text"])


def test_world_source_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a world folder"):
        WorldSource(tmp_path, "multi-hop")
    with pytest.raises(ValueError, match="task must be one of"):
        WorldSource(WORLD, "qa")


def test_multi_hop_documents_get_sentences():
    d = prepare_document(Document("x", "T", "One sentence here. Another one follows."), "multi-hop")
    assert d.sentences == ["One sentence here.", "Another one follows."]
    same = Document("y", "T", "Whole text.")
    assert prepare_document(same, "single-hop") is same


def test_cli_source_arguments(tmp_path):
    from index_builder.__main__ import parser, source_arguments
    from index_builder.sources.wikipedia import WikipediaCrawl, WikipediaTitles

    args = parser().parse_args(["wikipedia", "--seeds", "Ada Lovelace, Charles Babbage", "--depth", "2",
                                "--task", "multi-hop", "--out", str(tmp_path / "o")])
    kw = source_arguments(args)
    assert kw["seeds"] == ["Ada Lovelace", "Charles Babbage"] and kw["depth"] == 2
    assert kw["mode"] == "paragraphs"  # multi-hop encodes sentences of paragraphs
    assert isinstance(open_source("wikipedia", **kw), WikipediaCrawl)  # built without any request
    titles = tmp_path / "titles.txt"
    titles.write_text("# physicists\nMarie Curie\n\nNiels Bohr\n")
    args = parser().parse_args(["wikipedia", "--titles", str(titles), "--lang", "fr", "--task", "entity-linking",
                                "--out", str(tmp_path / "o")])
    kw = source_arguments(args)
    assert kw["titles"] == ["Marie Curie", "Niels Bohr"] and kw["language"] == "fr" and kw["mode"] == "pages"
    assert isinstance(open_source("wikipedia", **kw), WikipediaTitles)
    args = parser().parse_args(["parquet", "dumps/*.parquet", "--task", "single-hop", "--out", "o"])
    assert source_arguments(args)["mode"] == "pages" and source_arguments(args)["paths"][0].endswith("dumps/*.parquet")


def test_jsonl_paragraphs_are_split_into_sentences_for_multi_hop(models, tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"p{i}", "title": f"Page {i}",
                                          "text": f"Page {i} is a place. It has {i} rivers. It is old."}) + "\n"
                              for i in range(5)))
    out = tmp_path / "idx"
    assert build_cli(["jsonl", str(corpus)], "multi-hop", models["multi-hop"], out) == 0
    idx = VectorIndex.load(out, protocol="multi-hop")
    assert len(idx) == 5 and len(idx.vectors) == 15  # three sentences, three vectors a document
    assert idx.documents[2].sentences == ["Page 2 is a place.", "It has 2 rivers.", "It is old."]
    assert idx.documents[2].text == "Page 2 is a place. It has 2 rivers. It is old."


# -- build, merge ----------------------------------------------------------------------------------

@pytest.mark.parametrize("task", ["entity-linking", "multi-hop"])
def test_sharded_build_equals_in_memory_index(models, tmp_path, task):
    out = tmp_path / "idx"
    assert build_cli(["world", str(WORLD)], task, models[task], out, "--limit", "13", "--shard-size", "4",
                     "--batch-size", "3") == 0
    built = VectorIndex.load(out, protocol=task)
    lm = load_tiny(task, models[task].parent)
    reference = build_index(lm, task, world_docs(task, 13), batch_size=3)
    assert_same_index(built, reference)
    assert built.manifest.kind == "flat" and built.manifest.build["shards"] == 4
    assert built.manifest.multi_vector == (task == "multi-hop")
    assert not build_dir_for(out).exists()  # shards removed once merged
    hit = built.search(built.vectors[built.owners == 7][0], k=1)[0][0]
    assert hit.doc == 7 and built.documents[hit.doc].id == reference.documents[7].id


def test_rebuild_refuses_a_build_folder_of_another_spec(models, tmp_path):
    out = tmp_path / "idx"
    lm = load_tiny("single-hop", models["single-hop"].parent)
    spec = BuildSpec("single-hop", lm.name, lm.fingerprint, lm.hidden_size, {"name": "world"}, shard_size=4, limit=6)
    BuildFolder(build_dir_for(out)).open(spec)
    other = BuildSpec("single-hop", lm.name, lm.fingerprint, lm.hidden_size, {"name": "world"}, shard_size=5, limit=6)
    with pytest.raises(BuildError, match="shard_size: 4 -> 5.*--restart"):
        run_build(other, out, documents=lambda: world_docs("single-hop", 6), lm=lm, progress=False)
    result = run_build(other, out, documents=lambda: world_docs("single-hop", 6), lm=lm, progress=False, restart=True)
    assert VectorIndex.load(result.out).manifest.build["shard_size"] == 5


def test_refuses_to_replace_a_folder_that_is_not_an_index(models, tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert build_cli(["world", str(WORLD)], "single-hop", models["single-hop"], out, "--limit", "2") == 2
    assert (out / "notes.txt").read_text() == "keep me"


def test_split_interrupted_midway_resumes_without_rereading_done_shards(models, tmp_path):
    lm = load_tiny("single-hop", models["single-hop"].parent)
    spec = BuildSpec("single-hop", lm.name, lm.fingerprint, lm.hidden_size, {"name": "test"}, shard_size=3)
    out = tmp_path / "idx"
    docs = world_docs("single-hop", 10)

    def crashing():
        yield from docs[:7]
        raise KeyboardInterrupt  # the stream dies after two full shards and one document

    with pytest.raises(KeyboardInterrupt):
        run_build(spec, out, documents=crashing, lm=lm, progress=False)
    folder = BuildFolder(build_dir_for(out))
    assert folder.split_shards() == 2 and not folder.read_state().split_complete
    assert not out.exists()
    result = run_build(spec, out, documents=lambda: iter(docs), lm=lm, progress=False)
    assert VectorIndex.load(result.out).documents.ids() == [d.id for d in docs]


def test_interrupted_merge_leaves_no_index_and_no_temporary(models, tmp_path, monkeypatch):
    import onegen.fsutil as fsutil

    lm = load_tiny("single-hop", models["single-hop"].parent)
    spec = BuildSpec("single-hop", lm.name, lm.fingerprint, lm.hidden_size, {"name": "test"}, shard_size=3)
    out = tmp_path / "idx"

    def dying_publish(tmp, target):
        assert (tmp / "vectors.safetensors").exists()
        raise KeyboardInterrupt

    monkeypatch.setattr(fsutil, "publish", dying_publish)
    with pytest.raises(KeyboardInterrupt):
        run_build(spec, out, documents=lambda: world_docs("single-hop", 5), lm=lm, progress=False, kind="sq8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx.build"]
    monkeypatch.undo()
    # `python -m index_builder merge` finishes it from the shards.
    assert main(["merge", str(build_dir_for(out)), "--recall-sample", "5"]) == 0
    assert VectorIndex.load(out).kind == "sq8"


def test_merge_refuses_missing_shards(models, tmp_path):
    out = tmp_path / "idx"
    assert build_cli(["world", str(WORLD)], "single-hop", models["single-hop"], out, "--limit", "6",
                     "--shard-size", "2", "--process-index", "0", "--num-processes", "2") == 0
    assert not out.exists()
    with pytest.raises(BuildError, match="1 of 3 shards are not encoded yet"):
        merge(build_dir_for(out), out)


def test_precomputed_entity_vectors(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    vectors = torch.randn(7, 24, generator=g).to(torch.bfloat16)
    uids = [f"Q{i}" for i in range(7)]
    torch.save((vectors, uids), tmp_path / "emb.pkl")
    db = tmp_path / "db.jsonl"
    db.write_text("".join(json.dumps({"uid": u, "messages": [
        {"role": "user", "content": f"<s>Represent the entity ... '[SE]' token.\nThe description of Name {u} is as follows:\n"},
        {"role": "assistant", "content": f"Name {u} is an instance of thing.[SE]"}]}) + "\n" for u in uids))
    out = tmp_path / "ents"
    base = ["onegen-entities", str(tmp_path / "emb.pkl"), "--db", str(db), "--out", str(out), "--quiet"]
    assert main(base) == 2 and "--fingerprint" in capsys.readouterr().err
    assert main([*base, "--task", "multi-hop", "--fingerprint", "ab" * 16]) == 2
    assert main([*base, "--fingerprint", "ab" * 16, "--shard-size", "3"]) == 0
    idx = VectorIndex.load(out, protocol="entity-linking", model_fingerprint="ab" * 16, dim=24)
    assert idx.documents.ids() == uids and idx.documents[2].title == "Name Q2"
    assert idx.documents[2].text == "Name Q2 is an instance of thing."
    assert torch.allclose(idx.vectors, torch.nn.functional.normalize(vectors.float(), dim=1), atol=1e-6)
    assert idx.manifest.model == "zjunlp/OneGen-EntityLinking-Llama2-7B"
    assert idx.manifest.build["precomputed"] is True


# -- memory ----------------------------------------------------------------------------------------

def test_memory_refusal_before_reading_the_corpus(models, tmp_path, capsys):
    out = tmp_path / "idx"
    lm = load_tiny("entity-linking", models["entity-linking"].parent)
    model_bytes = sum(p.numel() * p.element_size() for p in lm.model.parameters())
    # Room for the model and a few hundred documents, not for all 600.
    budget = (model_bytes + 170_000) / (1 << 30)
    code = build_cli(["world", str(WORLD)], "entity-linking", models["entity-linking"], out,
                     "--memory-budget", f"{budget:.9f}")
    err = capsys.readouterr().err
    assert code == 2
    assert "will not fit in memory" in err
    assert "--kind sq8 (about" in err and "--kind ivfpq (about" in err
    limit = int(err.split("--limit ")[1].split()[0].replace(",", ""))
    assert 100 < limit < 600
    assert BuildFolder(build_dir_for(out)).split_shards() == 0  # refused before splitting
    assert not out.exists()


def test_memory_refusal_after_split_keeps_shards_for_another_kind(models, tmp_path, capsys):
    from index_builder.ann import MemoryBudgetError, ann_bytes

    lm = load_tiny("single-hop", models["single-hop"].parent)
    spec = BuildSpec("single-hop", lm.name, lm.fingerprint, lm.hidden_size, {"name": "test"}, shard_size=4)
    out = tmp_path / "idx"
    docs = world_docs("single-hop", 8)
    # Fits flat's lower bound (1 vector/document, no text) but not the real text: refused after the split.
    budget = ann_bytes("flat", 8, lm.hidden_size) + 8 * 200 + 100
    with pytest.raises(MemoryBudgetError, match="documents"):
        run_build(spec, out, documents=lambda: iter(docs), lm=lm, memory_budget=budget, progress=False)
    assert BuildFolder(build_dir_for(out)).read_state().split_complete
    result = run_build(spec, out, documents=lambda: iter(()), lm=lm, progress=False, kind="sq8")
    assert VectorIndex.load(result.out).documents.ids() == [d.id for d in docs]


# -- parallel encoding -----------------------------------------------------------------------------

def test_explicit_two_process_build_equals_single(models, tmp_path):
    task, model = "multi-hop", models["multi-hop"]
    common = ["--limit", "9", "--shard-size", "2", "--batch-size", "2"]
    single, split = tmp_path / "one", tmp_path / "two"
    assert build_cli(["world", str(WORLD)], task, model, single, *common) == 0
    for rank in (0, 1):
        assert build_cli(["world", str(WORLD)], task, model, split, *common,
                         "--process-index", str(rank), "--num-processes", "2") == 0
    ranks = {BuildFolder(build_dir_for(split)).vectors_info(i)["rank"] for i in range(5)}
    assert ranks == {0, 1}
    assert main(["merge", str(build_dir_for(split))]) == 0
    assert_same_index(VectorIndex.load(split), VectorIndex.load(single))
    assert VectorIndex.load(split).manifest.build["processes"] == 2
