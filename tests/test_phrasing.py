"""Surface forms (onegen/world/phrasing.py) and the sets built from them: every form is used,
held-out forms never reach training, entity-linking spans are exact, the committed files
regenerate byte for byte and load, and the default recipe still builds today's samples."""
from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from onegen.world import MULTIHOP_TYPES, export_world, generate_world
from onegen.world.__main__ import main
from onegen.world.heldout_sets import PARAPHRASED_FILES, paraphrased_sets
from onegen.world.paraphrase import TEMPLATE_SHARE, LinkingWriter, vary_question
from onegen.world.phrasing import (CLOSED_SLOTS, LINKING_FORMS, MULTIHOP_FORMS, QUESTION_OPENERS, SINGLEHOP_FORMS,
                                   STYLES, TEXT_OPENERS, fixed_pattern, slots_of)
from onegen.world.relations import WorldIndex
from test_world import recorded_command

ROOT = Path(__file__).resolve().parents[1]
HELDOUT_DIR = ROOT / "assets" / "world" / "heldout"
QUESTION_FAMILIES = {**MULTIHOP_FORMS, **SINGLEHOP_FORMS}
PLACEHOLDER = "Zorvex Quill"


@pytest.fixture(scope="module")
def heldout_world():
    return generate_world(20241, 600, "heldout", n_el=300, n_multihop=400, n_singlehop=300)


@pytest.fixture(scope="module")
def sets(heldout_world):
    return paraphrased_sets(heldout_world, 300)


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train-world")
    export_world(generate_world(5, 1200, "train"), out)
    return out


@pytest.fixture(scope="module")
def varied(train_dir):
    from onegen.train.examples import load_task_items

    return {task: (load_task_items(train_dir, task), load_task_items(train_dir, task, "varied"))
            for task in ("multi-hop", "single-hop", "entity-linking")}


def _user_text(item: dict) -> str:
    return item.get("question") or item["text"]


def _placeholder_render(form: str) -> str:
    return form.format(**{s: CLOSED_SLOTS[s][0] if s in CLOSED_SLOTS else PLACEHOLDER for s in slots_of(form)})


# -- the forms themselves ----------------------------------------------------------------

def test_canonical_forms_are_the_world_templates(heldout_world):
    for items, forms in ((heldout_world.multihop, MULTIHOP_FORMS), (heldout_world.singlehop, SINGLEHOP_FORMS)):
        assert {x.template for x in items} == set(forms)
        for x in items:
            assert forms[x.template].canonical.format(**x.slots) == x.question


def test_every_family_has_both_parts_and_fills_its_slots(heldout_world):
    filled: dict[str, set[str]] = {}
    for x in heldout_world.multihop + heldout_world.singlehop:
        filled.setdefault(x.template, set()).update(x.slots)
    for task_forms in (MULTIHOP_FORMS, SINGLEHOP_FORMS, LINKING_FORMS):
        for name, family in task_forms.items():
            assert len(family.train) >= 2 and len(family.heldout) >= 2, name
            forms = family.forms("train") + family.heldout
            assert len(set(forms)) == len(forms), name
            if task_forms is not LINKING_FORMS:
                assert all(set(slots_of(f)) <= filled[name] for f in forms), name
    for family in [*MULTIHOP_FORMS.values()]:
        for form in family.forms("train") + family.heldout:
            if "{a}" in form:  # the decomposition asks about the options in the question's order
                assert form.index("{a}") < form.index("{b}"), form


def test_no_held_out_form_reads_as_a_training_form():
    for forms, openers in ((QUESTION_FAMILIES, QUESTION_OPENERS), (LINKING_FORMS, TEXT_OPENERS)):
        training = [_placeholder_render(f) for fam in forms.values() for f in fam.forms("train")]
        training += [o + t for o in openers["train"] for t in training[:50]]
        for fam in forms.values():
            for form in fam.heldout:
                pattern = fixed_pattern(form)
                assert not [t for t in training if pattern.search(t)], form
                for train_form in fam.forms("train"):
                    assert not fixed_pattern(train_form, openers=False).search(_placeholder_render(form)), \
                        (train_form, form)
        assert not set(openers["train"]) & set(openers["heldout"])


