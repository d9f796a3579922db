"""Curated example inputs for the app: twelve per task, drawn from a world by rule
(never by hand), so that they can be regenerated and checked."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from onegen.world.export import write_jsonl
from onegen.world.model import MULTIHOP_TYPES, ELItem, Entity, World

EXAMPLES_PER_TASK = 12
EXAMPLE_FILES = ("entity-linking.jsonl", "multi-hop.jsonl", "single-hop.jsonl")
# Coarse ambiguity kinds, each shown once before person-vs-person variants fill up.
_KIND_ORDER = ("person vs person", "city vs city", "city vs film", "city vs musician",
               "film vs film", "film vs novel")
_MAX_AMBIGUOUS_EL = 8


def _kind(e: Entity) -> str:
    return e.subtype if e.type in ("person", "work") else e.type


def _coarse(e: Entity) -> str:
    return "person" if e.type == "person" and " " in e.name else _kind(e)


def _ambiguity(world: World, item: ELItem) -> tuple[str, str, str, str] | None:
    """(coarse kind, fine kind, note, name) of the first ambiguous mention, if any."""
    for m in item.mentions:
        e = world.entity(m.entity_id)
        others = world.namesakes(e)
        if others:
            coarse = " vs ".join(sorted([_coarse(e), *(_coarse(o) for o in others)]))
            fine = " vs ".join(sorted([_kind(e), *(_kind(o) for o in others)]))
            note = (f"ambiguous name {e.name!r}: {e.short_description} (here) vs "
                    f"{'; '.join(o.short_description for o in others)}")
            return coarse, fine, note, e.name
    return None


def _el_example(world: World, item: ELItem, note: str, ambiguous: str | None = None) -> dict[str, Any]:
    """An example with its gold links (what a right run links), and the ambiguous name it shows."""
    links = [{"mention": m.surface, "entity": m.entity_id, "title": world.entity(m.entity_id).title}
             for m in item.mentions]
    row: dict[str, Any] = {"text": item.text, "id": item.id, "note": note, "links": links}
    if ambiguous:
        row["ambiguous"] = ambiguous
    return row


def pick_entity_linking(world: World) -> list[dict[str, Any]]:
    picked: dict[str, dict[str, Any]] = {}
    tagged = [(item, _ambiguity(world, item)) for item in world.entity_linking]
    fine_seen: set[str] = set()
    for wanted in _KIND_ORDER:  # one of each coarse kind first
        for item, amb in tagged:
            if amb and amb[0] == wanted and item.id not in picked:
                picked[item.id] = _el_example(world, item, amb[2], amb[3])
                fine_seen.add(amb[1])
                break
    for item, amb in tagged:  # then other occupation pairs
        if len(picked) >= _MAX_AMBIGUOUS_EL:
            break
        if amb and amb[1] not in fine_seen and item.id not in picked:
            picked[item.id] = _el_example(world, item, amb[2], amb[3])
            fine_seen.add(amb[1])
    type_sets: set[tuple[str, ...]] = set()
    for item, amb in tagged:  # then texts linking several kinds of entity
        types = tuple(sorted({m.type for m in item.mentions}))
        if len(picked) < EXAMPLES_PER_TASK and not amb and len(types) >= 2 and types not in type_sets:
            picked[item.id] = _el_example(world, item, f"{len(item.mentions)} mentions: {', '.join(types)}")
            type_sets.add(types)
    for item, _ in tagged:
        if len(picked) >= EXAMPLES_PER_TASK:
            break
        if item.id not in picked:
            picked[item.id] = _el_example(world, item, f"{len(item.mentions)} mentions")
    return list(picked.values())[:EXAMPLES_PER_TASK]


def pick_multihop(world: World) -> list[dict[str, Any]]:
    per_type = EXAMPLES_PER_TASK // len(MULTIHOP_TYPES)
    out: list[dict[str, Any]] = []
    for qtype in MULTIHOP_TYPES:
        templates: set[str] = set()
        for q in world.multihop:
            if q.type == qtype and q.template not in templates and len(templates) < per_type:
                templates.add(q.template)
                out.append({"text": q.question, "id": q.id, "type": q.type, "answer": q.answer,
                            "note": q.template.replace("_", " ")})
    return out


def pick_singlehop(world: World) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    templates: set[str] = set()
    for q in world.singlehop:
        if q.template not in templates and len(out) < EXAMPLES_PER_TASK:
            templates.add(q.template)
            out.append({"text": q.question, "id": q.id, "answer": q.answers[0],
                        "note": q.template.replace("_", " ")})
    return out


def curate_examples(world: World, out_dir: str | Path) -> list[Path]:
    """Write entity-linking.jsonl, multi-hop.jsonl and single-hop.jsonl (12 lines each)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = (pick_entity_linking(world), pick_multihop(world), pick_singlehop(world))
    for name, lines in zip(EXAMPLE_FILES, rows):
        write_jsonl(out / name, lines)
    return [out / name for name in EXAMPLE_FILES]
