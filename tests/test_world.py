"""Tests of the generated world (onegen/world): determinism, disjoint splits, ambiguity,
consistent facts, and the layouts of every exported file."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from onegen.documents import join_sentences
from onegen.world import (ENTITY_TYPES, MULTIHOP_TYPES, WORLD_FILES, curate_examples, entity_description,
                          export_world, generate_world, name_words, word_split)
from onegen.world.__main__ import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
HELDOUT_DIR = ROOT / "assets" / "world" / "heldout"
EXAMPLES_DIR = ROOT / "assets" / "examples"
OCCUPATIONS = {"painter", "footballer", "film director", "actor", "writer", "scientist", "musician", "politician"}
OPTIONS = re.compile(r"^[^,]*, (.+) or (.+)\?$")


@pytest.fixture(scope="module")
def world():
    """The default size (600 entities and default task counts)."""
    return generate_world(11, split="heldout")


@pytest.fixture(scope="module")
def small_train():
    return generate_world(5, 300, "train", n_el=40, n_multihop=40, n_singlehop=40)


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


# -- determinism -------------------------------------------------------------------

def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path):
    def export(seed: int, name: str) -> dict[str, bytes]:
        export_world(generate_world(seed, 200, "train", n_el=30, n_multihop=30, n_singlehop=30), tmp_path / name)
        return _files(tmp_path / name)

    first, again, other = export(3, "a"), export(3, "b"), export(4, "c")
    assert set(first) == set(WORLD_FILES)
    assert first == again
    assert all(first[name] != other[name] for name in WORLD_FILES)


def test_output_does_not_depend_on_the_string_hash_seed(tmp_path):
    # Iterating a set of strings would make files differ between processes.
    outputs = []
    for hash_seed in ("1", "2"):
        out = tmp_path / hash_seed
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)}
        subprocess.run([sys.executable, "-m", "onegen.world", "--seed", "9", "--split", "heldout",
                        "--entities", "150", "--el", "20", "--multihop", "20", "--singlehop", "20",
                        "--out", str(out)], check=True, env=env, cwd=ROOT, capture_output=True)
        outputs.append(_files(out))
    assert outputs[0] == outputs[1]


# -- splits, size, ambiguity ---------------------------------------------------------

def test_train_and_heldout_share_no_name_words(world, small_train):
    heldout = {w.lower() for e in world.entities for w in name_words(e.name)}
    train = {w.lower() for e in small_train.entities for w in name_words(e.name)}
    assert heldout and train
    assert not heldout & train
    assert all(word_split(w) == "heldout" for w in heldout)
    assert all(word_split(w) == "train" for w in train)


def test_default_size_and_types(world):
    assert len(world.entities) >= 500
    types = Counter(e.type for e in world.entities)
    assert set(types) == set(ENTITY_TYPES) and min(types.values()) >= 6
    assert OCCUPATIONS <= {e.subtype for e in world.entities if e.type == "person"}
    assert {"company", "university", "football club"} <= {e.subtype for e in world.entities}
    assert {"novel", "album", "painting"} <= {e.subtype for e in world.entities}
    ids = [e.id for e in world.entities]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"H\d{4}", i) for i in ids)


def test_ambiguous_names_are_frequent_and_varied(world):
    assert world.ambiguous_fraction() >= 0.10
    assert world.stats()["ambiguous_entity_fraction"] == round(world.ambiguous_fraction(), 4)
    pairs = [(e, o) for e in world.entities for o in world.namesakes(e) if e.id < o.id]
    person_pairs = [(a, b) for a, b in pairs if a.type == b.type == "person"]
    assert person_pairs and all(a.subtype != b.subtype for a, b in person_pairs)
    assert any({a.type, b.type} == {"city", "person"} for a, b in pairs)
    films = [(a, b) for a, b in pairs if a.type == b.type == "film"]
    assert films and all(abs(a.facts["release_year"] - b.facts["release_year"]) >= 10
                         and a.facts["directed_by"] != b.facts["directed_by"] for a, b in films)
    cities = [(a, b) for a, b in pairs if a.type == b.type == "city"]
    assert cities and all(a.facts["located_in"] != b.facts["located_in"] for a, b in cities)


def test_titles_are_unique_and_disambiguate(world):
    titles = [e.title for e in world.entities]
    assert len(set(titles)) == len(titles)
    for e in world.entities:
        if world.namesakes(e):
            assert e.title.startswith(e.name + " (") and e.title.endswith(")")
            assert all(o.short_description != e.short_description for o in world.namesakes(e))
        else:
            assert e.title == e.name


# -- facts and paragraphs ---------------------------------------------------------------

def test_facts_are_consistent(world):
    get = world.entity
    for e in world.entities:
        f = e.facts
        if e.type == "film":
            director = get(f["directed_by"])
            assert director.subtype == "film director"
            assert director.facts["birth_year"] + 20 <= f["release_year"] <= director.facts.get("death_year", 9999)
            assert all(get(a).subtype == "actor" for a in f.get("starring", []))
        elif e.type == "city" and "capital_of" in f:
            assert f["capital_of"] == f["located_in"] and get(f["capital_of"]).facts["capital"] == e.id
        elif e.type == "work":
            creator = get(f["created_by"])
            assert creator.subtype == {"novel": "writer", "painting": "painter", "album": "musician"}[e.subtype]
        elif e.type == "organisation":
            assert get(f["founded_by"]).type == "person" and get(f["headquartered_in"]).type == "city"
        elif e.type == "person":
            assert get(f["born_in"]).type == "city"
            if "spouse" in f:
                assert get(f["spouse"]).facts["spouse"] == e.id
            if "father" in f:
                father = get(f["father"])
                assert father.gender == "male" and father.facts["birth_year"] < f["birth_year"] - 20
                assert e.name.split()[-1] == father.name.split()[-1]


def test_paragraphs_state_one_fact_per_sentence(world):
    for e in world.entities:
        assert 3 <= len(e.sentences) <= 5
        assert re.match(re.escape(e.name) + r" is an? ", e.sentences[0])
        assert all(0 <= i < len(e.sentences) for i in e.fact_sentence.values())
        if e.type == "person":
            assert str(e.facts["birth_year"]) in e.sentences[e.fact_sentence["birth_year"]]
    film = next(e for e in world.entities if e.type == "film")
    director = world.entity(film.facts["directed_by"])
    assert director.name in film.sentences[film.fact_sentence["directed_by"]]


def test_db_rows_and_entity_description(world, tmp_path):
    export_world(world, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "db.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == len(world.entities)
    row, e = rows[0], world.entities[0]
    assert row["uid"] == e.id
    assert row["messages"][0] == {"role": "user", "content": (
        "<s>Represent the entity based on its description and output it after the '[SE]' token.\n"
        f"The description of {e.name} is as follows:\n")}
    assert row["messages"][1]["content"] == entity_description(e) + "[SE]"
    person = next(x for x in world.entities if x.type == "person")
    assert entity_description(person).startswith(
        f'{person.name} is an instance of human. It is described as "{person.short_description}". ')
    paragraphs = [json.loads(line) for line in (tmp_path / "paragraphs.jsonl").read_text().splitlines()]
    assert paragraphs[0] == {"id": e.id, "title": e.title, "sentences": e.sentences,
                             "text": join_sentences(e.sentences)}
    entity_row = json.loads((tmp_path / "entities.jsonl").read_text().splitlines()[0])
    assert list(entity_row) == ["id", "name", "type", "subtype", "short_description", "title", "facts", "sentences"]


# -- entity linking -------------------------------------------------------------------------

def test_entity_linking_spans_and_ambiguity(world):
    items = [x.to_dict() for x in world.entity_linking]
    assert len(items) == 300
    ambiguous = 0
    for item in items:
        assert 1 <= len(item["labels"]) <= 4
        for label in item["labels"]:
            start, end = label["span"]
            assert item["text"][start:end] == label["name"] == world.entity(label["entity_id"]).name
            assert label["parent"] is None and label["children"] == [] and label["optional"] is False
        ambiguous += any(world.namesakes(world.entity(lb["entity_id"])) for lb in item["labels"])
    assert ambiguous / len(items) >= 0.30
    assert sum(len({lb["type"] for lb in x["labels"]}) >= 2 for x in items) >= 30


def test_entity_linking_context_tells_namesakes_apart(world):
    # Where the text names one of two same-named persons, it also says the occupation or
    # an occupation-specific act; a bare "X married Y" would not identify X.
    cues = {"painter": ("painted",), "writer": ("novel",), "musician": ("album",),
            "film director": ("directed",), "actor": ("stars", "played the lead"), "footballer": ("scored",),
            "scientist": ("taught",), "politician": ("mayor",)}
    checked = 0
    for item in world.entity_linking:
        for m in item.mentions:
            e = world.entity(m.entity_id)
            if e.type == "person" and any(o.type == "person" for o in world.namesakes(e)):
                window = item.text[max(0, m.start - 20): m.end + 40]
                assert any(cue in window for cue in (e.subtype, *cues.get(e.subtype, ()))), item.text
                checked += 1
    assert checked >= 10


# -- multi-hop ---------------------------------------------------------------------------------

def test_multihop_layout_and_supporting_facts(world):
    items = [q.to_dict() for q in world.multihop]
    assert Counter(q["type"] for q in items) == {t: 100 for t in MULTIHOP_TYPES}
    for q in items:
        assert list(q) == ["_id", "type", "question", "context", "supporting_facts", "evidences", "answer",
                           "answer_id", "decomposition", "conclusion"]
        context = dict((title, sentences) for title, sentences in q["context"])
        assert len(q["context"]) == len(context) == 10
        for title, index in q["supporting_facts"]:
            assert 0 <= index < len(context[title])
        assert len(q["decomposition"]) == (4 if q["type"] == "bridge_comparison" else 2)
        for sub in q["decomposition"]:
            paragraph = world.entity(sub["paragraph_id"])
            assert paragraph.title == sub["title"] and context[sub["title"]] == paragraph.sentences
        assert all(len(ev) == 3 for ev in q["evidences"])
    assert len({q["_id"] for q in items}) == len(items)


def test_multihop_context_has_hard_distractors(world):
    with_namesake = 0
    for q in world.multihop:
        gold = {s.paragraph_id for s in q.decomposition}
        titles = {t for t, _ in q.context}
        for pid in gold:
            namesakes = world.namesakes(world.entity(pid))
            if namesakes:
                assert all(o.title in titles for o in namesakes)
                with_namesake += 1
    assert with_namesake >= 10


def test_subquestions_name_the_entity_they_ask_about(world):
    for q in world.multihop:
        known = [q.question]
        for sub in q.decomposition:
            name = world.entity(sub.paragraph_id).name
            assert name in sub.question, (sub.question, name)
            assert any(name in text for text in known), (q.question, sub.question)
            known.append(sub.answer)


def test_chain_answers_equal_the_last_subanswer(world):
    for q in world.multihop:
        if q.type in ("compositional", "inference"):
            assert q.answer == q.decomposition[-1].answer
            assert q.conclusion == "So the answer is"
        if q.answer_id is not None:
            assert world.entity(q.answer_id).name == q.answer


def test_comparison_answers_are_an_option_and_balanced(world):
    for qtype in ("comparison", "bridge_comparison"):
        firsts = []
        for q in (x for x in world.multihop if x.type == qtype):
            a, b = OPTIONS.match(q.question).groups()
            assert (q.answer in a) != (q.answer in b), q.question
            firsts.append(q.answer in a)
            assert q.conclusion.endswith(", so the answer is")
        assert 0.4 <= sum(firsts) / len(firsts) <= 0.6


# -- single-hop -----------------------------------------------------------------------------

def test_singlehop_candidates(world):
    items = [q.to_dict() for q in world.singlehop]
    assert len(items) == 300 and len({q["question"] for q in items}) == 300
    for q in items:
        assert len(q["ctxs"]) == 10 and len({c["id"] for c in q["ctxs"]}) == 10
        gold = [c for c in q["ctxs"] if c["id"] == q["gold_id"]]
        assert len(gold) == 1 and q["answers"][0] in gold[0]["text"]
        assert set(q["ctxs"][0]) == {"id", "title", "text"}
    assert sum(q["ctxs"][0]["id"] == q["gold_id"] for q in items) < 100  # shuffled


def test_datasets_loaders_read_the_files(world, tmp_path):
    datasets = pytest.importorskip("onegen.datasets")
    export_world(world, tmp_path)
    assert len(datasets.load_entity_linking(tmp_path / "entity_linking.jsonl")) == 300
    assert len(datasets.load_multi_hop(tmp_path / "multihop.json")) == 400
    assert len(datasets.load_single_hop(tmp_path / "singlehop.json")) == 300


# -- committed files, examples, errors --------------------------------------------------------

def recorded_command(readme_name: str = "README.md", command: str = "python -m onegen.world") -> list[str]:
    """The arguments of the command a held-out folder's readme says wrote it."""
    readme = (HELDOUT_DIR / readme_name).read_text(encoding="utf-8")
    line = next(ln.strip() for ln in readme.splitlines() if ln.strip().startswith(command))
    return shlex.split(line)[3:]


