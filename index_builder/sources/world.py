"""The generated encyclopedia (`onegen.world`) as Documents, one document shape per task.

A world folder holds `entities.jsonl`, `db.jsonl` and `paragraphs.jsonl` (see
`onegen.world.export`). Per task:

* entity-linking: one Document per entity, title = its name, text = its description from
  db.jsonl (the text the entity document prompt wraps, without the trailing `[SE]`),
  extra = {"type", "short_description", "title"} (title: the disambiguated paragraph title,
  e.g. "Paris (film)", which the app links to);
* multi-hop: one Document per paragraph with its sentences (one vector per sentence);
* single-hop: one Document per paragraph, title and text.

Ids are the entity ids, shared by all three, so a linked entity and its paragraph meet.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onegen.documents import Document
from onegen.tasks import TASK_NAMES, get_task

from .jsonl import parse_db_record


@dataclass
class WorldStats:
    documents: int = 0
    without_description: int = 0  # entities absent from db.jsonl (their text is empty)


def _rows(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not JSON ({e})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object")
            yield row


def _count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


@dataclass
class WorldSource:
    """Documents of a world folder for `task` (see the module docstring)."""

    path: str | Path
    task: str = "entity-linking"
    stats: WorldStats = field(default_factory=WorldStats, init=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if self.task not in TASK_NAMES:
            raise ValueError(f"task must be one of {TASK_NAMES}, got {self.task!r}")
        if not self.path.is_dir():
            raise FileNotFoundError(f"world folder not found: {self.path}")
        need = ("entities.jsonl", "db.jsonl") if self._entities_wanted else ("paragraphs.jsonl",)
        missing = [n for n in need if not (self.path / n).is_file()]
        if missing:
            raise FileNotFoundError(f"{self.path} is not a world folder: {', '.join(missing)} missing "
                                    "(generate one with `python -m onegen world`)")

    def __iter__(self) -> Iterator[Document]:
        self.stats = WorldStats()
        yield from (self._entities() if self._entities_wanted else self._paragraphs())

    @property
    def _entities_wanted(self) -> bool:
        return get_task(self.task).index_kind == "entities"

    def _entities(self) -> Iterator[Document]:
        root = Path(self.path)
        # Descriptions by uid: a world has thousands of entities, not millions.
        descriptions = {}
        for row in _rows(root / "db.jsonl"):
            entry = parse_db_record(row)
            descriptions[entry.uid] = entry.text
        for e in _rows(root / "entities.jsonl"):
            eid = str(e["id"])
            text = descriptions.get(eid)
            if text is None:
                self.stats.without_description += 1
            self.stats.documents += 1
            yield Document(id=eid, title=e["name"], text=text or "",
                           extra={"type": e.get("type", ""), "short_description": e.get("short_description", ""),
                                  "title": e.get("title", e["name"])})

    def _paragraphs(self) -> Iterator[Document]:
        for p in _rows(Path(self.path) / "paragraphs.jsonl"):
            self.stats.documents += 1
            if get_task(self.task).spec.vectors_per_sentence:
                yield Document.from_sentences(str(p["id"]), p["title"], list(p["sentences"]))
            else:
                yield Document(id=str(p["id"]), title=p["title"], text=p["text"])

    def __length_hint__(self) -> int:
        name = "entities.jsonl" if self._entities_wanted else "paragraphs.jsonl"
        return _count_lines(Path(self.path) / name)
