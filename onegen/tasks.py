"""Per-task behaviour in one place: everything that differs between entity linking, multi-hop QA
and single-hop QA beyond the protocol strings (those are `TaskSpec`s in onegen/protocols.py).

The engine, evaluation, result files, dataset loading, the model card and the index builder ask
the task object instead of comparing task names:

    task = get_task(trace.task)
    task.query_text(segment)                    # what a retrieval searched for
    task.fill_result(trace, text, eos_id)       # entities / hops / answer from a finished trace
    task.score_example(example, trace)          # per-example scores of an evaluation
    task.result_line(example, trace, query_id)  # the line the authors' scorer reads

The scoring rules themselves live in onegen/metrics.py, the error categories in
onegen/error_analysis.py and the file parsers in onegen/datasets.py; a task picks which apply.

Adding a task: a `TaskSpec` in protocols.py, its example class and parser in datasets.py, its
error categories in error_analysis.py, and a `Task` subclass here (plus a metrics class in
metrics.py when its figures are neither entity linking's nor QA's).
"""
from __future__ import annotations

import bisect
import itertools
import re
import statistics
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal, Mapping, Sequence

from . import datasets, error_analysis
from .answer_alignment import align_answer
from .comparison_check import check_comparison
from .datasets import ELExample, MultiHopExample, SingleHopExample, extract_final_answer
from .documents import Document, split_written_sentences
from .errors import OneGenError
from .metrics import (UNKNOWN_ENTITY, ELDocument, ELMetrics, ELSpanDocument, QAMetrics, el_scores,
                      el_scores_from_result_lines, el_span_scores, qa_scores, qa_summary)
from .name_alignment import align_names
from .protocols import ENTITY_LINKING, MULTI_HOP, SINGLE_HOP, TaskName, TaskSpec
from .trace import Hop, LinkedEntity, Trace

if TYPE_CHECKING:
    from .error_analysis import ErrorCategory
    from .evaluation import ExampleRecord

_MENTION_END = re.compile(r"<MENTION>((?:(?!<MENTION>).)*?)</MENTION>\s*$", re.S)
_TAG = re.compile(r"</?[A-Za-z][\w-]*>")  # an inserted document's delimiters (<paragraph>)

# Where a task's documents come from: its own item ("context") or a global index.
CandidatesMode = Literal["context", "index"]
# What an index of the task holds: entity descriptions, multi-hop paragraphs (one vector per
# sentence) or single-hop passages.
IndexKind = Literal["entities", "paragraphs", "passages"]
Example = ELExample | MultiHopExample | SingleHopExample


class TaskError(OneGenError, ValueError):
    """A request a task cannot serve (e.g. context candidates for entity linking)."""


