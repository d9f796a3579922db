"""Per-task behaviour in one place: everything that differs between entity linking, multi-hop QA
and single-hop QA beyond the protocol strings (those are `TaskSpec`s in onegen/protocols.py).

The engine, evaluation, renderers and error browser ask the task object instead of comparing task
names:

    task = get_task(trace.task)
    task.query_text(segment)          # what a retrieval searched for
    task.fill_result(trace, text, eos_id)   # entities / hops / answer from a finished trace

Adding a task: a `TaskSpec` in protocols.py, a `Task` subclass here, and its dataset parser in
datasets.py.
"""
from __future__ import annotations

import re
from typing import ClassVar

from .documents import split_written_sentences
from .protocols import ENTITY_LINKING, MULTI_HOP, SINGLE_HOP, TaskName, TaskSpec
from .trace import Hop, LinkedEntity, Trace

_MENTION_END = re.compile(r"<MENTION>((?:(?!<MENTION>).)*?)</MENTION>\s*$", re.S)
_FINAL = re.compile(r"<FINAL-ANSWER>(.*?)</FINAL-ANSWER>", re.S)


class Task:
    """Behaviour of one task; subclasses override what differs."""

    name: ClassVar[TaskName]
    label: ClassVar[str]  # short, for menus and headings
    spec: ClassVar[TaskSpec]
    # Entity linking rewrites its input: decoding may be constrained to copy it (onegen/constrain.py).
    copies_input: ClassVar[bool] = False

    def query_text(self, segment: str) -> str:
        """The text a retrieval token's query stands for, from the text written since the last
        retrieval (or forced token) up to the retrieval token."""
        return segment.strip()

    def fill_result(self, trace: Trace, input_text: str, eos_id: int) -> None:
        """Fill `trace.result` from the finished trace."""
        raise NotImplementedError


class EntityLinking(Task):
    name, label, spec = "entity-linking", "Entity linking", ENTITY_LINKING
    copies_input = True

    def query_text(self, segment: str) -> str:
        m = _MENTION_END.search(segment)
        return m.group(1).strip() if m else ""

    def fill_result(self, trace: Trace, input_text: str, eos_id: int) -> None:
        trace.result.entities = link_mentions(input_text, trace)


class MultiHop(Task):
    name, label, spec = "multi-hop", "Multi-hop QA", MULTI_HOP

    def query_text(self, segment: str) -> str:
        # The sub-question is the last sentence before the retrieval token.
        pieces = split_written_sentences(segment)
        return pieces[-1] if pieces else segment.strip()

    def fill_result(self, trace: Trace, input_text: str, eos_id: int) -> None:
        answers = _FINAL.findall(trace.result.output_text)
        trace.result.final_answer_found = bool(answers)
        trace.result.answer = answers[-1].strip() if answers else None
        trace.result.hops = multi_hop_chain(trace)


class SingleHop(Task):
    name, label, spec = "single-hop", "Single-hop QA", SINGLE_HOP

    def fill_result(self, trace: Trace, input_text: str, eos_id: int) -> None:
        reflection = set(self.spec.added_tokens)
        gen = [t for t in trace.tokens if t.kind != "inserted"]
        trace.result.reflection_tokens = [t.text for t in gen if t.text in reflection]
        answer = "".join(t.text for t in gen if t.text not in reflection and t.id != eos_id)
        trace.result.answer = answer.strip()
        trace.result.final_answer_found = bool(trace.result.answer)


TASKS: dict[str, Task] = {t.name: t for t in (EntityLinking(), MultiHop(), SingleHop())}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose one of: {', '.join(TASK_NAMES)}") from None


# -- result extraction (pure functions of a trace) -------------------------------------------------

def link_mentions(input_text: str, trace: Trace) -> list[LinkedEntity]:
    """Each `[LK]` links the mention written just before it, by position in the output, so one
    malformed mention never shifts the others. Spans are found in the input left to right."""
    out: list[LinkedEntity] = []
    cursor = 0
    for i, r in enumerate(trace.retrievals):
        hit = r.chosen_hit
        if not r.query_text or hit is None:
            continue
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
