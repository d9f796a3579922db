"""Evaluation sets beside the held-out world: its tasks in held-out wordings, and an
out-of-world set about the training world's entities to be asked against the held-out index.

    python -m onegen.world paraphrased --out assets/world/heldout

Paraphrased multi-hop and single-hop files reword every question of the held-out world's own
files (same facts, decomposition, context and answers; id + "-p"), so each result pairs with the
templated one. Entity-linking texts are new sentences about held-out entities. Only held-out
forms and openers are used.

The out-of-world set asks about the entities of the training world (by default the one the
shipped recipe trains on), none of whose names occurs in the held-out world. Asked against the
held-out index, no retrieved document supports an answer; the gold answers are the training
world's facts, so a system that still gives one answers from memory. Half the items keep the
training wording (they are training items), half use held-out forms; `phrasing` says which.
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

from onegen.world.build import generate_world
from onegen.world.export import write_json_list, write_jsonl
from onegen.world.model import MULTIHOP_TYPES, World
from onegen.world.names import stable_int
from onegen.world.paraphrase import LinkingWriter, Phrased, paraphrase_linking, paraphrase_questions
from onegen.world.relations import WorldIndex

PARAPHRASED_FILES = ("multihop-paraphrased.json", "entity_linking-paraphrased.jsonl",
                     "singlehop-paraphrased.json", "out-of-world.json")
# The held-out world the committed files describe, and the training world of the shipped recipe.
HELDOUT_WORLD = {"seed": 20241, "entities": 600, "el": 300, "multihop": 400, "singlehop": 300}
TRAIN_WORLD = {"seed": 1, "entities": 3000}
OUT_OF_WORLD_PER_TASK = 100


def _stream(name: str, seed: int) -> random.Random:
    return random.Random(stable_int("paraphrased", name, seed))


def paraphrased_sets(world: World, n_el: int) -> dict[str, list[Phrased]]:
    """The three paraphrased task sets of a held-out world."""
    if world.split != "heldout":
        raise ValueError("paraphrased evaluation sets are built from the held-out world")
    index = WorldIndex.build(world)
    return {
        "multihop-paraphrased.json": paraphrase_questions(world.multihop, "multi-hop", "heldout",
                                                          _stream("multihop", world.seed)),
        "entity_linking-paraphrased.jsonl": paraphrase_linking(world, index, n_el, "heldout",
                                                               _stream("el", world.seed), "H-elp"),
        "singlehop-paraphrased.json": paraphrase_questions(world.singlehop, "single-hop", "heldout",
                                                           _stream("singlehop", world.seed)),
    }


class _NameFilter:
    """Tells whether a text names any entity of another world (whole words, any case)."""

    def __init__(self, world: World):
        names = sorted({e.name for e in world.entities}, key=len, reverse=True)
        self.pattern = re.compile(r"\b(?:" + "|".join(map(re.escape, names)) + r")\b", re.IGNORECASE)

    def clean(self, *texts: str) -> bool:
        return not any(self.pattern.search(t) for t in texts)


def out_of_world_items(train: World, heldout: World, per_task: int = OUT_OF_WORLD_PER_TASK) -> list[dict[str, Any]]:
    """`per_task` items of each task about `train`'s entities, none naming a `heldout` entity."""
    if train.split != "train" or heldout.split != "heldout":
        raise ValueError("the out-of-world set asks about a training world against a held-out one")
    rng = _stream("out-of-world", train.seed)
    avoid = _NameFilter(heldout)
    rows: list[dict[str, Any]] = []

    def add(task: str, short: str, phrasing: str, source_id: str | None, row: dict[str, Any], id_key: str) -> None:
        number = sum(r["task"] == task for r in rows) + 1
        rows.append({"task": task, "phrasing": phrasing, "source_id": source_id,
                     **row, id_key: f"O-{short}-{number:04d}"})

    # Multi-hop: an equal share of each type; every other item reworded.
    per_type = {t: per_task // len(MULTIHOP_TYPES) + (i < per_task % len(MULTIHOP_TYPES))
                for i, t in enumerate(MULTIHOP_TYPES)}
    for qtype in MULTIHOP_TYPES:
        pool = [q for q in train.multihop if q.type == qtype
                and avoid.clean(q.question, q.answer, *(s.answer for s in q.decomposition))]
        picked = rng.sample(pool, min(per_type[qtype], len(pool)))
        reworded = {p.item.id: p for p in paraphrase_questions(picked[1::2], "multi-hop", "heldout", rng, "")}
        for q in picked:
            phrased = reworded.get(q.id)
            item = phrased.item if phrased else q
            add("multi-hop", "mh", "heldout" if phrased else "template", q.id, item.to_dict(), "_id")
    # Single-hop: any template; every other item reworded.
    pool = [q for q in train.singlehop if avoid.clean(q.question, *q.answers)]
    picked = rng.sample(pool, min(per_task, len(pool)))
    reworded = {p.item.id: p for p in paraphrase_questions(picked[1::2], "single-hop", "heldout", rng, "")}
    for q in picked:
        phrased = reworded.get(q.id)
        add("single-hop", "sh", "heldout" if phrased else "template", q.id,
            (phrased.item if phrased else q).to_dict(), "id")
    # Entity linking: half the training world's own texts, half new texts in held-out forms.
    template_texts = [x for x in train.entity_linking if avoid.clean(x.text)]
    for x in rng.sample(template_texts, min(per_task // 2, len(template_texts))):
        add("entity-linking", "el", "template", x.id, x.to_dict(), "id")
    writer = LinkingWriter(train, WorldIndex.build(train), "heldout", rng)
    seen: set[str] = set()
    for seed in rng.sample(train.entities, len(train.entities)):
        if sum(r["task"] == "entity-linking" for r in rows) >= per_task:
            break
        made = writer.text_about(seed, "", seen)
        if made is not None and avoid.clean(made.item.text):
            seen.add(made.item.text)
            add("entity-linking", "el", "heldout", None, made.item.to_dict(), "id")
    return rows


def _el_row(item_dict: dict[str, Any]) -> dict[str, Any]:
    """An EL item whose label ids follow its (final) id."""
    for k, label in enumerate(item_dict["labels"]):
        label["id"] = f"{item_dict['id']}-m{k}"
    item_dict["title"] = item_dict["id"]
    return item_dict


def write_heldout_sets(out_dir: str | Path, heldout: dict[str, int] = HELDOUT_WORLD,
                       train: dict[str, int] = TRAIN_WORLD) -> list[Path]:
    """Generate both worlds and write the four files into `out_dir`. When `out_dir` already holds
    the held-out world's entities, they must be the ones regenerated here."""
    out = Path(out_dir)
    world = generate_world(heldout["seed"], heldout["entities"], "heldout", n_el=heldout["el"],
                           n_multihop=heldout["multihop"], n_singlehop=heldout["singlehop"])
    existing = out / "entities.jsonl"
    if existing.exists():
        names = [json.loads(line)["name"] for line in existing.read_text(encoding="utf-8").splitlines() if line]
        if names != [e.name for e in world.entities]:
            raise ValueError(f"{existing} is not the held-out world of seed {heldout['seed']} with "
                             f"{heldout['entities']} entities; pass that world's settings")
    train_world = generate_world(train["seed"], train["entities"], "train")
    out.mkdir(parents=True, exist_ok=True)
    sets = paraphrased_sets(world, heldout["el"])
    write_json_list(out / "multihop-paraphrased.json", (p.item.to_dict() for p in sets["multihop-paraphrased.json"]))
    write_jsonl(out / "entity_linking-paraphrased.jsonl",
                (p.item.to_dict() for p in sets["entity_linking-paraphrased.jsonl"]))
    write_json_list(out / "singlehop-paraphrased.json", (p.item.to_dict() for p in sets["singlehop-paraphrased.json"]))
    rows = out_of_world_items(train_world, world)
    write_json_list(out / "out-of-world.json", (_el_row(r) if r["task"] == "entity-linking" else r for r in rows))
    return [out / name for name in PARAPHRASED_FILES]