class Task:
    """Behaviour of one task; subclasses override what differs."""

    name: ClassVar[TaskName]
    label: ClassVar[str]  # short, for menus and headings
    spec: ClassVar[TaskSpec]
    # Entity linking rewrites its input: decoding may be constrained to copy it (onegen/constrain.py).
    copies_input: ClassVar[bool] = False
    index_kind: ClassVar[IndexKind]
    # Allowed candidate modes; the first is the default.
    candidate_modes: ClassVar[tuple[CandidatesMode, ...]] = ("context", "index")
    example_class: ClassVar[type]
    # (metrics key, its name) of the figure the task is judged by.
    headline: ClassVar[tuple[str, str]]
    # Metrics shown side by side when two runs are compared.
    compared_metrics: ClassVar[tuple[str, ...]]
    # Dataset files of the task may come with an answer-alias table (2WikiMultihopQA).
    takes_aliases: ClassVar[bool] = False
    # Scoring reads the entity index's titles (to find ambiguous names).
    reads_index_titles: ClassVar[bool] = False
    # What `named_documents` gives: index documents' "title"s or "id"s.
    named_documents_field: ClassVar[Literal["title", "id"]] = "title"
    # How the app names a run's input, and the inputs an index can serve, to a visitor.
    asked: ClassVar[str] = "what you asked"
    answerable: ClassVar[str] = "Questions it can answer"

    @property
    def default_candidates(self) -> CandidatesMode:
        return self.candidate_modes[0]

    # -- decoding -----------------------------------------------------------------------------------

    def query_text(self, segment: str) -> str:
        """The text a retrieval token's query stands for, from the text written since the last
        retrieval (or forced token) up to the retrieval token."""
        return segment.strip()

    def fill_result(self, trace: Trace, input_text: str, eos_id: int) -> None:
        """Fill `trace.result` from the finished trace."""
        raise NotImplementedError

    # The result checks this task runs after `fill_result` (keys of onegen/result_checks.CHECKS);
    # their settings are in `trace.settings`.
    result_checks: ClassVar[tuple[str, ...]] = ()
    # The mark the input normalization ends an unfinished input with (onegen/input_normalization.py).
    closing_mark: ClassVar[str] = "?"

    @property
    def declared_settings(self) -> tuple[str, ...]:
        """The settings a model declares for this task's runs: every task's input normalization
        (before the run), then its result checks."""
        return ("input_normalization", *self.result_checks)

    def check_result(self, trace: Trace, input_text: str) -> None:
        """Apply the result checks `trace.settings` names to a filled result."""

    # -- datasets -----------------------------------------------------------------------------------

    def looks_like(self, item: Mapping[str, Any]) -> bool:
        """Whether a dataset item has this task's keys (format detection)."""
        raise NotImplementedError

    def item_parser(self, aliases: Mapping[str, list[str]] | None = None) -> Callable[[dict, int], Example]:
        """The parser of one dataset item (dict, 0-based index) into `example_class`."""
        raise NotImplementedError

    def example_input(self, example: Example) -> str:
        """The text the model is given for `example`."""
        raise NotImplementedError

    def context_documents(self, example: Example) -> list[Document]:
        """The example's own candidate documents (candidates mode "context")."""
        raise TaskError(f"{self.label} has no per-item candidates; it searches an index")

    def named_documents(self, example: Example) -> list[str]:
        """Documents the item names (titles or ids, see `named_documents_field`): an index built
        for this dataset holds them (onegen/index_coverage.py checks that it does)."""
        return []

    # -- evaluation ---------------------------------------------------------------------------------

    def score_example(self, example: Example, trace: Trace | None,
                      title_counts: Mapping[str, int] | None = None) -> dict[str, Any]:
        """Per-example scores (what a result line keeps under "onegen" -> "scores")."""
        raise NotImplementedError

    def keep_recorded_scores(self, scores: dict[str, Any], recorded: Mapping[str, Any],
                             title_counts: Mapping[str, int] | None) -> None:
        """Put back into rescored `scores` what only the original run could know."""

    def retrieval_correct(self, example: Example, trace: Trace) -> list[bool | None]:
        """Per retrieval step: did it choose the gold document (None: unknown)?"""
        raise NotImplementedError

    def gold_document(self, example: Example, trace: Trace, step: int) -> error_analysis.HopGold | None:
        """The ids and titles that count as the gold document of retrieval `step` (None: unknown);
        what a replay chooses to ask whether the right document would have fixed the run."""
        raise NotImplementedError

    def result_line(self, example: Example, trace: Trace | None, query_id: int | None) -> dict[str, Any]:
        """The result line in the authors' format (without our "onegen" block)."""
        raise NotImplementedError

    def categorize(self, example: Example, trace: Trace) -> list[ErrorCategory]:
        """Why a finished example went wrong; [] when it is right."""
        raise NotImplementedError

    def aggregate(self, records: Sequence[ExampleRecord], *, title_counts_known: bool = False,
                  result_lines: Sequence[Mapping[str, Any]] | None = None) -> ELMetrics | QAMetrics:
        """The task's figures over `records` (scores filled); the caller adds the common ones."""
        raise NotImplementedError

    def gold_layout(self, examples: Sequence[Example]) -> datasets.GoldLayout:
        """The gold file of `examples`, in this order, in the layout the authors' scorer of the
        task reads (`onegen export --format gold`)."""
        raise NotImplementedError

    def prediction_text(self, record: ExampleRecord) -> str:
        """One-line summary of what the run predicted, for tables."""
        raise NotImplementedError

    def gold_text(self, example: Example) -> str:
        """One-line summary of the gold labels, for tables."""
        raise NotImplementedError

    def expect(self, example: Any) -> None:
        if not isinstance(example, self.example_class):
            raise TypeError(f"a {self.name} example must be a {self.example_class.__name__}, "
                            f"got {type(example).__name__}")


