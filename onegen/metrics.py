"""Evaluation metrics, scored the way the OneGen authors score their result files.

Pure functions over strings and ids; no model, no I/O. The rules follow the authors'
scorers (github.com/zjunlp/OneGen), in short:

- QA: the HotpotQA answer metrics (normalised exact match and token F1 with the
  yes/no/noanswer special case); 2WikiMultihopQA takes the max over the answer and its
  aliases.
- Entity linking: strong-match micro P/R/F1 over the multiset of
  (document, stripped mention surface, entity id) tuples, with "Unknown" gold labels
  removed and predictions of those surfaces dropped.
- Retrieval: recall@k over document ids.

All scores are fractions in [0, 1] (the 2Wiki scorer prints them x100; multiply when
comparing with its output).
"""
from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping, Sequence

# ---------------------------------------------------------------------------
# QA answers (HotpotQA / 2WikiMultihopQA)
# ---------------------------------------------------------------------------

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
# Normalised answers that only match themselves: a "yes" that differs from the gold
# scores 0 F1 even when tokens overlap (e.g. "yes" vs "yes it is").
_CLOSED_ANSWERS = frozenset({"yes", "no", "noanswer"})


def normalize_answer(s: str) -> str:
    """Normalise an answer the HotpotQA/SQuAD way, in this order: lowercase, delete
    ASCII punctuation (`string.punctuation`, so "U.S." -> "us" and "1,000" -> "1000"),
    replace the whole words a/an/the with a space, collapse whitespace and strip.
    """
    if not isinstance(s, str):
        raise TypeError(f"normalize_answer expects a str, got {type(s).__name__}")
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0 (HotpotQA EM).

    Edge case kept from the scorer: two answers that both normalise to "" (e.g. "The"
    and "!") are an exact match, although their F1 is 0.
    """
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> tuple[float, float, float]:
    """Token-level (f1, precision, recall) after `normalize_answer` (HotpotQA F1).

    Edge cases, as the HotpotQA scorer defines them:
    - if either normalised side is "yes", "no" or "noanswer" and the two differ, the
      score is (0, 0, 0);
    - no shared token (including an empty prediction or gold) gives (0, 0, 0);
    - tokens are counted as a multiset ("a a b" vs "a b": 2 shared of 3 predicted).
    """
    pred = normalize_answer(prediction)
    ref = normalize_answer(gold)
    if (pred in _CLOSED_ANSWERS or ref in _CLOSED_ANSWERS) and pred != ref:
        return 0.0, 0.0, 0.0
    pred_tokens = pred.split()
    ref_tokens = ref.split()
    same = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if same == 0:
        return 0.0, 0.0, 0.0
    precision = same / len(pred_tokens)
    recall = same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall), precision, recall


def qa_scores(prediction: str | None, answers: Sequence[str]) -> dict[str, float]:
    """EM, F1, precision and recall of one prediction against a gold answer and its
    aliases: each metric is the max over the gold strings, taken independently (the
    2WikiMultihopQA scorer's rule; with one gold string it is plain HotpotQA scoring).

    A missing prediction (None: the model never closed a `<FINAL-ANSWER>`) scores 0 on
    everything. (The authors' scorer would turn it into the string "None", which could
    only ever match a gold answer "None".)
    """
    if isinstance(answers, str):
        raise TypeError("answers must be a list of strings, not a single string")
    if not answers:
        raise ValueError("qa_scores needs at least one gold answer")
    if prediction is None:
        return {"em": 0.0, "f1": 0.0, "precision": 0.0, "recall": 0.0}
    best = {"em": 0.0, "f1": 0.0, "precision": 0.0, "recall": 0.0}
    for gold in answers:
        f1, precision, recall = f1_score(prediction, gold)
        best["em"] = max(best["em"], exact_match(prediction, gold))
        best["f1"] = max(best["f1"], f1)
        best["precision"] = max(best["precision"], precision)
        best["recall"] = max(best["recall"], recall)
    return best


# ---------------------------------------------------------------------------
# Entity linking (strong match, micro-averaged)
# ---------------------------------------------------------------------------

UNKNOWN_ENTITY = "Unknown"

# The authors' mention pattern: only a mention closed by `[LK][_CONTINUE_]` counts.
# DOTALL because a mention may span a newline of the input text.
EL_MENTION_PATTERN = re.compile(r"<MENTION>(.*?)</MENTION>\[LK\]\[_CONTINUE_\]", re.DOTALL)


def parse_el_output(output_text: str, output_qid: Sequence[str]) -> list[tuple[str, str]]:
    """(mention surface, entity uid) pairs read from an EL result line the way the
    authors' scorer reads it: every match of `EL_MENTION_PATTERN`, in order, zipped with
    `output_qid` (one uid per `[LK]` the engine saw).

    Pairing is by order and stops at the shorter list. Consequences kept on purpose
    so that the authors' files score the same (our own engine pairs by position):
    - an `[LK]` outside any mention still owns a uid, so every later mention takes its
      left neighbour's uid;
    - a mention closed by `[LK]` without `[_CONTINUE_]` is not a match of its own: the
      lazy match runs on to the next `</MENTION>[LK][_CONTINUE_]`, giving one garbled
      surface such as "X</MENTION>[LK] in <MENTION>Y" paired with X's uid.
    Surfaces are returned as matched (not stripped).
    """
    if not isinstance(output_text, str):
        raise TypeError(f"output_text must be a str, got {type(output_text).__name__}")
    if isinstance(output_qid, str):
        raise TypeError("output_qid must be a list of uids, not a single string")
    mentions = EL_MENTION_PATTERN.findall(output_text)
    return [(mention, str(uid)) for mention, uid in zip(mentions, output_qid)]


@dataclass(frozen=True)
class ELDocument:
    """One document to score. `gold` holds (surface, entity id) for every gold label,
    "Unknown" ones included (the scorer removes them); `predictions` holds the
    (surface, entity id) pairs the system produced. Surfaces are stripped by the
    scorer, so raw spans may be passed."""

    gold: Sequence[tuple[str, str]]
    predictions: Sequence[tuple[str, str]]


@dataclass(frozen=True)
class MicroScores:
    """Micro precision/recall/F1 and the counts behind them (`micro_prf`)."""

    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int


@dataclass(frozen=True)
class ELScores(MicroScores):
    """Micro-averaged strong-match scores plus the counts behind them."""

    n_docs: int
    n_gold: int  # gold tuples scored ("Unknown" labels excluded)
    n_pred: int  # predicted tuples scored (after dropping "Unknown" surfaces)
    n_unknown_gold: int  # gold labels excluded because entity_id == "Unknown"
    n_pred_ignored: int  # predictions dropped because they hit an "Unknown" surface

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def micro_prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Micro precision/recall/F1 from counts. With no true positive all three are 0
    (as in the authors' EL scorer), so empty predictions or empty gold never divide
    by zero."""
    for name, value in (("tp", tp), ("fp", fp), ("fn", fn)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if tp == 0:
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    precision = tp / (tp + fp)
    recall = tp / (tp + fn)
    return {"precision": precision, "recall": recall, "f1": 2 * precision * recall / (precision + recall)}


def el_scores(documents: Iterable[ELDocument]) -> ELScores:
    """Strong-match micro P/R/F1 over the multiset of (doc, surface.strip(), entity id).

    Follows the authors' EL scorer:
    - documents are keyed by their position in `documents` (the scorer counts lines,
      so two items sharing an id stay separate);
    - a gold label whose entity id is "Unknown" is excluded, and its stripped surface
      goes into a per-document pool; each prediction whose stripped surface is in the
      pool is dropped and removes one copy from the pool. So an "Unknown" label
      cancels at most one prediction of that surface, whatever entity it links to;
    - matching counts duplicates: two gold "Paris"->Q90 and one predicted give tp=1,
      fn=1; a tuple predicted twice but gold once gives tp=1, fp=1.
    """
    gold_counts: Counter[tuple[int, str, str]] = Counter()
    pred_counts: Counter[tuple[int, str, str]] = Counter()
    n_docs = n_unknown = n_ignored = 0
    for doc_index, doc in enumerate(documents):
        n_docs += 1
        unknown_pool: list[str] = []
        for surface, entity_id in doc.gold:
            if entity_id == UNKNOWN_ENTITY:
                unknown_pool.append(surface.strip())
                n_unknown += 1
            else:
                gold_counts[(doc_index, surface.strip(), entity_id)] += 1
        for surface, entity_id in doc.predictions:
            surface = surface.strip()
            if surface in unknown_pool:
                unknown_pool.remove(surface)
                n_ignored += 1
            else:
                pred_counts[(doc_index, surface, entity_id)] += 1
    tp = sum((gold_counts & pred_counts).values())
    n_gold = sum(gold_counts.values())
    n_pred = sum(pred_counts.values())
    fp, fn = n_pred - tp, n_gold - tp
    return ELScores(
        **micro_prf(tp, fp, fn), tp=tp, fp=fp, fn=fn, n_docs=n_docs, n_gold=n_gold, n_pred=n_pred,
        n_unknown_gold=n_unknown, n_pred_ignored=n_ignored,
    )


Span = tuple[int, int]


@dataclass(frozen=True)
class ELSpanDocument:
    """One document to score by mention boundaries. `gold` holds (span, entity id) for every gold
    label, "Unknown" ones included; `predictions` holds (span, entity id) per predicted mention,
    span None when the mention is not in the text. Spans are character [start, end) offsets of
    the stripped surfaces."""

    gold: Sequence[tuple[Span, str]]
    predictions: Sequence[tuple[Span | None, str]]


@dataclass(frozen=True)
class ELSpanScores(MicroScores):
    """Mention detection apart from linking: micro P/R/F1 over (doc, span) whatever entity each
    mention links to, and how many of the right spans link to the right entity."""

    linked_right: int  # right spans whose entity is the gold one

    @property
    def linking_accuracy(self) -> float | None:
        """Of the mentions with a right span, the fraction linked right; None without any."""
        return self.linked_right / self.tp if self.tp else None


def el_span_scores(documents: Iterable[ELSpanDocument]) -> ELSpanScores:
    """Span scores (`ELSpanScores`). "Unknown" gold labels are excluded as in `el_scores`: each
    cancels at most one prediction at its span. A mention found nowhere in the text is a false
    positive. Duplicates count as in `el_scores` (the multiset of spans)."""
    tp = fp = fn = linked = 0
    for doc in documents:
        gold: dict[Span, Counter[str]] = {}
        unknown: Counter[Span] = Counter()
        for span, entity_id in doc.gold:
            if entity_id == UNKNOWN_ENTITY:
                unknown[span] += 1
            else:
                gold.setdefault(tuple(span), Counter())[entity_id] += 1
        pred: dict[Span, Counter[str]] = {}
        for span, entity_id in doc.predictions:
            if span is None:
                fp += 1
            elif unknown[tuple(span)] > 0:
                unknown[tuple(span)] -= 1
            else:
                pred.setdefault(tuple(span), Counter())[entity_id] += 1
        for span in gold.keys() | pred.keys():
            g, p = sum(gold.get(span, Counter()).values()), sum(pred.get(span, Counter()).values())
            tp += min(g, p)
            fp += max(p - g, 0)
            fn += max(g - p, 0)
            linked += sum((gold.get(span, Counter()) & pred.get(span, Counter())).values())
    return ELSpanScores(**micro_prf(tp, fp, fn), tp=tp, fp=fp, fn=fn, linked_right=linked)


def el_document_from_result_line(line: Mapping[str, Any]) -> ELDocument:
    """Build an `ELDocument` from one EL result line (the test item plus "output" and
    "output_qid"): gold surfaces are `text[start:end]` of each label's span,
    predictions come from `parse_el_output`."""
    for key in ("text", "labels", "output", "output_qid"):
        if key not in line:
            raise KeyError(f"EL result line lacks the field {key!r}")
    text = line["text"]
    gold = [(text[label["span"][0]:label["span"][1]], str(label["entity_id"])) for label in line["labels"]]
    return ELDocument(gold=gold, predictions=parse_el_output(line["output"], line["output_qid"]))


def el_scores_from_result_lines(lines: Iterable[Mapping[str, Any]]) -> ELScores:
    """Score an EL result file's lines (in file order) exactly as the authors do."""
    return el_scores(el_document_from_result_line(line) for line in lines)


# ---------------------------------------------------------------------------
# Retrieval
# ---------------------------------------------------------------------------

def recall_at_k(ranked_ids: Sequence[str], gold_ids: Iterable[str], k: int) -> float:
    """Fraction of the distinct gold ids found among the first `k` ranked ids.

    A ranking shorter than k is read as is; repeated ids in the ranking count once.
    Raises on k < 1 or an empty gold set (recall is undefined there; skip such items
    rather than scoring them 0 or 1).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    gold = set(gold_ids)
    if not gold:
        raise ValueError("recall_at_k needs at least one gold id")
    return len(gold & set(ranked_ids[:k])) / len(gold)


# ---------------------------------------------------------------------------
# Aggregation (plain dicts for a metrics JSON line)
# ---------------------------------------------------------------------------

def mean_scores(rows: Iterable[Mapping[str, float]]) -> dict[str, float | int]:
    """Macro average of per-item score dicts (e.g. `qa_scores` outputs), keyed like
    the rows, plus "n" (the item count). Every row must have the same keys. No rows
    gives {"n": 0} (no averages to report rather than a fake 0)."""
    totals: dict[str, float] = {}
    n = 0
    keys: set[str] | None = None
    for row in rows:
        if keys is None:
            keys = set(row)
        elif set(row) != keys:
            raise ValueError(f"row {n} has keys {sorted(row)}, expected {sorted(keys)}")
        for key, value in row.items():
            totals[key] = totals.get(key, 0.0) + float(value)
        n += 1
    out: dict[str, float | int] = {"n": n}
    for key in sorted(totals):
        out[key] = totals[key] / n
    return out


def scores_by_group(rows: Iterable[Mapping[str, float]], groups: Iterable[str]) -> dict[str, dict[str, float | int]]:
    """`mean_scores` per group (e.g. per HotpotQA/2Wiki question type: "bridge",
    "comparison", "compositional", ...), groups sorted by name. `rows` and `groups`
    are parallel and must have the same length."""
    rows = list(rows)
    groups = list(groups)
    if len(rows) != len(groups):
        raise ValueError(f"{len(rows)} score rows but {len(groups)} group labels")
    buckets: dict[str, list[Mapping[str, float]]] = {}
    for row, group in zip(rows, groups):
        buckets.setdefault(str(group), []).append(row)
    return {group: mean_scores(buckets[group]) for group in sorted(buckets)}


def qa_summary(rows: Sequence[Mapping[str, float]], groups: Sequence[str] | None = None) -> dict[str, Any]:
    """One metrics-JSON-ready dict: overall means ("n", "em", "f1", "precision",
    "recall") and, when groups are given, a "by_group" breakdown."""
    summary: dict[str, Any] = dict(mean_scores(rows))
    if groups is not None:
        summary["by_group"] = scores_by_group(rows, groups)
    return summary


# ---------------------------------------------------------------------------
# A run's metrics object (the JSON `onegen evaluate` prints)
# ---------------------------------------------------------------------------

@dataclass(kw_only=True)
class EvaluatedWith:
    """The settings a run was evaluated with, reported after its figures."""

    model: str
    candidates: str
    control: str | None
    top_k: int
    copy_input: bool | None = None  # tasks that copy their input only
    copy_overrides: int | None = None  # tokens the copy constraint replaced, over all examples
    early_close: bool | None = None  # tasks that copy their input only: mentions may end early
    model_opens: bool | None = None  # ... and start only where the model opened them
    checks: dict[str, str] = field(default_factory=dict)  # the result checks' settings (onegen/result_checks.py)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "candidates": self.candidates, "control": self.control,
                               "top_k": self.top_k}
        if self.copy_input is not None:
            out.update(copy_input=self.copy_input, copy_overrides=self.copy_overrides)
        if self.early_close is not None:
            out["early_close"] = self.early_close
        if self.model_opens is not None:
            out["model_opens"] = self.model_opens
        out.update(self.checks)
        return out


@dataclass(kw_only=True)
class TaskMetrics(Mapping[str, Any]):
    """What every task reports about a run; subclasses add the task's own figures.

    `to_dict()` is the JSON object (keys in the order `onegen evaluate` has always printed them).
    Reading it as a Mapping (`metrics["f1"]`) is a read-only view of that dict, kept for readers
    written against the former plain dict."""

    task: str
    examples: int
    errors: int
    resumed: int
    skipped: int = 0  # items of the dataset file that could not be read (`--skip-bad`), so never run
    retrieval_limit_hits: int = 0
    stop_reasons: dict[str, int] = field(default_factory=dict)
    error_categories: dict[str, int] = field(default_factory=dict)
    seconds_per_example_median: float | None = None
    seconds_total: float = 0.0
    run: EvaluatedWith | None = None  # None when scored from records alone (a result file read back)

    def task_figures(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"task": self.task, "examples": self.examples, "errors": self.errors,
                               "skipped": self.skipped, "resumed": self.resumed}
        out.update(self.task_figures())
        out.update(retrieval_limit_hits=self.retrieval_limit_hits, stop_reasons=dict(self.stop_reasons),
                   error_categories=dict(self.error_categories),
                   seconds_per_example_median=self.seconds_per_example_median, seconds_total=self.seconds_total)
        if self.run is not None:
            out.update(self.run.to_dict())
        return out

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self):
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


@dataclass(kw_only=True)
class ELMetrics(TaskMetrics):
    """Entity linking: strong-match micro scores, the authors' scorer on the same lines, and
    accuracy on mentions whose name is ambiguous."""

    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int
    gold_mentions: int
    predicted_mentions: int
    authors_scorer: dict[str, float] | None = None  # precision, recall, f1; None without result lines
    ambiguous_mentions: int = 0
    ambiguous_accuracy: float | None = None  # None when no gold mention is ambiguous
    ambiguity_from: str = "labels"
    # Mention boundaries apart from linking (`el_span_scores`); None when scored without spans.
    spans: ELSpanScores | None = None

    def task_figures(self) -> dict[str, Any]:
        out: dict[str, Any] = {"precision": self.precision, "recall": self.recall, "f1": self.f1, "tp": self.tp,
                               "fp": self.fp, "fn": self.fn, "gold_mentions": self.gold_mentions,
                               "predicted_mentions": self.predicted_mentions}
        if self.authors_scorer is not None:
            out["authors_scorer"] = dict(self.authors_scorer)
        out.update(ambiguous_mentions=self.ambiguous_mentions, ambiguous_accuracy=self.ambiguous_accuracy,
                   ambiguity_from=self.ambiguity_from)
        if self.spans is not None:
            sp = self.spans
            out.update(span_precision=sp.precision, span_recall=sp.recall, span_f1=sp.f1, span_tp=sp.tp,
                       span_fp=sp.fp, span_fn=sp.fn, linking_accuracy=sp.linking_accuracy)
        return out


@dataclass(kw_only=True)
class QAMetrics(TaskMetrics):
    """Question answering: mean answer scores (None when no example was scored), per question
    type when the file has types, recall@1 per hop, and runs that never gave an answer."""

    em: float | None = None
    f1: float | None = None
    match: float | None = None
    precision: float | None = None
    recall: float | None = None
    by_type: dict[str, dict[str, float | int]] | None = None
    retrieval: dict[str, dict[str, float | int]] = field(default_factory=dict)
    no_final_answer: int = 0
    # With result checks that change answers (onegen/result_checks.py): EM and F1 of the answers as
    # the model wrote them (what the authors' scorers read from the output), and how many the checks
    # changed; None when they changed none.
    answers_as_written: dict[str, float | int] | None = None

    def task_figures(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in ("em", "f1", "match", "precision", "recall")
                               if getattr(self, k) is not None}
        if self.by_type is not None:
            out["by_type"] = self.by_type
        if self.answers_as_written is not None:
            out["answers_as_written"] = self.answers_as_written
        out.update(retrieval=self.retrieval, no_final_answer=self.no_final_answer)
        return out
