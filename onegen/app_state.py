"""What the app shares across sessions: one model and one index per task, loaded once on first use.

Loads are guarded by locks, so two first visitors never load the model twice. Every failure is an
`AppError` whose message is meant for the page (no tracebacks); a failed load is not cached, so a
model or index that appears later (still training, still downloading) is picked up on the next try.
Nothing here imports gradio.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from . import registry
from .constrain import vocabulary_bytes
from .documents import Document
from .engine import DoneEvent, Engine, Event, IndexRetriever, InputError, RunSettings, TokenChooser
from .errors import OneGenError
from .fsutil import sha256_file
from .hub import IndexFetchError, is_hub_ref, resolve_index_path
from .calibration import CalibrationError, read_calibration
from .index import IndexLoadError, VectorIndex, content_fingerprint, read_manifest
from .loading import LoadedModel
from .modes import BASELINE_NAMES, DEFAULT_MODE, MODE_LABELS
from .protocols import MissingTokenError
from .render_html import browse_href
from .render_text import NO_CONFIDENT_MATCH, SIGNAL_WORDS
from .result_checks import CHECKS
from .results import ResultSet
from .tasks import TASK_NAMES, get_task
from .trace import Trace
from .world_overview import WorldOverview

if TYPE_CHECKING:
    from .replay import Choice as ReplayChoice, Comparison as ReplayComparison
    from .baselines import Comparison, OnEvent

log = logging.getLogger("onegen.app")

MAX_INPUT_CHARS = 2_000  # a demo page, not a batch job; the engine's own limit is higher
MAX_TOP_K = 20
MAX_DATASET_EXAMPLES = 500  # examples per run of the error browser; the CLI has no limit
WARM_UP_TOKENS = 16  # per task, in the preload's throw-away runs
RUNS_PER_VISITOR = 1  # runs one browser tab or API client may have going at once
BATCH_WAITING = 16  # visitors' runs that may wait for a slot of the shared batch (AppConfig.batch_runs)
EXAMPLES_DIR = registry.ASSETS / "examples"
KNOWN_FAILURES_FILE = "known-failures.json"  # beside the examples: id -> why the shipped model fails it
RESULTS_DIR = registry.ASSETS / "results"  # finished result files of the held-out world
DATASETS_DIR = registry.ASSETS / "world" / "heldout"
SWEEP_REPORT = registry.ASSETS / "bench" / "single-pass.json"  # written by bench single-pass --write

# Shown when assets/examples/<task>.jsonl is missing, so the page still has something to run.
FALLBACK_EXAMPLES = {
    "entity-linking": [{"text": "Ivo Brandel directed a film that was shot in Corvale."}],
    "multi-hop": [{"text": "Where was the director of Film A born?"}],
    "single-hop": [{"text": "How many inhabitants does Corvale have?"}],
}


class AppError(OneGenError):
    """A failure with a message written for the person using the page."""


def sentence(e: Exception) -> str:
    """A library error's message as a sentence for the page: capitalised, with a full stop."""
    text = str(e)
    return text[:1].upper() + text[1:] + "."


class RunGuard:
    """The runs going on per visitor (a browser tab or an API client, by gradio's session hash):
    at most `limit` at once, refused with a readable AppError beyond that, and a stop flag per run
    that the page's Stop button sets and the run checks between tokens.

        ticket = guard.reserve(key)               # at the click, before the run waits in the queue
        with guard.start(key, ticket) as stop:    # AppError when `key` has `limit` runs going
            if stop.is_set(): ...                 # Stop was pressed while it waited: nothing runs
            for ev in events:
                if stop.is_set(): ...

    A reservation lets Stop reach a run that is still queued behind other visitors' runs; `start`
    takes exactly the ticket its click reserved, so a reservation whose run never started (a full
    queue, a closed tab) cannot stop a later run. Unclaimed ones are dropped after an hour.
    """

    RESERVATION_TTL_S = 3600.0

    def __init__(self, limit: int = RUNS_PER_VISITOR):
        self.limit = limit
        self._lock = threading.Lock()
        self._runs: dict[str, list[threading.Event]] = {}
        self._waiting: dict[str, threading.Event] = {}  # ticket -> its flag
        self._owner: dict[str, tuple[str, float]] = {}  # ticket -> (visitor key, reserved at)
        self._tickets = 0

    def reserve(self, key: str | None) -> str:
        """A ticket for a run about to wait in the queue: Stop sets its flag from now on."""
        now = time.monotonic()
        with self._lock:
            for ticket, (_, at) in list(self._owner.items()):
                if now - at > self.RESERVATION_TTL_S:
                    self._owner.pop(ticket)
                    self._waiting.pop(ticket, None)
            self._tickets += 1
            ticket = f"t{self._tickets}"
            self._waiting[ticket] = threading.Event()
            self._owner[ticket] = (key or "", now)
        return ticket

    @contextmanager
    def start(self, key: str | None, ticket: str | None = None) -> Iterator[threading.Event]:
        key = key or ""
        with self._lock:
            going = self._runs.setdefault(key, [])
            if len(going) >= self.limit:
                raise AppError(f"You already have {len(going)} run{'s' if len(going) != 1 else ''} going; wait "
                               "for it to finish or press Stop, then try again.")
            flag = None
            if ticket is not None and self._owner.get(ticket, ("",))[0] == key:
                flag = self._waiting.pop(ticket, None)
                self._owner.pop(ticket, None)
            flag = flag or threading.Event()
            going.append(flag)
        try:
            yield flag
        finally:
            with self._lock:
                going.remove(flag)
                if not going:
                    self._runs.pop(key, None)

    def stop(self, key: str | None) -> bool:
        """Ask every run of `key`, going or still queued, to stop; False when it has none."""
        key = key or ""
        with self._lock:
            flags = list(self._runs.get(key, []))
            flags += [self._waiting[t] for t, (owner, _) in self._owner.items() if owner == key and t in self._waiting]
        for flag in flags:
            flag.set()
        return bool(flags)

    def going(self, key: str | None) -> int:
        with self._lock:
            return len(self._runs.get(key or "", []))

    @property
    def busy(self) -> bool:
        """Some visitor's run is going."""
        with self._lock:
            return bool(self._runs)


