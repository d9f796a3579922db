"""What every corpus source shares: the source protocol and paragraph splitting.

A source is an object you iterate to get `Document`s, one at a time, in a stable order.
When the number of documents is cheap to know in advance (a list of titles, the row count
in parquet metadata), the source also answers `operator.length_hint(source)`; otherwise the
hint is 0, as Python defines for "unknown". Each source keeps a `stats` object with the
counts a build log should show (missing pages, skipped lines, ...). A source that can tell a
malformed input cheaply has a `check()` method, which a build calls before it loads a model.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

from onegen.documents import Document, split_sentences


@runtime_checkable
class DocumentSource(Protocol):
    """An iterable of Documents; `__length_hint__` may return NotImplemented when unknown."""

    def __iter__(self) -> Iterator[Document]: ...

    def __length_hint__(self) -> int: ...


# A heading in plain-text dumps is a short line with no sentence punctuation at its end.
_HEADING_MAX_WORDS = 12
_SENTENCE_END = re.compile(r"[.!?:;\"')\]]\s*$")


def looks_like_heading(paragraph: str) -> bool:
    """True for a short single line without closing punctuation ("Early life", "See also")."""
    p = paragraph.strip()
    return bool(p) and "\n" not in p and len(p.split()) <= _HEADING_MAX_WORDS and not _SENTENCE_END.search(p)


def split_paragraphs(text: str, *, blank_lines_only: bool = True) -> list[str]:
    """Split text into paragraphs: on blank lines (dump text), or on every line break
    (`blank_lines_only=False`, MediaWiki plain-text extracts put one paragraph per line)."""
    pattern = r"\n\s*\n" if blank_lines_only else r"\n+"
    return [p.strip() for p in re.split(pattern, text) if p.strip()]


def paragraph_documents(
    base_id: str,
    title: str,
    paragraphs: Iterable[tuple[str, str]],
    **extra: Any,
) -> Iterator[Document]:
    """One Document per paragraph, its sentences split for one-vector-per-sentence indexes.

    `paragraphs` yields (section title, paragraph text). Ids are f"{base_id}#{n}" with n
    counting the paragraphs actually emitted, so ids stay dense. The paragraph number and
    section (when known) go to `extra`.
    """
    n = 0
    for section, text in paragraphs:
        sentences = split_sentences(text)
        if not sentences:
            continue
        more = {"paragraph": n, **({"section": section} if section else {})}
        yield Document.from_sentences(f"{base_id}#{n}", title, sentences, **extra, **more)
        n += 1


def sections_from_dump_text(text: str) -> Iterator[tuple[str, str]]:
    """(section, paragraph) pairs from dump text split on blank lines; a heading-like
    paragraph becomes the section of the paragraphs that follow it instead of a document."""
    section = ""
    for paragraph in split_paragraphs(text):
        if looks_like_heading(paragraph):
            section = paragraph
            continue
        yield section, paragraph