class EntityLinking(Task):
    name, label, spec = "entity-linking", "Entity linking", ENTITY_LINKING
    copies_input = True
    index_kind = "entities"
    candidate_modes = ("index",)
    example_class = ELExample
    headline = ("f1", "micro F1")
    compared_metrics = ("precision", "recall", "f1", "span_f1", "linking_accuracy", "ambiguous_accuracy")
    reads_index_titles = True
    named_documents_field = "id"
    asked, answerable = "this text", "Texts it can link"

    def query_text(self, segment: str) -> str:
        m = _MENTION_END.search(segment)
        return m.group(1).strip() if m else ""

    result_checks = ("name_alignment",)
    closing_mark = "."

    def fill_result(self, trace: Trace, input_text: str, eos_id: int) -> None:
        trace.result.entities = link_mentions(input_text, trace)

    def check_result(self, trace: Trace, input_text: str) -> None:
        policy = trace.settings.get("name_alignment", "off")
        if policy != "off" and trace.result.entities is not None:
            trace.result.entities, trace.result.unlinked = align_names(input_text, trace.result.entities, policy)
        if trace.input_edits:  # a mention is what the user typed at its span (the edits keep every span)
            typed = trace.typed_input
            for e in [*(trace.result.entities or []), *(trace.result.unlinked or [])]:
                if e.start is not None and e.end is not None:
                    e.mention = typed[e.start:e.end]

    def looks_like(self, item: Mapping[str, Any]) -> bool:
        return "labels" in item and "text" in item

    def item_parser(self, aliases: Mapping[str, list[str]] | None = None) -> Callable[[dict, int], Example]:
        return datasets.parse_el_item

    def example_input(self, example: Example) -> str:
        return example.text

    def named_documents(self, example: Example) -> list[str]:
        return [label.entity_id for label in example.labels if label.entity_id != UNKNOWN_ENTITY]

    def score_example(self, example: Example, trace: Trace | None,
                      title_counts: Mapping[str, int] | None = None) -> dict[str, Any]:
        s = el_scores([ELDocument(example.gold_pairs(), el_prediction_pairs(trace))])
        scores: dict[str, Any] = {"precision": s.precision, "recall": s.recall, "f1": s.f1,
                                  "tp": s.tp, "fp": s.fp, "fn": s.fn}
        flags = ambiguous_labels(example, title_counts)
        aligned = error_analysis.align_mentions(example, (trace.result.entities or []) if trace is not None else [])
        amb = [(label, pred) for label, pred, f in zip(example.labels, aligned.gold, flags)
               if f and label.entity_id != UNKNOWN_ENTITY]
        scores["ambiguous"] = len(amb)
        scores["ambiguous_correct"] = sum(1 for label, pred in amb if pred is not None and pred.entity_id == label.entity_id)
        return scores

    def keep_recorded_scores(self, scores: dict[str, Any], recorded: Mapping[str, Any],
                             title_counts: Mapping[str, int] | None) -> None:
        if title_counts is None and recorded.get("ambiguous", 0) > scores["ambiguous"]:
            # The run knew its index's titles (names two entities share); a reader without that
            # index keeps the ambiguity counts the run recorded for this same trace.
            scores.update(ambiguous=recorded["ambiguous"], ambiguous_correct=recorded.get("ambiguous_correct", 0),
                          ambiguity_recorded=True)

    def retrieval_correct(self, example: Example, trace: Trace) -> list[bool | None]:
        # A retrieval is judged when its mention aligns with a gold label that names a known entity.
        out: list[bool | None] = [None] * len(trace.retrievals)
        aligned = error_analysis.align_mentions(example, trace.result.entities or [])
        for label, pred in zip(example.labels, aligned.gold):
            if pred is not None and label.entity_id != UNKNOWN_ENTITY and 0 <= pred.retrieval < len(out):
                out[pred.retrieval] = pred.entity_id == label.entity_id
        return out

    def gold_document(self, example: Example, trace: Trace, step: int) -> error_analysis.HopGold | None:
        aligned = error_analysis.align_mentions(example, trace.result.entities or [])
        for label, pred in zip(example.labels, aligned.gold):
            if pred is not None and pred.retrieval == step and label.entity_id != UNKNOWN_ENTITY:
                return error_analysis.HopGold(frozenset(), frozenset({label.entity_id}), "label")
        return None

    def result_line(self, example: Example, trace: Trace | None, query_id: int | None) -> dict[str, Any]:
        if trace is None:
            return datasets.el_result_line(example.raw, "", [])
        return datasets.el_result_line(example.raw, trace.result.output_text, output_qid(trace, query_id),
                                       trace.to_dict())

    def categorize(self, example: Example, trace: Trace) -> list[ErrorCategory]:
        self.expect(example)
        return error_analysis.entity_linking_categories(example, trace)

    def aggregate(self, records: Sequence[ExampleRecord], *, title_counts_known: bool = False,
                  result_lines: Sequence[Mapping[str, Any]] | None = None) -> ELMetrics:
        s = el_scores(ELDocument(r.example.gold_pairs(), el_prediction_pairs(r.trace)) for r in records)
        authors = None
        if result_lines is not None:
            # The authors' scorer on the same file: pairs mentions and uids by order, so a
            # malformed [LK] shifts later links; the gap to our figures shows its cost.
            a = el_scores_from_result_lines(result_lines)
            authors = {"precision": a.precision, "recall": a.recall, "f1": a.f1}
        n_amb = sum(r.scores["ambiguous"] for r in records)
        if title_counts_known:
            ambiguity_from = "labels and index titles"
        elif any(r.scores.get("ambiguity_recorded") for r in records):
            ambiguity_from = "labels and index titles, as the run recorded them"
        else:
            ambiguity_from = "labels"
        return ELMetrics(
            **common_counts(self.name, records),
            precision=s.precision, recall=s.recall, f1=s.f1, tp=s.tp, fp=s.fp, fn=s.fn,
            gold_mentions=s.n_gold, predicted_mentions=s.n_pred, authors_scorer=authors,
            ambiguous_mentions=n_amb,
            ambiguous_accuracy=(sum(r.scores["ambiguous_correct"] for r in records) / n_amb) if n_amb else None,
            ambiguity_from=ambiguity_from,
            spans=el_span_scores(ELSpanDocument(r.example.gold_spans(), el_prediction_spans(r.trace)) for r in records))

    def gold_layout(self, examples: Sequence[Example]) -> datasets.GoldLayout:
        return datasets.entity_linking_gold(examples)

    def prediction_text(self, record: ExampleRecord) -> str:
        entities = (record.trace.result.entities or []) if record.trace is not None else []
        return "; ".join(f"{e.mention} -> {e.title or e.entity_id}" for e in entities)

    def gold_text(self, example: Example) -> str:
        return "; ".join(f"{lab.surface.strip()} -> {lab.name or lab.entity_id}" for lab in example.labels)


