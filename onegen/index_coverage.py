"""Does an index hold the documents a dataset names? A cheap check before a dataset run.

A run on real data without `--index` searches the model's default index, which for the embedded
model is the invented world's: HotpotQA questions would retrieve from paragraphs about places that
do not exist, with no error. Dataset items often name their documents (HotpotQA context titles,
Self-RAG `ctxs` titles, entity-linking gold entity ids; `Task.named_documents` says which), so the
runner looks those names up in the index and warns when most are missing, naming the index used.

Only a sample of the items is read, and the lookup is one hash join on the index's title or id
column (Arrow, memory-mapped): no document text is read and nothing is held per index document.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

from .tasks import Example, get_task

if TYPE_CHECKING:
    from .index import VectorIndex

SAMPLE_EXAMPLES = 200  # items read for names; enough to tell "most missing" from "some missing"
MOSTLY_MISSING = 0.5  # warn when fewer than this share of the named documents are in the index
MIN_NAMES = 3  # fewer names than this say nothing either way
SHOWN_MISSING = 3
# index_builder's source names, as a reader says them.
SOURCE_WORDS = {"world": "the generated world", "jsonl": "the JSON file", "wikipedia": "Wikipedia",
                "parquet": "the parquet dump", "onegen-entities": "the released entity vectors"}


@dataclass(frozen=True)
class IndexCoverage:
    """How many of the documents a dataset names an index holds."""

    task: str
    index: str  # `describe_index` of the index searched
    field: str  # "title" or "id": what the names are compared with
    named: int  # distinct names in the sampled items
    found: int
    sampled: int  # items read
    items: int  # items in the run
    missing: list[str] = field(default_factory=list)  # a few names the index lacks
    own_context: bool = False  # the task can use each item's own documents instead

    @property
    def share(self) -> float:
        return self.found / self.named if self.named else 1.0

    @property
    def mostly_missing(self) -> bool:
        return self.named >= MIN_NAMES and self.share < MOSTLY_MISSING

    def message(self, app: bool = False) -> str:
        """One line for stderr (or the app's page, `app=True`: its own controls in the advice): the
        index used, and a warning when most names are missing."""
        used = f"index: {self.index}"
        if not self.named:
            return used
        items = f"the {self.items} items" if self.sampled == self.items else f"{self.sampled} of the {self.items} items"
        counts = f"{self.found} of the {self.named} document {self.field}s named by {items} are in it"
        if not self.mostly_missing:
            return f"{used}; {counts}"
        shown = ", ".join(repr(m) for m in self.missing[:SHOWN_MISSING])
        if app:
            instead = ", or pick \"each question's context\" as candidates" if self.own_context else ""
            advice = f"start the app with an index of its corpus (--index-{self.task} DIR){instead}"
        else:
            instead = ", or use each item's own documents (--candidates context)" if self.own_context else ""
            advice = f"build an index of its corpus with `python -m index_builder` and pass --index DIR{instead}"
        return (f"warning: {used}. Only {counts} (missing: {shown}): this dataset's documents are not in this "
                f"index, so retrieval searches other documents. To search them, {advice}.")


def describe_index(index: VectorIndex) -> str:
    """The index's folder and what it holds, from its manifest."""
    m = index.manifest
    where = str(index.path) if index.path is not None else "an index built in memory"
    what = [f"{len(index):,} document{'' if len(index) == 1 else 's'}"]
    if m.protocol:
        what.append(f"{m.protocol} protocol")
    source = (m.build.get("source") or {}) if isinstance(m.build, dict) else {}
    if source.get("name"):
        args = source.get("args") or {}
        origin = args.get("path") or args.get("category") or ""
        kind = SOURCE_WORDS.get(source["name"], source["name"])
        what.append(f"built from {kind}" + (f" {origin}" if isinstance(origin, str) and origin else ""))
    if m.model:
        what.append(f"model {m.model}")
    return f"{where} ({', '.join(what)})"


def clean_name(name: str) -> str:
    """A name as an index would store it: without surrounding whitespace or invisible characters
    (a trailing U+FEFF, zero-width spaces) that scraped data often carries."""
    from .constrain import blank

    start, end = 0, len(name)
    while start < end and blank(name[start]):
        start += 1
    while end > start and blank(name[end - 1]):
        end -= 1
    return name[start:end]


def sample_of(examples: Sequence[Example], n: int = SAMPLE_EXAMPLES) -> list[Example]:
    """At most `n` items spread over the whole file (not only its head, which may be one topic)."""
    if len(examples) <= n:
        return list(examples)
    step = len(examples) / n
    return [examples[int(i * step)] for i in range(n)]


def index_coverage(task: str, examples: Sequence[Example], index: VectorIndex) -> IndexCoverage:
    """Which of the documents the (sampled) items name are in `index`."""
    the_task = get_task(task)
    sampled = sample_of(examples)
    names: dict[str, None] = {}  # ordered, distinct
    field_name = the_task.named_documents_field
    for ex in sampled:
        for name in the_task.named_documents(ex):
            cleaned = clean_name(name)
            if cleaned:
                names.setdefault(cleaned)
    present = index.documents.present(field_name, names)
    missing = [n for n in names if n not in present]
    return IndexCoverage(task=task, index=describe_index(index), field=field_name, named=len(names),
                         found=len(names) - len(missing), sampled=len(sampled), items=len(examples),
                         missing=missing[:SHOWN_MISSING], own_context="context" in the_task.candidate_modes)

