"""Long jobs of the app, owned here rather than by a page callback: a dataset run of the error
browser and a comparison of the Compare tab work in their own thread; the page follows their
progress and can stop them. Nothing here imports gradio.

    job = DatasetRun(app, DatasetRequest(data, None, "index", limit=10, top_k=5), out_dir).start()
    for p in job.progress():   # until the run ends
        print(p.done, p.total, p.seconds_left)
    evaluated = job.outcome()  # the results; raises the run's error; None when stopped
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Generic, Iterator, TypeVar

from .app_state import AppState, EvaluatedFile
from .engine import DoneEvent, Event, TokenEvent
from .trace import Trace

if TYPE_CHECKING:
    from .baselines import Comparison

R = TypeVar("R")
P = TypeVar("P")


@dataclass(frozen=True)
class DatasetRequest:
    """What to run: the first `limit` examples of `data`. `task` None: detected from the file."""

    data: Path
    task: str | None
    candidates: str  # "index" or "context"
    limit: int
    top_k: int


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    seconds_left: float | None  # None before the first example and after the last


class Stopped(Exception):
    """Raised in a job's progress callback to end it at the next check."""


class _Job(Generic[R, P]):
    """A worker thread with a progress queue, a stop flag and one outcome. A subclass computes the
    outcome in `_run()` and reports progress with `_report()`; `None` on the queue ends the progress."""

    name = "onegen-job"
    newest_only = False  # True: a slow page skips to the newest progress

    def __init__(self, stop_flag: threading.Event | None = None):
        self._updates: queue.Queue[P | None] = queue.Queue()
        self._stop = stop_flag or threading.Event()  # set from outside (the page's Stop) or by stop()
        self._started = 0.0
        self._result: R | None = None
        self._error: Exception | None = None
        self._worker = threading.Thread(target=self._work, name=self.name, daemon=True)

    def start(self):
        self._started = time.monotonic()
        self._worker.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def progress(self) -> Iterator[P]:
        """Progress until the job ends. Closing the iterator early (a page that went away) stops it."""
        ended = False
        try:
            while (item := self._updates.get()) is not None:
                while self.newest_only and not self._updates.empty():
                    newer = self._updates.get()
                    if newer is None:
                        yield item
                        ended = True
                        return
                    item = newer
                yield item
            ended = True
        finally:
            if not ended:
                self.stop()

    def outcome(self) -> R | None:
        """After `progress()` ends: the job's result, None when stopped; raises the job's error."""
        self._worker.join()
        if self._error is not None:
            raise self._error
        return self._result

    def _report(self, item: P) -> None:
        self._updates.put(item)

    def _run(self) -> R:
        raise NotImplementedError

    def _work(self) -> None:
        try:
            self._result = self._run()
        except Stopped:
            pass
        except Exception as e:  # noqa: BLE001 - handed to the page as a message; the app stays up
            self._error = e
        finally:
            self._updates.put(None)


class DatasetRun(_Job[EvaluatedFile, Progress]):
    """One dataset evaluation in a worker thread. `stop()` (or leaving `progress()` early) ends it
    after the current example; the same request again resumes from the result file in `out_dir`."""

    name = "onegen-evaluate"

    def __init__(self, app: AppState, request: DatasetRequest, out_dir: Path, stop_flag: threading.Event | None = None):
        super().__init__(stop_flag)
        self.app, self.request, self.out_dir = app, request, Path(out_dir)

    def _on_progress(self, done: int, total: int) -> None:
        left = (time.monotonic() - self._started) / done * (total - done) if done and done < total else None
        self._report(Progress(done, total, left))
        if self._stop.is_set():
            raise Stopped()

    def _run(self) -> EvaluatedFile:
        r = self.request
        return self.app.evaluate_file(r.data, r.task, candidates=r.candidates, limit=r.limit, top_k=r.top_k,
                                      out_dir=self.out_dir, on_progress=self._on_progress)


@dataclass(frozen=True)
class CompareProgress:
    """Where a comparison is: the mode running now, its tokens so far and, in the first round, its
    trace as it grows; the runs that ended (mode, tokens, seconds) and which timing round this is."""

    mode: str
    tokens: int
    finished: tuple[tuple[str, int, float], ...]
    round: int = 1
    repeats: int = 1
    live: Trace | None = None  # None after the first round: later rounds repeat the same tokens for the timing


class CompareRun(_Job["Comparison", CompareProgress]):
    """One input through OneGen, then a baseline or several in order (AppState.compare), `repeats`
    times each for the timing, in a worker thread. Its progress comes per event, with the running
    mode's trace so far. `stop` (or setting the `stop_flag` given) ends it before the next token;
    `outcome()` is then None.

        job = CompareRun(app.compare, "multi-hop", text, 5, "two-pass", repeats=3).start()
        for p in job.progress(): ...
        comparison = job.outcome()
    """

    name = "onegen-compare"
    newest_only = True

    def __init__(self, compare: Callable[..., Comparison], task: str, text: str, top_k: int,
                 baseline: str | tuple[str, ...], repeats: int = 1, stop_flag: threading.Event | None = None):
        super().__init__(stop_flag)
        self._compare, self._args = compare, (task, text, top_k, baseline)
        self.per_round = 1 + (1 if isinstance(baseline, str) else len(baseline))  # OneGen and the baselines
        self.repeats = repeats
        self._runs = 0  # runs that ended, over all rounds
        self._live: Trace | None = None
        self._tokens = 0
        self._finished: tuple[tuple[str, int, float], ...] = ()

    def _on_event(self, mode: str, ev: Event) -> None:
        if self._stop.is_set():
            raise Stopped()
        first_round = self._runs < self.per_round
        if self._live is None or self._live.mode != mode:
            task, text = self._args[0], self._args[1]
            self._live = Trace(task=task, mode=mode, model={}, input=text, prompt_text="", prompt_ids=[])
            self._tokens = 0
        if isinstance(ev, DoneEvent):
            self._finished += ((mode, self._tokens, ev.trace.cost.seconds.get("total", 0.0)),)
            self._runs += 1
            self._live = None
            return
        if isinstance(ev, TokenEvent):
            self._live.tokens.append(ev.token)
            self._tokens += ev.token.kind != "inserted"
        else:
            self._live.retrievals.append(ev.retrieval)
        self._report(CompareProgress(mode, self._tokens, self._finished, round=self._runs // self.per_round + 1,
                                     repeats=self.repeats, live=self._live if first_round else None))

    def _run(self) -> Comparison:
        return self._compare(*self._args, repeats=self.repeats, on_event=self._on_event)
