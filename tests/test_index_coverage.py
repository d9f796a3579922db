"""A dataset run says which index it searches, and warns when the index lacks most of the
documents the dataset names (real HotpotQA questions against the embedded invented-world index)."""
from __future__ import annotations

import json

import pytest
import torch

from onegen.datasets import load_dataset
from onegen.documents import Document
from onegen.index import IndexManifest, VectorIndex
from onegen.index_coverage import clean_name, index_coverage

TITLES = ["Der Himmel über München", "Алексей Смирнов", "東京物語", "ليالي دمشق", "🎬 Sunset Café"]


def paragraphs_index(titles, path=None):
    docs = [Document.from_sentences(f"d{i}", t, [f"{t} is a film.", "It was released in 1990."])
            for i, t in enumerate(titles)]
    owners = torch.arange(len(docs)).repeat_interleave(2)
    index = VectorIndex(torch.randn(len(owners), 8, generator=torch.Generator().manual_seed(0)), docs, owners=owners,
                        manifest=IndexManifest(protocol="multi-hop", model="tiny", model_fingerprint="f" * 32, dim=8,
                                               count=len(owners), documents=len(docs),
                                               build={"source": {"name": "jsonl", "args": {"path": "films.jsonl"}}}))
    if path is not None:
        index.save(path)
        return VectorIndex.load(path)  # the memory-mapped document table
    return index


def hotpot_file(path, titles):
    items = [{"_id": f"q{i}", "type": "bridge", "level": "hard", "question": f"Who directed {a}?", "answer": "x",
              "supporting_facts": [[a, 0], [b, 0]], "context": [[a, [f"{a} is a film."]], [b, [f"{b} is a film."]]]}
             for i, (a, b) in enumerate(zip(titles, titles[1:]))]
    path.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    return load_dataset(path, "multi-hop").examples


@pytest.mark.parametrize("saved", [False, True], ids=["in-memory", "loaded"])
def test_titles_with_a_trailing_bom_are_found_in_the_index(tmp_path, saved):
    index = paragraphs_index(TITLES, tmp_path / "films" if saved else None)
    # The dataset's copies carry a trailing U+FEFF or a zero-width space, as scraped text does.
    examples = hotpot_file(tmp_path / "dev.json", [t + "\ufeff" if i % 2 else t + "\u200b" for i, t in enumerate(TITLES)])
    cov = index_coverage("multi-hop", examples, index)
    assert (cov.named, cov.found, cov.missing) == (5, 5, []) and not cov.mostly_missing
    message = cov.message()
    assert message.startswith("index: ") and "5 of the 5 document titles named by the 4 items are in it" in message
    assert "built from the JSON file films.jsonl" in message and "warning" not in message
    if saved:
        assert str(tmp_path / "films") in message


def test_a_dataset_whose_documents_are_elsewhere_is_warned_about(tmp_path):
    index = paragraphs_index(TITLES, tmp_path / "films")
    examples = hotpot_file(tmp_path / "dev.json", ["Москва", "Köln", "大阪", TITLES[0], "القاهرة"])
    cov = index_coverage("multi-hop", examples, index)
    assert (cov.named, cov.found) == (5, 1) and cov.mostly_missing
    message = cov.message()
    assert message.startswith(f"warning: index: {tmp_path / 'films'} (5 documents, multi-hop protocol")
    assert "Only 1 of the 5 document titles" in message and "'Москва'" in message
    assert "--index DIR" in message and "--candidates context" in message
    assert "--index-multi-hop DIR" in cov.message(app=True)


def test_entity_linking_names_entity_ids_and_single_hop_ctxs_titles(tmp_path):
    entities = VectorIndex(torch.randn(3, 8), [Document("Q90", "Paris", "a city"), Document("Q64", "Berlin", "a city"),
                                               Document("Q1490", "東京", "a city")])
    el = tmp_path / "el.jsonl"
    el.write_text(json.dumps({"id": "s1", "text": "Paris, Berlin und 東京.", "labels": [
        {"span": [0, 5], "entity_id": "Q90"}, {"span": [7, 13], "entity_id": "Q64"},
        {"span": [18, 20], "entity_id": "Q999"}, {"span": [14, 17], "entity_id": "Unknown"}]},
        ensure_ascii=False) + "\n", encoding="utf-8")
    cov = index_coverage("entity-linking", load_dataset(el, "entity-linking").examples, entities)
    assert (cov.field, cov.named, cov.found, cov.missing) == ("id", 3, 2, ["Q999"])  # "Unknown" is no entity
    assert "--candidates" not in cov.message()  # entity linking has no per-item documents

    passages = VectorIndex(torch.randn(2, 8), [Document("w1", "Корвале", "x"), Document("w2", "Velor", "y")])
    sh = tmp_path / "popqa.jsonl"
    sh.write_text(json.dumps({"id": 1, "question": "Where?", "answers": ["x"], "ctxs": [
        {"id": "a", "title": "Корвале\ufeff", "text": "t"}, {"id": "b", "title": "Nowhere", "text": "t"},
        {"id": "c", "title": "Elsewhere", "text": "t"}]}, ensure_ascii=False) + "\n", encoding="utf-8")
    cov = index_coverage("single-hop", load_dataset(sh, "single-hop").examples, passages)
    assert (cov.named, cov.found) == (3, 1) and cov.mostly_missing


def test_clean_name_strips_only_invisible_edges():
    assert clean_name("\ufeff Berlin\u200b\ufeff") == "Berlin"
    assert clean_name("Zoë\u200bÅngström") == "Zoë\u200bÅngström"
    assert clean_name("\ufeff") == ""