# (model, task) -> the token chooser of that task's runs; tests script a tiny random model with one.
ChooserFactory = Callable[[LoadedModel, str], TokenChooser]


@dataclass(frozen=True)
class EvaluatedFile:
    """A finished dataset run: its results, and how many of them an earlier run's file gave back."""

    results: ResultSet
    resumed: int
    skipped: int = 0  # items of the dataset that could not be read
    warnings: tuple[str, ...] = ()  # what the dataset loader noted (ids derived from positions)
    # The index searched, and a warning when it lacks most documents the dataset names.
    index_note: str | None = None
    index_warning: bool = False

    @property
    def examples(self) -> int:
        return len(self.results.records)


def env_name(task: str) -> str:
    return "ONEGEN_INDEX_" + task.upper().replace("-", "_")


# The optional ImpRAG model beside the OneGen model (docs/imprag.md): its folder and its index.
IMPRAG = "imprag"
IMPRAG_TASK = "single-hop"  # the mode answers questions that retrieve once from their input
IMPRAG_MODEL_ENV = "ONEGEN_IMPRAG_MODEL"
IMPRAG_INDEX_ENV = "ONEGEN_IMPRAG_INDEX"
IMPRAG_HOWTO = ("Train one with `python -m onegen train --recipe assets/recipes/imprag-smol.json`, build its index with "
                "`python -m index_builder world assets/world/heldout --task single-hop --model MODEL --out "
                "runs/idx-imprag --imprag-layers`, then start the app with `--imprag-model MODEL --imprag-index "
                f"runs/idx-imprag` (or set {IMPRAG_MODEL_ENV} and {IMPRAG_INDEX_ENV}).")
IMPRAG_NOT_CONFIGURED = (f"No ImpRAG model is configured, so the ImpRAG mode is off (the shipped imprag-smol goes "
                         f"beside the embedded default on its own world only). {IMPRAG_HOWTO}")
IMPRAG_NO_REPLAY = ("An ImpRAG run cannot be replayed here: it has no retrieval token to replay from, and its "
                    "middle layers read the passages it found beside the input, all at once.")
IMPRAG_INDEX_HINT = (f"start the app with --imprag-index FOLDER or set {IMPRAG_INDEX_ENV}; build one with "
                     "`python -m index_builder world WORLD --task single-hop --model MODEL --out FOLDER --imprag-layers`")


@dataclass
class AppConfig:
    """Where the model and indexes come from. Flags win over environment variables, which win over
    the registry's defaults (the embedded model and its indexes)."""

    model: str | None = None  # registry name, hub id or folder; None: $ONEGEN_MODEL or the embedded default
    indexes: dict[str, str] = field(default_factory=dict)  # task -> folder
    examples_dir: Path = EXAMPLES_DIR
    results_dir: Path = RESULTS_DIR
    datasets_dir: Path = DATASETS_DIR
    sweep_report: Path = SWEEP_REPORT
    device: str | None = None  # None: a GPU when present, else the CPU
    max_input_chars: int = MAX_INPUT_CHARS
    # The folder of the generated world the indexes hold (its evaluation files), described on the
    # Run tab and offered when a run finds no confident match. None: the held-out world for the
    # embedded default searching its own indexes, nothing for any other model or index.
    world_dir: Path | None = None
    # Visitors' runs decoded together: up to this many in one batch (onegen/batch.py), at most
    # BATCH_WAITING more waiting for a slot. 0 or 1: one run at a time.
    batch_runs: int = 0
    # An ImpRAG model (a model whose info records its layer groups) and its single-hop index, built
    # with `index_builder ... --imprag-layers`. None: $ONEGEN_IMPRAG_MODEL / $ONEGEN_IMPRAG_INDEX,
    # else the mode is off.
    imprag_model: str | None = None
    imprag_index: str | None = None

    def model_name(self) -> str:
        return self.model or os.environ.get("ONEGEN_MODEL") or registry.DEFAULT_EMBEDDED

    def imprag_model_name(self) -> str | None:
        """The flag, else the environment ("" or "none" in either turns the mode off), else the shipped
        ImpRAG model when the OneGen side is the embedded default on its own invented world (the
        ImpRAG index holds the same world), else None: the mode is off."""
        name = self.imprag_model if self.imprag_model is not None else os.environ.get(IMPRAG_MODEL_ENV)
        if name is not None:
            return None if name.strip().lower() in ("", "none", "off") else name
        if self.invented_world() is not None and self.model_name() == registry.DEFAULT_EMBEDDED \
                and registry.shipped(registry.DEFAULT_IMPRAG):
            return registry.DEFAULT_IMPRAG
        return None

    def imprag_index_path(self) -> str | None:
        """The flag, else the environment, else the registry's index of a registry ImpRAG model."""
        given = self.imprag_index or os.environ.get(IMPRAG_INDEX_ENV)
        if given:
            return given
        name = self.imprag_model_name()
        entry = registry.lookup(name) if name else None
        return entry.indexes.get(IMPRAG_TASK) if entry else None

    def index_path(self, task: str) -> str | None:
        return self.indexes.get(task) or registry.default_index(self.model_name(), task)

    def invented_world(self) -> Path | None:
        """The world folder the indexes hold, when they hold a generated one (see `world_dir`)."""
        if self.world_dir is not None:
            return Path(self.world_dir)
        entry = registry.lookup(self.model_name())
        if entry is None or not entry.embedded:
            return None
        own = all(self.index_path(t) == entry.indexes.get(t) for t in entry.tasks)
        return Path(self.datasets_dir) if own else None


