"""Evaluation runner: every example of a dataset through the engine, one result line each, scored.

    settings = EvaluationSettings(candidates="index", top_k=5)
    report = evaluate(engine, "multi-hop", load_dataset("hotpot_dev.json").examples, settings, out="result.jsonl")
    report.metrics.em, report.records[0].categories

Result lines are what the authors' scoring scripts read (EL: the test item plus "output" and
"output_qid"; QA: the item plus "input" and "output"), with our Trace under "trace" and our
scores and error categories under "onegen". The file is resumable: lines are appended and
flushed one by one, a rerun skips examples already in it, and a last line cut off mid-write is
discarded and redone. An exception in one example is kept in its line ("error") and never stops
the run. A finished run leaves its file in data order (shard files concatenated and resumed are
sorted back), since the authors' QA scorers pair result line i with gold item i.

Given a `DataSource` (where the examples were read: `DataSource.select`), the run record names
the dataset file ("data", "aliases") and the items that could not be read ("skipped_items"), and
each line its item's position in that file ("position"): `onegen export --format gold` finds
every line's gold item again from them.

Candidates: each task names the modes it allows and its default (`Task.candidate_modes`):
multi-hop uses each question's own context paragraphs ("context", the paper's setting) or a
global index ("index"); single-hop each item's `ctxs` or an index; entity linking always
searches an entity index.

Controls: "random-paragraph" replaces every retrieval by random documents from the same pool
(seeded per example), so the gap to the real run shows what retrieval contributes.

Ambiguous mentions (EL): a gold label is ambiguous when the dataset marks it (a truthy
"ambiguous" field, or a "note" that mentions ambiguity) or, when the entity index is available,
when 2+ index documents carry its name (the label's "name", else its surface) as their title,
compared case-insensitively. `ambiguous_accuracy` is the fraction of those (non-"Unknown") gold
mentions whose aligned predicted entity is the gold one; a missed mention counts as wrong.

Per-task behaviour (input text, own candidates, scores, result-line format, error categories,
figures) comes from the task object (onegen/tasks.py).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

from .documents import Document
from .error_analysis import ErrorCategory, categorize
from .errors import OneGenError
from .fsutil import atomic_write
from .index_coverage import IndexCoverage, index_coverage
from .metrics import ELMetrics, EvaluatedWith, QAMetrics
from .result_checks import CHECKS, resolve_checks
from .tasks import TASK_NAMES, CandidatesMode, Example, Task, get_task
from .trace import Hit, Trace, TraceFormatError

if TYPE_CHECKING:
    from .datasets import LoadedDataset
    from .engine import Engine, RunSettings
    from .index import DocumentStore, VectorIndex
    from .loading import LoadedModel

CANDIDATE_MODES = ("context", "index")
CONTROLS = ("random-paragraph",)


class EvaluationError(OneGenError, ValueError):
    """Unusable evaluation settings or result file; the message says what to do."""


# -- the random-paragraph control ------------------------------------------------------------------

class RandomRetriever:
    """A Retriever that ignores the query vector and returns `k` distinct random documents of
    `documents` (a list of Documents, or an index / its document store). Seeded, so a rerun
    inserts the same paragraphs."""

    def __init__(self, documents: VectorIndex | DocumentStore | Sequence[Document], seed: int | str = 0,
                 label: str = "random"):
        store = getattr(documents, "documents", documents)  # a VectorIndex -> its DocumentStore
        if len(store) == 0:
            raise EvaluationError("the random-paragraph control needs at least one document")
        self.store = store
        self.seed = seed
        self.label = label
        self.rng = random.Random(str(seed))  # str seeds are stable across processes

    def search(self, vector: Any, k: int) -> list[Hit]:
        rows = self.rng.sample(range(len(self.store)), min(max(k, 1), len(self.store)))
        hits = []
        for rank, row in enumerate(rows):
            doc = self.store[row]
            hits.append(Hit(rank=rank, id=doc.id, title=doc.title, score=0.0, text=doc.text))
        return hits

    def describe(self) -> dict:
        return {"path": self.label, "documents": len(self.store), "control": "random-paragraph",
                "seed": str(self.seed)}


# -- records and the report --------------------------------------------------------------------

@dataclass
class ExampleRecord:
    """One example's outcome. `line` is exactly what was (or had been) written to the result file."""

    key: str
    example: Example
    trace: Trace | None
    error: str | None
    seconds: float
    scores: dict[str, Any]
    categories: list[ErrorCategory]
    line: dict[str, Any]
    resumed: bool = False


