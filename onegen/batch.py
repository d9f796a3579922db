"""Batched single-pass decoding: many runs in flight, one forward call a step for all of them.

Each run is the engine's own loop (`_Run.events()` in onegen/engine.py), unchanged: the same
protocol rules, stop rules, TokenChooser, copy constraint, retrieval and Trace. What changes is where
its forwards and searches go. Every run executes in its own worker thread, but only one thread runs
at a time (a baton passed by the scheduler, so the batch is deterministic and nothing races): a run
proceeds until it needs a forward pass or a search, hands that request to the scheduler and waits.
When every run in flight is waiting, the scheduler serves all the requests at once:

- forwards: one packed pass (`fused_llama.forward_packed`): the new ids of every run, whatever
  their number (one decoded token, a draft, a whole prompt or inserted document), are rows of one
  matrix for every projection and MLP, and each run attends only to its own KV cache at its own
  positions. No padding, so a document prefilled for one run costs the others nothing;
- searches: the query vectors of the runs whose step consumed a retrieval token, searched as one
  matrix per index (`IndexRetriever.search_many`).

A finished run leaves the batch and the next waiting one joins it at the following step
(continuous batching). Models outside the fused Llama path (another architecture, a GPU) still run
through the scheduler, each forward on its own decoder: correct, not faster. See docs/batching.md.

    engine = BatchEngine(lm, batch_size=8)
    for done in engine.run_many([BatchJob("multi-hop", q, candidates=docs) for q, docs in items]):
        done.index, done.trace, done.error
"""
from __future__ import annotations

import copy
import threading
import time
import queue
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch

from .documents import Document
from .engine import DoneEvent, Engine, Event, IndexRetriever, Retriever, RunSettings, TokenChooser, make_decoder
from .errors import OneGenError
from .fused_llama import FusedLlamaDecoder, SharedKVCache, forward_packed, fusable
from .loading import LoadedModel
from .memory import available_memory
from .trace import Cost, Hit, Trace


class BatchQueueFull(OneGenError):
    """More runs waiting for a shared batch than its bound allows. The message is for users."""


class BatchMemoryError(OneGenError, ValueError):
    """A batch whose KV caches would not fit the free memory. The message suggests a size that fits."""


# -- jobs and results ------------------------------------------------------------------------------

@dataclass
class BatchJob:
    """One run of a batch: what `Engine.run` takes, plus an optional chooser of its own (a script)."""

    task: str
    text: str
    retriever: Retriever | None = None
    candidates: Sequence[Document] | None = None
    settings: RunSettings | None = None
    chooser: TokenChooser | None = None
    key: Any = None  # the caller's label (an example id), returned with the result


@dataclass
class BatchResult:
    index: int  # position of the job in the list given to run_many
    job: BatchJob
    trace: Trace | None = None
    error: BaseException | None = None  # a OneGenError (bad input) or a bug, raised by this run alone
    seconds: float = 0.0  # from joining the batch to the end of the run (shared steps included)


