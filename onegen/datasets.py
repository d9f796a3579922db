"""Loaders for the evaluation files the OneGen authors use, and writers for result lines
their scoring scripts read.

Formats (as in the OneGen authors' evaluation files, github.com/zjunlp/OneGen; which parser
applies to which task is the task object's choice, onegen/tasks.py):
- entity linking: jsonl items `{"id", "title", "text", "labels": [{"id", "span",
  "entity_id", "name", "parent", "children", "optional", "type"}]}` (e.g. KORE50);
- multi-hop QA: the HotpotQA / 2WikiMultihopQA distractor JSON, with `context` either
  as `[[title, [sentences]], ...]` (original release) or as
  `{"title": [...], "sentences": [[...], ...]}` (the columnar layout of dataset hubs);
  2Wiki answer aliases come from its `id_aliases.json` (jsonl despite the name);
- single-hop QA: Self-RAG / PopQA style items with `question` or `instruction`,
  `answers` or `answer`, and candidate passages `ctxs`.

Every loader accepts a JSON list, a JSON object wrapping the list (under "data",
"examples", "items", "instances" or "questions"), or jsonl. A malformed file raises
`DatasetFormatError` naming the file, the line (jsonl, 1-based) or item (JSON list,
0-based) and the field; with `skip_bad=True` the good items are returned and the bad
ones listed in `LoadedDataset.errors`. A QA item without an id takes its 0-based position in
the file as its id (stable while the file is unchanged), and `LoadedDataset.warnings` says so.
A file may mix tasks when its items name theirs in a "task" field: each load keeps the items of
its task (and their positions in the file) and says how many of other tasks it left out.
"""
from __future__ import annotations

import copy
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generic, Iterable, Iterator, Mapping, Sequence, TypeVar

from .errors import OneGenError

_WRAPPER_KEYS = ("data", "examples", "items", "instances", "questions")


# ---------------------------------------------------------------------------
# Errors and the loaded container
# ---------------------------------------------------------------------------

class DatasetFormatError(OneGenError, ValueError):
    """A file or one of its items does not have the expected shape.

    `where` is "line N" (jsonl, 1-based), "item N" (JSON list, 0-based) or None for a
    problem with the file as a whole; `field` is the offending field path
    (e.g. "labels[2].span") or None.
    """

    def __init__(self, path: str | Path, where: str | None, field: str | None, problem: str):
        self.path = str(path)
        self.where = where
        self.field = field
        self.problem = problem
        parts = [self.path]
        if where:
            parts.append(where)
        if field:
            parts.append(f"field {field!r}")
        super().__init__(": ".join(parts) + ": " + problem)


class _ItemError(Exception):
    """Raised inside item parsers; the loader adds the file and item position."""

    def __init__(self, field: str | None, problem: str):
        super().__init__(problem)
        self.field = field
        self.problem = problem


T = TypeVar("T")


@dataclass
class LoadedDataset(Generic[T]):
    """The examples of one file, usable as a sequence. `errors` lists
    (item index, message) for items skipped with `skip_bad=True`; the index counts the
    file's items from 0 in file order (blank jsonl lines not counted). `positions` holds
    that index for each example (what a result line records to find its item again);
    `warnings` what was read but deserves a word (ids derived from positions), as sentences
    about the file that do not name it."""

    path: str
    task: str
    examples: list[T]
    errors: list[tuple[int, str]] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[T]:
        return iter(self.examples)

    def __getitem__(self, index: int) -> T:
        return self.examples[index]


# ---------------------------------------------------------------------------
# Example types
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ELLabel:
    """One gold mention. `surface` is `text[span[0]:span[1]]`, unstripped; an
    `entity_id` of "Unknown" marks a mention without a KB entity (not scored)."""

    span: tuple[int, int]
    entity_id: str
    name: str | None
    type: str | None
    optional: bool
    surface: str