class QuestionAnswering(Task):
    """What the two QA tasks share: a question in, an answer scored against gold answers."""

    headline = ("em", "EM")
    compared_metrics = ("em", "f1", "match")
    result_checks = ("answer_alignment",)

    def check_result(self, trace: Trace, input_text: str) -> None:
        policy = trace.settings.get("answer_alignment", "off")
        if policy == "off" or not trace.result.answer:
            return
        read = [_TAG.sub(" ", r.inserted_text) for r in trace.retrievals if r.inserted_text]
        aligned = align_answer(trace.result.answer, [input_text, *read], policy)
        if aligned is not None:
            trace.result.model_answer = trace.result.model_answer or trace.result.answer
            trace.result.answer = aligned

    def example_input(self, example: Example) -> str:
        return example.question

    def answer(self, trace: Trace | None) -> str | None:
        """The answer the run gave; None when it gave none."""
        if trace is None:
            return None
        return trace.result.answer or None

    def score_example(self, example: Example, trace: Trace | None,
                      title_counts: Mapping[str, int] | None = None) -> dict[str, Any]:
        answer = self.answer(trace)
        answers = example.answers
        scores = {**qa_scores(answer, answers), "match": error_analysis.answer_match(answer, answers),
                  "answer": answer}
        scores["retrieval"] = [] if trace is None else self.retrieval_correct(example, trace)
        return scores

    def result_line(self, example: Example, trace: Trace | None, query_id: int | None) -> dict[str, Any]:
        if trace is None:
            prompt = self.spec.prompt_template.replace("{input}", self.example_input(example))
            return datasets.qa_result_line(example.raw, prompt, prompt)
        return datasets.qa_result_line(example.raw, trace.prompt_text, trace.prompt_text + trace.result.output_text,
                                       trace.to_dict())

    def aggregate(self, records: Sequence[ExampleRecord], *, title_counts_known: bool = False,
                  result_lines: Sequence[Mapping[str, Any]] | None = None) -> QAMetrics:
        rows = [{k: r.scores[k] for k in ("em", "f1", "precision", "recall", "match")} for r in records]
        types = [str(getattr(r.example, "type", "") or (r.example.raw.get("type") or "")) for r in records]
        summary = qa_summary(rows, types if any(types) else None)
        return QAMetrics(
            **common_counts(self.name, records),
            em=summary.get("em"), f1=summary.get("f1"), match=summary.get("match"),
            precision=summary.get("precision"), recall=summary.get("recall"), by_type=summary.get("by_group"),
            retrieval=hop_recall(records),
            no_final_answer=sum(1 for r in records if r.trace is not None and self.answer(r.trace) is None),
            answers_as_written=self.answers_as_written(records))

    def answers_as_written(self, records: Sequence[ExampleRecord]) -> dict[str, float | int] | None:
        """EM and F1 of the answers before the result checks changed them; None when they changed none."""
        changed = [r for r in records if r.trace is not None and r.trace.result.model_answer is not None
                   and self.answer(r.trace) is not None]
        if not changed or not records:
            return None
        written = {id(r): qa_scores(r.trace.result.model_answer, r.example.answers) for r in changed}
        out: dict[str, float | int] = {}
        for key in ("em", "f1"):
            gained = sum(r.scores[key] - written[id(r)][key] for r in changed)
            out[key] = (sum(r.scores[key] for r in records) - gained) / len(records)
        return {**out, "changed": len(changed)}

    def prediction_text(self, record: ExampleRecord) -> str:
        return record.scores.get("answer") or ""

    def gold_text(self, example: Example) -> str:
        return " | ".join(example.answers)


