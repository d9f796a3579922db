"""Counterfactual replay ("what if"): run a recorded trace again from one of its retrievals with
another document chosen there, and compare the two runs.

The replay never recomputes what came before the changed retrieval: the engine prefills the
recorded ids (prompt, tokens, inserted documents) through that retrieval's token in one forward
(counted as `replay_prefix` in the replayed trace's cost), rebuilds the loop's state from the
recorded tokens, and decodes only what follows (`Engine.replay`, the `DocumentChooser` seam).

    comparison = replay(trace, lm, index, step=0, choice=Choice.parse("1"))
    comparison.first_difference, comparison.original_result, comparison.replayed_result
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .documents import Document
from .engine import (DocumentChoice, Engine, IndexRetriever, Resume, Retriever, RunSettings, DoneEvent, top_hit)
from .errors import OneGenError
from .index import VectorIndex, normalize
from .loading import LoadedModel
from .modes import DEFAULT_MODE
from .tasks import TASKS
from .trace import Cost, Hit, ReplayChoiceKind, TokenRecord, Trace


class ReplayError(OneGenError, ValueError):
    """A replay that cannot run as asked (a step that is not a retrieval, a rank beyond the recorded
    candidates, a trace of another model); the message is for users."""


@dataclass(frozen=True)
class Choice:
    """What to use instead at the changed retrieval."""

    kind: ReplayChoiceKind
    rank: int | None = None  # "rank": the recorded hit of this 0-based rank
    seed: int = 0  # "random": the seed of the draw, recorded in the replayed trace
    document: str | None = None  # "document": a document id of the index (the Error browser's gold document)

    @classmethod
    def parse(cls, text: str, seed: int = 0) -> "Choice":
        """`K` (a recorded rank, 0 the top hit), `random` or `none`, as the CLI's --choose takes them."""
        t = str(text).strip().lower()
        if t == "random":
            return cls("random", seed=seed)
        if t == "none":
            return cls("none")
        try:
            rank = int(t)
        except ValueError:
            raise ReplayError(f"--choose takes a rank (0 is the top hit), 'random' or 'none', not {text!r}") from None
        if rank < 0:
            raise ReplayError(f"a rank counts from 0 (the top hit); {rank} is not one")
        return cls("rank", rank=rank)

    def describe(self) -> str:
        if self.kind == "rank":
            return f"the rank-{self.rank} candidate"
        if self.kind == "random":
            return f"a random document of the index (seed {self.seed})"
        if self.kind == "document":
            return f"the document {self.document!r}"
        return "no document"


class ReplayChooser:
    """The DocumentChooser of a replay: `choice` at `step`, the top hit at every later retrieval."""

    def __init__(self, step: int, choice: Choice, index: VectorIndex | None):
        self.step, self.choice, self.index = step, choice, index

    def __call__(self, step: int, hits: list[Hit], query: torch.Tensor) -> DocumentChoice:
        c = self.choice
        if step != self.step:
            return top_hit(step, hits, query)
        if c.kind == "rank":
            return DocumentChoice(c.rank)
        if c.kind == "none":
            return DocumentChoice(None, kind="none")
        assert self.index is not None  # checked before the replay starts
        if c.kind == "random":
            doc = random.Random(c.seed).randrange(len(self.index))
            return self._index_hit(doc, hits, query, DocumentChoice(None, kind="random", seed=c.seed))
        return self._index_hit(self.index.documents.ids().index(c.document), hits, query,
                               DocumentChoice(None, kind="document"))

    def _index_hit(self, doc: int, hits: list[Hit], query: torch.Tensor, choice: DocumentChoice) -> DocumentChoice:
        """Choose document `doc` of the index: its recorded hit when the search found it, else a hit
        appended after the recorded ones (ranked last, whatever its score), scored as the search
        scores it: the cosine of its best vector with the query."""
        d = self.index.documents[doc]
        for i, h in enumerate(hits):
            if h.id == d.id:
                choice.chosen = i
                return choice
        rows = (self.index.owners == doc).nonzero().flatten()
        scores = self.index.vectors[rows] @ normalize(query.float().cpu().reshape(1, -1))[0]
        best = int(scores.argmax())
        fragment = best if len(rows) > 1 else None
        choice.hits = [*hits, Hit(rank=len(hits), id=d.id, title=d.title, score=round(float(scores[best]), 6),
                                  text=d.text, fragment=fragment)]
        choice.chosen = len(hits)
        return choice


