"""Held-out questions in unseen formats (onegen/world/formats.py): reproducible from the held-out
world's single-hop file, and readable as single-hop data."""
from __future__ import annotations

import json
from pathlib import Path

from onegen.world.formats import BLANK, FORMATS, derive, main, statement

HELDOUT = Path(__file__).resolve().parents[1] / "assets" / "world" / "heldout"


def test_committed_files_equal_a_fresh_derivation(tmp_path):
    assert main(["--world", str(HELDOUT), "--out", str(tmp_path)]) == 0
    for name in FORMATS:
        assert (HELDOUT / f"unseen-{name}.json").read_bytes() == (tmp_path / f"unseen-{name}.json").read_bytes()


def test_every_format_asks_the_same_facts_another_way():
    items = {x["id"]: x for x in json.loads((HELDOUT / "singlehop.json").read_text())}
    files = {n: json.loads((HELDOUT / f"unseen-{n}.json").read_text()) for n in FORMATS}
    assert all(len(rows) == 100 for rows in files.values())
    for name, rows in files.items():
        for r in rows:
            src = items[r["source"]]
            assert r["format"] == name and r["gold_id"] == src["gold_id"] and r["ctxs"] == src["ctxs"]
    fv = files["fact-verification"]
    assert sorted({r["answers"][0] for r in fv}) == ["no", "yes"] and sum(r["answers"] == ["yes"] for r in fv) == 50
    for r in fv:
        assert r["question"].startswith("Is it true that ") and r["question"].endswith("? Answer yes or no.")
        true_value = items[r["source"]]["answers"][0]  # a true claim states it, a false one another value
        assert (f" {true_value}?" in r["question"]) == (r["answers"] == ["yes"])
    for r in files["fill-blank"]:
        assert r["question"].count(BLANK) == 1 and r["question"].endswith(f"{BLANK}.")
        assert r["answers"] == items[r["source"]]["answers"]
    for r in files["multiple-choice"]:
        opts = r["options"]
        assert len(set(opts)) == 4 and sum(o in r["answers"] for o in opts) == 1
        assert all(f"{'ABCD'[i]}) {o}" in r["question"] for i, o in enumerate(opts))
        # the wrong options answer the same relation: years with years, names with names
        assert all(o.replace(",", "").isdigit() for o in opts) or not any(o.isdigit() for o in opts)


def test_statements_cover_the_world_shapes_and_read_as_single_hop_data():
    from onegen.datasets import load_dataset

    assert statement("Who wrote the novel X?") == (f"The novel X was written by {BLANK}", "2:wrote")
    assert statement("What is the capital of Y?")[1] != statement("What is the population of Y?")[1]
    assert statement("Why?") is None
    items = json.loads((HELDOUT / "singlehop.json").read_text())
    assert sum(statement(x["question"]) is not None for x in items) == len(items)  # every template has a shape
    for name in FORMATS:
        data = load_dataset(HELDOUT / f"unseen-{name}.json", "single-hop")
        assert len(data.examples) == 100 and not data.errors
    assert derive(items[:5]) == {n: [] for n in FORMATS}  # too few answers of a shape for false claims