class MultiHop(QuestionAnswering):
    name, label, spec = "multi-hop", "Multi-hop QA", MULTI_HOP
    index_kind = "paragraphs"
    example_class = MultiHopExample
    takes_aliases = True

    def query_text(self, segment: str) -> str:
        # The sub-question is the last sentence before the retrieval token.
        pieces = split_written_sentences(segment)
        return pieces[-1] if pieces else segment.strip()

    def fill_result(self, trace: Trace, input_text: str, eos_id: int) -> None:
        answer = extract_final_answer(trace.result.output_text)
        trace.result.final_answer_found = answer is not None
        trace.result.answer = answer
        trace.result.hops = multi_hop_chain(trace)

    result_checks = ("comparison_check", "answer_alignment")  # the option first, then its spelling

    def check_result(self, trace: Trace, input_text: str) -> None:
        res = trace.result
        if res.final_answer_found:
            written = "".join(t.text for t in trace.tokens if t.kind != "inserted")
            changed = check_comparison(written, res.answer, [h.answer for h in res.hops or []], input_text,
                                       trace.settings.get("comparison_check", "off"))
            if changed is not None:
                res.model_answer, res.answer = res.answer, changed[0]
                res.answer_check = f"its comparison {changed[1]!r} recomputed from the chain's values"
        super().check_result(trace, input_text)

    def looks_like(self, item: Mapping[str, Any]) -> bool:
        return "context" in item and "question" in item

    def item_parser(self, aliases: Mapping[str, list[str]] | None = None) -> Callable[[dict, int], Example]:
        table = aliases or {}
        return lambda item, index: datasets.parse_multi_hop_item(item, index, table)

    def context_documents(self, example: Example) -> list[Document]:
        # One vector per sentence, as the multi-hop checkpoints were trained.
        return [Document.from_sentences(error_analysis.context_document_id(example.id, i), p.title, p.sentences,
                                        context_index=i)
                for i, p in enumerate(example.context)]

    def named_documents(self, example: Example) -> list[str]:
        return [p.title for p in example.context] + example.supporting_titles

    def answer(self, trace: Trace | None) -> str | None:
        if trace is None:
            return None
        return trace.result.answer if trace.result.final_answer_found else None

    def retrieval_correct(self, example: Example, trace: Trace) -> list[bool | None]:
        return [error_analysis.hop_correct(example, trace, k) for k in range(len(trace.retrievals))]

    def gold_document(self, example: Example, trace: Trace, step: int) -> error_analysis.HopGold | None:
        return error_analysis.hop_gold(example, step)

    def categorize(self, example: Example, trace: Trace) -> list[ErrorCategory]:
        self.expect(example)
        return error_analysis.multi_hop_categories(example, trace)

    def gold_layout(self, examples: Sequence[Example]) -> datasets.GoldLayout:
        return datasets.multi_hop_gold(examples)