@dataclass
class EvaluationReport:
    task: str
    metrics: ELMetrics | QAMetrics
    records: list[ExampleRecord]
    out: Path | None = None
    # With index candidates: the index searched and how many of the documents the data names it holds.
    index_coverage: IndexCoverage | None = None


@dataclass(frozen=True)
class EvaluationSettings:
    """How a dataset is run. `candidates` None means the task's default (`Task.candidate_modes`);
    `control` "random-paragraph" replaces every retrieval by random documents of the same pool,
    seeded by `seed`; `run` holds the decoding settings (its top_k is replaced by `top_k`)."""

    candidates: CandidatesMode | None = None
    control: str | None = None
    top_k: int = 5
    seed: int = 0
    run: RunSettings | None = None

    def candidates_for(self, task: Task) -> str:
        """The candidates mode for `task`; raises EvaluationError on one it does not allow."""
        mode = self.candidates or task.default_candidates
        if mode not in CANDIDATE_MODES:
            raise EvaluationError(f"unknown candidates {mode!r}; expected one of {', '.join(CANDIDATE_MODES)}")
        if mode not in task.candidate_modes:
            raise EvaluationError(f"{task.label} takes candidates {' or '.join(task.candidate_modes)}, not {mode!r}")
        return mode

    def check(self) -> None:
        if self.control is not None and self.control not in CONTROLS:
            raise EvaluationError(f"unknown control {self.control!r}; expected one of {', '.join(CONTROLS)}")
        if self.top_k < 1:
            raise EvaluationError(f"top_k must be at least 1, got {self.top_k}")


# -- where the examples come from ----------------------------------------------------------------

@dataclass(frozen=True)
class DataSource:
    """The dataset file a run's examples were read from, as recorded in its result lines: `data`
    the file (a path from `assets.portable_path`), `positions` and `keys` each example's item
    position in that file and its resume key, `skipped` the file's items that could not be read,
    `aliases` the 2Wiki alias table given with it."""

    data: str
    positions: tuple[int, ...]
    keys: tuple[str, ...]
    skipped: int = 0
    aliases: str | None = None

    @classmethod
    def select(cls, loaded: LoadedDataset, *, stride: int = 1, shard: int = 0, shards: int = 1,
               limit: int | None = None, aliases: str | Path | None = None) -> tuple[list[Any], DataSource]:
        """Every `stride`-th example, then examples `shard`, `shard + shards`, ..., then the first
        `limit`: the examples and their source. Keys come from the whole file, so a shard's keys are
        the whole run's (a repeated id is "#2" in every selection)."""
        from .assets import portable_path

        keys = example_keys(loaded.examples)
        rows = list(zip(loaded.examples, loaded.positions or range(len(loaded.examples)), keys))
        rows = rows[::stride][shard::shards][:limit]
        source = cls(data=portable_path(loaded.path), positions=tuple(r[1] for r in rows),
                     keys=tuple(r[2] for r in rows), skipped=len(loaded.errors),
                     aliases=portable_path(aliases) if aliases is not None else None)
        return [r[0] for r in rows], source


# -- example plumbing --------------------------------------------------------------------------

def example_keys(examples: Sequence[Any]) -> list[str]:
    """Resume keys: the example id; a repeated id gets "#2", "#3", ... in file order."""
    seen: Counter[str] = Counter()
    keys = []
    for ex in examples:
        seen[ex.id] += 1
        keys.append(ex.id if seen[ex.id] == 1 else f"{ex.id}#{seen[ex.id]}")
    return keys


def title_counts_of(index: VectorIndex) -> dict[str, int]:
    """How many documents of an index carry each (case-folded) title."""
    return dict(Counter(t.strip().casefold() for t in index.documents.titles()))


# -- the result file ---------------------------------------------------------------------------

