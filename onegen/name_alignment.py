"""Name alignment for entity linking: a linked mention's span checked against the name of the
entity it links to.

A small model marks spans loosely where a text is worded unlike its training data: it takes in
the words beside a name ("Kanvica back in 1991", "Fans of Stona Athletic"), cuts a title in two
("Orchard" ... "Nagon"), or marks an aside ("Believe it or not") and links it to whichever entity
its query state lands nearest. The retrieval still names the entity it chose, so the span can be
checked against that entity's name in the input:

- "off": the spans the model marked, as the authors' loop reports them;
- "snap": where the linked name occurs in the input (any casing) overlapping the marked span, the
  mention becomes that occurrence; where none overlaps but one begins right after the span (only
  spaces and punctuation between), the mention becomes that one: a model that opens its mention
  on the words before a name ("Born in" for Hudroltvale, "starring" for an actor) still queries
  for the name, and its retrieval finds it; a mention moved onto a span that an earlier mention
  took, or that the model marked itself, is a duplicate;
- "strict": "snap", and a mention that shares no word with its linked name, where the name does
  not occur over or right after it, is not linked (a mention need not spell the title, but must
  share a word with it: "German" links to "Germany", "Believe it or not" to no person).

The model's own tokens and retrievals are never changed: an aligned mention keeps the span the
model marked (`model_start`, `model_end`), and a refused one moves to `Result.unlinked`.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Literal, Sequence

from .result_checks import check_value
from .trace import LinkedEntity

NameAlignment = Literal["off", "snap", "strict"]

# A title's leading article is optional in running text ("the night of haltandel" for "The
# Night of Haltandel", "Night of Haltandel" too).
_ARTICLE = re.compile(r"^(the|a|an)\s+", re.IGNORECASE)
_WORD = re.compile(r"\w+")
# Shorter word stems than this match too much ("in" is a prefix of "India").
_MIN_STEM = 4
# What may lie between a marked span and a name that follows it for the name to count as right
# after it: a space, a comma, a quote; never a word.
_NEXT_TO = re.compile(r"\W{0,3}")


def name_occurrence(text: str, name: str, start: int, end: int) -> tuple[int, int] | None:
    """The occurrence of `name` in `text` (any casing, at word edges, leading article optional)
    that overlaps [start, end) most; else the one that begins right after `end` (nothing but
    spaces and punctuation between); None when there is neither."""
    best: tuple[int, tuple[int, int]] | None = None
    following: tuple[int, int] | None = None
    names = {name.strip()}
    names.add(_ARTICLE.sub("", name.strip()))
    for n in names:
        if not n:
            continue
        for m in re.finditer(rf"(?<!\w){re.escape(n)}(?!\w)", text, re.IGNORECASE):
            overlap = min(end, m.end()) - max(start, m.start())
            if overlap > 0 and (best is None or overlap > best[0]
                                or (overlap == best[0] and m.end() - m.start() > best[1][1] - best[1][0])):
                best = (overlap, (m.start(), m.end()))
            elif following is None and m.start() >= end and _NEXT_TO.fullmatch(text, end, m.start()):
                following = (m.start(), m.end())
    return best[1] if best is not None else following


def shares_a_word(mention: str, name: str) -> bool:
    """True when a word of the mention equals a word of the name, or one is the start of the other
    and the shorter has at least `_MIN_STEM` letters ("German" and "Germany")."""
    a = {w.lower() for w in _WORD.findall(mention)}
    b = {w.lower() for w in _WORD.findall(name)}
    if a & b:
        return True
    for x in a:
        for y in b:
            short, long = (x, y) if len(x) <= len(y) else (y, x)
            if len(short) >= _MIN_STEM and long.startswith(short):
                return True
    return False


def align_names(text: str, entities: Sequence[LinkedEntity],
                policy: NameAlignment) -> tuple[list[LinkedEntity], list[LinkedEntity]]:
    """(linked, unlinked) after aligning each mention with its linked name. Order is kept;
    `alignment` says what happened to each mention that changed."""
    check_value("name_alignment", policy)
    if policy == "off":
        return list(entities), []
    aligned = [_aligned(text, e, policy) for e in entities]
    # A mention the model marked on the name itself keeps its span against one moved onto it.
    own = {(a.start, a.end) for a in aligned if a is not None and a.alignment is None}
    linked: list[LinkedEntity] = []
    unlinked: list[LinkedEntity] = []
    taken: set[tuple[int, int]] = set()
    for marked, e in zip(entities, aligned):
        if e is None:
            unlinked.append(dataclasses.replace(marked, alignment="no-shared-word"))
            continue
        if e.start is None or e.end is None:
            linked.append(e)
            continue
        span = (e.start, e.end)
        if span in taken or (e.alignment == "snapped" and span in own):
            unlinked.append(dataclasses.replace(marked, alignment="duplicate"))
            continue
        taken.add(span)
        linked.append(e)
    return linked, unlinked


def _aligned(text: str, e: LinkedEntity, policy: NameAlignment) -> LinkedEntity | None:
    """One mention moved onto its linked name where the name lies over or right after it; None
    where "strict" refuses it."""
    if e.start is None or e.end is None:
        return e
    span = name_occurrence(text, e.title, e.start, e.end)
    if span is not None and span != (e.start, e.end):
        return dataclasses.replace(e, mention=text[span[0]:span[1]], start=span[0], end=span[1],
                                   model_start=e.start, model_end=e.end, alignment="snapped")
    if span is None and policy == "strict" and not shares_a_word(e.mention, e.title):
        return None
    return e


def alignment_words(entity: LinkedEntity, text: str) -> str:
    """What the name alignment did to one mention, in words for a reader; "" when nothing."""
    if entity.alignment == "snapped" and entity.model_start is not None and entity.model_end is not None:
        marked = text[entity.model_start:entity.model_end]
        after = entity.start is not None and entity.model_end <= entity.start
        return f"the model marked {marked!r}; moved onto the linked name" + (" that follows it" if after else "")
    if entity.alignment == "no-shared-word":
        return f"not linked: no word in common with {entity.title!r}, its query's top hit"
    if entity.alignment == "duplicate":
        return "not linked: moved onto the span of another mention"
    return ""
