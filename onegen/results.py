"""Finished result files (`onegen evaluate --out`): read one back, filter its examples, compare two.

A result line keeps its test item's fields, the run's trace, and an "onegen" block (key, run
settings). Reading a file parses the example back out of each line and rescores it with the
current scoring code, so the metrics here are the ones `onegen evaluate` prints for that file.
Records come in data order (the dataset positions the lines record), whatever the order of the
lines, so exports and comparisons are in data order too.

    results = load_results("runs/eval/mh-index.jsonl")
    wrong = select(results, outcome="wrong", category="retrieval miss at hop 2")
    diff = compare_results(load_results(a), load_results(b))   # diff.fixed, diff.broken, ...
    export_lines(wrong, "hop2-misses.jsonl")                    # the original lines, unchanged

Nothing here imports gradio; the app's error browser renders these objects.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from .datasets import parse_example, write_jsonl
from .errors import OneGenError
from .evaluation import ExampleRecord, _record_from_line, in_data_order
from .metrics import ELMetrics, QAMetrics
from .modes import DEFAULT_MODE
from .tasks import TASK_NAMES, get_task

MAX_RESULT_BYTES = 200 * 1024 * 1024  # a result file is read whole; past this use the CLI
OUTCOMES = ("all", "right", "wrong", "error")


class ResultFileError(OneGenError, ValueError):
    """A file that is not a readable `onegen evaluate` result file; the message says why."""


@dataclass
class ResultSet:
    path: Path
    task: str
    run: dict[str, Any]  # the run settings of the first line (mode, model, candidates, index, ...)
    records: list[ExampleRecord]
    metrics: ELMetrics | QAMetrics
    skipped: list[str] = field(default_factory=list)  # lines that could not be read, with why

    @property
    def label(self) -> str:
        r = self.run
        what = r.get("mode") or DEFAULT_MODE
        if r.get("control"):
            what += f", control {r['control']}"
        return f"{self.path.name} ({what}, {r.get('model', '?')}, {r.get('candidates', '?')} candidates)"

    def by_key(self) -> dict[str, ExampleRecord]:
        return {r.key: r for r in self.records}


def outcome_of(record: ExampleRecord) -> str:
    """"right", "wrong" or "error" (the engine raised)."""
    if record.error is not None or record.trace is None:
        return "error"
    return "wrong" if record.categories else "right"


def category_names(record: ExampleRecord) -> list[str]:
    """The record's category names, each followed by its finer labels ("wrong entity: not among
    candidates"): what the error browser filters by."""
    return list(dict.fromkeys(name for c in record.categories for name in c.names()))


NOT_JSON = "not valid JSON"
NOT_EVALUATE = "not a line written by `onegen evaluate` (no \"onegen\" block with its key)"


def numbered_result_lines(text: str) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """(line number, line, None) for each non-blank line `onegen evaluate` wrote; (number, None,
    why not) for any other."""
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            yield number, None, NOT_JSON
            continue
        if not isinstance(line, dict) or not isinstance(line.get("onegen"), dict) or "key" not in line["onegen"]:
            yield number, None, NOT_EVALUATE
            continue
        yield number, line, None


