"""What a generated world holds, for a visitor: entity types with a few names from its index, and
example questions of every task and wording from its held-out evaluation files.

The app shows this before the first run of the embedded default, and offers its questions when a
run finds no confident match (an index of an invented world knows nothing else). Everything is
read from the files, never listed by hand: a regenerated world describes itself.

    overview = world_overview(entity_documents, "assets/world/heldout")   # onegen/world_overview.py
    overview.types          # [("person", 240), ...]
    overview.questions("multi-hop")
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .documents import Document

NAMES_PER_TYPE = 3
# Questions kept per (task, question type, wording): enough to show the variety, few enough to read.
PER_KIND = 1


@dataclass(frozen=True)
class NamedEntity:
    id: str
    name: str
    type: str


@dataclass(frozen=True)
class ExampleQuestion:
    task: str
    kind: str  # the item's question type (multi-hop: comparison, inference, ...), "" when it has none
    wording: str  # "template" (the training recipe's wording) or "paraphrased" (held-out wordings)
    text: str


@dataclass(frozen=True)
class WorldOverview:
    types: list[tuple[str, int]]  # entity type and how many documents of it the index holds, largest first
    names: dict[str, list[NamedEntity]]  # a few entities of each type, in index order
    examples: list[ExampleQuestion] = field(default_factory=list)

    def by_task(self) -> dict[str, list[ExampleQuestion]]:
        """The example questions grouped by task, in the order their files were read."""
        out: dict[str, list[ExampleQuestion]] = {}
        for q in self.examples:
            out.setdefault(q.task, []).append(q)
        return out

    def questions(self, task: str, limit: int = 3) -> list[str]:
        """Questions of `task` the world answers: one per kind first, template wording before paraphrased."""
        rows = sorted(self.by_task().get(task, []), key=lambda q: q.wording != "template")
        return [q.text for q in rows][:limit]


def entity_names(documents: Sequence[Document], per_type: int = NAMES_PER_TYPE) -> tuple[list[tuple[str, int]],
                                                                                           dict[str, list[NamedEntity]]]:
    """Types (with counts) and the first `per_type` names of each, from documents that carry a type
    in their `extra` (an entity index's descriptions)."""
    counts: Counter[str] = Counter()
    names: dict[str, list[NamedEntity]] = {}
    for doc in documents:
        kind = (doc.extra or {}).get("type")
        if not isinstance(kind, str) or not kind:
            continue
        counts[kind] += 1
        shown = names.setdefault(kind, [])
        if len(shown) < per_type:
            shown.append(NamedEntity(doc.id, doc.title, kind))
    return counts.most_common(), {k: names[k] for k, _ in counts.most_common()}


def example_questions(folder: str | Path, per_kind: int = PER_KIND) -> list[ExampleQuestion]:
    """The first `per_kind` questions of every task, question type and wording in a world folder's
    evaluation files, template wordings first. Files whose items name their task (the out-of-world
    set, about another world) are left out; "-paraphrased" in a file's name marks held-out wordings,
    as the world generator names them."""
    from .datasets import DatasetFormatError, item_task, load_dataset
    from .tasks import get_task

    files = sorted((p for p in Path(folder).iterdir() if p.suffix in (".json", ".jsonl") and p.is_file()),
                   key=lambda p: ("-paraphrased" in p.stem, p.name))
    out: list[ExampleQuestion] = []
    for path in files:
        try:
            data = load_dataset(path)  # the task from the items' keys; entity and paragraph files have none
        except (DatasetFormatError, ValueError, OSError):
            continue
        if data.examples and item_task(data.examples[0].raw) is not None:
            continue
        task = get_task(data.task)
        wording = "paraphrased" if "-paraphrased" in path.stem else "template"
        kept: Counter[str] = Counter()
        for ex in data.examples:
            kind = str(getattr(ex, "type", "") or "")
            if kept[kind] < per_kind:
                kept[kind] += 1
                out.append(ExampleQuestion(data.task, kind, wording, task.example_input(ex)))
    return out


def world_overview(entity_documents: Sequence[Document], folder: str | Path) -> WorldOverview:
    types, names = entity_names(entity_documents)
    return WorldOverview(types=types, names=names, examples=example_questions(folder))