@dataclass(frozen=True)
class ELExample:
    id: str
    title: str
    text: str
    labels: list[ELLabel]
    raw: dict[str, Any] = field(repr=False, compare=False)

    def gold_pairs(self) -> list[tuple[str, str]]:
        """(stripped surface, entity id) for every label, "Unknown" ones included: the
        gold input of `onegen.metrics.ELDocument`."""
        return [(label.surface.strip(), label.entity_id) for label in self.labels]

    def gold_spans(self) -> list[tuple[tuple[int, int], str]]:
        """(span of the stripped surface, entity id) for every label, "Unknown" ones included: the
        gold input of `onegen.metrics.ELSpanDocument`."""
        out = []
        for label in self.labels:
            start, end = label.span
            surface = label.surface
            start += len(surface) - len(surface.lstrip())
            end -= len(surface) - len(surface.rstrip())
            out.append(((start, max(start, end)), label.entity_id))
        return out


@dataclass(frozen=True)
class ContextParagraph:
    title: str
    sentences: list[str]


@dataclass(frozen=True)
class MultiHopExample:
    """A HotpotQA or 2WikiMultihopQA item. `aliases` are extra gold answers (2Wiki:
    aliases and demonyms of `answer_id`); `evidences` are 2Wiki's
    (subject, relation, object) triples, empty for HotpotQA."""

    id: str
    type: str
    question: str
    answer: str
    aliases: list[str]
    context: list[ContextParagraph]
    supporting_facts: list[tuple[str, int]]
    evidences: list[list[str]]
    answer_id: str | None
    decomposition: list[dict[str, Any]] | None
    raw: dict[str, Any] = field(repr=False, compare=False)
    id_derived: bool = False  # the item had no id: `id` is its position in the file

    @property
    def answers(self) -> list[str]:
        """The answer followed by its aliases: what `qa_scores` takes the max over."""
        return [self.answer] + [a for a in self.aliases if a != self.answer]

    @property
    def supporting_titles(self) -> list[str]:
        """Titles of the supporting paragraphs, in first-mention order, without
        repeats: the gold ids for paragraph-level `recall_at_k`."""
        return list(dict.fromkeys(title for title, _ in self.supporting_facts))


@dataclass(frozen=True)
class Passage:
    id: str
    title: str
    text: str


@dataclass(frozen=True)
class SingleHopExample:
    id: str
    question: str
    answers: list[str]
    ctxs: list[Passage]
    gold_id: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)
    id_derived: bool = False  # the item had no id: `id` is its position in the file


# ---------------------------------------------------------------------------
# Reading items from JSON, wrapped JSON or jsonl
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _RawItem:
    index: int
    where: str
    value: Any  # a dict, or a _ItemError for a line that is not valid JSON


def _read_items(path: Path) -> list[_RawItem]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetFormatError(path, None, None, f"not UTF-8 text ({exc.reason})") from None
    stripped = text.strip()
    if not stripped:
        raise DatasetFormatError(path, None, None, "file is empty")
    if stripped[0] in "[{":
        try:
            whole = json.loads(text)  # not `stripped`: keep error line numbers true
        except json.JSONDecodeError as exc:
            if stripped[0] == "[":
                raise DatasetFormatError(path, f"line {exc.lineno}", None, f"invalid JSON ({exc.msg})") from None
            whole = None  # several objects: jsonl
        if isinstance(whole, list):
            return [_RawItem(i, f"item {i}", v) for i, v in enumerate(whole)]
        if isinstance(whole, dict):
            for key in _WRAPPER_KEYS:
                if isinstance(whole.get(key), list):
                    return [_RawItem(i, f"item {i} of {key!r}", v) for i, v in enumerate(whole[key])]
            # a single object: a one-line jsonl file or one pretty-printed item
            if "\n" in stripped:
                return [_RawItem(0, "item 0", whole)]
            lineno = text[:text.index(stripped)].count("\n") + 1
            return [_RawItem(0, f"line {lineno}", whole)]
    items: list[_RawItem] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value: Any = json.loads(line)
        except json.JSONDecodeError as exc:
            value = _ItemError(None, f"invalid JSON ({exc.msg})")
        items.append(_RawItem(len(items), f"line {lineno}", value))
    return items