# -- memory ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MemoryEstimate:
    per_sequence: int  # bytes of KV cache one sequence may fill (its `positions`)
    batch_size: int
    free: int  # bytes free on the model's device now
    budget: int  # the share of `free` that KV caches may take
    positions: int  # the most positions one sequence may reach

    @property
    def total(self) -> int:
        return self.per_sequence * self.batch_size

    @property
    def fits(self) -> bool:
        return self.total <= self.budget

    @property
    def suggested(self) -> int:
        """The largest batch size whose caches fit the budget (at least 1)."""
        return max(1, self.budget // max(1, self.per_sequence))


# KV caches may take this share of the free memory; the rest is for activations, documents and
# everything else the process holds.
MEMORY_SHARE = 0.5
DEFAULT_MAX_BATCH = 32


def kv_bytes_per_sequence(lm: LoadedModel, positions: int | None = None) -> int:
    """Keys and values of every layer for `positions` positions (default: the whole context)."""
    cfg = lm.model.config
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    elem = torch.empty((), dtype=lm.dtype).element_size()
    return 2 * cfg.num_hidden_layers * kv_heads * head_dim * elem * (positions or lm.context_length)


def run_positions(engine: Engine, job: BatchJob) -> int:
    """The most positions one run of `job` can fill, from its own limits: the prompt, the tokens the
    task may write (per segment where each insertion starts one), a draft checked past the end, and
    the documents it may insert, each bounded by the longest candidate's UTF-8 bytes (a token covers
    at least one byte). Never more than the context; the context itself where the documents are
    unknown (a retriever that is not an index)."""
    lm = engine.lm
    spec = lm.protocol(job.task).spec
    settings = job.settings or RunSettings()
    max_new = settings.max_new_tokens or spec.max_new_tokens
    retrievals = settings.max_retrievals if settings.max_retrievals is not None else spec.max_retrievals
    positions = len(engine.prompt_ids(job.task, job.text)[1]) + settings.draft_tokens + 1
    segmented = spec.query_from == "generated" and spec.insertion is not None
    positions += max_new * (retrievals + 1 if segmented else 1)
    if spec.insertion is not None:
        longest = _longest_document(job)
        if longest is None:
            return lm.context_length
        template = sum(len(part.encode()) for part in spec.insertion) + 2  # its words, open and close tokens
        # Single-hop inserts once from the prompt's query; the others once per retrieval token.
        positions += max(1, retrievals) * (longest + template)
    return min(lm.context_length, positions)


def _longest_document(job: BatchJob) -> int | None:
    if job.candidates is not None:
        return max((len(d.title.encode()) + len(d.text.encode()) for d in job.candidates), default=0)
    if isinstance(job.retriever, IndexRetriever):
        return job.retriever.index.documents.longest_bytes()
    return None


def free_memory(device: torch.device) -> int:
    """Bytes free on `device`: the GPU's own count, or the system's available memory."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return available_memory()


def memory_estimate(lm: LoadedModel, batch_size: int, free: int | None = None,
                    positions: int | None = None) -> MemoryEstimate:
    """KV caches of `batch_size` sequences of up to `positions` positions (default: the context)."""
    free = free_memory(lm.device) if free is None else free
    positions = min(positions or lm.context_length, lm.context_length)
    return MemoryEstimate(kv_bytes_per_sequence(lm, positions), batch_size, free, int(free * MEMORY_SHARE),
                          positions)


def check_memory(lm: LoadedModel, batch_size: int, free: int | None = None,
                 positions: int | None = None) -> MemoryEstimate:
    """The estimate, or a BatchMemoryError that names the size that fits."""
    if batch_size < 1:
        raise BatchMemoryError(f"the batch size must be at least 1 (got {batch_size})")
    est = memory_estimate(lm, batch_size, free, positions)
    if not est.fits:
        raise BatchMemoryError(
            f"a batch of {batch_size} needs up to {_gib(est.total)} of KV cache ({_gib(est.per_sequence)} per "
            f"sequence at {est.positions:,} positions) and {_gib(est.budget)} is available for it "
            f"({_gib(est.free)} free); try --batch-size {est.suggested}")
    return est


def default_batch_size(lm: LoadedModel, free: int | None = None, cap: int = DEFAULT_MAX_BATCH,
                       positions: int | None = None) -> int:
    """The size the evaluation uses when none is given: as many sequences as fit, at most `cap`."""
    return min(cap, memory_estimate(lm, 1, free, positions).suggested)


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


# -- the scheduler's side of a run -----------------------------------------------------------------

@dataclass
class _Forward:
    slot: "_Slot"
    ids: list[int]


@dataclass
class _Search:
    retriever: Retriever
    vector: torch.Tensor
    k: int


@dataclass
class _Failed:
    error: BaseException


class _Cancelled(Exception):
    """The batch was closed while this run was waiting."""


class _Worker:
    """A run in its own thread that only runs while the scheduler waits for it: `resume` hands it
    the answer to its last request and blocks until it asks the next one or ends."""

    current = threading.local()

    def __init__(self, index: int, job: BatchJob, body: Callable[["_Worker"], Trace],
                 cache: SharedKVCache | None = None):
        self.index, self.job, self.body = index, job, body
        self.cache = cache  # the batch's shared KV cache, where this run's fused decoders take a slot
        self.decoders: list[FusedLlamaDecoder] = []
        self.request: _Forward | _Search | None = None
        self.done = False
        self.trace: Trace | None = None
        self.error: BaseException | None = None
        self._reply: Any = None
        self.t0 = self.seconds = 0.0
        self._go = threading.Semaphore(0)
        self._back = threading.Semaphore(0)
        self._thread = threading.Thread(target=self._main, name=f"onegen-batch-{index}", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        self._go.acquire()
        _Worker.current.worker = self
        self.t0 = time.perf_counter()
        try:
            if isinstance(self._reply, _Failed):
                raise self._reply.error
            self.trace = self.body(self)
        except _Cancelled:
            pass
        except BaseException as e:  # noqa: BLE001 - one run's failure is its result, not the batch's
            self.error = e
        self.done, self.request = True, None
        self.seconds = time.perf_counter() - self.t0
        self._back.release()

    # the scheduler's thread
    def resume(self, reply: Any = None) -> None:
        self._reply = reply
        self._go.release()
        self._back.acquire()

    # the run's thread
    def ask(self, request: _Forward | _Search) -> Any:
        self.request = request
        self._back.release()
        self._go.acquire()
        self.request = None
        if isinstance(self._reply, _Failed):
            raise self._reply.error
        return self._reply


# A forward of at most this many ids is a decoded token with its draft: every row's logits are read.
# A longer one (a prompt, a document) is read at its last row only.
_HEAD_ALL_ROWS = 4


class _Slot:
    """A run's decoder in the batch: its own KV cache, its forwards served by the scheduler."""

    def __init__(self, inner: FusedLlamaDecoder | Any, worker: _Worker):
        self.inner, self.worker = inner, worker
        self.truncatable = getattr(inner, "truncatable", True)
        self.packed = isinstance(inner, FusedLlamaDecoder)
        self.name = "batched-fused-llama" if self.packed else "batched-transformers"
        self._logits: dict[int, torch.Tensor] = {}  # data_ptr of a hidden row -> its logits

    def forward(self, ids: Sequence[int]) -> torch.Tensor:
        self._logits = {}
        return self.worker.ask(_Forward(self, list(ids)))

    def known_logits(self, row: torch.Tensor) -> torch.Tensor | None:
        """The head's output for a row of this run's last forward, if the scheduler computed it
        (`BatchEngine._heads`); rows are told apart by where they live, since a row the run still
        holds cannot share its memory with another live row."""
        if row.dim() != 1:
            return None
        return self._logits.get(row.data_ptr())

    def truncate(self, length: int) -> None:
        self.inner.truncate(length)

    def __len__(self) -> int:
        return len(self.inner)


class _QueuedRetriever:
    """A run's retriever in the batch: searches wait for the step's other queries."""

    def __init__(self, inner: Retriever, worker: _Worker):
        self.inner, self.worker = inner, worker
        self.calibration = getattr(inner, "calibration", None)
        self.index = getattr(inner, "index", None)  # its titles case a typed name (onegen/input_normalization.py)

    def search(self, vector: torch.Tensor, k: int) -> list[Hit]:
        return self.worker.ask(_Search(self.inner, vector, k))

    def describe(self) -> dict:
        return self.inner.describe()


# -- the batched engine ----------------------------------------------------------------------------

class BatchEngine(Engine):
    """An Engine whose `run_many` decodes up to `batch_size` runs together. `run` and `run_trace`
    still decode one run alone, as the Engine does."""

    def __init__(self, lm: LoadedModel, query_encoder=None, chooser: TokenChooser | None = None,
                 batch_size: int = 8, share_prefixes: bool = True):
        super().__init__(lm, query_encoder=query_encoder, chooser=chooser)
        if batch_size < 1:
            raise BatchMemoryError(f"the batch size must be at least 1 (got {batch_size})")
        self.batch_size = batch_size
        self.share_prefixes = share_prefixes  # runs copy a common prompt prefix (docs/batching.md)

    @classmethod
    def like(cls, engine: Engine, batch_size: int) -> "BatchEngine":
        """A batched engine with `engine`'s model, query encoder (a mode) and chooser."""
        return cls(engine.lm, query_encoder=engine.query_encoder, chooser=engine.chooser, batch_size=batch_size)

    def make_decoder(self, fused: bool = True):
        worker = getattr(_Worker.current, "worker", None)
        if worker is None:
            return make_decoder(self.lm, fused)
        cache = worker.cache
        if fused and cache is not None and cache.free():
            inner = FusedLlamaDecoder(self.lm.model, shared=cache)
            worker.decoders.append(inner)
        else:  # no shared cache (another path), or a run's extra decoder: a cache of its own
            inner = make_decoder(self.lm, fused)
        return _Slot(inner, worker)

    def _shared_cache(self) -> SharedKVCache | None:
        """One KV cache for the batch's slots, on the fused path: its short steps attend together."""
        if fusable(self.lm.model, self.lm.device) is not None:
            return None
        return SharedKVCache(self.lm.model, self.batch_size, share_prefixes=self.share_prefixes)

    def candidate_retriever(self, task: str, docs: Sequence[Document], cost: Cost | None = None):
        inner = super().candidate_retriever(task, docs, cost)
        worker = getattr(_Worker.current, "worker", None)
        return inner if worker is None else _QueuedRetriever(inner, worker)

    def run_many(self, jobs: Sequence[BatchJob], on_event: Callable[[int, Event], None] | None = None,
                 ) -> Iterator[BatchResult]:
        """Decode `jobs`, at most `batch_size` at a time, and yield each result as its run ends
        (completion order; `BatchResult.index` is the job's position). `on_event(index, event)` sees
        every run's events as they happen, from the thread of that run. Refuses (BatchMemoryError)
        a batch whose KV caches would not fit the free memory."""
        if jobs:
            # The longest run bounds every slot: a slot's next job may be that one.
            check_memory(self.lm, min(self.batch_size, len(jobs)),
                         positions=max(run_positions(self, job) for job in jobs))
        waiting = deque(enumerate(jobs))
        return self._schedule(lambda block: waiting.popleft() if waiting else None, on_event)

    def _schedule(self, take: Callable[[bool], tuple[int, BatchJob] | None],
                  on_event: Callable[[int, Event], None] | None) -> Iterator[BatchResult]:
        """The loop: `take(block)` gives the next waiting job (blocking only when no run is in
        flight; None: no more jobs, or none now when not blocking)."""
        active: list[_Worker] = []
        cache: SharedKVCache | None = None
        try:
            while True:
                while len(active) < self.batch_size:  # continuous batching: fill free slots
                    if not active:
                        cache = None  # an idle service holds no KV memory while it waits
                    nxt = take(not active)
                    if nxt is None:
                        break
                    if cache is None:
                        cache = self._shared_cache()
                    i, job = nxt
                    w = _Worker(i, job, self._body(on_event), cache)
                    w.resume()  # runs to its first request (the prompt's forward) or its end
                    active.append(w)
                if not active:
                    return
                ended = [w for w in active if w.done]
                if ended:
                    active = [w for w in active if not w.done]
                    for w in ended:
                        for dec in w.decoders:  # its slots go to the runs that join next
                            cache.detach(dec)
                        yield BatchResult(w.index, w.job, w.trace, w.error, w.seconds)
                    continue
                replies = self._serve([w.request for w in active])
                for w, reply in zip(active, replies):
                    w.resume(reply)
        finally:
            for w in active:  # closed early: unwind every waiting run
                if not w.done:
                    w.resume(_Failed(_Cancelled()))

    def run_all(self, jobs: Sequence[BatchJob]) -> list[BatchResult]:
        """Every result, in the order of `jobs`."""
        out: list[BatchResult | None] = [None] * len(jobs)
        for r in self.run_many(jobs):
            out[r.index] = r
        return out  # type: ignore[return-value]

    def _body(self, on_event):
        def body(worker: _Worker) -> Trace:
            job = worker.job
            engine = self
            if job.chooser is not None:  # a per-run script: a shallow copy carries it
                engine = copy.copy(self)
                engine.chooser = job.chooser
            retriever = job.retriever
            if retriever is not None:
                retriever = _QueuedRetriever(retriever, worker)
            trace = None
            for ev in engine.run(job.task, job.text, retriever=retriever, candidates=job.candidates,
                                 settings=job.settings):
                if on_event is not None:
                    on_event(worker.index, ev)
                if isinstance(ev, DoneEvent):
                    trace = ev.trace
            assert trace is not None
            return trace
        return body

    # -- one step's requests ---------------------------------------------------------------------
    @torch.inference_mode()
    def _serve(self, requests: list[_Forward | _Search]) -> list[Any]:
        replies: list[Any] = [None] * len(requests)
        try:
            self._search(requests, replies)
            self._forward(requests, replies)
        except BaseException as e:  # noqa: BLE001 - every run of the failed call sees the error
            for i, r in enumerate(requests):
                if replies[i] is None:
                    replies[i] = _Failed(e)
        return replies

    def _search(self, requests, replies) -> None:
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            if isinstance(r, _Search):
                # One matrix per index and k; other retrievers search one vector at a time.
                key = (id(r.retriever.index), r.k) if isinstance(r.retriever, IndexRetriever) else ("one", i)
                groups.setdefault(key, []).append(i)
        for members in groups.values():
            first = requests[members[0]]
            if isinstance(first.retriever, IndexRetriever) and len(members) > 1:
                # Same index object: any member's retriever searches for all (labels differ, hits do not).
                hits = first.retriever.search_many([requests[i].vector for i in members], first.k)
                for i, h in zip(members, hits):
                    replies[i] = h
            else:
                for i in members:
                    replies[i] = requests[i].retriever.search(requests[i].vector, requests[i].k)

    def _forward(self, requests, replies) -> None:
        packed = [i for i, r in enumerate(requests) if isinstance(r, _Forward) and r.slot.packed]
        if packed:
            hidden = forward_packed([requests[i].slot.inner for i in packed], [requests[i].ids for i in packed])
            for i, h in zip(packed, hidden):
                replies[i] = h
        for i, r in enumerate(requests):
            if isinstance(r, _Forward) and not r.slot.packed:
                replies[i] = r.slot.inner.forward(r.ids)
        self._heads([(requests[i].slot, replies[i]) for i, r in enumerate(requests) if isinstance(r, _Forward)])

    def _heads(self, served: list[tuple[_Slot, torch.Tensor]]) -> None:
        """The LM head over every row the runs will read next, as one matmul: the last row of a
        prompt or document, every row of a decoded token and its draft. One row at a time, the head
        (vocabulary x hidden) is read from memory once per row; here once per step."""
        rows, owners = [], []
        for slot, hidden in served:
            take = range(len(hidden)) if len(hidden) <= _HEAD_ALL_ROWS else [len(hidden) - 1]
            for r in take:
                rows.append(hidden[r])
                owners.append(slot)
        if not rows:
            return
        logits = self.lm.lm_head(torch.stack(rows)).float()
        for slot, row, out in zip(owners, rows, logits):
            slot._logits[row.data_ptr()] = out


# -- a batch shared by concurrent callers ---------------------------------------------------------

_END = object()


@dataclass
class _Ticket:
    events: "queue.Queue[Any]"
    cancel: threading.Event


class BatchService:
    """One decode loop for runs that arrive at any time (the app's visitors): each `submit` joins
    the batch at the next step and streams its own events; at most `max_waiting` runs wait for a
    free slot, beyond that a submit is refused with BatchQueueFull. Leaving a stream early (a closed
    page, Stop) ends that run at its next event."""

    def __init__(self, engine: BatchEngine, max_waiting: int = 16):
        check_memory(engine.lm, engine.batch_size)
        self.engine, self.max_waiting = engine, max_waiting
        self._cond = threading.Condition()
        self._waiting: deque[tuple[int, BatchJob]] = deque()
        self._tickets: dict[int, _Ticket] = {}
        self._next = 0
        self._thread: threading.Thread | None = None

    def submit(self, job: BatchJob) -> Iterator[Event]:
        """The run's events, as `Engine.run` yields them; raises its error (an InputError) at its end."""
        with self._cond:
            if len(self._waiting) >= self.max_waiting:
                n = len(self._waiting)
                raise BatchQueueFull(f"{n} run{' is' if n == 1 else 's are'} already waiting for the model; "
                                     "try again in a moment")
            ticket = _Ticket(queue.Queue(), threading.Event())
            i, self._next = self._next, self._next + 1
            self._tickets[i] = ticket
            self._waiting.append((i, job))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="onegen-batch-service", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return self._stream(ticket)

    @staticmethod
    def _stream(ticket: _Ticket) -> Iterator[Event]:
        try:
            while True:
                item = ticket.events.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            ticket.cancel.set()

    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    def _take(self, block: bool) -> tuple[int, BatchJob] | None:
        with self._cond:
            while block and not self._waiting:
                self._cond.wait()
            return self._waiting.popleft() if self._waiting else None

    def _on_event(self, i: int, ev: Event) -> None:
        ticket = self._tickets[i]
        if ticket.cancel.is_set():  # its reader left: end the run here
            raise _Cancelled()
        ticket.events.put(ev)

    def _loop(self) -> None:
        for r in self.engine._schedule(self._take, self._on_event):
            ticket = self._tickets.pop(r.index)
            if r.error is not None:
                ticket.events.put(r.error)
            ticket.events.put(_END)


# -- agreement with batch 1 ------------------------------------------------------------------------

# Below this top-two logit margin, a matmul over more rows may round the other way: a batched run
# that differs from batch 1 first at such a step is a near tie, not a bug.
NEAR_TIE = 1e-3


@dataclass(frozen=True)
class Agreement:
    identical: bool
    first_difference: int | None = None  # index into the traces' tokens where they first differ
    margin: float | None = None  # batch 1's top-two logit margin there
    near_tie: bool = False  # differs, but first where batch 1's margin is below the tolerance


def trace_signature(trace: Trace) -> list[tuple]:
    """What must be equal between batched and batch-1 runs: every token (id, kind, position), each
    retrieval's position and ranked hit ids, the overrides and the stop reason."""
    sig: list[tuple] = [("token", t.id, t.kind, t.position) for t in trace.tokens]
    sig += [("retrieval", r.position, tuple(h.id for h in r.hits), r.chosen) for r in trace.retrievals]
    sig += [("override", o.position, o.chosen, o.preferred, o.kind) for o in trace.overrides]
    sig.append(("stop", trace.stop_reason))
    return sig


def compare(lm: LoadedModel, single: Trace, batched: Trace, tolerance: float = NEAR_TIE) -> Agreement:
    """Do two runs of one input agree? Where they do not, batch 1's top-two logit margin at the first
    differing token (its raw logits, before any protocol mask) tells a near tie from a real difference."""
    if trace_signature(single) == trace_signature(batched):
        return Agreement(True)
    a, b = single.tokens, batched.tokens
    k = next((i for i in range(min(len(a), len(b))) if (a[i].id, a[i].kind) != (b[i].id, b[i].kind)), min(len(a), len(b)))
    if k >= len(a):  # batch 1 stopped where the batched run went on: no logits to judge
        return Agreement(False, k)
    ids = single.prompt_ids + [t.id for t in a[:k]]
    with torch.inference_mode():
        h = make_decoder(lm, True).forward(ids)
        top = torch.topk(lm.lm_head(h[-1]).float(), 2).values
    margin = float(top[0] - top[1])
    return Agreement(False, k, margin, margin < tolerance)
