"""Evaluation runner: every example of a dataset through the engine, one result line each, scored.

    report = evaluate(engine, "multi-hop", load_dataset("hotpot_dev.json").examples, out="result.jsonl")
    report.metrics["em"], report.records[0].categories

Result lines are what the authors' scoring scripts read (EL: the test item plus "output" and
"output_qid"; QA: the item plus "input" and "output"), with our Trace under "trace" and our
scores and error categories under "onegen". The file is resumable: lines are appended and
flushed one by one, a rerun skips examples already in it, and a last line cut off mid-write is
discarded and redone. An exception in one example is kept in its line ("error") and never stops
the run.

Candidates: multi-hop uses each question's own context paragraphs ("context", the paper's
setting) or a global index ("index"); single-hop each item's `ctxs` or an index; entity linking
always searches an entity index.

Controls: "random-paragraph" replaces every retrieval by random documents from the same pool
(seeded per example), so the gap to the real run shows what retrieval contributes.

Ambiguous mentions (EL): a gold label is ambiguous when the dataset marks it (a truthy
"ambiguous" field, or a "note" that mentions ambiguity) or, when the entity index is available,
when 2+ index documents carry its name (the label's "name", else its surface) as their title,
compared case-insensitively. `ambiguous_accuracy` is the fraction of those (non-"Unknown") gold
mentions whose aligned predicted entity is the gold one; a missed mention counts as wrong.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from .datasets import ELExample, MultiHopExample, SingleHopExample, el_result_line, qa_result_line
from .documents import Document
from .error_analysis import (ErrorCategory, align_mentions, answer_match, categorize, category_counts,
                             context_document_id, hop_correct, single_hop_retrieval_correct)
from .errors import OneGenError
from .fsutil import atomic_write
from .metrics import UNKNOWN_ENTITY, ELDocument, el_scores, el_scores_from_result_lines, qa_scores, qa_summary
from .trace import Hit, Trace, TraceFormatError

TASKS = ("entity-linking", "multi-hop", "single-hop")
CANDIDATE_MODES = ("context", "index")
CONTROLS = ("random-paragraph",)


class EvaluationError(OneGenError, ValueError):
    """Unusable evaluation settings or result file; the message says what to do."""


# -- the random-paragraph control ------------------------------------------------------------------

class RandomRetriever:
    """A Retriever that ignores the query vector and returns `k` distinct random documents of
    `documents` (a list of Documents, or an index / its document store). Seeded, so a rerun
    inserts the same paragraphs."""

    def __init__(self, documents: Any, seed: int | str = 0, label: str = "random"):
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
    example: Any
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
    metrics: dict[str, Any]
    records: list[ExampleRecord]
    out: Path | None = None


# -- example plumbing --------------------------------------------------------------------------

def example_keys(examples: Sequence[Any]) -> list[str]:
    """Resume keys: the example id; a repeated id gets "#2", "#3", ... in file order."""
    seen: Counter[str] = Counter()
    keys = []
    for ex in examples:
        seen[ex.id] += 1
        keys.append(ex.id if seen[ex.id] == 1 else f"{ex.id}#{seen[ex.id]}")
    return keys


def example_input(task: str, example: Any) -> str:
    return example.text if task == "entity-linking" else example.question


def context_documents(task: str, example: Any) -> list[Document]:
    """The item's own candidates: multi-hop context paragraphs (one vector per sentence), or
    single-hop `ctxs` passages."""
    if task == "multi-hop":
        return [Document.from_sentences(context_document_id(example.id, i), p.title, p.sentences, context_index=i)
                for i, p in enumerate(example.context)]
    if task == "single-hop":
        return [Document(p.id, p.title, p.text) for p in example.ctxs]
    raise EvaluationError("entity linking has no per-item candidates; it searches an entity index")


def output_qid(trace: Trace, lk_id: int) -> list[str]:
    """One uid per generated `[LK]`, in output order: the chosen entity of the retrieval made at
    that token, or "" for an `[LK]` cut off by the token limit (it never got a vector)."""
    by_position = {r.position: r for r in trace.retrievals}
    out = []
    for t in trace.tokens:
        if t.id == lk_id and t.kind != "inserted":
            r = by_position.get(t.position)
            hit = r.chosen_hit if r is not None else None
            out.append(hit.id if hit is not None else "")
    return out


# -- scoring -----------------------------------------------------------------------------------

def el_prediction_pairs(trace: Trace | None) -> list[tuple[str, str]]:
    """(mention, entity id) of our engine's position-paired links."""
    return [] if trace is None else [(e.mention, e.entity_id) for e in trace.result.entities or []]