def load_results(path: str | Path, *, task: str | None = None) -> ResultSet:
    """Read a result file written by `onegen evaluate`. A line that cannot be read is skipped and
    listed in `skipped` (a file cut off mid-write loses at most its last line); a file with no
    readable line, lines of several tasks, or another kind of jsonl raises ResultFileError."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ResultFileError(f"cannot read {path.name}: {e.strerror or e}") from None
    if size > MAX_RESULT_BYTES:
        raise ResultFileError(f"{path.name} has {size:,} bytes; files up to {MAX_RESULT_BYTES:,} bytes are read "
                              "here (split it, or score it with `python -m onegen evaluate`)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ResultFileError(f"cannot read {path.name} as UTF-8 text: {e}") from None
    lines: list[tuple[int, dict[str, Any]]] = []
    skipped: list[str] = []
    for number, line, problem in numbered_result_lines(text):
        if line is None:
            skipped.append(f"line {number}: {problem}")
            continue
        lines.append((number, line))
    if not lines:
        why = f" ({skipped[0]})" if skipped else ""
        raise ResultFileError(f"{path.name} holds no result lines written by `onegen evaluate`{why}. "
                              "Pick a result .jsonl, or run a dataset file instead.")
    run = dict(lines[0][1]["onegen"].get("run") or {})
    file_task = task or run.get("task")
    if file_task not in TASK_NAMES:
        raise ResultFileError(f"{path.name}: its lines do not name a task (got {file_task!r})")
    records: list[ExampleRecord] = []
    seen: set[str] = set()
    number_of = {id(line): number for number, line in lines}
    ordered = in_data_order([line for _, line in lines])
    for number, line in ((number_of[id(line)], line) for line in ordered):
        line_task = (line["onegen"].get("run") or {}).get("task", file_task)
        if line_task != file_task:
            raise ResultFileError(f"{path.name}: line {number} is a {line_task} result in a {file_task} file; "
                                  "one file holds one run")
        key = str(line["onegen"]["key"])
        if key in seen:
            skipped.append(f"line {number}: example {key!r} appears again; the first line is kept")
            continue
        position = line["onegen"].get("position")
        try:  # an item without an id takes its position as id: the one it had in its dataset
            example = parse_example(file_task, line, position if isinstance(position, int) else number - 1)
            records.append(_record_from_line(file_task, key, example, line, None))
        except Exception as e:  # noqa: BLE001 - one damaged line must not hide the rest of the file
            skipped.append(f"line {number}: {e}")
            continue
        seen.add(key)
    if not records:
        raise ResultFileError(f"{path.name}: no line could be read ({skipped[0]})")
    metrics = _metrics(file_task, records)
    metrics.skipped = int(run.get("skipped_items") or 0)
    return ResultSet(path=path, task=file_task, run=run, records=records, metrics=metrics, skipped=skipped)


def headline(results: ResultSet) -> tuple[str, float | None]:
    """(name, value) of the figure the file's task is judged by, as `onegen evaluate` reports it."""
    key, name = get_task(results.task).headline
    value = results.metrics.to_dict().get(key)
    return name, (float(value) if value is not None else None)