@dataclass
class Comparison:
    """An original run and its replay, side by side."""

    original: Trace
    replayed: Trace
    step: int
    choice: Choice
    # Index into `tokens` (the same in both) of the first token that differs; None when the runs
    # wrote the same tokens.
    first_difference: int | None
    original_result: str
    replayed_result: str
    # With a gold example: whether each run is correct (no error category); None without one.
    original_correct: bool | None = None
    replayed_correct: bool | None = None

    @property
    def start(self) -> int:
        """Index into `tokens` of the first token after the changed retrieval's token (both runs
        share every token before it)."""
        return self.original.retrievals[self.step].position + 1 - len(self.original.prompt_ids)

    def continuation(self, trace: Trace) -> list[TokenRecord]:
        return trace.tokens[self.start:]

    @property
    def same_result(self) -> bool:
        return self.original_result == self.replayed_result


def first_difference(a: Sequence[TokenRecord], b: Sequence[TokenRecord]) -> int | None:
    """First index where the token ids differ (or where the shorter one ends); None when equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x.id != y.id:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def result_text(trace: Trace) -> str:
    """The run's final result in one line: its linked entities, else its answer."""
    r = trace.result
    if r.entities is not None:
        return "; ".join(f"{e.mention} -> {e.title or e.entity_id}" for e in r.entities) or "(nothing linked)"
    if r.answer is not None and r.answer.strip():
        return r.answer
    return "(no answer)"


def settings_of(trace: Trace) -> RunSettings:
    """The run settings a trace records, so its replay decodes as it did."""
    s = trace.settings
    defaults = RunSettings()
    return RunSettings(top_k=int(s.get("top_k", defaults.top_k)), max_new_tokens=s.get("max_new_tokens"),
                       max_retrievals=s.get("max_retrievals"), sampling=None,
                       draft_tokens=int(s.get("draft_tokens", defaults.draft_tokens)),
                       copy_input=bool(s.get("copy_input", defaults.copy_input)),
                       early_close=bool(s.get("early_close", False)), model_opens=bool(s.get("model_opens", False)),
                       # a trace from before a check ran without it
                       **{key: s.get(key, "off") for key in (TASKS[trace.task].declared_settings if trace.task in TASKS else ())},
                       fused_decoder=s.get("decoder", "fused-llama") == "fused-llama",
                       repetition_window=int(s.get("repetition_window", defaults.repetition_window)),
                       query_vectors=any(r.query_vector is not None for r in trace.retrievals))


def check(trace: Trace, lm: LoadedModel, step: int, choice: Choice, index: VectorIndex | None) -> None:
    """Refuse, with a message for users, a replay that cannot reproduce the recorded run up to `step`."""
    check_model(trace, lm)
    check_step(trace, step, choice, index)


def check_model(trace: Trace, lm: LoadedModel) -> None:
    """Refuse a trace another model wrote: this one would not write the same tokens before the step."""
    fingerprint = trace.model.get("fingerprint")
    if fingerprint and fingerprint != lm.fingerprint:
        raise ReplayError(f"this trace was written by another model ({trace.model.get('name', '?')}, fingerprint "
                          f"{fingerprint}); {lm.name} (fingerprint {lm.fingerprint}) would not write the same "
                          "tokens before the replayed step: replay it with --model set to the model that wrote it")


def check_step(trace: Trace, step: int, choice: Choice, index: VectorIndex | None, *, need_index: bool = True) -> None:
    """Refuse a step, a choice or a trace the replay cannot serve (no model needed). `need_index`
    False: the index is not loaded yet, so whether it serves the choice is checked later."""
    if trace.mode != DEFAULT_MODE:
        raise ReplayError(f"replay repeats OneGen runs, whose query is the hidden state the prefix recomputes; "
                          f"this trace's mode is {trace.mode!r}")
    if trace.settings.get("decoding", "greedy") != "greedy":
        raise ReplayError("this trace was sampled; a replay repeats greedy runs only (a sampled continuation "
                          "would differ whatever the document)")
    if trace.error or not trace.stop_reason:
        raise ReplayError("this trace did not finish; replay a finished run")
    n = len(trace.retrievals)
    if not 0 <= step < n:
        steps = f"steps 0 to {n - 1}" if n > 1 else ("step 0" if n else "none")
        raise ReplayError(f"step {step} is not a retrieval step of this trace: it has {n} "
                          f"retrieval{'s' if n != 1 else ''} ({steps})")
    hits = trace.retrievals[step].hits
    if choice.kind == "rank" and not 0 <= (choice.rank or 0) < len(hits):
        raise ReplayError(f"rank {choice.rank} is beyond the {len(hits)} candidate{'s' if len(hits) != 1 else ''} "
                          f"recorded at step {step} (ranks 0 to {len(hits) - 1}; the run kept its top "
                          f"{trace.settings.get('top_k', len(hits))})")
    if choice.kind in ("random", "document") and need_index:
        if index is None or len(index) == 0:
            raise ReplayError(f"choosing {choice.describe()} needs the index (or the candidate documents) "
                              "the run searched")
        if choice.kind == "document" and choice.document not in index.documents.present("id", [choice.document]):
            raise ReplayError(f"the index holds no document {choice.document!r}")