def ambiguous_labels(example: ELExample, title_counts: Mapping[str, int] | None) -> list[bool]:
    """Per label: is its name ambiguous (see the module docstring for the rule)?"""
    raws = example.raw.get("labels") or []
    flags = []
    for i, label in enumerate(example.labels):
        raw = raws[i] if i < len(raws) and isinstance(raws[i], dict) else {}
        note = raw.get("note")
        marked = bool(raw.get("ambiguous")) or (isinstance(note, str) and "ambig" in note.lower())
        if not marked and title_counts is not None:
            name = (label.name or label.surface).strip().casefold()
            marked = title_counts.get(name, 0) >= 2
        flags.append(marked)
    return flags


def title_counts_of(index: Any) -> dict[str, int]:
    """How many documents of an index carry each (case-folded) title."""
    return dict(Counter(t.strip().casefold() for t in index.documents.titles()))


def score_example(task: str, example: Any, trace: Trace | None,
                  title_counts: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Per-example scores (what goes under "onegen" -> "scores")."""
    if task == "entity-linking":
        s = el_scores([ELDocument(example.gold_pairs(), el_prediction_pairs(trace))])
        scores: dict[str, Any] = {"precision": s.precision, "recall": s.recall, "f1": s.f1,
                                  "tp": s.tp, "fp": s.fp, "fn": s.fn}
        flags = ambiguous_labels(example, title_counts)
        aligned = align_mentions(example, (trace.result.entities or []) if trace is not None else [])
        amb = [(label, pred) for label, pred, f in zip(example.labels, aligned.gold, flags)
               if f and label.entity_id != UNKNOWN_ENTITY]
        scores["ambiguous"] = len(amb)
        scores["ambiguous_correct"] = sum(1 for label, pred in amb if pred is not None and pred.entity_id == label.entity_id)
        return scores
    answer = _answer(task, trace)
    answers = example.answers
    scores = {**qa_scores(answer, answers), "match": answer_match(answer, answers), "answer": answer}
    if trace is None:
        scores["retrieval"] = []
    elif task == "multi-hop":
        scores["retrieval"] = [hop_correct(example, trace, k) for k in range(len(trace.retrievals))]
    else:
        scores["retrieval"] = [single_hop_retrieval_correct(example, trace)[0]] if trace.retrievals else []
    return scores


def _answer(task: str, trace: Trace | None) -> str | None:
    if trace is None:
        return None
    if task == "multi-hop":
        return trace.result.answer if trace.result.final_answer_found else None
    return trace.result.answer or None


def compute_metrics(task: str, records: Sequence[ExampleRecord], *, title_counts_known: bool = False,
                    result_lines: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The metrics object over `records` (scores must be filled)."""
    traces = [r.trace for r in records if r.trace is not None]
    seconds = [r.seconds for r in records]
    m: dict[str, Any] = {
        "task": task, "examples": len(records), "errors": sum(1 for r in records if r.error is not None),
        "resumed": sum(1 for r in records if r.resumed),
    }
    if task == "entity-linking":
        s = el_scores(ELDocument(r.example.gold_pairs(), el_prediction_pairs(r.trace)) for r in records)
        m.update(precision=s.precision, recall=s.recall, f1=s.f1, tp=s.tp, fp=s.fp, fn=s.fn,
                 gold_mentions=s.n_gold, predicted_mentions=s.n_pred)
        if result_lines is not None:
            # The authors' scorer on the same file: pairs mentions and uids by order, so a
            # malformed [LK] shifts later links; the gap to the numbers above shows its cost.
            a = el_scores_from_result_lines(result_lines)
            m["authors_scorer"] = {"precision": a.precision, "recall": a.recall, "f1": a.f1}
        n_amb = sum(r.scores["ambiguous"] for r in records)
        m["ambiguous_mentions"] = n_amb
        m["ambiguous_accuracy"] = (sum(r.scores["ambiguous_correct"] for r in records) / n_amb) if n_amb else None
        if title_counts_known:
            m["ambiguity_from"] = "labels and index titles"
        elif any(r.scores.get("ambiguity_recorded") for r in records):
            m["ambiguity_from"] = "labels and index titles, as the run recorded them"
        else:
            m["ambiguity_from"] = "labels"
    else:
        rows = [{k: r.scores[k] for k in ("em", "f1", "precision", "recall", "match")} for r in records]
        types = [str(getattr(r.example, "type", "") or (r.example.raw.get("type") or "")) for r in records]
        summary = qa_summary(rows, types if any(types) else None)
        summary.pop("n", None)
        if "by_group" in summary:
            summary["by_type"] = summary.pop("by_group")
        m.update(summary)
        m["retrieval"] = _hop_recall(records)
        m["no_final_answer"] = sum(1 for r in records if r.trace is not None and _answer(task, r.trace) is None)
    m["retrieval_limit_hits"] = sum(1 for t in traces if t.result.retrieval_limit_reached)
    m["stop_reasons"] = dict(sorted(Counter(t.stop_reason for t in traces).items()))
    m["error_categories"] = category_counts(records)
    m["seconds_per_example_median"] = statistics.median(seconds) if seconds else None
    m["seconds_total"] = sum(seconds)
    return m


def _hop_recall(records: Sequence[ExampleRecord]) -> dict[str, dict[str, float | int]]:
    """recall@1 per hop over the examples that made that retrieval and whose gold is known."""
    per_hop: dict[int, list[bool]] = {}
    for r in records:
        for k, ok in enumerate(r.scores.get("retrieval") or []):
            if ok is not None:
                per_hop.setdefault(k, []).append(bool(ok))
    return {f"hop_{k + 1}": {"recall@1": sum(v) / len(v), "n": len(v)} for k, v in sorted(per_hop.items())}


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


# Settings that must match for a resumed file to be one consistent run.
_RUN_KEYS = ("task", "mode", "model_fingerprint", "candidates", "index", "control", "top_k", "copy_input")


def _check_same_run(line: Mapping[str, Any], run: Mapping[str, Any], path: Path) -> None:
    if not isinstance(line.get("onegen"), dict) or "key" not in line["onegen"]:
        raise EvaluationError(f"{path} holds lines not written by `onegen evaluate`; write to another --out")
    prev = line["onegen"].get("run") or {}
    if "copy_input" in run and "copy_input" not in prev:
        prev = {**prev, "copy_input": False}  # entity-linking files from before the copy constraint
    for key in _RUN_KEYS:
        if key in prev and prev[key] != run.get(key):
            raise EvaluationError(f"{path} was written with {key}={prev[key]!r}, this run has {run.get(key)!r}; "
                                  "write to another --out (or delete the file) instead of mixing runs")


# -- the runner --------------------------------------------------------------------------------

def _engine_of(engine_or_model: Any, task: str):
    from .engine import Engine
    from .loading import LoadedModel, load_model

    if isinstance(engine_or_model, Engine):
        return engine_or_model
    if isinstance(engine_or_model, LoadedModel):
        return Engine(engine_or_model)
    if engine_or_model is None or isinstance(engine_or_model, (str, Path)):
        return Engine(load_model(engine_or_model, task=task))
    raise TypeError(f"expected an Engine, a LoadedModel or a model name, got {type(engine_or_model).__name__}")


def _load_index(index: Any, engine, task: str):
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
    return VectorIndex.load(index, protocol=task, model_fingerprint=engine.lm.fingerprint, dim=engine.lm.hidden_size)


def evaluate(engine_or_model: Any, task: str, examples: Sequence[Any], *, index: Any = None,
             candidates: str = "context", out: str | Path | None = None, limit: int | None = None,
             top_k: int = 5, control: str | None = None, progress: bool = True, seed: int = 0,
             settings: Any = None, retry_errors: bool = False,
             on_progress: Callable[[int, int], None] | None = None) -> EvaluationReport:
    """Run `examples` (from `onegen.datasets.load_dataset`) through the engine and score them.

    `engine_or_model`: an Engine, a LoadedModel, or a model name/folder (None: the default).
    `index`: a VectorIndex or an index folder (None: the registry's default for the model), used
    for entity linking and for `candidates="index"`. `out`: result jsonl, resumed when it exists.
    `settings`: a RunSettings (its top_k is replaced by `top_k`). `retry_errors`: redo examples
    whose line holds an error instead of keeping them. `on_progress(done, total)` is called
    before the first example and after each one (done counts examples already in `out`).
    """
    from .engine import RunSettings

    if task not in TASKS:
        raise EvaluationError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if candidates not in CANDIDATE_MODES:
        raise EvaluationError(f"unknown candidates {candidates!r}; expected one of {', '.join(CANDIDATE_MODES)}")
    if control is not None and control not in CONTROLS:
        raise EvaluationError(f"unknown control {control!r}; expected one of {', '.join(CONTROLS)}")
    if top_k < 1:
        raise EvaluationError(f"top_k must be at least 1, got {top_k}")
    expected = {"entity-linking": ELExample, "multi-hop": MultiHopExample, "single-hop": SingleHopExample}[task]
    examples = list(examples)[:limit] if limit is not None else list(examples)
    for ex in examples[:1]:
        if not isinstance(ex, expected):
            raise EvaluationError(f"{task} needs {expected.__name__} items, got {type(ex).__name__}")
    mode = "index" if task == "entity-linking" else candidates

    engine = _engine_of(engine_or_model, task)
    lm = engine.lm
    settings = dataclasses.replace(settings or RunSettings(), top_k=top_k)
    idx = _load_index(index, engine, task) if mode == "index" else None
    title_counts = title_counts_of(idx) if task == "entity-linking" else None
    lk_id = lm.protocol(task).query_id if task == "entity-linking" else None
    run_info = {"task": task, "mode": engine.query_encoder.name, "model": lm.name,
                "model_fingerprint": lm.fingerprint, "candidates": mode,
                "index": None if idx is None else (str(idx.path) if idx.path else "in-memory"),
                "control": control, "seed": seed, "top_k": top_k}
    if task == "entity-linking":
        run_info["copy_input"] = settings.copy_input

    keys = example_keys(examples)
    done: dict[str, dict[str, Any]] = {}
    result_file = ResultFile(out) if out is not None else None
    if result_file is not None:
        finished = result_file.read_finished()
        if result_file.discarded_partial:
            _note(progress, f"{result_file.path}: removed a last line cut off mid-write; it will be redone")
        keep = []
        for line in finished:
            _check_same_run(line, run_info, result_file.path)
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
        for key, ex in todo:
            rec = _run_one(engine, task, key, ex, mode=mode, index=idx, control=control, seed=seed,
                           settings=settings, title_counts=title_counts, lk_id=lk_id, run_info=run_info)
            new[key] = rec
            if writer is not None:
                writer.append(rec.line)
            errors += rec.error is not None
            bar.update(1)
            bar.set_postfix(errors=errors)
            if on_progress is not None:
                on_progress(finished_before + len(new), len(keys))

    records = []
    for key, ex in zip(keys, examples):
        records.append(new[key] if key in new else _record_from_line(task, key, ex, done[key], title_counts))
    metrics = compute_metrics(task, records, title_counts_known=title_counts is not None,
                              result_lines=[r.line for r in records] if task == "entity-linking" else None)
    metrics.update(model=lm.name, candidates=mode, control=control, top_k=top_k)
    if task == "entity-linking":
        metrics["copy_input"] = settings.copy_input
        metrics["copy_overrides"] = sum(len(r.trace.overrides) for r in records if r.trace is not None)
    return EvaluationReport(task=task, metrics=metrics, records=records,
                            out=result_file.path if result_file is not None else None)


def _run_one(engine, task: str, key: str, ex: Any, *, mode: str, index: Any, control: str | None, seed: int,
             settings: Any, title_counts: Mapping[str, int] | None, lk_id: int | None,
             run_info: dict[str, Any]) -> ExampleRecord:
    from .baselines import retriever_for

    text = example_input(task, ex)
    t0 = time.perf_counter()
    trace: Trace | None = None
    error: str | None = None
    try:
        retriever, cands = None, None
        if mode == "index":
            # The pipeline searches its own retriever's vectors of the same documents.
            retriever = (RandomRetriever(index, seed=f"{seed}:{key}", label=f"random from {run_info['index']}")
                         if control else retriever_for(engine, task, index=index))
        else:
            docs = context_documents(task, ex)
            if control and docs:
                retriever = RandomRetriever(docs, seed=f"{seed}:{key}", label="random from candidates")
            else:
                cands = docs
        trace = engine.run_trace(task, text, retriever=retriever, candidates=cands, settings=settings)
    except Exception as e:  # one bad example must not stop a long run; it is kept in its line
        error = f"{type(e).__name__}: {e}"
    seconds = time.perf_counter() - t0
    scores = score_example(task, ex, trace, title_counts)
    categories = categorize(task, ex, trace, error)
    line = _result_line(task, ex, trace, lk_id)
    line["onegen"] = {"key": key, "run": run_info, "seconds": round(seconds, 4), "scores": scores,
                      "categories": [c.to_dict() for c in categories]}
    if error is not None:
        line["error"] = error
    return ExampleRecord(key=key, example=ex, trace=trace, error=error, seconds=seconds, scores=scores,
                         categories=categories, line=line)


def _result_line(task: str, ex: Any, trace: Trace | None, lk_id: int | None) -> dict[str, Any]:
    from .protocols import get_spec

    trace_dict = trace.to_dict() if trace is not None else None
    if task == "entity-linking":
        if trace is None:
            return el_result_line(ex.raw, "", [])
        return el_result_line(ex.raw, trace.result.output_text, output_qid(trace, lk_id), trace_dict)
    if trace is None:
        prompt = get_spec(task).prompt_template.replace("{input}", example_input(task, ex))
        return qa_result_line(ex.raw, prompt, prompt)
    return qa_result_line(ex.raw, trace.prompt_text, trace.prompt_text + trace.result.output_text, trace_dict)


def _record_from_line(task: str, key: str, ex: Any, line: dict[str, Any],
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
    scores = score_example(task, ex, trace, title_counts)
    recorded = (line.get("onegen") or {}).get("scores") or {}
    if task == "entity-linking" and title_counts is None and recorded.get("ambiguous", 0) > scores["ambiguous"]:
        # The run knew its index's titles (names two entities share); a reader without that index
        # keeps the ambiguity counts the run recorded for this same trace.
        scores.update(ambiguous=recorded["ambiguous"], ambiguous_correct=recorded.get("ambiguous_correct", 0),
                      ambiguity_recorded=True)
    return ExampleRecord(key=key, example=ex, trace=trace, error=error,
                         seconds=float((line.get("onegen") or {}).get("seconds") or 0.0),
                         scores=scores, categories=categorize(task, ex, trace, error), line=line, resumed=True)


def _bar(progress: bool, total: int, task: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"evaluating {task}", unit="ex", file=sys.stderr, disable=not progress)


def _note(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr)
