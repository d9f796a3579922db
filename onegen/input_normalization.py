"""Reading a typed input the way the model was trained to read it, before the run starts.

Visitors type names in lowercase ("who is clasen grolane's mom") and leave off the closing mark
("Mendorina Puzanard: mother"); a small model trained on cased, punctuated text reads such input
worse, though nothing in it is unknown. The `normalize` setting (`input_normalization`, declared by
a model like the result checks, onegen/result_checks.py) rewrites two things and records each edit
in the trace (Trace.input_edits), so a reader sees what was typed beside what the model read:

- a name the index holds, typed in other case, gets the index's spelling ("clasen grolane" ->
  "Clasen Grolane"); only whole words, the longest name first, and only where the letters agree;
- a text that ends in a letter or digit gets a closing mark: "?" for a question, "." for a text
  to link.

Every edit keeps the characters' positions (case changes) or adds at the end, so a character span
in the text the model read is the same span in the typed text. Normalizing twice changes nothing.

    caser = NameCaser.from_titles(index.documents.titles())
    read = normalize_input("who is clasen grolane's mom", caser, closing="?")
    read.text   # "who is Clasen Grolane's mom?"; read.edits: the two edits
"""
from __future__ import annotations

import re
import weakref
from dataclasses import dataclass
from typing import Iterable, Iterator

from .trace import InputEdit

_WORD = re.compile(r"[^\W_]+(?:-[^\W_]+)*")  # letters and digits, hyphenated compounds kept whole
_DISAMBIGUATION = re.compile(r"\s*\([^()]*\)\s*$")  # "Thosona (city)" names Thosona
MAX_NAME_WORDS = 8


@dataclass(frozen=True)
class NormalizedInput:
    text: str  # what the model reads
    edits: list[InputEdit]


class NameCaser:
    """Index names by their lowercase words, to give a typed name the index's case."""

    def __init__(self, names: dict[tuple[str, ...], str]):
        self.names = names  # lowercase words -> the name as the index spells it
        self.longest = max((len(k) for k in names), default=0)

    @classmethod
    def from_titles(cls, titles: Iterable[str]) -> "NameCaser":
        """Names from document titles, each without a trailing "(...)". A name qualifies when it
        has a capital letter (nothing to restore otherwise) and is not a single word of three
        letters or fewer (a Wikipedia title "It" would recase every "it")."""
        names: dict[tuple[str, ...], str] = {}
        clashing: set[tuple[str, ...]] = set()
        for title in titles:
            name = _DISAMBIGUATION.sub("", title or "")
            words = _WORD.findall(name)
            if not words or name == name.lower() or len(words) > MAX_NAME_WORDS:
                continue
            if len(words) == 1 and len(words[0]) <= 3:
                continue
            key = tuple(w.lower() for w in words)
            # Two titles that differ only in case ("Harvest" and "HARVEST") leave the choice open:
            # no recasing for either.
            if names.setdefault(key, name) != name:
                clashing.add(key)
        return cls({k: v for k, v in names.items() if k not in clashing})

    def matches(self, text: str) -> Iterator[tuple[int, int, str]]:
        """(start, end, name) of each run of whole words that spells a name in any case, the
        longest name first, left to right."""
        words = list(_WORD.finditer(text))
        i = 0
        while i < len(words):
            step = 1
            for n in range(min(self.longest, len(words) - i), 0, -1):
                name = self.names.get(tuple(m.group().lower() for m in words[i:i + n]))
                if name is not None:
                    yield words[i].start(), words[i + n - 1].end(), name
                    step = n
                    break
            i += step

    def recase(self, text: str) -> tuple[str, list[InputEdit]]:
        """`text` with each typed name in the index's case; the edits, in text order."""
        chars, edits = list(text), []
        for start, end, name in self.matches(text):
            typed = text[start:end]
            # The name's own separators must be the typed ones: only the case may differ.
            if typed != name and typed.lower() == name.lower() and len(typed) == len(name):
                chars[start:end] = name
                edits.append(InputEdit(start=start, end=end, before=typed, after=name, kind="name_case"))
        return "".join(chars), edits


_CASERS: "weakref.WeakKeyDictionary[object, NameCaser]" = weakref.WeakKeyDictionary()


def index_caser(index) -> NameCaser:
    """The NameCaser of a VectorIndex's titles, built once per loaded index."""
    caser = _CASERS.get(index)
    if caser is None:
        caser = _CASERS[index] = NameCaser.from_titles(index.documents.titles())
    return caser


def closing_mark(text: str, mark: str) -> list[InputEdit]:
    """The edit that ends `text` with `mark`, where its last character is a letter or digit."""
    stripped = text.rstrip()
    if not stripped or not stripped[-1].isalnum():
        return []
    at = len(stripped)
    return [InputEdit(start=at, end=at, before="", after=mark, kind="closing_mark")]


def normalize_input(text: str, caser: NameCaser | None, *, closing: str) -> NormalizedInput:
    """`text` as the model should read it: names recased by `caser` (none without one), then the
    closing mark `closing` where the text ends without one. Trailing spaces stay after the mark."""
    read, edits = caser.recase(text) if caser is not None else (text, [])
    for edit in closing_mark(read, closing):
        read = read[:edit.start] + edit.after + read[edit.start:]
        edits.append(edit)
    return NormalizedInput(read, edits)