def _load(path: str | Path, task: str, parse: Callable[[dict, int], T], skip_bad: bool,
          items: list[_RawItem] | None = None) -> LoadedDataset[T]:
    path = Path(path)
    if items is None:
        items = _read_items(path)
    if not items:
        raise DatasetFormatError(path, None, None, "contains no items")
    examples: list[T] = []
    errors: list[tuple[int, str]] = []
    positions: list[int] = []
    others: Counter[str] = Counter()
    for item in items:
        other = item_task(item.value)
        if other is not None and other != task:
            others[other] += 1  # a file of several tasks: each run reads its own items
            continue
        try:
            if isinstance(item.value, _ItemError):
                raise item.value
            if not isinstance(item.value, dict):
                raise _ItemError(None, f"expected a JSON object, got {_type_name(item.value)}")
            examples.append(parse(item.value, item.index))
            positions.append(item.index)
        except _ItemError as exc:
            error = DatasetFormatError(path, item.where, exc.field, exc.problem)
            if not skip_bad:
                raise error from None
            errors.append((item.index, str(error)))
    if not examples and not errors and others:
        raise DatasetFormatError(path, None, None, f"has no {task} items (its \"task\" fields name "
                                 + ", ".join(sorted(others)) + ")")
    derived = [ex for ex in examples if getattr(ex, "id_derived", False)]
    warnings = []
    if others:
        warnings.append(f"{sum(others.values())} items of other tasks (their \"task\" field: "
                        + ", ".join(f"{n} {t}" for t, n in sorted(others.items())) + ") were left out")
    if derived:
        warnings.append(f"{len(derived)} of {len(examples)} items have no id (\"_id\" or \"id\"); each takes "
                        f"its 0-based position in the file as its id (the first: {derived[0].id!r}), "
                        "stable as long as the file is not reordered")
    return LoadedDataset(path=str(path), task=task, examples=examples, errors=errors, positions=positions,
                         warnings=warnings)


# ---------------------------------------------------------------------------
# Field helpers
# ---------------------------------------------------------------------------