# -- held-out sets -------------------------------------------------------------------------

def test_paraphrased_questions_use_every_held_out_form_and_keep_the_item(heldout_world, sets):
    for name, originals, forms in (("multihop-paraphrased.json", heldout_world.multihop, MULTIHOP_FORMS),
                                   ("singlehop-paraphrased.json", heldout_world.singlehop, SINGLEHOP_FORMS)):
        phrased = sets[name]
        assert len(phrased) == len(originals)
        used = {(p.family, p.form) for p in phrased}
        assert used == {(n, f) for n, fam in forms.items() for f in fam.heldout}
        assert {s for p in phrased for s in p.styles} == set(STYLES)
        for p, original in zip(phrased, originals):
            new, old = p.item.to_dict(), original.to_dict()
            assert p.item.id == original.id + "-p" and new["question"] != old["question"]
            assert {k: v for k, v in new.items() if k not in ("question", "_id", "id")} == \
                   {k: v for k, v in old.items() if k not in ("question", "_id", "id")}
    assert Counter(p.item.type for p in sets["multihop-paraphrased.json"]) == {t: 100 for t in MULTIHOP_TYPES}


def test_linking_spans_are_exact_and_every_form_is_used(heldout_world, sets):
    phrased = sets["entity_linking-paraphrased.jsonl"]
    assert len(phrased) == 300 and len({p.item.text for p in phrased}) == 300
    assert {(p.family, p.form) for p in phrased} == {(n, f) for n, fam in LINKING_FORMS.items() for f in fam.heldout}
    for p in phrased:
        text, mentions = p.item.text, p.item.mentions
        assert 1 <= len(mentions) <= 4
        for m, following in zip(mentions, mentions[1:] + [None]):
            assert text[m.start:m.end] == m.surface
            assert m.surface.lower() == heldout_world.entity(m.entity_id).name.lower()
            assert following is None or m.end <= following.start
    texts = [p.item.text for p in phrased]
    # The kinds of text the issue found hard are all there.
    assert sum(t == t.lower() for t in texts) >= 30  # lower-cased names
    assert sum(p.item.mentions[0].start == 0 for p in phrased) >= 50  # a name first
    assert sum(p.item.mentions[-1].end == len(p.item.text) for p in phrased) >= 30  # a name last
    assert sum(bool(re.search(r"\b(he|she|his|her)\b", t, re.I)) for t in texts) >= 30  # pronouns
    adjacent = sum(any(0 < b.start - a.end <= 5 for a, b in zip(p.item.mentions, p.item.mentions[1:]))
                   for p in phrased)
    assert adjacent >= 20  # "X, Y", "X's Y", "X and Y"


def test_held_out_phrasings_never_reach_training(varied):
    for task, families in (("multi-hop", QUESTION_FAMILIES), ("single-hop", QUESTION_FAMILIES),
                           ("entity-linking", LINKING_FORMS)):
        texts = [_user_text(x) for items in varied[task] for x in items]  # templated and varied
        for fam in families.values():
            for form in fam.heldout:
                pattern = fixed_pattern(form)
                assert not [t for t in texts if pattern.search(t)], (task, form)
        openers = QUESTION_OPENERS if task != "entity-linking" else TEXT_OPENERS
        assert not [t for t in texts for o in openers["heldout"] if t.lower().startswith(o.lower())]