def test_committed_heldout_world_equals_a_fresh_regeneration(tmp_path):
    args = recorded_command()
    parsed = build_parser().parse_args(args)
    assert Path(parsed.out) == Path("assets/world/heldout") and Path(parsed.examples) == Path("assets/examples")
    swapped = args[:]
    swapped[swapped.index("--out") + 1] = str(tmp_path / "world")
    swapped[swapped.index("--examples") + 1] = str(tmp_path / "examples")
    assert main(swapped) == 0
    # The folder also holds the paraphrased and out-of-world sets (tests/test_phrasing.py).
    committed = {k: v for k, v in _files(HELDOUT_DIR).items() if k in WORLD_FILES}
    assert committed == _files(tmp_path / "world")
    assert {k: v for k, v in _files(EXAMPLES_DIR).items() if k.endswith(".jsonl")} == _files(tmp_path / "examples")
    assert sum((HELDOUT_DIR / name).stat().st_size for name in WORLD_FILES) < 3.2e6


def test_curated_examples(world, tmp_path):
    paths = curate_examples(world, tmp_path)
    rows = {p.name: [json.loads(line) for line in p.read_text().splitlines()] for p in paths}
    assert all(len(lines) == 12 and all(r["text"] for r in lines) for lines in rows.values())
    assert Counter(r["type"] for r in rows["multi-hop.jsonl"]) == {t: 3 for t in MULTIHOP_TYPES}
    assert sum(r["note"].startswith("ambiguous name") for r in rows["entity-linking.jsonl"]) >= 6
    assert len({r["note"] for r in rows["single-hop.jsonl"]}) == 12


def test_bad_input_gives_clear_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match="split"):
        generate_world(1, 200, "dev")
    with pytest.raises(ValueError, match="at least"):
        generate_world(1, 10, "train")
    assert main(["--seed", "1", "--split", "train", "--entities", "5", "--out", str(tmp_path)]) == 2
    assert "at least" in capsys.readouterr().err
