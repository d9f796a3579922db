"""Writing a world to disk: the files the trainer, the evaluator and the app read.

Every file is UTF-8 JSON with `ensure_ascii=False`, keys in a fixed order and no
timestamps, so the same world always gives byte-identical files.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from onegen.documents import join_sentences
from onegen.world.model import Entity, World
from onegen.world.text import entity_description

DB_INSTRUCTION = ("<s>Represent the entity based on its description and output it after the '[SE]' token.\n"
                  "The description of {name} is as follows:\n")
WORLD_FILES = ("entities.jsonl", "db.jsonl", "paragraphs.jsonl", "entity_linking.jsonl",
               "multihop.json", "singlehop.json", "stats.json")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


def write_jsonl(path: Path, rows: Iterable[Any]) -> None:
    path.write_text("".join(_dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_json_list(path: Path, rows: Iterable[Any]) -> None:
    """A JSON list with one item per line: valid JSON that still diffs line by line."""
    lines = [_dumps(r) for r in rows]
    path.write_text("[\n" + ",\n".join(lines) + "\n]\n" if lines else "[]\n", encoding="utf-8")


def db_row(entity: Entity) -> dict[str, Any]:
    """One line of the entity DB in the authors' layout (user + assistant messages)."""
    return {"uid": entity.id, "messages": [
        {"role": "user", "content": DB_INSTRUCTION.format(name=entity.name)},
        {"role": "assistant", "content": entity_description(entity) + "[SE]"},
    ]}


def paragraph_row(entity: Entity) -> dict[str, Any]:
    return {"id": entity.id, "title": entity.title, "sentences": entity.sentences,
            "text": join_sentences(entity.sentences)}


def export_world(world: World, out_dir: str | Path) -> list[Path]:
    """Write the seven world files into `out_dir` (created if missing); returns their paths."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "entities.jsonl", (e.to_dict() for e in world.entities))
    write_jsonl(out / "db.jsonl", (db_row(e) for e in world.entities))
    write_jsonl(out / "paragraphs.jsonl", (paragraph_row(e) for e in world.entities))
    write_jsonl(out / "entity_linking.jsonl", (x.to_dict() for x in world.entity_linking))
    write_json_list(out / "multihop.json", (x.to_dict() for x in world.multihop))
    write_json_list(out / "singlehop.json", (x.to_dict() for x in world.singlehop))
    (out / "stats.json").write_text(json.dumps(world.stats(), ensure_ascii=False, indent=2) + "\n",
                                    encoding="utf-8")
    return [out / name for name in WORLD_FILES]
