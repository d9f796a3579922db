"""Documents: the unit every index stores and every retrieval returns."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Document:
    """A retrievable document: an entity description, a paragraph, or a passage.

    `sentences` is set for paragraph-style documents (multi-hop encodes one vector per
    sentence); `text` is always the full display text.
    """

    id: str
    title: str
    text: str
    sentences: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_sentences(cls, id: str, title: str, sentences: list[str], **extra: Any) -> "Document":
        return cls(id=id, title=title, text=join_sentences(sentences), sentences=list(sentences), extra=dict(extra))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "title": self.title, "text": self.text}
        if self.sentences is not None:
            d["sentences"] = self.sentences
        if self.extra:
            d["extra"] = self.extra
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Document":
        return cls(id=str(d["id"]), title=d.get("title", ""), text=d.get("text", ""),
                   sentences=d.get("sentences"), extra=d.get("extra") or {})


def join_sentences(sentences: list[str]) -> str:
    """Join sentences the way HotpotQA stores them: a sentence that carries its own
    leading whitespace is appended as is, any other gets one space."""
    out = ""
    for i, s in enumerate(sentences):
        out += s if i == 0 or s[:1].isspace() else " " + s
    return out


_SENT_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def split_sentences(text: str) -> list[str]:
    """A small rule-based sentence splitter (no model, no download); good enough for
    encyclopedic prose. Empty pieces are dropped."""
    return [s.strip() for s in _SENT_END.split(text.strip()) if s.strip()]


_BREAK = re.compile(r"(?<=[.!?])\s+")
# A period after these ends a word, not a sentence: an initial ("John C. Reilly"), a title, or a
# dotted abbreviation ("U.S.", "e.g."). Words that often end a sentence too ("No.", "Inc.") are not
# listed: splitting after them costs less than swallowing the next sentence.
_ABBREVIATION = re.compile(
    r"(?:(?<![\w.])[A-Z]|(?<![\w.])(?:[A-Za-z]\.)+[A-Za-z]|\b(?:Mr|Mrs|Ms|Dr|Prof|St|Sr|Jr|Mt|Ft|Gen|Col|Capt|Lt|"
    r"Sgt|Rev|Hon|Gov|Sen|Rep|Pres|Adm|Cpl|vs|approx))\.$")


def split_written_sentences(text: str) -> list[str]:
    """Sentences of text a model wrote (sub-questions, sub-answers): split after `.`, `!` or `?`
    and whitespace, except after an initial or a common abbreviation, so "Where was John C. Reilly
    born?" stays one sentence. Empty pieces are dropped."""
    pieces, start = [], 0
    for m in _BREAK.finditer(text):
        if text[m.start() - 1] == "." and _ABBREVIATION.search(text[start:m.start()]):
            continue
        pieces.append(text[start:m.start()])
        start = m.end()
    pieces.append(text[start:])
    return [p.strip() for p in pieces if p.strip()]