def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _first_key(item: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    return next((k for k in keys if k in item), None)


def _string(value: Any, name: str, allow_number: bool = False) -> str:
    if isinstance(value, str):
        return value
    if allow_number and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise _ItemError(name, f"expected a string, got {_type_name(value)}")


def _required(item: Mapping[str, Any], keys: Sequence[str], allow_number: bool = False) -> str:
    key = _first_key(item, keys)
    if key is None:
        raise _ItemError(" or ".join(keys), "missing")
    return _string(item[key], key, allow_number)


def _optional_text(value: Any) -> str | None:
    """Descriptive fields (name, type) never block loading: keep non-strings as text."""
    return None if value is None else value if isinstance(value, str) else json.dumps(value)


def _list(value: Any, name: str) -> list:
    if not isinstance(value, list):
        raise _ItemError(name, f"expected a list, got {_type_name(value)}")
    return value


def _string_list(value: Any, name: str, allow_number: bool = False) -> list[str]:
    return [_string(v, f"{name}[{i}]", allow_number) for i, v in enumerate(_list(value, name))]


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _ItemError(name, f"expected an integer, got {_type_name(value)}")
    return value


# ---------------------------------------------------------------------------
# Entity linking
# ---------------------------------------------------------------------------

def parse_el_item(item: dict, index: int) -> ELExample:
    example_id = _required(item, ("id",), allow_number=True)
    text = _required(item, ("text",))
    title = _string(item.get("title", ""), "title", allow_number=True)
    if "labels" not in item:
        raise _ItemError("labels", "missing")
    labels = []
    for j, label in enumerate(_list(item["labels"], "labels")):
        name = f"labels[{j}]"
        if not isinstance(label, dict):
            raise _ItemError(name, f"expected an object, got {_type_name(label)}")
        if "span" not in label:
            raise _ItemError(f"{name}.span", "missing")
        span = label["span"]
        if not isinstance(span, (list, tuple)) or len(span) != 2:
            raise _ItemError(f"{name}.span", f"expected [start, end], got {span!r}")
        start, end = _int(span[0], f"{name}.span[0]"), _int(span[1], f"{name}.span[1]")
        if not 0 <= start <= end <= len(text):
            raise _ItemError(f"{name}.span", f"[{start}, {end}] is not inside the text (length {len(text)})")
        if "entity_id" not in label:
            raise _ItemError(f"{name}.entity_id", "missing")
        entity_id = _string(label["entity_id"], f"{name}.entity_id", allow_number=True)
        labels.append(ELLabel(
            span=(start, end), entity_id=entity_id, name=_optional_text(label.get("name")),
            type=_optional_text(label.get("type")), optional=bool(label.get("optional") or False),
            surface=text[start:end],
        ))
    return ELExample(id=example_id, title=title, text=text, labels=labels, raw=item)


def load_entity_linking(path: str | Path, *, skip_bad: bool = False) -> LoadedDataset[ELExample]:
    """Load an EL test file (KORE50-style jsonl, or a JSON list of the same items)."""
    return _load(path, "entity-linking", parse_el_item, skip_bad)


# ---------------------------------------------------------------------------
# Multi-hop QA (HotpotQA, 2WikiMultihopQA)
# ---------------------------------------------------------------------------

def _parse_context(value: Any) -> list[ContextParagraph]:
    if isinstance(value, dict):  # columnar layout
        for key in ("title", "sentences"):
            if key not in value:
                raise _ItemError(f"context.{key}", "missing")
        titles = _string_list(value["title"], "context.title")
        sentences = _list(value["sentences"], "context.sentences")
        if len(titles) != len(sentences):
            raise _ItemError("context", f"{len(titles)} titles but {len(sentences)} sentence lists")
        return [ContextParagraph(t, _string_list(s, f"context.sentences[{i}]")) for i, (t, s) in enumerate(zip(titles, sentences))]
    paragraphs = []
    for i, entry in enumerate(_list(value, "context")):
        if not isinstance(entry, (list, tuple)) or len(entry) != 2:
            raise _ItemError(f"context[{i}]", "expected [title, [sentences]]")
        paragraphs.append(ContextParagraph(_string(entry[0], f"context[{i}][0]"),
                                           _string_list(entry[1], f"context[{i}][1]")))
    return paragraphs


def _parse_supporting_facts(value: Any) -> list[tuple[str, int]]:
    if isinstance(value, dict):  # columnar layout
        for key in ("title", "sent_id"):
            if key not in value:
                raise _ItemError(f"supporting_facts.{key}", "missing")
        titles = _string_list(value["title"], "supporting_facts.title")
        ids = [_int(v, f"supporting_facts.sent_id[{i}]") for i, v in enumerate(_list(value["sent_id"], "supporting_facts.sent_id"))]
        if len(titles) != len(ids):
            raise _ItemError("supporting_facts", f"{len(titles)} titles but {len(ids)} sentence ids")
        return list(zip(titles, ids))
    facts = []
    for i, entry in enumerate(_list(value, "supporting_facts")):
        if not isinstance(entry, (list, tuple)) or len(entry) != 2:
            raise _ItemError(f"supporting_facts[{i}]", "expected [title, sentence index]")
        facts.append((_string(entry[0], f"supporting_facts[{i}][0]"), _int(entry[1], f"supporting_facts[{i}][1]")))
    return facts


def _id_or_position(item: Mapping[str, Any], keys: Sequence[str], index: int) -> tuple[str, bool]:
    """The item's id, or its 0-based position in the file when it has none (copies of datasets
    that dropped the id column); the flag says which."""
    key = _first_key(item, keys)
    if key is None or item[key] is None:
        return str(index), True
    return _string(item[key], key, allow_number=True), False


def parse_multi_hop_item(item: dict, index: int, aliases: Mapping[str, list[str]]) -> MultiHopExample:
    example_id, derived = _id_or_position(item, ("_id", "id"), index)
    question = _required(item, ("question",))
    answer = _required(item, ("answer",), allow_number=True)
    if "context" not in item:
        raise _ItemError("context", "missing")
    context = _parse_context(item["context"])
    facts = _parse_supporting_facts(item["supporting_facts"]) if item.get("supporting_facts") is not None else []
    evidences = [_string_list(e, f"evidences[{i}]") for i, e in enumerate(_list(item.get("evidences") or [], "evidences"))]
    answer_id = item.get("answer_id")
    answer_id = None if answer_id in (None, "") else _string(answer_id, "answer_id", allow_number=True)
    decomposition_key = _first_key(item, ("decomposition", "question_decomposition"))
    decomposition = None
    if decomposition_key is not None and item[decomposition_key] is not None:
        decomposition = _list(item[decomposition_key], decomposition_key)
        for i, step in enumerate(decomposition):
            if not isinstance(step, dict):
                raise _ItemError(f"{decomposition_key}[{i}]", f"expected an object, got {_type_name(step)}")
    extra = [a for a in aliases.get(answer_id, []) if a != answer] if answer_id else []
    return MultiHopExample(
        id=example_id, type=_string(item.get("type") or "", "type"), question=question, answer=answer,
        aliases=extra, context=context, supporting_facts=facts, evidences=evidences,
        answer_id=answer_id, decomposition=decomposition, raw=item, id_derived=derived,
    )


def load_aliases(path: str | Path) -> dict[str, list[str]]:
    """Read 2WikiMultihopQA's `id_aliases.json`: jsonl lines
    `{"Q_id": ..., "aliases": [...], "demonyms": [...]}`. Returns Q_id -> aliases
    followed by demonyms, without repeats: the 2Wiki scorer adds both to the gold
    answers of an item whose `answer_id` is that Q_id."""
    path = Path(path)
    table: dict[str, list[str]] = {}

    def parse(item: dict, index: int) -> None:
        qid = _required(item, ("Q_id",))
        names = _string_list(item.get("aliases") or [], "aliases") + _string_list(item.get("demonyms") or [], "demonyms")
        table[qid] = list(dict.fromkeys(table.get(qid, []) + names))

    _load(path, "aliases", parse, skip_bad=False)
    return table


def load_multi_hop(path: str | Path, *, aliases_path: str | Path | None = None,
                   skip_bad: bool = False) -> LoadedDataset[MultiHopExample]:
    """Load a HotpotQA or 2WikiMultihopQA file (either context layout); with
    `aliases_path` (2Wiki `id_aliases.json`), the aliases of each `answer_id` become
    extra gold answers."""
    aliases = load_aliases(aliases_path) if aliases_path is not None else {}
    return _load(path, "multi-hop", lambda item, i: parse_multi_hop_item(item, i, aliases), skip_bad)


# ---------------------------------------------------------------------------
# Single-hop QA (Self-RAG / PopQA)
# ---------------------------------------------------------------------------

def parse_single_hop_item(item: dict, index: int) -> SingleHopExample:
    example_id, derived = _id_or_position(item, ("id", "_id", "question_id"), index)
    question = _required(item, ("question", "instruction"))
    answer_key = _first_key(item, ("answers", "answer"))
    if answer_key is None:
        raise _ItemError("answers or answer", "missing")
    value = item[answer_key]
    answers = _string_list(value, answer_key, allow_number=True) if isinstance(value, list) else [_string(value, answer_key, allow_number=True)]
    if not answers:
        raise _ItemError(answer_key, "empty: at least one gold answer is needed")
    ctxs = []
    for j, ctx in enumerate(_list(item.get("ctxs") or [], "ctxs")):
        if not isinstance(ctx, dict):
            raise _ItemError(f"ctxs[{j}]", f"expected an object, got {_type_name(ctx)}")
        if "text" not in ctx:
            raise _ItemError(f"ctxs[{j}].text", "missing")
        # Passages without an id get one unique within the file.
        passage_id = _string(ctx["id"], f"ctxs[{j}].id", allow_number=True) if ctx.get("id") is not None else f"{example_id}#{j}"
        ctxs.append(Passage(passage_id, _string(ctx.get("title") or "", f"ctxs[{j}].title"), _string(ctx["text"], f"ctxs[{j}].text")))
    gold = item.get("gold_id")
    gold_id = None if gold is None else _string(gold, "gold_id", allow_number=True)
    return SingleHopExample(id=example_id, question=question, answers=answers, ctxs=ctxs, gold_id=gold_id, raw=item,
                            id_derived=derived)


def load_single_hop(path: str | Path, *, skip_bad: bool = False) -> LoadedDataset[SingleHopExample]:
    """Load Self-RAG / PopQA style items (JSON or jsonl). Items without an id get their
    0-based position as id."""
    return _load(path, "single-hop", parse_single_hop_item, skip_bad)


# ---------------------------------------------------------------------------
# Format detection
# ---------------------------------------------------------------------------

def detect_task(item: Mapping[str, Any]) -> str | None:
    """Guess the task of one item from its keys; None when nothing fits."""
    from .tasks import TASKS  # the tasks refer to the parsers here; imported late to avoid a cycle

    return next((name for name, task in TASKS.items() if task.looks_like(item)), None)


def item_task(item: Any) -> str | None:
    """The task an item names in its own "task" field (a file mixing tasks, such as the held-out
    world's out-of-world set), or None when it names none of ours."""
    from .tasks import TASK_NAMES

    name = item.get("task") if isinstance(item, dict) else None
    if not isinstance(name, str):
        return None
    name = name.strip().lower().replace("_", "-")
    return name if name in TASK_NAMES else None


def _normalize_task(task: str) -> str:
    from .tasks import TASK_NAMES

    name = task.strip().lower().replace("_", "-")
    if name not in TASK_NAMES:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASK_NAMES)}")
    return name