def replay(trace: Trace, model: LoadedModel | Engine, index: VectorIndex | Retriever | Sequence[Document] | None,
           step: int, choice: Choice, example: Any = None) -> Comparison:
    """Replay `trace` from its retrieval `step` with `choice` there; compare with the original.

    `index`: what the run searched (a saved index, a retriever over one, or a question's candidate
    documents, encoded again here); needed for retrievals after `step` and for "random" and
    "document" choices. `example`: the gold example, to say whether each run is correct."""
    engine = model if isinstance(model, Engine) else Engine(model)
    cost = Cost()
    retriever, vectors = _retriever(engine, trace.task, index, cost)
    check(trace, engine.lm, step, choice, vectors)
    resume = Resume(trace=trace, step=step, documents=ReplayChooser(step, choice, vectors))
    replayed = None
    for ev in engine.replay(resume, retriever, settings_of(trace), cost=cost):
        if isinstance(ev, DoneEvent):
            replayed = ev.trace
    assert replayed is not None
    return compare(trace, replayed, step, choice, example)


def compare(original: Trace, replayed: Trace, step: int, choice: Choice, example: Any = None) -> Comparison:
    correct = (lambda t: None) if example is None else (lambda t: _correct(t, example))
    return Comparison(original=original, replayed=replayed, step=step, choice=choice,
                      first_difference=first_difference(original.tokens, replayed.tokens),
                      original_result=result_text(original), replayed_result=result_text(replayed),
                      original_correct=correct(original), replayed_correct=correct(replayed))


def _correct(trace: Trace, example: Any) -> bool:
    from .error_analysis import categorize

    return not categorize(trace.task, example, trace)


def _retriever(engine: Engine, task: str, index, cost: Cost) -> tuple[Retriever, VectorIndex | None]:
    if isinstance(index, VectorIndex):
        return IndexRetriever(index), index
    if index is None:
        raise ReplayError("a replay needs the index (or the candidate documents) the run searched")
    if hasattr(index, "search"):
        return index, getattr(index, "index", None)
    r = engine.candidate_retriever(task, list(index), cost)
    return r, r.index


def gold_choice(trace: Trace, example: Any, index: VectorIndex | None) -> tuple[int, Choice]:
    """The Error browser's "would the right document have fixed it?": the first retrieval (0-based;
    messages count steps from 1, as the page does) whose document was wrong, and its gold document (a recorded candidate, else the index's document).
    Raises ReplayError with the reason when there is no such step or no such document."""
    from .tasks import get_task

    task = get_task(trace.task)
    judged = task.retrieval_correct(example, trace)
    wrong = [i for i, ok in enumerate(judged) if ok is False]
    if not wrong:
        raise ReplayError("every retrieval of this run whose gold is known chose its gold document already"
                          if any(ok for ok in judged) else "the gold document of this run's retrievals is not known")
    step = wrong[0]
    gold = task.gold_document(example, trace, step)
    if gold is None:
        raise ReplayError(f"the gold document of step {step + 1} is not known")
    for i, h in enumerate(trace.retrievals[step].hits):
        if gold.matches(h):
            return step, Choice("rank", rank=i)
    if index is not None:
        ids = sorted(index.documents.present("id", gold.ids))
        if ids:
            return step, Choice("document", document=ids[0])
        if gold.titles:
            for i, t in enumerate(index.documents.titles()):
                if t.strip().casefold() in gold.titles:
                    return step, Choice("document", document=index.documents[i].id)
    raise ReplayError(f"the gold document of step {step + 1} ({', '.join(sorted(gold.ids | gold.titles))}) is "
                      "neither among its recorded candidates nor in the index")