class ResultFile:
    """An append-only jsonl result file that survives being killed mid-write."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.discarded_partial = False

    def read_finished(self) -> list[dict[str, Any]]:
        """Complete lines already in the file. A last line without its newline (or not valid
        JSON) was cut off mid-write: it is removed from the file so it is redone, never doubled.
        A bad line elsewhere is damage we cannot repair and raises."""
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        lines: list[dict[str, Any]] = []
        good_end = 0
        pos = 0
        number = 0
        while pos < len(data):
            nl = data.find(b"\n", pos)
            end = len(data) if nl < 0 else nl + 1
            chunk = data[pos:end]
            number += 1
            parsed = None
            if nl >= 0 and chunk.strip():
                try:
                    parsed = json.loads(chunk)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    parsed = None
            if chunk.strip() and not isinstance(parsed, dict):
                if end < len(data):
                    raise EvaluationError(f"{self.path}: line {number} is not a complete JSON object; "
                                          "repair or remove it, or write to another --out")
                self.discarded_partial = True
                break
            if parsed is not None:
                lines.append(parsed)
            good_end = end
            pos = end
        if good_end < len(data):
            with self.path.open("r+b") as f:
                f.truncate(good_end)
        return lines

    def rewrite(self, lines: Iterable[Mapping[str, Any]]) -> None:
        atomic_write(self.path, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))

    def sort(self, keys: Sequence[str]) -> bool:
        """Put the lines in the order of `keys` (the data order); lines of other keys follow in
        their own order. Rewritten (atomically) only when the order changes; True then."""
        lines = self.read_finished()
        rank = {k: i for i, k in enumerate(keys)}
        ordered = in_data_order(lines, rank)
        if all(a is b for a, b in zip(ordered, lines)):
            return False
        self.rewrite(ordered)
        return True

    def __enter__(self) -> "ResultFile":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("a", encoding="utf-8")
        return self

    def append(self, line: Mapping[str, Any]) -> None:
        # One write per line, flushed: a kill leaves at most one partial last line.
        self._handle.write(json.dumps(line, ensure_ascii=False) + "\n")
        self._handle.flush()

    def __exit__(self, *exc) -> None:
        self._handle.close()


def in_data_order(lines: Sequence[dict[str, Any]], rank: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """`lines` in the order of their dataset items: by `rank[key]` when given (lines of other
    keys keep their order after the others), else by the position each line records, when every
    line records one (a file partly written before lines recorded positions keeps its order). A
    stable sort: a file already in order is returned as it is."""
    def place_of(line: dict[str, Any]) -> Any:
        block = line.get("onegen") if isinstance(line.get("onegen"), dict) else {}
        return rank.get(str(block.get("key"))) if rank is not None else block.get("position")

    if rank is None and not all(isinstance(place_of(line), int) for line in lines):
        return list(lines)

    def order(indexed: tuple[int, dict[str, Any]]) -> tuple[int, int, int]:
        i, line = indexed
        place = place_of(line)
        return (0, place, i) if isinstance(place, int) else (1, 0, i)

    return [line for _, line in sorted(enumerate(lines), key=order)]


# Settings that must match for a resumed file to be one consistent run. The index is compared by
# what it holds (`_check_same_index`), not by how its path was spelled.
_RUN_KEYS = ("task", "mode", "model_fingerprint", "candidates", "control", "top_k", "copy_input",
             "early_close", "model_opens", *CHECKS)


def _check_same_run(line: Mapping[str, Any], run: Mapping[str, Any], path: Path,
                    fingerprints: dict[str, str | None] | None = None) -> None:
    if not isinstance(line.get("onegen"), dict) or "key" not in line["onegen"]:
        raise EvaluationError(f"{path} holds lines not written by `onegen evaluate`; write to another --out")
    prev = line["onegen"].get("run") or {}
    if "copy_input" in run and "copy_input" not in prev:
        prev = {**prev, "copy_input": False}  # entity-linking files from before the copy constraint
    for rule in ("early_close", "model_opens"):  # ... and from before the span rules
        if rule in run and rule not in prev:
            prev = {**prev, rule: False}
    for check in CHECKS:  # ... and from before the result checks
        if check in run and check not in prev:
            prev = {**prev, check: "off"}
    for key in _RUN_KEYS:
        if key in prev and prev[key] != run.get(key):
            raise EvaluationError(f"{path} was written with {key}={prev[key]!r}, this run has {run.get(key)!r}; "
                                  "write to another --out (or delete the file) instead of mixing runs")
    _check_same_index(prev, run, path, {} if fingerprints is None else fingerprints)


def _check_same_index(prev: Mapping[str, Any], run: Mapping[str, Any], path: Path,
                      fingerprints: dict[str, str | None]) -> None:
    """The recorded run searched the same index as this one: equal content fingerprints, whatever
    the folder is called now. Lines written before fingerprints were recorded name only a path:
    that folder's manifest is read (as given, from the working directory, or from the checkout for
    the bundled result files) and compared the same way."""
    if "index" not in prev or (prev["index"] is None and run.get("index") is None):
        return
    if prev.get("index") is None or run.get("index") is None:
        raise EvaluationError(f"{path} was written with index={prev.get('index')!r}, this run has "
                              f"{run.get('index')!r}; write to another --out (or delete the file)")
    was, now = prev.get("index_fingerprint"), run.get("index_fingerprint")
    if was is None:
        recorded = str(prev["index"])
        if recorded not in fingerprints:
            fingerprints[recorded] = recorded_index_fingerprint(recorded)
        was = fingerprints[recorded]
        if was is None:
            if recorded == run["index"]:
                return  # nothing to read the content from; the same path is all that can be checked
            raise EvaluationError(f"{path} was written with the index {recorded}, which is not here to compare "
                                  f"with this run's {run['index']}; pass --index {recorded}, or write to another --out")
    if was != now:
        raise EvaluationError(
            f"{path} was written with the index {prev['index']} (fingerprint {str(was)[:12]}); this run's index "
            f"{run['index']} holds other documents or vectors (fingerprint {str(now)[:12]}). Use the same index, "
            "or write to another --out (or delete the file) instead of mixing runs")


def recorded_index_fingerprint(recorded: str) -> str | None:
    """The content fingerprint of the index folder a result file names, or None when no such folder
    is found: the path as written (absolute, or from the working directory), or inside the checkout
    (the bundled result files name `assets/indexes/...`)."""
    from .assets import assets_dir
    from .index import IndexLoadError, read_manifest

    path = Path(recorded)
    places = [path] if path.is_absolute() else [Path.cwd() / path]
    if not path.is_absolute() and path.parts[:1] == ("assets",):
        places.append(assets_dir().joinpath(*path.parts[1:]))
    for place in places:
        if (place / "manifest.json").is_file():
            try:
                return read_manifest(place).fingerprint
            except IndexLoadError:
                return None
    return None


# -- the runner --------------------------------------------------------------------------------

def _engine_of(engine_or_model: Engine | LoadedModel | str | Path | None, task: str) -> Engine:
    from .engine import Engine
    from .loading import LoadedModel, load_model

    if isinstance(engine_or_model, Engine):
        return engine_or_model
    if isinstance(engine_or_model, LoadedModel):
        return Engine(engine_or_model)
    if engine_or_model is None or isinstance(engine_or_model, (str, Path)):
        return Engine(load_model(engine_or_model, task=task))
    raise TypeError(f"expected an Engine, a LoadedModel or a model name, got {type(engine_or_model).__name__}")


def _load_index(index: VectorIndex | str | Path | None, engine: Engine, task: str) -> VectorIndex:
    from . import registry
    from .index import VectorIndex

    if index is None:
        index = registry.default_index(engine.lm.name, task)
        if index is None:
            raise EvaluationError(f"no {task} index: pass one (--index DIR); model {engine.lm.name!r} has no default")
    if isinstance(index, VectorIndex):
        return index
    if str(index).startswith("hf://"):
        from .hub import IndexFetchError, resolve_index_path

        try:
            index = resolve_index_path(str(index))  # downloaded once into the hub cache, as the app and `run` do
        except (IndexFetchError, ValueError) as e:
            raise EvaluationError(str(e)) from e
    if not Path(index).exists():
        raise EvaluationError(f"index folder {index} does not exist")
    return engine.load_index(index, task)


def evaluate(engine_or_model: Engine | LoadedModel | str | Path | None, task: str, examples: Sequence[Example],
             settings: EvaluationSettings | None = None, *, index: VectorIndex | str | Path | None = None,
             out: str | Path | None = None, progress: bool = True, retry_errors: bool = False,
             on_progress: Callable[[int, int], None] | None = None,
             source: DataSource | None = None, batch_size: int = 1) -> EvaluationReport:
    """Run `examples` (from `onegen.datasets.load_dataset`) through the engine and score them.

    `engine_or_model`: an Engine, a LoadedModel, or a model name/folder (None: the default).
    `settings`: candidates, control, top_k, seed and decoding settings (None: the defaults).
    `index`: a VectorIndex or an index folder (None: the registry's default for the model), used
    when the candidates mode is "index". `out`: result jsonl, resumed when it exists.
    `retry_errors`: redo examples whose line holds an error instead of keeping them.
    `on_progress(done, total)` is called before the first example and after each one (done
    counts examples already in `out`). `source`: where `examples` were read (`DataSource.select`),
    recorded in the result lines. `batch_size` > 1: that many examples decode together
    (onegen/batch.py); lines are written as examples end and put back in data order at the end.
    """
    from .engine import RunSettings

    if task not in TASK_NAMES:
        raise EvaluationError(f"unknown task {task!r}; expected one of {', '.join(TASK_NAMES)}")
    the_task = get_task(task)
    settings = settings or EvaluationSettings()
    settings.check()
    mode = settings.candidates_for(the_task)
    examples = list(examples)
    if source is not None and len(source.keys) != len(examples):
        raise ValueError(f"the source lists {len(source.keys)} examples, {len(examples)} were given")
    for ex in examples[:1]:
        if not isinstance(ex, the_task.example_class):
            raise EvaluationError(f"{task} needs {the_task.example_class.__name__} items, got {type(ex).__name__}")

    engine = _engine_of(engine_or_model, task)
    lm = engine.lm
    run_settings = dataclasses.replace(settings.run or RunSettings(), top_k=settings.top_k)
    idx = _load_index(index, engine, task) if mode == "index" else None
    coverage = index_coverage(task, examples, idx) if idx is not None else None
    if coverage is not None:
        # Said before the run: a dataset whose documents are not in the index would waste it.
        _note(progress or coverage.mostly_missing, coverage.message())
    title_counts = title_counts_of(idx) if the_task.reads_index_titles and idx is not None else None
    query_id = lm.protocol(task).query_id
    run_info = {"task": task, "mode": engine.query_encoder.name, "model": lm.name,
                "model_fingerprint": lm.fingerprint, "candidates": mode,
                "index": None if idx is None else (str(idx.path) if idx.path else "in-memory"),
                "index_fingerprint": None if idx is None else idx.fingerprint,
                "control": settings.control, "seed": settings.seed, "top_k": settings.top_k}
    if the_task.copies_input:
        run_info["copy_input"] = run_settings.copy_input
        # What the engine applies: the span rules need the copy constraint and greedy decoding.
        greedy_copy = run_settings.copy_input and run_settings.sampling is None
        run_info["early_close"] = greedy_copy and run_settings.early_close
        run_info["model_opens"] = greedy_copy and run_settings.model_opens
    run_info.update(resolve_checks(the_task.declared_settings, run_settings, lm))
    if source is not None:
        run_info.update(data=source.data, aliases=source.aliases, skipped_items=source.skipped)

    keys = list(source.keys) if source is not None else example_keys(examples)
    positions = dict(zip(keys, source.positions)) if source is not None else {}
    done: dict[str, dict[str, Any]] = {}
    result_file = ResultFile(out) if out is not None else None
    if result_file is not None:
        finished = result_file.read_finished()
        if result_file.discarded_partial:
            _note(progress, f"{result_file.path}: removed a last line cut off mid-write; it will be redone")
        keep = []
        fingerprints: dict[str, str | None] = {}  # recorded index path -> its folder's fingerprint
        for line in finished:
            _check_same_run(line, run_info, result_file.path, fingerprints)
            key = (line.get("onegen") or {}).get("key")
            if retry_errors and line.get("error") is not None:
                continue
            keep.append(line)
            if key is not None and key not in done:
                done[key] = line
        if len(keep) != len(finished):
            result_file.rewrite(keep)
        wanted = set(keys)
        outside = sum(1 for line in keep if (line.get("onegen") or {}).get("key") not in wanted)
        if done:
            _note(progress, f"resuming {result_file.path}: {sum(k in done for k in keys)} of {len(keys)} examples done")
        if outside:
            _note(progress, f"{outside} line(s) of {result_file.path} are not in this selection; not scored")

    todo = [(k, ex) for k, ex in zip(keys, examples) if k not in done]
    finished_before = len(keys) - len(todo)
    if on_progress is not None:
        on_progress(finished_before, len(keys))
    new: dict[str, ExampleRecord] = {}
    errors = 0
    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(result_file) if result_file is not None else None
        bar = stack.enter_context(_bar(progress, len(todo), task))
        common = dict(mode=mode, index=idx, settings=settings, run_settings=run_settings, title_counts=title_counts,
                      query_id=query_id, run_info=run_info)
        runs = (_run_batched(engine, the_task, todo, batch_size, positions, **common) if batch_size > 1 else
                (_run_one(engine, the_task, key, ex, position=positions.get(key), **common) for key, ex in todo))
        # Closed on the way out (a stop raised by on_progress): runs still in the batch are unwound.
        stack.enter_context(contextlib.closing(runs))
        for rec in runs:
            key = rec.key
            new[key] = rec
            if writer is not None:
                writer.append(rec.line)
            errors += rec.error is not None
            bar.update(1)
            bar.set_postfix(errors=errors)
            if on_progress is not None:
                on_progress(finished_before + len(new), len(keys))

    if result_file is not None:
        result_file.sort(keys)
    records = []
    for key, ex in zip(keys, examples):
        records.append(new[key] if key in new else _record_from_line(task, key, ex, done[key], title_counts))
    metrics = the_task.aggregate(records, title_counts_known=title_counts is not None,
                                 result_lines=[r.line for r in records])
    copies = the_task.copies_input
    metrics.skipped = source.skipped if source is not None else 0
    metrics.run = EvaluatedWith(
        model=lm.name, candidates=mode, control=settings.control, top_k=settings.top_k,
        copy_input=run_settings.copy_input if copies else None,
        early_close=run_info["early_close"] if copies else None,
        model_opens=run_info["model_opens"] if copies else None,
        checks={key: run_info[key] for key in the_task.declared_settings},
        copy_overrides=sum(len(r.trace.overrides) for r in records if r.trace is not None) if copies else None)
    return EvaluationReport(task=task, metrics=metrics, records=records,
                            out=result_file.path if result_file is not None else None, index_coverage=coverage)


def _documents_of(engine: Engine, task: Task, key: str, ex: Example, *, mode: str, index: VectorIndex | None,
                  settings: EvaluationSettings, run_info: dict[str, Any]) -> tuple[Any, Sequence[Document] | None]:
    """An example's retriever or candidate documents (one of them None)."""
    from .baselines import retriever_for

    random_seed = f"{settings.seed}:{key}"
    if mode == "index":
        # The pipeline searches its own retriever's vectors of the same documents.
        return (RandomRetriever(index, seed=random_seed, label=f"random from {run_info['index']}")
                if settings.control else retriever_for(engine, task.name, index=index)), None
    docs = task.context_documents(ex)
    if settings.control and docs:
        return RandomRetriever(docs, seed=random_seed, label="random from candidates"), None
    return None, docs


def _run_one(engine: Engine, task: Task, key: str, ex: Example, *, mode: str, index: VectorIndex | None,
             settings: EvaluationSettings, run_settings: RunSettings, title_counts: Mapping[str, int] | None,
             query_id: int, run_info: dict[str, Any], position: int | None = None) -> ExampleRecord:
    text = task.example_input(ex)
    t0 = time.perf_counter()
    trace: Trace | None = None
    error: str | None = None
    try:
        retriever, cands = _documents_of(engine, task, key, ex, mode=mode, index=index, settings=settings,
                                         run_info=run_info)
        trace = engine.run_trace(task.name, text, retriever=retriever, candidates=cands, settings=run_settings)
    except Exception as e:  # one bad example must not stop a long run; it is kept in its line
        error = f"{type(e).__name__}: {e}"
    return _record(task, key, ex, trace, error, time.perf_counter() - t0, title_counts=title_counts,
                   query_id=query_id, run_info=run_info, position=position)


def _run_batched(engine: Engine, task: Task, todo: Sequence[tuple[str, Example]], batch_size: int,
                 positions: Mapping[str, int], *, mode: str, index: VectorIndex | None, settings: EvaluationSettings,
                 run_settings: RunSettings, title_counts: Mapping[str, int] | None, query_id: int,
                 run_info: dict[str, Any]) -> Iterator[ExampleRecord]:
    """`todo` decoded `batch_size` at a time; records in the order examples end."""
    from .batch import BatchEngine, BatchJob

    batched = BatchEngine.like(engine, batch_size)
    jobs, examples = [], {}
    for key, ex in todo:
        examples[key] = ex
        try:
            retriever, cands = _documents_of(engine, task, key, ex, mode=mode, index=index, settings=settings,
                                             run_info=run_info)
        except Exception as e:  # as in _run_one: the example's line keeps the error
            yield _record(task, key, ex, None, f"{type(e).__name__}: {e}", 0.0, title_counts=title_counts,
                          query_id=query_id, run_info=run_info, position=positions.get(key))
            continue
        jobs.append(BatchJob(task.name, task.example_input(ex), retriever=retriever, candidates=cands,
                             settings=run_settings, key=key))
    for r in batched.run_many(jobs):
        if r.error is not None and not isinstance(r.error, Exception):
            raise r.error  # KeyboardInterrupt and the like end the evaluation, as at batch 1
        error = None if r.error is None else f"{type(r.error).__name__}: {r.error}"
        key = r.job.key
        yield _record(task, key, examples[key], r.trace, error, r.seconds, title_counts=title_counts,
                      query_id=query_id, run_info=run_info, position=positions.get(key))


def _record(task: Task, key: str, ex: Example, trace: Trace | None, error: str | None, seconds: float, *,
            title_counts: Mapping[str, int] | None, query_id: int, run_info: dict[str, Any],
            position: int | None) -> ExampleRecord:
    scores = task.score_example(ex, trace, title_counts)
    categories = categorize(task.name, ex, trace, error)
    line = task.result_line(ex, trace, query_id)
    line["onegen"] = {"key": key, "run": run_info, "seconds": round(seconds, 4), "scores": scores,
                      "categories": [c.to_dict() for c in categories]}
    if position is not None:
        line["onegen"]["position"] = position
    if error is not None:
        line["error"] = error
    return ExampleRecord(key=key, example=ex, trace=trace, error=error, seconds=seconds, scores=scores,
                         categories=categories, line=line)


def _record_from_line(task: str, key: str, ex: Example, line: dict[str, Any],
                      title_counts: Mapping[str, int] | None) -> ExampleRecord:
    """Rebuild a finished example's record from its line; scores are recomputed from the trace,
    so they follow the current scoring code."""
    trace = None
    if line.get("trace") is not None:
        try:
            trace = Trace.from_dict(line["trace"])
        except TraceFormatError as e:
            raise EvaluationError(f"example {key!r} in the result file has an unreadable trace ({e}); "
                                  "write to another --out") from e
    error = line.get("error")
    the_task = get_task(task)
    scores = the_task.score_example(ex, trace, title_counts)
    the_task.keep_recorded_scores(scores, (line.get("onegen") or {}).get("scores") or {}, title_counts)
    return ExampleRecord(key=key, example=ex, trace=trace, error=error,
                         seconds=float((line.get("onegen") or {}).get("seconds") or 0.0),
                         scores=scores, categories=categorize(task, ex, trace, error), line=line, resumed=True)


def _bar(progress: bool, total: int, task: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"evaluating {task}", unit="ex", file=sys.stderr, disable=not progress)


def _note(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr)