def load_dataset(path: str | Path, task: str | None = None, *, skip_bad: bool = False,
                 aliases_path: str | Path | None = None) -> LoadedDataset[Any]:
    """Load an evaluation file of any supported task. Without `task`, the task is
    detected from the first item that is a JSON object; `aliases_path` applies to
    tasks whose files have an alias table (multi-hop) only."""
    from .tasks import TASK_NAMES, get_task

    path = Path(path)
    if task is not None:
        name = _normalize_task(task)
        items = None
    else:
        items = _read_items(path)
        first = next((it for it in items if isinstance(it.value, dict)), None)
        if first is None:
            raise DatasetFormatError(path, None, None, "no JSON object items to detect the format from")
        detected = item_task(first.value) or detect_task(first.value)
        if detected is None:
            keys = ", ".join(sorted(first.value)) or "none"
            raise DatasetFormatError(path, first.where, None,
                                     f"cannot tell the task from the keys ({keys}); pass task= one of {', '.join(TASK_NAMES)}")
        name = detected
    the_task = get_task(name)
    if aliases_path is not None and not the_task.takes_aliases:
        raise ValueError(f"aliases_path applies to {', '.join(t for t in TASK_NAMES if get_task(t).takes_aliases)} "
                         "files only")
    aliases = load_aliases(aliases_path) if aliases_path is not None else {}
    return _load(path, name, the_task.item_parser(aliases), skip_bad, items)