def test_varied_training_uses_the_training_forms_and_keeps_the_rest(varied):
    for task, families in (("multi-hop", MULTIHOP_FORMS), ("single-hop", SINGLEHOP_FORMS)):
        template, reworded = varied[task]
        assert len(template) == len(reworded)
        changed = [(a, b) for a, b in zip(template, reworded) if a["question"] != b["question"]]
        assert 0.8 * (1 - TEMPLATE_SHARE) < len(changed) / len(template) < 1.2 * (1 - TEMPLATE_SHARE)
        for a, b in zip(template, reworded):  # the rest stays; each item names its world template
            assert {k: v for k, v in a.items() if k != "question"} == \
                {k: v for k, v in b.items() if k not in ("question", "template")}
            assert b["template"] in families
    template, reworded = varied["entity-linking"]
    changed = [b for a, b in zip(template, reworded) if a != b]
    assert len(changed) > 0.4 * len(template)
    for item in changed:
        for label in item["labels"]:
            s, e = label["span"]
            assert item["text"][s:e] == label["name"]


def test_varied_training_uses_every_training_form():
    world = generate_world(1, 3000, "train")
    for task, items, forms in (("multi-hop", world.multihop, MULTIHOP_FORMS),
                               ("single-hop", world.singlehop, SINGLEHOP_FORMS)):
        used = {(p.family, p.form) for p in map(lambda x: vary_question(x, task), items) if p}
        assert used == {(n, f) for n, fam in forms.items() for f in fam.forms("train")}, task
    writer = LinkingWriter(world, WorldIndex.build(world), "train", random.Random(0))
    texts = [writer.text_about(e, "x") for e in world.entities[::5]]
    used = {(p.family, p.form) for p in texts if p}
    assert used == {(n, f) for n, fam in LINKING_FORMS.items() for f in fam.train}


def test_varied_phrasings_refuse_a_held_out_or_foreign_folder(tmp_path):
    from onegen.train.examples import load_task_items

    export_world(generate_world(9, 150, "heldout", n_el=10, n_multihop=10, n_singlehop=10), tmp_path / "h")
    with pytest.raises(ValueError, match="training"):
        load_task_items(tmp_path / "h", "multi-hop", "varied")
    export_world(generate_world(9, 150, "train", n_el=10, n_multihop=10, n_singlehop=10), tmp_path / "t")
    rows = json.loads((tmp_path / "t" / "multihop.json").read_text())
    rows[0]["question"] = "Edited by hand?"
    (tmp_path / "t" / "multihop.json").write_text(json.dumps(rows))
    with pytest.raises(ValueError, match="generate the world again"):
        load_task_items(tmp_path / "t", "multi-hop", "varied")
    with pytest.raises(ValueError, match="phrasings"):
        load_task_items(tmp_path / "t", "multi-hop", "paraphrased")


# -- training samples with the key absent ---------------------------------------------------

# sha256 of the first 25 samples per task built by onegen/train/examples.py before the
# `phrasings` key existed (commit 065b951), on the world and tokenizers below.
TODAYS_SAMPLES_SHA256 = "533156a14bb0d7a5792ab38eddb1ebbe4715ad1d75243eefe40621be3fbcf269"


def test_default_phrasings_build_todays_samples(tmp_path):
    from tiny import build_bpe_tokenizer

    from onegen.protocols import get_spec
    from onegen.tokenization import ProtocolTokenizer
    from onegen.train.examples import BUILDERS, load_corpus, load_task_items
    from onegen.train.recipe import Recipe

    # The shipped recipe without its `phrasings` key: the default builds what it built before the key.
    data = json.loads((ROOT / "assets" / "recipes" / "onegen-smol.json").read_text())
    data.pop("phrasings", None)
    (tmp_path / "recipe.json").write_text(json.dumps(data))
    recipe = Recipe.load(tmp_path / "recipe.json")
    assert recipe.phrasings == "template"
    world = tmp_path / "w"
    export_world(generate_world(seed=3, n_entities=150, split="train", n_el=40, n_multihop=40, n_singlehop=40), world)
    corpus = load_corpus(world)
    digest = hashlib.sha256()
    for task in ("entity-linking", "multi-hop", "single-hop"):
        tok = build_bpe_tokenizer(tmp_path / task, list(get_spec(task).token_strings))
        ptok = ProtocolTokenizer(tok, list(get_spec(task).token_strings))
        items = load_task_items(world, task, recipe.phrasings)
        extra = {"bridge_roles": "always", "comparison_order": "question-winner"} if task == "multi-hop" else {}
        for k, item in enumerate(items[:25]):
            s = BUILDERS[task](item, ptok, corpus, random.Random(k), 2, **extra)
            digest.update(json.dumps([s.ids, s.labels, [[a.position, list(a.positive), a.negatives]
                                                         for a in s.anchors]]).encode())
    assert digest.hexdigest() == TODAYS_SAMPLES_SHA256