@dataclass(frozen=True)
class InventedWorld:
    """What the Run tab says about an invented world: its overview, and the task whose index the
    entity names come from (their links open that index's browser)."""

    overview: WorldOverview
    names_task: str | None


class AppState:
    def __init__(self, config: AppConfig | None = None, chooser_for: ChooserFactory | None = None):
        self.config = config or AppConfig()
        self.chooser_for = chooser_for  # None: the engine's own choice (the model's greedy pick)
        self._model = None
        self._model_lock = threading.Lock()
        self._indexes: dict[str, VectorIndex] = {}
        self._id_rows: dict[str, dict[str, int]] = {}
        self._index_locks = {t: threading.Lock() for t in TASK_NAMES}
        self._sweep: tuple[float, dict | None] | None = None  # (file mtime, report): read once per change
        self._world: tuple[InventedWorld | None] | None = None  # read once; (None,) when there is none
        self._world_lock = threading.Lock()
        # Forward passes run one step at a time across visitors (the queue also limits runs to one).
        self.run_lock = threading.Lock()
        self.runs = RunGuard()
        self._batch = None  # the shared decode loop of visitors' runs, made at the first run
        self._batch_lock = threading.Lock()
        self._imprag_model = None
        self._imprag_index: VectorIndex | None = None
        self._imprag_lock = threading.Lock()

    # -- the model ----------------------------------------------------------------------------------
    @property
    def model_loaded(self) -> bool:
        return self._model is not None

    def model(self):
        if self._model is not None:
            return self._model
        with self._model_lock:
            if self._model is None:
                self._model = self._load_model(self.config.model_name())
        return self._model

    def _load_model(self, name: str, flag: str = "--model"):
        from .loading import ModelLoadError, load_model

        problem = self._model_problem(name, flag)
        if problem:
            raise AppError(problem)
        log.info("loading model %s", name)
        try:
            return load_model(name, device=self.config.device)
        except (ModelLoadError, MissingTokenError, OSError, ValueError) as e:
            raise AppError(f"The model {name!r} could not be loaded: {e}") from e

    @staticmethod
    def _model_problem(name: str, flag: str = "--model") -> str | None:
        """A readable reason why `name` (given by `flag`) cannot load, found without loading anything."""
        entry = registry.lookup(name)
        if entry is not None and entry.embedded and not Path(entry.source).is_dir():
            return (f"The embedded model {name!r} is not installed: {entry.source} does not exist yet. "
                    f"Train it with `python -m onegen train`, or start the app with {flag} FOLDER_OR_HUB_ID.")
        if entry is None and not Path(name).exists():
            looks_like_path = name.startswith(("/", ".", "~")) or name.count("/") != 1
            if looks_like_path:
                return f"The model folder {name!r} does not exist. Give {flag} a folder or a Hugging Face id."
        return None

    def preload(self) -> None:
        """Load the model and every task's index now (from a background thread at start-up), then
        warm up each task's decode path with one short run, so the first click does not wait. A
        failure is only logged: the page reports it when that part is used, as it would without a
        preload."""
        try:
            lm = self.model()
        except AppError as e:
            log.warning("preload: %s", e)
            return
        for task in TASK_NAMES:
            if task not in lm.tasks:
                continue
            try:
                self.retriever(task, lm)
            except AppError as e:
                log.warning("preload: %s", e)
        for task in TASK_NAMES:  # the copy constraint's byte table (about 0.3 s for 49k tokens)
            if get_task(task).copies_input and task in lm.tasks:
                vocabulary_bytes(lm.ptok(task).hf)
        if self.imprag_configured:
            try:
                self.imprag_retriever()
            except AppError as e:
                log.warning("preload: %s", e)
        self.world()  # the invented world's description reads the result files (1-2 s): not on the first page
        log.info("preload: model and indexes ready")
        for task in TASK_NAMES:
            if task in lm.tasks and not self.runs.busy:
                self._warm_up(task, lm)

    def _warm_up(self, task: str, lm: LoadedModel) -> None:
        """One short run of `task`'s first example, thrown away: the first forward passes at new
        shapes, the fused decoder's weights and the search are paid here rather than by the first
        visitor's run (which was 3-8x slower than the next). Never shown, never counted. It gives
        way as soon as a visitor's run starts: sharing the steps would make that first run slower
        than the cold path it is there to avoid (measured 1.85x a warm run's engine time)."""
        started = time.perf_counter()
        try:
            retriever = self.retriever(task, lm)
            text = self.examples(task)[0]["text"]
            events = self.engine(task, lm).run(task, text, retriever=retriever,
                                               settings=RunSettings(top_k=MAX_TOP_K, max_new_tokens=WARM_UP_TOKENS))
            while not self.runs.busy:
                with self.run_lock:
                    if next(events, None) is None:
                        break
            else:
                events.close()
                log.info("preload: %s warm-up gave way to a visitor's run", task)
                return
        except Exception as e:  # noqa: BLE001 - a warm-up only saves time; its failure is the real run's to report
            log.warning("preload: warm-up run of %s failed: %s", task, e)
            return
        log.info("preload: %s warmed up in %.1f s", task, time.perf_counter() - started)

    # -- indexes ------------------------------------------------------------------------------------
    def index(self, task: str) -> VectorIndex:
        """The task's index, loaded once. The protocol is checked here; the model match in `retriever`."""
        if task not in TASK_NAMES:
            raise AppError(f"Unknown task {task!r}; choose one of: {', '.join(TASK_NAMES)}.")
        if task in self._indexes:
            return self._indexes[task]
        with self._index_locks[task]:
            if task not in self._indexes:
                path = self._index_folder(task)
                try:
                    idx = VectorIndex.load(path, protocol=task)
                except IndexLoadError as e:
                    raise AppError(f"The {get_task(task).label} index cannot be used: {e}") from e
                self._id_rows[task] = {doc_id: i for i, doc_id in enumerate(idx.documents.ids())}
                self._indexes[task] = idx
        return self._indexes[task]

    def _index_folder(self, task: str) -> Path:
        return index_folder(self.config.index_path(task), get_task(task).label,
                            f"start the app with --index-{task} FOLDER or set {env_name(task)}")

    def retriever(self, task: str, lm) -> IndexRetriever:
        idx = self.index(task)
        m = idx.manifest
        if m.model_fingerprint and m.model_fingerprint != lm.fingerprint:
            raise AppError(f"The {get_task(task).label} index was built with model {m.model!r}, not the loaded model "
                           f"{lm.name!r}; its vectors would not match the queries. Rebuild it with this model.")
        if idx.dim != lm.hidden_size:
            raise AppError(f"The {get_task(task).label} index has {idx.dim}-d vectors; the model makes "
                           f"{lm.hidden_size}-d vectors.")
        return IndexRetriever(idx, label=str(idx.path))

    # -- the ImpRAG model (optional, beside the OneGen model) -----------------------------------------
    @property
    def imprag_configured(self) -> bool:
        """Whether an ImpRAG model is configured (its index may still be missing: its runs say so)."""
        return self.config.imprag_model_name() is not None

    def imprag_model(self) -> LoadedModel:
        """The ImpRAG model, loaded once; the OneGen model itself when both are the same."""
        name = self.config.imprag_model_name()
        if name is None:
            raise AppError(IMPRAG_NOT_CONFIGURED)
        if name == self.config.model_name():
            lm = self.model()
        else:
            if self._imprag_model is None:
                with self._imprag_lock:
                    if self._imprag_model is None:
                        self._imprag_model = self._load_model(name, "--imprag-model")
            lm = self._imprag_model
        if IMPRAG_TASK not in lm.tasks:
            raise AppError(f"The ImpRAG model {lm.name!r} cannot answer {get_task(IMPRAG_TASK).label}: its tokenizer "
                           "lacks the protocol's tokens.")
        return lm

    def loaded_model(self, mode: str) -> LoadedModel | None:
        """The model that runs of `mode` use, when it is loaded; loads nothing."""
        if mode == IMPRAG and self.config.imprag_model_name() != self.config.model_name():
            return self._imprag_model
        return self._model

    def imprag_retriever(self) -> IndexRetriever:
        """The ImpRAG index, loaded once and searched with the ImpRAG model's implicit queries. An index
        of other weights, layer groups, token pooling or centring is refused with the index's own words."""
        from .imprag import ImpragError, ImpragQuery

        lm = self.imprag_model()
        if self._imprag_index is None:
            with self._imprag_lock:
                if self._imprag_index is None:
                    folder = index_folder(self.config.imprag_index_path(), "ImpRAG", IMPRAG_INDEX_HINT)
                    try:
                        query = ImpragQuery(lm)
                        self._imprag_index = VectorIndex.load(folder, protocol=IMPRAG_TASK,
                                                              model_fingerprint=lm.fingerprint, dim=query.dimension,
                                                              layer_split=query.layer_split)
                    except (IndexLoadError, ImpragError) as e:
                        raise AppError(f"The ImpRAG index cannot be used: {e}") from e
        return IndexRetriever(self._imprag_index, label=str(self._imprag_index.path))

    def document(self, task: str, doc_id: str) -> tuple[int, Document] | None:
        idx = self.index(task)
        row = self._id_rows[task].get(str(doc_id))
        return None if row is None else (row, idx.documents[row])

    def neighbours(self, task: str, row: int, k: int = 5) -> list[tuple[Document, float]]:
        idx = self.index(task)
        hits = idx.search(idx.document_vector(row), k + 1)[0]
        return [(idx.documents[h.doc], h.score) for h in hits if h.doc != row][:k]

    def links(self, task: str, doc_ids) -> dict[str, str]:
        """doc id -> link: the document's own http(s) URL (real corpora), else the index browser."""
        out: dict[str, str] = {}
        try:
            idx = self.index(task)
        except AppError:
            return out
        rows = self._id_rows[task]
        for doc_id in dict.fromkeys(doc_ids):
            row = rows.get(doc_id)
            if row is None:
                continue
            url = idx.documents[row].extra.get("url") if idx.documents[row].extra else None
            if isinstance(url, str) and url.startswith(("https://", "http://")):
                out[doc_id] = url
            else:
                out[doc_id] = browse_href(task, doc_id)
        return out

    # -- examples -----------------------------------------------------------------------------------
    def examples(self, task: str) -> list[dict]:
        path = Path(self.config.examples_dir) / f"{task}.jsonl"
        out = []
        try:
            for line in path.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line:
                    row = json.loads(line)
                    if isinstance(row, dict) and isinstance(row.get("text"), str) and row["text"].strip():
                        out.append(row)
        except (OSError, json.JSONDecodeError) as e:
            log.info("no examples from %s: %s", path, e)
        failures = self._known_failures()
        out = [{**row, "known_failure": failures[row["id"]]} if row.get("id") in failures else row for row in out]
        return out or FALLBACK_EXAMPLES.get(task, [])

    def _known_failures(self) -> dict[str, str]:
        """Example id -> why the shipped model gets it wrong (a note about the model, kept apart from
        the examples the world generator writes)."""
        path = Path(self.config.examples_dir) / KNOWN_FAILURES_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            log.info("no known failures from %s: %s", path, e)
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def example(self, task: str, text: str | None) -> dict | None:
        """The example of `task` whose text this is (None: text a user typed)."""
        return next((ex for ex in self.examples(task) if ex["text"] == text), None) if text else None

    @staticmethod
    def example_verdict(example: dict, trace: Trace) -> bool | None:
        """Whether a run got its example right: the answer by normalised exact match, or the linked
        entities against the gold links; None when the example has neither."""
        from .metrics import exact_match

        if isinstance(example.get("answer"), str):
            return bool(exact_match(trace.result.answer or "", example["answer"]))
        gold = {link.get("entity") for link in example.get("links") or [] if isinstance(link, dict)}
        if gold:
            return {e.entity_id for e in trace.result.entities or []} == gold
        return None

    def candidates_named(self, task: str, name: str, limit: int = 6) -> list[Document]:
        """The documents titled `name` or "`name` (...)": the candidates an ambiguous name could
        mean; none when the index cannot be had."""
        try:
            idx = self.index(task)
        except AppError:
            return []
        docs = [idx.documents[i] for i in idx.find_titles(name, limit=len(idx))]
        wanted = name.strip().lower()
        return [d for d in docs if d.title.lower() == wanted or d.title.lower().startswith(wanted + " (")][:limit]

    # -- the invented world -------------------------------------------------------------------------
    def world(self) -> InventedWorld | None:
        """The invented world the indexes hold (entity types and names from the first index whose
        documents carry types, questions from the world's evaluation files), read once; None when
        the indexes hold no generated world."""
        if self._world is not None:
            return self._world[0]
        with self._world_lock:
            if self._world is None:
                self._world = (self._read_world(),)
        return self._world[0]

    def _read_world(self) -> InventedWorld | None:
        from .model_card import matching_results
        from .world_overview import entity_names, example_questions, measured_scores

        folder = self.config.invented_world()
        if folder is None or not folder.is_dir():
            return None
        types, names, names_task, fingerprints, models = [], {}, None, {}, set()
        for task in TASK_NAMES:
            try:
                idx = self.index(task)
            except AppError:
                continue
            fingerprints[task] = idx.fingerprint
            models.add(idx.manifest.model_fingerprint)
            if not types:
                types, names = entity_names([idx.documents[i] for i in range(len(idx))])
                names_task = task if types else None
        questions = example_questions(folder)
        if not types and not questions:
            return None
        # The result files written by the models that built these indexes (a damaged one is left out).
        runs = [rs for model in sorted(models) for rs in matching_results(self.config.results_dir, model)]
        scores = measured_scores(runs, fingerprints)
        return InventedWorld(WorldOverview(types=types, names=names, examples=questions, scores=scores), names_task)

    # -- bundled files for the error browser ---------------------------------------------------------
    # The page picks these by name; a name not listed here is refused, so no other server path opens.
    def bundled_results(self) -> dict[str, Path]:
        return _jsonish_files(Path(self.config.results_dir), (".jsonl",))

    def bundled_datasets(self) -> dict[str, Path]:
        return _jsonish_files(Path(self.config.datasets_dir), (".json", ".jsonl"))

    def evaluate_file(self, data: Path, task: str | None, *, candidates: str, limit: int, top_k: int,
                      out_dir: Path, on_progress=None) -> EvaluatedFile:
        """Run the first `limit` examples of a dataset file through the loaded model and its index.
        The result file's name depends on the data and the settings, so the same request again
        resumes (finished examples are skipped). The app's one call of `evaluate`, and the one
        place that reads its report."""
        from .datasets import DatasetFormatError, load_dataset
        from .batch import default_batch_size
        from .evaluation import DataSource, EvaluationError, EvaluationSettings, evaluate

        if task is not None and task not in TASK_NAMES:
            raise AppError(f"Unknown task {task!r}; choose one of: {', '.join(TASK_NAMES)}.")
        if not 1 <= int(limit) <= MAX_DATASET_EXAMPLES:
            raise AppError(f"Run between 1 and {MAX_DATASET_EXAMPLES} examples here; "
                           "score whole datasets with `python -m onegen evaluate`.")
        try:
            data_set = load_dataset(data, task, skip_bad=True)
        except (DatasetFormatError, ValueError, OSError) as e:
            raise AppError(f"This file is not a dataset the evaluator reads: {e}") from e
        task = data_set.task
        if not len(data_set):
            raise AppError("The dataset has no readable example." +
                           (f" First problem: {data_set.errors[0][1]}" if data_set.errors else ""))
        modes = get_task(task).candidate_modes
        mode = candidates if len(modes) > 1 else modes[0]  # a task with one candidates mode always uses it
        if mode not in ("index", "context"):
            raise AppError("Candidates are either the task's index or each question's own context.")
        lm = self.model()
        if task not in lm.tasks:
            raise AppError(f"The model {lm.name!r} cannot run {get_task(task).label}.")
        index = None
        if mode == "index":
            self.retriever(task, lm)  # refuses an index of another model with a readable message
            index = self.index(task)
        digest = hashlib.sha256()
        digest.update(sha256_file(data).encode())
        digest.update(json.dumps([task, mode, int(limit), int(top_k), lm.fingerprint]).encode())
        out = Path(out_dir) / f"{task}-{digest.hexdigest()[:16]}.jsonl"
        examples, source = DataSource.select(data_set, limit=int(limit))
        try:
            with self.run_lock:
                # Examples decode together (onegen/batch.py), as many as the free memory holds.
                report = evaluate(self.engine(task, lm), task, examples,
                                  EvaluationSettings(candidates=mode, top_k=int(top_k)), index=index,
                                  out=out, progress=False, on_progress=on_progress, source=source,
                                  batch_size=min(len(examples), default_batch_size(lm)))
        except EvaluationError as e:
            raise AppError(f"The evaluation stopped: {e}") from e
        results = ResultSet(path=out, task=report.task, run=report.records[0].line["onegen"]["run"],
                            records=report.records, metrics=report.metrics)
        coverage = report.index_coverage
        return EvaluatedFile(results=results, resumed=int(report.metrics.get("resumed", 0)),
                             skipped=len(data_set.errors), warnings=tuple(data_set.warnings),
                             index_note=coverage.message(app=True) if coverage is not None else None,
                             index_warning=coverage is not None and coverage.mostly_missing)

    # -- runs ---------------------------------------------------------------------------------------
    def check_input(self, text, top_k) -> tuple[str, int]:
        if not isinstance(text, str) or not text.strip():
            raise AppError("The input is empty: type a sentence or a question, or pick an example.")
        limit = self.config.max_input_chars
        if len(text) > limit:
            raise AppError(f"The input has {len(text):,} characters; this app accepts at most {limit:,}.")
        try:
            k = int(top_k)
        except (TypeError, ValueError):
            raise AppError("top_k must be a whole number.") from None
        if not 1 <= k <= MAX_TOP_K:
            raise AppError(f"top_k must be between 1 and {MAX_TOP_K}.")
        return text, k

    def chooser(self, lm: LoadedModel, task: str) -> TokenChooser | None:
        """The token chooser of `task`'s runs; None: the engine's default."""
        return self.chooser_for(lm, task) if self.chooser_for else None

    def engine(self, task: str, lm: LoadedModel) -> Engine:
        return Engine(lm, chooser=self.chooser(lm, task))

    def stream(self, task: str, text: str, top_k: int = 5, copy_input: bool = True,
               mode: str = DEFAULT_MODE, checks: bool = True) -> Iterator[Event]:
        """Engine events of one run. The lock is held per step, never across a yield, so a session
        that disconnects mid-run cannot keep the model from others. `copy_input` (entity linking):
        constrain the output to the input plus mention tags. `mode` "imprag": the ImpRAG model on its
        own index (single-hop only). `checks`: the result checks the model declares
        (onegen/result_checks.py); False shows the result as the model wrote it."""
        if task not in TASK_NAMES:
            raise AppError(f"Unknown task {task!r}; choose one of: {', '.join(TASK_NAMES)}.")
        text, k = self.check_input(text, top_k)
        if mode == IMPRAG:
            yield from self._imprag_stream(task, text, k)
            return
        if mode != DEFAULT_MODE:
            raise AppError(f"Runs here use {MODE_LABELS[DEFAULT_MODE]} or {MODE_LABELS[IMPRAG]}, not {mode!r}.")
        lm = self.model()
        if task not in lm.tasks:
            raise AppError(f"The model {lm.name!r} cannot run {get_task(task).label}: its tokenizer lacks the "
                           f"protocol's tokens. It supports: {', '.join(lm.tasks) or 'no task'}.")
        retriever = self.retriever(task, lm)
        settings = RunSettings(top_k=k, copy_input=bool(copy_input),
                               **({} if checks else {key: "off" for key in CHECKS}))
        if self.config.batch_runs > 1:
            yield from self._batched_stream(task, text, lm, retriever, settings)
            return
        yield from self._stepped(self.engine(task, lm).run(task, text, retriever=retriever, settings=settings))

    def _imprag_stream(self, task: str, text: str, k: int) -> Iterator[Event]:
        """A run of the ImpRAG mode: the ImpRAG model on its own index, one step at a time (its
        layer-split forward never joins the shared batch)."""
        mode = self._check_imprag_task(task)
        retriever = self.imprag_retriever()
        lm = self.imprag_model()
        engine = mode.make_engine(lm)
        engine.chooser = self.chooser(lm, task)
        yield from self._stepped(engine.run(task, text, retriever=retriever, settings=RunSettings(top_k=k)))

    @staticmethod
    def _check_imprag_task(task: str):
        """The ImpRAG mode, when it can run `task` (an AppError saying why not otherwise)."""
        from .modes import ModeError, get_mode

        mode = get_mode(IMPRAG)
        try:
            mode.check_task(task)
        except ModeError as e:
            raise AppError(sentence(e)) from e
        return mode

    def _stepped(self, events: Iterator[Event]) -> Iterator[Event]:
        """A run's events, each step under the run lock."""
        while True:
            with self.run_lock:
                try:
                    ev = next(events)
                except StopIteration:
                    return
                except InputError as e:
                    raise AppError(sentence(e)) from e
            yield ev

    def _batched_stream(self, task: str, text: str, lm: LoadedModel, retriever, settings: RunSettings) -> Iterator[Event]:
        """The run as one of the shared batch's: its own events, decoded beside other visitors' runs."""
        from .batch import BatchEngine, BatchJob, BatchQueueFull, BatchService

        with self._batch_lock:
            if self._batch is None:
                self._batch = BatchService(BatchEngine(lm, batch_size=self.config.batch_runs), max_waiting=BATCH_WAITING)
        try:
            events = self._batch.submit(BatchJob(task, text, retriever=retriever, settings=settings,
                                                 chooser=self.chooser(lm, task)))
        except BatchQueueFull as e:
            raise AppError(f"The model is busy: {e}.") from e
        try:
            yield from events
        except InputError as e:
            raise AppError(sentence(e)) from e
        finally:
            events.close()  # a page that left ends its run in the batch

    def stopped_trace(self, live: Trace, seconds: float) -> Trace:
        """A run stopped before its end, as far as it got: its tokens and retrievals, its prompt and
        forward tokens counted from them (the engine reports its own cost only when a run ends)."""
        written = sum(t.kind != "inserted" for t in live.tokens)
        live.cost.forward_tokens.update(generated=written, inserted=len(live.tokens) - written)
        live.cost.seconds["total"] = seconds
        lm = self.loaded_model(live.mode)
        if lm is not None and live.task in lm.tasks and live.input.strip():
            live.prompt_text, live.prompt_ids = self.engine(live.task, lm).prompt_ids(live.task, live.input)
            live.cost.forward_tokens["prompt"] = len(live.prompt_ids)
        n = len(live.retrievals)
        live.error = (f"Stopped from the page after {written} tokens and {n} retrieval{'s' if n != 1 else ''}, "
                      "before the run ended: there is no final result.")
        return live

    def run_trace(self, task: str, text: str, top_k: int = 5, copy_input: bool = True,
                  mode: str = DEFAULT_MODE, checks: bool = True) -> Trace:
        trace = None
        for ev in self.stream(task, text, top_k, copy_input, mode, checks):
            if isinstance(ev, DoneEvent):
                trace = ev.trace
        if trace is None:
            raise AppError("The run ended without a result.")
        return trace

    # -- what if (onegen/replay.py) ----------------------------------------------------------------
    def replay(self, trace: Trace, step: int, choice: ReplayChoice, example=None) -> ReplayComparison:
        """`trace` run again from its retrieval `step` with `choice` there, on the loaded model and
        the documents the run searched (the task's index, or the example's own context when the run
        read per-run candidates); compared with the original, and judged when `example` is given."""
        if trace.task not in TASK_NAMES:
            raise AppError(f"Unknown task {trace.task!r}; choose one of: {', '.join(TASK_NAMES)}.")
        if trace.mode == IMPRAG:
            raise AppError(IMPRAG_NO_REPLAY)
        return self.replay_with(trace, step, choice, example, self._searched(trace, self.model(), example))

    def gold_replay(self, trace: Trace, example) -> ReplayComparison:
        """The Error browser's "would the right document have fixed it?": the first retrieval that
        missed its gold document, replayed with that document (a recorded candidate or the index's)."""
        from .replay import ReplayError, gold_choice

        if trace.mode == IMPRAG:
            raise AppError(IMPRAG_NO_REPLAY)
        lm = self.model()
        searched = self._searched(trace, lm, example)
        index = getattr(searched, "index", None)
        if index is None:  # per-run candidates: encoded once here, and searched again by the replay
            searched = self.engine(trace.task, lm).candidate_retriever(trace.task, searched)
            index = searched.index
        try:
            step, choice = gold_choice(trace, example, index)
        except ReplayError as e:
            raise AppError(sentence(e)) from e
        return self.replay_with(trace, step, choice, example, searched)

    def replay_with(self, trace: Trace, step: int, choice: ReplayChoice, example, searched) -> ReplayComparison:
        """The replay itself, on `searched` (a retriever, or candidate documents to encode)."""
        from .replay import ReplayError, replay

        try:
            with self.run_lock:
                return replay(trace, self.engine(trace.task, self.model()), searched, step, choice, example)
        except (ReplayError, InputError) as e:
            raise AppError(sentence(e)) from e

    def _searched(self, trace: Trace, lm: LoadedModel, example=None):
        """What a trace's run searched: the task's index, or (a run over per-run candidates) the
        example's own context documents."""
        if (trace.index or {}).get("path") == "candidates":
            docs = get_task(trace.task).context_documents(example) if example is not None else []
            if not docs:
                raise AppError("This run searched documents given for it alone; the app cannot replay it "
                               "without them.")
            return docs
        return self.retriever(trace.task, lm)

    # -- the Compare view ---------------------------------------------------------------------------
    def compare(self, task: str, text: str, top_k: int, baseline: str | Sequence[str], repeats: int = 1,
                on_event: OnEvent | None = None) -> Comparison:
        """One input through OneGen and a baseline (or several, in order) on the same model and index
        (`onegen.baselines.compare`): the traces and their costs side by side, each mode run
        `repeats` times, interleaved, for the timing. "imprag" (single-hop, when configured) runs the
        ImpRAG model on its own index. `on_event(mode, event)` sees every event of every run as it
        happens; what it raises ends the comparison."""
        from .baselines import MAX_REPEATS, BaselineError, OwnModel, compare

        baselines = (baseline,) if isinstance(baseline, str) else tuple(baseline)
        known = (*BASELINE_NAMES, IMPRAG)
        if task not in TASK_NAMES:
            raise AppError(f"Unknown task {task!r}; choose one of: {', '.join(TASK_NAMES)}.")
        if not baselines or any(b not in known for b in baselines):
            raise AppError(f"Unknown baseline {baseline!r}; choose one of: {', '.join(known)}.")
        if not isinstance(repeats, int) or not 1 <= repeats <= MAX_REPEATS:
            raise AppError(f"Runs per mode must be a whole number from 1 to {MAX_REPEATS}, not {repeats!r}.")
        text, k = self.check_input(text, top_k)
        lm = self.model()
        if task not in lm.tasks:
            raise AppError(f"The model {lm.name!r} cannot run {get_task(task).label}.")
        self.retriever(task, lm)  # refuses an index of another model
        index = self.index(task)
        own = {}
        if IMPRAG in baselines:
            self._check_imprag_task(task)
            searched = self.imprag_retriever()
            imprag_lm = self.imprag_model()
            own[IMPRAG] = OwnModel(imprag_lm, searched.index, self.chooser(imprag_lm, task))
        try:
            with self.run_lock:
                # One token per forward call, like the sweep this run is plotted on.
                return compare(lm, task, text, modes=(DEFAULT_MODE, *baselines), index=index,
                               settings=RunSettings(top_k=k, draft_tokens=0), chooser=self.chooser(lm, task),
                               repeats=repeats, on_event=on_event, own=own)
        except InputError as e:
            raise AppError(sentence(e)) from e
        except (BaselineError, OSError) as e:
            raise AppError(f"The {' and '.join(baselines)} baseline could not run: {e}") from e

    def sweep_report(self) -> dict | None:
        """The last single-pass sweep (None when it was never written or cannot be read)."""
        path = Path(self.config.sweep_report)
        try:
            mtime = path.stat().st_mtime
            if self._sweep is None or self._sweep[0] != mtime:
                report = json.loads(path.read_text(encoding="utf-8"))
                ok = isinstance(report, dict) and isinstance(report.get("cells"), list)
                self._sweep = (mtime, report if ok else None)
        except (OSError, ValueError):
            return None
        return self._sweep[1]

    # -- for the About tab --------------------------------------------------------------------------
    def overview(self) -> list[tuple[str, str]]:
        """(kind, message) lines about the configuration, found without loading the model."""
        name = self.config.model_name()
        lines = []
        problem = self._model_problem(name)
        if problem:
            lines.append(("error", problem))
        elif self._model is not None:
            lines.append(("ok", f"Model {self._model.name} loaded on {self._model.device}."))
        else:
            lines.append(("info", f"Model {name} loads on the first run."))
        for task in TASK_NAMES:
            where = self.config.index_path(task)
            if where and is_hub_ref(where) and task not in self._indexes:  # no download just to describe it
                lines.append(("info", f"{get_task(task).label} index: {where} (downloaded on first use)."))
                continue
            try:
                folder = self._index_folder(task)
                m = read_manifest(folder)
                lines.append(("info", f"{get_task(task).label} index: {folder} ({m.documents:,} documents, "
                                      f"model {m.model or '?'}){calibration_words(folder, m)}."))
            except (AppError, IndexLoadError) as e:
                lines.append(("warn", str(e)))
            except CalibrationError as e:
                lines.append(("warn", f"{get_task(task).label} index: no confidence flags: {e}"))
        return lines + self._imprag_overview()

    def _imprag_overview(self) -> list[tuple[str, str]]:
        """(kind, message) lines about the ImpRAG model and its index, found without loading them."""
        name, where = self.config.imprag_model_name(), self.config.imprag_index_path()
        if name is None:
            if where:
                return [("warn", f"An ImpRAG index ({where}) is configured but no ImpRAG model: start the app with "
                                 f"--imprag-model MODEL or set {IMPRAG_MODEL_ENV}.")]
            return [("info", IMPRAG_NOT_CONFIGURED)]
        problem = self._model_problem(name, "--imprag-model")
        loaded = self.loaded_model(IMPRAG)
        lines = [("error", f"ImpRAG: {problem}") if problem else
                 ("ok", f"ImpRAG model {loaded.name} loaded on {loaded.device}.") if loaded is not None else
                 ("info", f"ImpRAG model {name} loads on its first run.")]
        if where and is_hub_ref(where) and self._imprag_index is None:
            return lines + [("info", f"ImpRAG index: {where} (downloaded on first use).")]
        try:
            folder = index_folder(where, "ImpRAG", IMPRAG_INDEX_HINT)
            m = read_manifest(folder)
        except (AppError, IndexLoadError) as e:
            return lines + [("warn", str(e))]
        split = m.layer_split or {}
        if not split:
            return lines + [("warn", f"The ImpRAG index {folder} holds the model's final hidden states, not vectors of "
                                     "a layer split: build it with `python -m index_builder ... --imprag-layers`.")]
        return lines + [("info", f"ImpRAG index: {folder} ({m.documents:,} documents, model {m.model or '?'}, layer "
                                 f"groups b={split.get('bottom')}, t={split.get('top')} of {split.get('n_layers')} "
                                 f"layers, query read at layer {split.get('layer')}).")]


def index_folder(where: str | None, label: str, hint: str) -> Path:
    """The folder of an index reference (a folder, or hf://owner/name downloaded once into the hub
    cache; offline, an earlier copy is used); an AppError that says what to do when there is none."""
    if not where:
        raise AppError(f"No index is configured for {label}: {hint}.")
    if is_hub_ref(where):
        try:
            return resolve_index_path(where)
        except (IndexFetchError, ValueError) as e:
            raise AppError(f"The {label} index {where} cannot be had: {e}") from e
    path = Path(where)
    if not path.is_dir():
        raise AppError(f"The {label} index folder {where} does not exist yet: {hint}.")
    return path


def calibration_words(folder: Path, manifest) -> str:
    """", calibrated: ..." for an index folder with a calibration (read without loading the index)."""
    cal = read_calibration(folder, content_fingerprint(manifest))
    if cal is None:
        return ", not calibrated (no confidence flags)"
    return f", calibrated: a {SIGNAL_WORDS[cal.signal]} below {cal.threshold:.3f} is {NO_CONFIDENT_MATCH}"


def _jsonish_files(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    try:
        return {p.name: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix in suffixes}
    except OSError:
        return {}
