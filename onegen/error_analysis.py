"""Per-example error categories: why one example went wrong, read off its gold labels and its trace.

`categorize(task, example, trace)` returns a list of `ErrorCategory`; a correct example gets [].
Each task's rules are a function here (`entity_linking_categories`, ...) that its `Task` object
applies.

Entity linking (one category per offending mention; "Unknown" gold labels are not scored, and a
prediction on an "Unknown" mention is neither right nor spurious, as in the authors' scorer):
- "missed mention": a gold mention with no predicted mention at its span (or, failing that, with
  its surface);
- "spurious mention": a predicted mention that matches no gold mention;
- "wrong entity": the mention is right, its entity is not. `gold_rank` is the 1-based rank of the
  gold entity among that retrieval's top-k hits (1 = top), or None when it is not among them.

Each entity-linking category also carries ELEVANT's finer error labels where our data decides
them (`detail["kinds"]`, our words; `detail["elevant"]`, ELEVANT's `ErrorLabel` values), and the
error browser filters by them as "wrong entity: not among candidates" and so on:
- wrong entity: "wrong candidate" (the gold entity is among the retrieval's hits, the model
  ranked another first) or "not among candidates" (it is not among them); and "partial name"
  (the mention is a proper part of the gold entity's multi-word name);
- missed mention: "lowercased" (the gold mention is not a name: its first letter is lowercase),
  "partially included" (a predicted mention lies inside the gold one), "partial overlap" (a
  predicted mention overlaps it), else "other";
- spurious mention: "wrong span" (it overlaps a gold mention), "lowercased" (no overlap, not a
  name), else "other".
ELEVANT's demonym, metonymy and rare-entity labels need a knowledge base's demonym list, entity
types and link popularity, which neither the result lines nor the index carry; they are not
assigned here (ELEVANT assigns them itself to files exported with `onegen export --format elevant`
when its Wikidata mappings cover the entities).

Multi-hop (an example is correct when its answer is an exact match with the answer or an alias):
- "retrieval miss at hop k" (k 1-based): the k-th retrieval chose a paragraph that is not the
  gold one (see `hop_gold`);
- "hit the retrieval limit": the run used every retrieval it was allowed;
- "no final answer": no complete <FINAL-ANSWER>...</FINAL-ANSWER>;
- "right retrieval but wrong answer": an answer was given, every checked retrieval was right;
- "wrong answer": an answer was given but no retrieval could be checked (none made, or no gold).

Single-hop (correct when a gold answer is an exact match with, or contained in, the answer, the
Self-RAG "match" rule; the model writes sentences):
- "retrieval miss": the passage used is not the gold one (`gold_id`) or, without a gold id,
  contains none of the gold answers;
- "no answer": nothing but reflection tokens was generated;
- "right retrieval but wrong answer".

Any task: "engine error" when the example has no trace (the engine raised).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from .datasets import ELExample, MultiHopExample, SingleHopExample
from .metrics import UNKNOWN_ENTITY, normalize_answer, qa_scores
from .trace import Hit, LinkedEntity, Trace

MISSED_MENTION = "missed mention"
SPURIOUS_MENTION = "spurious mention"
WRONG_ENTITY = "wrong entity"
RETRIEVAL_LIMIT = "hit the retrieval limit"
NO_FINAL_ANSWER = "no final answer"
RIGHT_RETRIEVAL_WRONG_ANSWER = "right retrieval but wrong answer"
WRONG_ANSWER = "wrong answer"
RETRIEVAL_MISS = "retrieval miss"
NO_ANSWER = "no answer"
ENGINE_ERROR = "engine error"


def retrieval_miss_at(hop: int) -> str:
    """The category name of a miss at a 1-based hop."""
    return f"retrieval miss at hop {hop}"


@dataclass(frozen=True)
class ErrorCategory:
    name: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "detail": dict(self.detail)}

    @property
    def kinds(self) -> list[str]:
        """Finer labels of this category (entity linking: ELEVANT's), in our words."""
        kinds = self.detail.get("kinds")
        return [str(k) for k in kinds] if isinstance(kinds, list) else []

    def names(self) -> list[str]:
        """The category's name, then "name: kind" for each finer label: what a filter offers."""
        return [self.name, *(f"{self.name}: {k}" for k in self.kinds)]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ErrorCategory":
        return cls(name=str(d["name"]), detail=dict(d.get("detail") or {}))


# -- entity linking: aligning predicted mentions with gold labels ----------------------------------

@dataclass
class MentionAlignment:
    """`gold[i]` is the predicted entity aligned with `example.labels[i]` (None: missed);
    `unmatched` are predictions aligned with no label."""

    gold: list[LinkedEntity | None]
    unmatched: list[LinkedEntity]


def align_mentions(example: ELExample, entities: Sequence[LinkedEntity]) -> MentionAlignment:
    """Pair gold labels with predicted mentions: first by identical character span, then (for
    predictions whose span is unknown or differs) by identical stripped surface, left to right.
    Each prediction is used once. "Unknown" labels take part, so a prediction on an unknown
    mention is consumed rather than reported as spurious."""
    gold: list[LinkedEntity | None] = [None] * len(example.labels)
    used = [False] * len(entities)
    by_span = {}
    for j, e in enumerate(entities):
        if e.start is not None and e.end is not None:
            by_span.setdefault((e.start, e.end), []).append(j)
    for i, label in enumerate(example.labels):
        for j in by_span.get(tuple(label.span), []):
            if not used[j]:
                gold[i], used[j] = entities[j], True
                break
    for i, label in enumerate(example.labels):
        if gold[i] is not None:
            continue
        surface = label.surface.strip()
        for j, e in enumerate(entities):
            if not used[j] and e.mention.strip() == surface:
                gold[i], used[j] = e, True
                break
    return MentionAlignment(gold=gold, unmatched=[e for j, e in enumerate(entities) if not used[j]])


def gold_rank(trace: Trace, entity: LinkedEntity, gold_id: str) -> int | None:
    """1-based rank of `gold_id` among the hits of the retrieval that linked `entity`."""
    if not 0 <= entity.retrieval < len(trace.retrievals):
        return None
    for hit in trace.retrievals[entity.retrieval].hits:
        if hit.id == gold_id:
            return hit.rank + 1
    return None


def entity_linking_categories(example: ELExample, trace: Trace) -> list[ErrorCategory]:
    entities = trace.result.entities or []
    aligned = align_mentions(example, entities)
    gold_spans = [tuple(label.span) for label in example.labels if label.entity_id != UNKNOWN_ENTITY]
    unmatched_spans = [(e.start, e.end) for e in aligned.unmatched if e.start is not None and e.end is not None]
    out: list[ErrorCategory] = []
    for label, pred in zip(example.labels, aligned.gold):
        if label.entity_id == UNKNOWN_ENTITY:
            continue
        where = {"surface": label.surface, "span": list(label.span), "gold": label.entity_id}
        if pred is None:
            out.append(ErrorCategory(MISSED_MENTION, {**where, "optional": label.optional,
                                                      **_missed_kinds(label.surface, tuple(label.span),
                                                                      unmatched_spans)}))
        elif pred.entity_id != label.entity_id:
            hits = trace.retrievals[pred.retrieval].hits if 0 <= pred.retrieval < len(trace.retrievals) else []
            rank = gold_rank(trace, pred, label.entity_id)
            out.append(ErrorCategory(WRONG_ENTITY, {
                **where, "predicted": pred.entity_id, "predicted_title": pred.title, "retrieval": pred.retrieval,
                "gold_rank": rank, "top_k": len(hits),
                **_wrong_entity_kinds(label.surface.strip(), label.name, rank)}))
    for pred in aligned.unmatched:
        span = None if pred.start is None else (pred.start, pred.end)
        out.append(ErrorCategory(SPURIOUS_MENTION, {
            "mention": pred.mention, "span": None if span is None else list(span),
            "predicted": pred.entity_id, "retrieval": pred.retrieval,
            **_spurious_kinds(pred.mention, span, gold_spans)}))
    return out


# ELEVANT's finer labels (its `ErrorLabel` values) and our words for them.
def _kinds(*pairs: tuple[str, str]) -> dict[str, list[str]]:
    return {"kinds": [ours for ours, _ in pairs], "elevant": [theirs for _, theirs in pairs]}


def _wrong_entity_kinds(surface: str, name: str | None, rank: int | None) -> dict[str, list[str]]:
    pairs = [("wrong candidate", "DISAMBIGUATION_WRONG") if rank is not None
             else ("not among candidates", "DISAMBIGUATION_CANDIDATES_WRONG")]
    if is_partial_name(surface, name):
        pairs.append(("partial name", "DISAMBIGUATION_PARTIAL_NAME_WRONG"))
    return _kinds(*pairs)


def _missed_kinds(surface: str, span: tuple[int, int], predicted: Sequence[tuple[int, int]]) -> dict[str, list[str]]:
    if not is_name(surface):
        return _kinds(("lowercased", "NER_FN_LOWERCASED"))
    if any(span != p and span[0] <= p[0] and p[1] <= span[1] for p in predicted):
        return _kinds(("partially included", "NER_FN_PARTIALLY_INCLUDED"))
    if any(overlaps(span, p) for p in predicted):
        return _kinds(("partial overlap", "NER_FN_PARTIAL_OVERLAP"))
    return _kinds(("other", "NER_FN_OTHER"))


def _spurious_kinds(mention: str, span: tuple[int, int] | None, gold: Sequence[tuple[int, int]]) -> dict[str, list[str]]:
    if span is not None and any(overlaps(span, g) for g in gold):
        return _kinds(("wrong span", "NER_FP_WRONG_SPAN"))
    if not is_name(mention):
        return _kinds(("lowercased", "NER_FP_LOWERCASED"))
    return _kinds(("other", "NER_FP_OTHER"))


def is_name(text: str) -> bool:
    """ELEVANT's named-entity test: the first letter of the text is uppercase."""
    first = next((ch for ch in text if ch.isalpha()), None)
    return first is not None and first.isupper()


def is_partial_name(surface: str, name: str | None) -> bool:
    """ELEVANT's partial name: the gold name has several words and the mention is a shorter part of it."""
    return bool(name) and " " in name and len(surface) < len(name) and bool(surface) and surface in name


def overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


# -- multi-hop: the gold paragraph of each hop ---------------------------------------------------

def context_document_id(example_id: str, index: int) -> str:
    """Id of a question's own context paragraph when it is used as a candidate document."""
    return f"{example_id}:{index}"


@dataclass(frozen=True)
class HopGold:
    """What counts as the right paragraph for one hop. `source` is "decomposition" (that hop's
    own paragraph) or "supporting_facts" (any supporting paragraph: no per-hop gold known)."""

    titles: frozenset[str]
    ids: frozenset[str]
    source: str

    def matches(self, hit: Hit | None) -> bool:
        if hit is None:
            return False
        return hit.id in self.ids or _title_key(hit.title) in self.titles

    def to_dict(self) -> dict[str, Any]:
        return {"titles": sorted(self.titles), "ids": sorted(self.ids), "source": self.source}


def _title_key(title: str) -> str:
    return title.strip().casefold()


def hop_gold(example: MultiHopExample, hop: int) -> HopGold | None:
    """Gold for the 0-based `hop`: the hop's step of the question decomposition when it names a
    paragraph (`title`, `paragraph_id`, or MuSiQue's `paragraph_support_idx` into the context);
    otherwise the supporting-fact titles; None when neither is known."""
    steps = example.decomposition or []
    if hop < len(steps):
        step = steps[hop]
        titles: set[str] = set()
        ids: set[str] = set()
        title = step.get("title")
        if isinstance(title, str) and title.strip():
            titles.add(_title_key(title))
        pid = step.get("paragraph_id")
        if pid is not None and not isinstance(pid, bool):
            ids.add(str(pid))
        idx = step.get("paragraph_support_idx", pid if isinstance(pid, int) else None)
        if isinstance(idx, int) and not isinstance(idx, bool) and 0 <= idx < len(example.context):
            ids.add(context_document_id(example.id, idx))
            if "paragraph_support_idx" in step:
                titles.add(_title_key(example.context[idx].title))
        if titles or ids:
            return HopGold(frozenset(titles), frozenset(ids), "decomposition")
    if example.supporting_titles:
        return HopGold(frozenset(_title_key(t) for t in example.supporting_titles), frozenset(), "supporting_facts")
    return None


def hop_correct(example: MultiHopExample, trace: Trace, hop: int) -> bool | None:
    """Whether the 0-based `hop`'s chosen paragraph is its gold (None: no gold known)."""
    gold = hop_gold(example, hop)
    if gold is None or hop >= len(trace.retrievals):
        return None
    return gold.matches(trace.retrievals[hop].chosen_hit)


def multi_hop_categories(example: MultiHopExample, trace: Trace) -> list[ErrorCategory]:
    answer = trace.result.answer if trace.result.final_answer_found else None
    if answer is not None and qa_scores(answer, example.answers)["em"] == 1.0:
        return []
    out: list[ErrorCategory] = []
    checked = 0
    for k, r in enumerate(trace.retrievals):
        gold = hop_gold(example, k)
        if gold is None:
            continue
        checked += 1
        hit = r.chosen_hit
        if not gold.matches(hit):
            detail = {"hop": k + 1, "retrieved": None if hit is None else {"id": hit.id, "title": hit.title},
                      "gold": gold.to_dict(), "gold_rank": _rank_of(gold, r.hits), "query": r.query_text}
            detail.update(_bridge(example, k, r.query_text))
            out.append(ErrorCategory(retrieval_miss_at(k + 1), detail))
    if trace.result.retrieval_limit_reached:
        out.append(ErrorCategory(RETRIEVAL_LIMIT, {"retrievals": len(trace.retrievals),
                                                   "limit": trace.settings.get("max_retrievals")}))
    if answer is None:
        out.append(ErrorCategory(NO_FINAL_ANSWER, {"stop_reason": trace.stop_reason}))
    elif not any(c.name.startswith("retrieval miss") for c in out):
        name = RIGHT_RETRIEVAL_WRONG_ANSWER if checked else WRONG_ANSWER
        out.append(ErrorCategory(name, {"answer": answer, "gold": example.answers, "retrievals_checked": checked}))
    return out


def _bridge(example: MultiHopExample, hop: int, query: str) -> dict[str, Any]:
    """For a miss after the first hop: the previous hop's gold answer (the entity this hop should
    ask about, from the decomposition) and whether the query names it. When it does not, the
    model misread the previous paragraph, and the retriever only followed its query."""
    steps = example.decomposition or []
    if hop < 1 or hop > len(steps) or not isinstance(steps[hop - 1], dict):
        return {}
    bridge = steps[hop - 1].get("answer")
    if not isinstance(bridge, str) or not bridge.strip():
        return {}
    words, said = normalize_answer(bridge).split(), normalize_answer(query or "").split()
    named = any(said[i:i + len(words)] == words for i in range(len(said) - len(words) + 1))
    return {"bridge": bridge, "bridge_in_query": named}


def _rank_of(gold: HopGold, hits: Sequence[Hit]) -> int | None:
    return next((h.rank + 1 for h in hits if gold.matches(h)), None)


# -- single-hop --------------------------------------------------------------------------------

def single_hop_retrieval_correct(example: SingleHopExample, trace: Trace) -> tuple[bool, str]:
    """(whether the passage used is right, the rule used): "gold_id" when the item names its gold
    passage, else "answer_in_passage" (a normalised gold answer occurs in the passage)."""
    hit = trace.retrievals[0].chosen_hit if trace.retrievals else None
    if example.gold_id is not None:
        return (hit is not None and hit.id == example.gold_id), "gold_id"
    if hit is None:
        return False, "answer_in_passage"
    passage = f" {normalize_answer(hit.title + ' ' + hit.text)} "
    found = any(g and f" {g} " in passage for g in (normalize_answer(a) for a in example.answers))
    return found, "answer_in_passage"


def answer_match(prediction: str | None, answers: Sequence[str]) -> float:
    """Self-RAG's accuracy: 1.0 when a normalised gold answer occurs (as whole words) in the
    normalised prediction."""
    if not prediction:
        return 0.0
    pred = f" {normalize_answer(prediction)} "
    return float(any(g and f" {g} " in pred for g in (normalize_answer(a) for a in answers)))


def single_hop_categories(example: SingleHopExample, trace: Trace) -> list[ErrorCategory]:
    answer = trace.result.answer or None
    if answer is not None and (answer_match(answer, example.answers) or qa_scores(answer, example.answers)["em"]):
        return []
    out: list[ErrorCategory] = []
    right, rule = single_hop_retrieval_correct(example, trace)
    hit = trace.retrievals[0].chosen_hit if trace.retrievals else None
    if not right:
        gold_rank_ = None
        if example.gold_id is not None and trace.retrievals:
            gold_rank_ = next((h.rank + 1 for h in trace.retrievals[0].hits if h.id == example.gold_id), None)
        out.append(ErrorCategory(RETRIEVAL_MISS, {
            "rule": rule, "retrieved": None if hit is None else {"id": hit.id, "title": hit.title},
            "gold_id": example.gold_id, "gold_rank": gold_rank_}))
    if answer is None:
        out.append(ErrorCategory(NO_ANSWER, {"stop_reason": trace.stop_reason}))
    elif right:
        out.append(ErrorCategory(RIGHT_RETRIEVAL_WRONG_ANSWER, {"answer": answer, "gold": example.answers, "rule": rule}))
    return out


# -- entry points --------------------------------------------------------------------------------

def categorize(task: str, example: Any, trace: Trace | None, error: str | None = None) -> list[ErrorCategory]:
    """Error categories of one example; [] when it is correct. `trace` None means the engine
    raised (`error` is its message). Which rules apply is the task's choice (onegen/tasks.py)."""
    from .tasks import get_task  # tasks.py refers to the rules here; imported late to avoid a cycle

    if trace is None:
        return [ErrorCategory(ENGINE_ERROR, {"message": error or "no trace"})]
    return get_task(task).categorize(example, trace)


def category_counts(records: Iterable[Any]) -> dict[str, int]:
    """Occurrences of each category name over `records`, most frequent first (ties by name).

    A record is anything with a `categories` attribute (an evaluation record), a result-line dict
    (categories under "onegen"), or a plain list of ErrorCategory. EL counts mentions (one
    example may miss several); the QA categories occur at most once per example.
    """
    counts: Counter[str] = Counter()
    for rec in records:
        if hasattr(rec, "categories"):
            cats = rec.categories
        elif isinstance(rec, Mapping):
            cats = (rec.get("onegen") or {}).get("categories") or []
        else:
            cats = rec
        for c in cats:
            counts[c.name if isinstance(c, ErrorCategory) else str(c["name"])] += 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