def test_recipe_rejects_an_unknown_phrasing(tmp_path):
    from onegen.train.recipe import Recipe

    path = tmp_path / "r.json"
    path.write_text(json.dumps({"name": "x", "base": {"path": "x"}, "phrasings": "paraphrased"}))
    with pytest.raises(ValueError, match="phrasings"):
        Recipe.load(path)
    path.write_text(json.dumps({"name": "x", "base": {"path": "x"}, "phrasings": "varied"}))
    assert Recipe.load(path).phrasings == "varied"


# -- committed files ---------------------------------------------------------------------

def test_committed_paraphrased_files_equal_a_fresh_regeneration(tmp_path):
    args = recorded_command("PARAPHRASED.md", "python -m onegen.world paraphrased")
    assert args[0] == "paraphrased" and Path(args[args.index("--out") + 1]) == Path("assets/world/heldout")
    args[args.index("--out") + 1] = str(tmp_path)
    assert main(args) == 0
    for name in PARAPHRASED_FILES:
        assert (HELDOUT_DIR / name).read_bytes() == (tmp_path / name).read_bytes(), name
    assert sum((HELDOUT_DIR / name).stat().st_size for name in PARAPHRASED_FILES) < 3.0e6


def test_committed_files_load_through_the_dataset_loaders():
    datasets = pytest.importorskip("onegen.datasets")
    multihop = datasets.load_multi_hop(HELDOUT_DIR / "multihop-paraphrased.json")
    assert len(multihop) >= 300
    assert {x.type for x in multihop.examples} >= set(MULTIHOP_TYPES)
    assert len(datasets.load_entity_linking(HELDOUT_DIR / "entity_linking-paraphrased.jsonl")) >= 200
    assert len(datasets.load_single_hop(HELDOUT_DIR / "singlehop-paraphrased.json")) >= 100
    rows = json.loads((HELDOUT_DIR / "out-of-world.json").read_text(encoding="utf-8"))
    for i, row in enumerate(rows):
        datasets.parse_example(row["task"], row, i)
    assert Counter((r["task"], r["phrasing"]) for r in rows).keys() == {
        (t, p) for t in ("multi-hop", "single-hop", "entity-linking") for p in ("template", "heldout")}


def test_out_of_world_set_names_no_held_out_entity():
    names = {json.loads(line)["name"] for line in (HELDOUT_DIR / "entities.jsonl").read_text().splitlines()}
    pattern = re.compile(r"\b(?:" + "|".join(map(re.escape, sorted(names, key=len, reverse=True))) + r")\b", re.I)
    rows = json.loads((HELDOUT_DIR / "out-of-world.json").read_text(encoding="utf-8"))
    assert Counter(r["task"] for r in rows) == {"multi-hop": 100, "single-hop": 100, "entity-linking": 100}
    for row in rows:
        texts = [row.get("question") or row["text"], *(row.get("answers") or [row.get("answer", "")])]
        texts += [label["name"] for label in row.get("labels", [])]
        assert not [t for t in texts if pattern.search(t)], row
        assert all(not str(i).startswith("H") for i in [row.get("answer_id") or "", row.get("gold_id") or ""])
        for label in row.get("labels", []):
            assert label["entity_id"].startswith("T") and row["text"][slice(*label["span"])] == label["name"]


def test_paraphrased_command_refuses_another_held_out_world(tmp_path, capsys):
    export_world(generate_world(9, 150, "heldout", n_el=10, n_multihop=10, n_singlehop=10), tmp_path)
    assert main(["paraphrased", "--out", str(tmp_path)]) == 2
    assert "not the held-out world" in capsys.readouterr().err