def category_choices(results: ResultSet) -> list[tuple[str, int]]:
    """(category, examples with it), most frequent first. Unlike the metrics' counts (which count
    EL mentions), these count examples: what a filter by that category will show."""
    counts = Counter(name for r in results.records for name in category_names(r))
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def select(results: ResultSet, *, outcome: str = "all", category: str | None = None,
           contains: str | None = None) -> list[ExampleRecord]:
    """The records that pass every filter given: outcome (all/right/wrong/error), an error category,
    and a piece of the input text or key (case-insensitive)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
    needle = (contains or "").strip().lower()
    task = get_task(results.task)
    out = []
    for r in results.records:
        if outcome != "all" and outcome_of(r) != outcome:
            continue
        if category and category not in category_names(r):
            continue
        if needle and needle not in r.key.lower() and needle not in task.example_input(r.example).lower():
            continue
        out.append(r)
    return out


# -- one example, summarised for a table -----------------------------------------------------------

@dataclass(frozen=True)
class RowSummary:
    key: str
    input: str
    prediction: str
    gold: str
    outcome: str
    categories: str


def summarize(task: str, record: ExampleRecord) -> RowSummary:
    ex = record.example
    the_task = get_task(task)
    prediction, gold = the_task.prediction_text(record), the_task.gold_text(ex)
    cats = Counter(c.name for c in record.categories)
    text = ", ".join(name if n == 1 else f"{name} x{n}" for name, n in cats.items())
    if record.error:
        text = record.error
    return RowSummary(record.key, the_task.example_input(ex), prediction, gold, outcome_of(record), text)


# -- two result files ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Flip:
    """One example whose outcome differs between run A and run B, and what changed."""

    key: str
    input: str
    a: str  # outcome in A
    b: str  # outcome in B
    lost: tuple[str, ...]  # categories in A that B no longer has
    gained: tuple[str, ...]  # categories B has that A had not
    retrieval: str  # the first retrieval step that chose another document, described; "" if none

    @property
    def fixed(self) -> bool:
        return self.a != "right" and self.b == "right"


@dataclass
class Comparison:
    a: ResultSet
    b: ResultSet
    shared: list[str]  # keys in both files, in A's order
    only_a: list[str]
    only_b: list[str]
    fixed: list[Flip]  # wrong (or error) in A, right in B
    broken: list[Flip]  # right in A, not in B
    both_right: int
    both_wrong: int
    metrics: dict[str, tuple[float | None, float | None]]  # headline metrics over the shared keys
    same_tokens: int = 0  # shared examples whose traces hold the same token ids (e.g. two decoding settings)

    @property
    def flips(self) -> list[Flip]:
        return self.fixed + self.broken


def compare_results(a: ResultSet, b: ResultSet) -> Comparison:
    """Line two runs of the same task up example by example (by key). Metrics are recomputed over
    the examples both files hold, so a half-finished file is compared fairly."""
    if a.task != b.task:
        raise ResultFileError(f"{a.path.name} is a {a.task} run and {b.path.name} a {b.task} run; "
                              "compare two runs of the same task")
    ra, rb = a.by_key(), b.by_key()
    shared = [k for k in ra if k in rb]
    if not shared:
        raise ResultFileError(f"{a.path.name} and {b.path.name} share no example (by key); "
                              "they are runs of different datasets")
    fixed, broken, both_right, both_wrong = [], [], 0, 0
    for key in shared:
        oa, ob = outcome_of(ra[key]), outcome_of(rb[key])
        if oa == "right" and ob == "right":
            both_right += 1
        elif oa != "right" and ob != "right":
            both_wrong += 1
        else:
            flip = _flip(a.task, ra[key], rb[key], oa, ob)
            (fixed if flip.fixed else broken).append(flip)
    sub_a = _metrics(a.task, [ra[k] for k in shared]).to_dict()
    sub_b = _metrics(b.task, [rb[k] for k in shared]).to_dict()
    metrics = {key: (sub_a.get(key), sub_b.get(key)) for key in get_task(a.task).compared_metrics}
    same = sum(1 for k in shared if ra[k].trace and rb[k].trace and _ids(ra[k].trace) == _ids(rb[k].trace))
    return Comparison(a=a, b=b, shared=shared, only_a=[k for k in ra if k not in rb],
                      only_b=[k for k in rb if k not in ra], fixed=fixed, broken=broken,
                      both_right=both_right, both_wrong=both_wrong, metrics=metrics, same_tokens=same)


def _ids(trace) -> list[int]:
    return [t.id for t in trace.tokens]


def _metrics(task: str, records: list[ExampleRecord]) -> ELMetrics | QAMetrics:
    """`onegen evaluate`'s metrics over `records` (EL also runs the authors' scorer on the lines)."""
    return get_task(task).aggregate(records, result_lines=[r.line for r in records])


def _flip(task: str, ra: ExampleRecord, rb: ExampleRecord, oa: str, ob: str) -> Flip:
    ca, cb = set(category_names(ra)), set(category_names(rb))
    return Flip(key=ra.key, input=get_task(task).example_input(ra.example), a=oa, b=ob,
                lost=tuple(sorted(ca - cb)), gained=tuple(sorted(cb - ca)), retrieval=_first_divergence(ra, rb))


def _first_divergence(ra: ExampleRecord, rb: ExampleRecord) -> str:
    """Where the two runs first retrieved differently: "step 2: A chose X, B chose Y"."""
    ta = ra.trace.retrievals if ra.trace is not None else []
    tb = rb.trace.retrievals if rb.trace is not None else []
    for i, (x, y) in enumerate(zip(ta, tb)):
        hx, hy = x.chosen_hit, y.chosen_hit
        idx, idy = (hx.id if hx else None), (hy.id if hy else None)
        if idx != idy:
            return f"step {i + 1}: A chose {_title(hx)}, B chose {_title(hy)}"
    if len(ta) != len(tb):
        return f"A made {len(ta)} retrieval{'s' if len(ta) != 1 else ''}, B made {len(tb)}"
    return ""


def _title(hit) -> str:
    return "nothing" if hit is None else repr(hit.title or hit.id)


# -- export ----------------------------------------------------------------------------------------

def export_lines(records: Iterable[ExampleRecord], path: str | Path) -> int:
    """Write the records' original result lines, in the order given (a ResultSet's: data order).
    The authors' EL scorer reads them as they are; their QA scorers pair line i with gold item i,
    which `onegen export --format gold` writes for these lines."""
    return write_jsonl(path, (r.line for r in records))