def parse_example(task: str, item: Mapping[str, Any], index: int = 0) -> Any:
    """One item of `task` (a dict in the task's file format) as its example class. A result line
    keeps its test item's fields, so this also reads the example back out of a result line.
    Raises ValueError with the field and the problem."""
    from .tasks import get_task

    name = _normalize_task(task)
    if not isinstance(item, Mapping):
        raise ValueError(f"item {index} is a {_type_name(item)}, not a JSON object")
    parse = get_task(name).item_parser()
    try:
        return parse(dict(item), index)
    except _ItemError as e:
        where = f" field {e.field!r}" if e.field else ""
        raise ValueError(f"item {index}{where}: {e.problem}") from None


# ---------------------------------------------------------------------------
# Result lines for the authors' scoring scripts
# ---------------------------------------------------------------------------

# The text between a closing tag and the last opener before it: a model that writes the opener
# early ("... director <FINAL-ANSWER>Summer over Gakrel?") and again at its answer is read from the
# second, not answered with the chain and the paragraphs between them.
_FINAL_ANSWER = re.compile(r"<FINAL-ANSWER>((?:(?!<FINAL-ANSWER>).)*?)</FINAL-ANSWER>", re.DOTALL)


def extract_final_answer(text: str) -> str | None:
    """The stripped text inside the last complete `<FINAL-ANSWER>...</FINAL-ANSWER>`,
    or None when there is none (an unclosed tag does not count).

    Pass the generated text, not the prompt: the multi-hop prompt itself contains an
    empty `<FINAL-ANSWER></FINAL-ANSWER>`. Unlike the authors' extractor this reads
    across newlines, takes the last answer, not the first after the prompt (the engine
    stops at the first complete one, so both agree there), and reads an answer whose
    opener was written twice from the second opener.
    """
    matches = _FINAL_ANSWER.findall(text)
    return matches[-1].strip() if matches else None