class SingleHop(QuestionAnswering):
    name, label, spec = "single-hop", "Single-hop QA", SINGLE_HOP
    index_kind = "passages"
    example_class = SingleHopExample
    headline = ("match", "match")

    def fill_result(self, trace: Trace, input_text: str, eos_id: int) -> None:
        reflection = set(self.spec.added_tokens)
        gen = [t for t in trace.tokens if t.kind != "inserted"]
        trace.result.reflection_tokens = [t.text for t in gen if t.text in reflection]
        answer = "".join(t.text for t in gen if t.text not in reflection and t.id != eos_id)
        trace.result.answer = answer.strip()
        trace.result.final_answer_found = bool(trace.result.answer)

    def looks_like(self, item: Mapping[str, Any]) -> bool:
        return ("question" in item or "instruction" in item) and ("answers" in item or "answer" in item or "ctxs" in item)

    def item_parser(self, aliases: Mapping[str, list[str]] | None = None) -> Callable[[dict, int], Example]:
        return datasets.parse_single_hop_item

    def context_documents(self, example: Example) -> list[Document]:
        return [Document(p.id, p.title, p.text) for p in example.ctxs]

    def named_documents(self, example: Example) -> list[str]:
        return [p.title for p in example.ctxs]

    def retrieval_correct(self, example: Example, trace: Trace) -> list[bool | None]:
        return [error_analysis.single_hop_retrieval_correct(example, trace)[0]] if trace.retrievals else []

    def gold_document(self, example: Example, trace: Trace, step: int) -> error_analysis.HopGold | None:
        # Without a named gold passage, correctness is "the answer occurs in it": no one document.
        if step != 0 or example.gold_id is None:
            return None
        return error_analysis.HopGold(frozenset(), frozenset({example.gold_id}), "gold_id")

    def categorize(self, example: Example, trace: Trace) -> list[ErrorCategory]:
        self.expect(example)
        return error_analysis.single_hop_categories(example, trace)

    def gold_layout(self, examples: Sequence[Example]) -> datasets.GoldLayout:
        return datasets.single_hop_gold(examples)


TASKS: dict[str, Task] = {t.name: t for t in (EntityLinking(), MultiHop(), SingleHop())}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise TaskError(f"unknown task {name!r}; choose one of: {', '.join(TASK_NAMES)}") from None


# -- evaluation helpers shared by the tasks --------------------------------------------------------

def common_counts(task: str, records: Sequence[ExampleRecord]) -> dict[str, Any]:
    """The figures every task reports, as `TaskMetrics` keyword arguments."""
    traces = [r.trace for r in records if r.trace is not None]
    seconds = [r.seconds for r in records]
    return {"task": task, "examples": len(records), "errors": sum(1 for r in records if r.error is not None),
            "resumed": sum(1 for r in records if r.resumed),
            "retrieval_limit_hits": sum(1 for t in traces if t.result.retrieval_limit_reached),
            "stop_reasons": dict(sorted(Counter(t.stop_reason for t in traces).items())),
            "error_categories": error_analysis.category_counts(records),
            "seconds_per_example_median": statistics.median(seconds) if seconds else None,
            "seconds_total": sum(seconds)}


def hop_recall(records: Sequence[ExampleRecord]) -> dict[str, dict[str, float | int]]:
    """recall@1 per hop over the examples that made that retrieval and whose gold is known."""
    per_hop: dict[int, list[bool]] = {}
    for r in records:
        for k, ok in enumerate(r.scores.get("retrieval") or []):
            if ok is not None:
                per_hop.setdefault(k, []).append(bool(ok))
    return {f"hop_{k + 1}": {"recall@1": sum(v) / len(v), "n": len(v)} for k, v in sorted(per_hop.items())}


