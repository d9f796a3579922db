"""What a generated world holds, for a visitor: entity types with a few names from its index, and
example questions of every task and wording from its held-out evaluation files, each with how
the model scored on held-out questions like it (the bundled result files of its own index).

The app shows this before the first run of the embedded default, and offers its questions when a
run finds no confident match (an index of an invented world knows nothing else). Everything is
read from the files, never listed by hand: a regenerated world describes itself.

    overview = world_overview(entity_documents, "assets/world/heldout")   # onegen/world_overview.py
    overview.types          # [("person", 240), ...]
    overview.questions("multi-hop")
    measured_scores(result_sets, {"multi-hop": index.fingerprint})   # (task, kind, data file) -> score
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

from .documents import Document
from .metrics import ELMetrics

if TYPE_CHECKING:
    from .results import ResultSet

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
    source: str = ""  # the evaluation file's name


@dataclass(frozen=True)
class MeasuredScore:
    """How the model did on the held-out items of one task, question type and evaluation file: a
    result file of `onegen evaluate` run with the app's own index and settings."""
    metric: str  # "EM" (question answering) or "F1" (entity linking)
    value: float
    examples: int
    file: str  # the result file's name


@dataclass(frozen=True)
class WorldOverview:
    types: list[tuple[str, int]]  # entity type and how many documents of it the index holds, largest first
    names: dict[str, list[NamedEntity]]  # a few entities of each type, in index order
    examples: list[ExampleQuestion] = field(default_factory=list)
    scores: dict[tuple[str, str, str], MeasuredScore] = field(default_factory=dict)  # (task, kind, data file)

    def score(self, q: ExampleQuestion) -> MeasuredScore | None:
        """The measured score of questions like `q` (its task, type and file), if one was found."""
        return self.scores.get((q.task, q.kind, q.source))

    def measured_like(self, task: str, kind: str = "") -> list[tuple[str, MeasuredScore]]:
        """(wording, score) of every measured evaluation file of `task` and question type `kind`,
        the template wording first: how the model did on held-out items like a run's."""
        found = [(wording_of(data), score) for (t, k, data), score in self.scores.items() if (t, k) == (task, kind)]
        return sorted(found, key=lambda x: (x[0] != "template", x[1].file))

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


def wording_of(data_file: str | Path) -> str:
    """"paraphrased" for an evaluation file of held-out wordings (the world generator names them
    "-paraphrased"), else "template"."""
    return "paraphrased" if "-paraphrased" in Path(data_file).stem else "template"


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
        wording = wording_of(path)
        kept: Counter[str] = Counter()
        for ex in data.examples:
            kind = str(getattr(ex, "type", "") or "")
            if kept[kind] < per_kind:
                kept[kind] += 1
                out.append(ExampleQuestion(data.task, kind, wording, task.example_input(ex), path.name))
    return out


# A chain's sub-questions as the world generator writes them (onegen/world/multihop.py); the model
# writes its decompositions in these trained forms whatever the wording of the question.
_ORDINAL = re.compile(r"^\s*(first|second|third|fourth|fifth),\s*", re.I)
_KINSHIP = re.compile(r"^who is the (father|spouse) of ", re.I)


def chain_type(sub_questions: Sequence[str]) -> str | None:
    """The world's multi-hop question type a chain of sub-questions has: four hops compare two
    bridges (bridge_comparison); two kinship hops are an inference; two hops that ask the same thing
    of two names are a comparison; any other two hops are compositional. None for another shape."""
    asked = [_ORDINAL.sub("", q).strip() for q in sub_questions]
    if len(asked) == 4:
        return "bridge_comparison"
    if len(asked) != 2:
        return None
    if all(_KINSHIP.match(q) for q in asked):
        return "inference"
    a, b = (q.split() for q in asked)
    if len(a) > 2 and len(b) > 2 and a[:2] == b[:2] and a[-1] == b[-1]:
        return "comparison"
    return "compositional"


def measured_scores(result_sets: Iterable["ResultSet"], index_fingerprints: Mapping[str, str]
                    ) -> dict[tuple[str, str, str], MeasuredScore]:
    """Scores by (task, question type, data file name) from the result files that ran a task as the app
    runs it: with the index the app loaded for that task (`index_fingerprints`, which also fixes the
    model that built it), no control, and entity linking copy-constrained. Where two files give the
    same key, the one with more examples wins."""
    out: dict[tuple[str, str, str], MeasuredScore] = {}
    for rs in result_sets:
        run = rs.run
        if (run.get("candidates") != "index" or run.get("control") or not run.get("data")
                or run.get("index_fingerprint") != index_fingerprints.get(rs.task)
                or (rs.task == "entity-linking" and not run.get("copy_input"))):
            continue
        data, m = Path(str(run["data"])).name, rs.metrics
        if isinstance(m, ELMetrics):
            found = {"": MeasuredScore("F1", m.f1, len(rs.records), rs.path.name)}
        else:
            found = {"": MeasuredScore("EM", m.em, len(rs.records), rs.path.name)}
            found.update({kind: MeasuredScore("EM", v["em"], int(v["n"]), rs.path.name)
                          for kind, v in (m.by_type or {}).items()})
        for kind, score in found.items():
            key = (rs.task, kind, data)
            if key not in out or score.examples > out[key].examples:
                out[key] = score
    return out


def world_overview(entity_documents: Sequence[Document], folder: str | Path) -> WorldOverview:
    types, names = entity_names(entity_documents)
    return WorldOverview(types=types, names=names, examples=example_questions(folder))