def _with_trace(line: dict[str, Any], trace: Mapping[str, Any] | None) -> dict[str, Any]:
    if trace is not None:
        if not isinstance(trace, Mapping):
            raise TypeError(f"trace must be a dict, got {type(trace).__name__}")
        line["trace"] = dict(trace)
    return line


def el_result_line(example_raw: Mapping[str, Any], output: str, output_qid: Sequence[str],
                   trace: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An EL result line as the authors' scorer reads it: a copy of the test item plus
    "output" (the generated text with `<MENTION>..</MENTION>[LK][_CONTINUE_]`) and
    "output_qid" (one entity uid per `[LK]`, in order), and "trace" when given."""
    if not isinstance(output, str):
        raise TypeError(f"output must be a str, got {type(output).__name__}")
    if isinstance(output_qid, str) or not all(isinstance(q, str) for q in output_qid):
        raise TypeError("output_qid must be a list of uid strings")
    line = copy.deepcopy(dict(example_raw))
    line["output"] = output
    line["output_qid"] = list(output_qid)
    return _with_trace(line, trace)


def qa_result_line(example_raw: Mapping[str, Any], prompt: str, output: str,
                   trace: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A QA result line: a copy of the test item plus "input" (the prompt) and "output",
    and "trace" when given.

    "output" is stored the way the authors store it, as the full decoded text with the
    prompt first (prepended unless `output` already starts with it): their scorer
    expects the first `<FINAL-ANSWER>` match to be the prompt's empty one and reads
    the answer from the second. The generated part is `output[len(input):]`.
    """
    if not isinstance(prompt, str) or not isinstance(output, str):
        raise TypeError("prompt and output must be strings")
    line = copy.deepcopy(dict(example_raw))
    line["input"] = prompt
    line["output"] = output if output.startswith(prompt) else prompt + output
    return _with_trace(line, trace)


def final_answer_from_result_line(line: Mapping[str, Any]) -> str | None:
    """`extract_final_answer` of a QA result line's generated part (its "output" minus
    the leading "input"), so the prompt's empty tag pair is never taken for an answer."""
    output = line.get("output")
    if not isinstance(output, str):
        raise KeyError("QA result line lacks a string 'output'")
    prompt = line.get("input")
    if isinstance(prompt, str) and output.startswith(prompt):
        output = output[len(prompt):]
    return extract_final_answer(output)


# ---------------------------------------------------------------------------
# Gold files for the authors' scoring scripts
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class GoldLayout:
    """Gold items in the layout one of the authors' scorers reads, in the order of the result
    lines they go with (their QA scorers pair line i with gold item i). `jsonl`: one item a line
    (entity linking, Self-RAG), else one JSON list (HotpotQA, 2Wiki); `aliases`: 2Wiki's
    `id_aliases.json` rows (`{"Q_id", "aliases", "demonyms"}`), which its scorer takes as a third file."""

    name: str
    items: list[dict[str, Any]]
    jsonl: bool
    aliases: list[dict[str, Any]] | None = None


def multi_hop_gold(examples: Sequence[MultiHopExample]) -> GoldLayout:
    """HotpotQA's dev-file layout (`_id`, `question`, `answer`, `type`, `supporting_facts` and
    `context` as lists, whatever layout the data had), or 2WikiMultihopQA's when the items carry
    2Wiki fields (`answer_id`, `evidences`): the same plus `answer_id` and the alias rows of
    every answer that has aliases."""
    wiki2 = any("answer_id" in ex.raw or ex.evidences for ex in examples)
    items = []
    for ex in examples:
        item = copy.deepcopy(dict(ex.raw))
        item.update(_id=ex.id, question=ex.question, answer=ex.answer, type=ex.type,
                    supporting_facts=[[title, sent] for title, sent in ex.supporting_facts],
                    context=[[p.title, list(p.sentences)] for p in ex.context])
        if wiki2:
            item["answer_id"] = ex.answer_id or ""
            item.setdefault("evidences", [list(e) for e in ex.evidences])
        items.append(item)
    if not wiki2:
        return GoldLayout("HotpotQA", items, jsonl=False)
    aliases: dict[str, list[str]] = {}
    for ex in examples:
        if ex.answer_id and ex.aliases:
            aliases[ex.answer_id] = list(dict.fromkeys(aliases.get(ex.answer_id, []) + ex.aliases))
    rows = [{"Q_id": qid, "aliases": names, "demonyms": []} for qid, names in aliases.items()]
    return GoldLayout("2WikiMultihopQA", items, jsonl=False, aliases=rows)


def entity_linking_gold(examples: Sequence[ELExample]) -> GoldLayout:
    """The KORE50-style test items (`id`, `title`, `text`, `labels`) as jsonl. The authors' EL
    scorer reads the labels from the result file itself; this is the test file cut to its lines."""
    return GoldLayout("entity linking", [copy.deepcopy(dict(ex.raw)) for ex in examples], jsonl=True)


def single_hop_gold(examples: Sequence[SingleHopExample]) -> GoldLayout:
    """Self-RAG's input jsonl (`id`, `question`, `answers`, `ctxs`): the file its short-form
    script reads and scores `match` against."""
    items = []
    for ex in examples:
        item = copy.deepcopy(dict(ex.raw))
        item.update(id=ex.id, question=ex.question, answers=list(ex.answers))
        items.append(item)
    return GoldLayout("Self-RAG", items, jsonl=True)


def write_jsonl(path: str | Path, lines: Iterable[Mapping[str, Any]]) -> int:
    """Write result lines as UTF-8 jsonl (non-ASCII kept readable), atomically; returns the count."""
    from .fsutil import atomic_write

    text = [json.dumps(line, ensure_ascii=False) + "\n" for line in lines]
    atomic_write(path, "".join(text))
    return len(text)