def el_prediction_pairs(trace: Trace | None) -> list[tuple[str, str]]:
    """(mention, entity id) of our engine's position-paired links."""
    return [] if trace is None else [(e.mention, e.entity_id) for e in trace.result.entities or []]


def el_prediction_spans(trace: Trace | None) -> list[tuple[tuple[int, int] | None, str]]:
    """(span in the input, entity id) of our engine's links; None where the mention is not in the input."""
    if trace is None:
        return []
    return [(None if e.start is None or e.end is None else (e.start, e.end), e.entity_id)
            for e in trace.result.entities or []]


def ambiguous_labels(example: ELExample, title_counts: Mapping[str, int] | None) -> list[bool]:
    """Per label: is its name ambiguous? Marked by the dataset (a truthy "ambiguous" field, or a
    "note" that mentions ambiguity) or, with the index's titles, shared by 2+ index documents."""
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


def output_qid(trace: Trace, lk_id: int | None) -> list[str]:
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


# -- result extraction (pure functions of a trace) -------------------------------------------------

_EL_TAGS = re.compile(r"<MENTION>|</MENTION>|\[LK\]|\[_CONTINUE_\]")


def copied_offset(input_text: str, written: str, mention: str) -> int | None:
    """Where in the input a mention starts, read from the output itself: `written` is the output
    up to the mention's `</MENTION>`; the text before its `<MENTION>`, tags removed, is the input
    copied so far (one extra leading space allowed, as the copy constraint allows). None when the
    output does not copy the input there (free decoding), so a search must place it."""
    opened = written.rfind("<MENTION>")
    if opened < 0:
        return None
    copied = _EL_TAGS.sub("", written[:opened])
    if copied[:1].isspace() and not input_text[:1].isspace():
        copied = copied[1:]
    inside = written[opened + len("<MENTION>"):]
    start = len(copied) + len(inside) - len(inside.lstrip())
    if not input_text.startswith(copied) or input_text[start:start + len(mention)] != mention:
        return None
    return start


def link_mentions(input_text: str, trace: Trace) -> list[LinkedEntity]:
    """Each `[LK]` links the mention written just before it, by position in the output, so one
    malformed mention never shifts the others. A mention's span is where the output copied it
    (`copied_offset`); where the output is not a copy, the mention is searched in the input left
    to right."""
    tokens = [t for t in trace.tokens if t.kind != "inserted"]
    positions = [t.position for t in tokens]
    text = "".join(t.text for t in tokens)
    ends = list(itertools.accumulate((len(t.text) for t in tokens), initial=0))  # text offset per token
    out: list[LinkedEntity] = []
    cursor = 0
    for i, r in enumerate(trace.retrievals):
        hit = r.chosen_hit
        if not r.query_text or hit is None:
            continue
        written = text[:ends[bisect.bisect_left(positions, r.position)]]  # the output before the [LK]
        start = copied_offset(input_text, written, r.query_text)
        if start is None:
            start = input_text.find(r.query_text, cursor)
        if start < 0:
            start = input_text.find(r.query_text)
        end = start + len(r.query_text) if start >= 0 else None
        if start >= 0:
            cursor = end
        out.append(LinkedEntity(mention=r.query_text, start=start if start >= 0 else None, end=end,
                                entity_id=hit.id, title=hit.title, score=hit.score, retrieval=i))
    return out


def multi_hop_chain(trace: Trace) -> list[Hop]:
    """Sub-question, retrieved paragraph and sub-answer for every hop. The sub-answer is the first
    sentence written after the inserted paragraph."""
    hops: list[Hop] = []
    tokens = trace.tokens
    for i, r in enumerate(trace.retrievals):
        after = [t for t in tokens if t.position >= r.position + 1 + r.inserted_tokens and t.kind != "inserted"]
        nxt = trace.retrievals[i + 1].position if i + 1 < len(trace.retrievals) else None
        text = "".join(t.text for t in after if nxt is None or t.position < nxt)
        text = text.split("<FINAL-ANSWER>")[0]
        pieces = split_written_sentences(text)
        first = pieces[0] if pieces else ""
        hit = r.chosen_hit
        hops.append(Hop(question=r.query_text, retrieval=i, title=hit.title if hit else None, answer=first))
    return hops
