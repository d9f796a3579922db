"""JSON Lines corpora: plain document records and the OneGen authors' `db.jsonl` files.

Two record shapes are read, detected per line:

* a document record: `{"title", "text"}` with optional `"id"` and `"sentences"` (a list of
  strings, for one-vector-per-sentence indexes); any other key goes to `Document.extra`;
* an authors' db record: `{"uid", "messages": [{"role", "content"}, ...]}`. The document
  prompt is the message contents concatenated in order. For the three prompt families the
  released models were trained on, the title and text are recovered from the prompt:
  entity descriptions ("The description of {name} is as follows:\n{description}[SE]"),
  multi-hop fragments ("wiki title: {title}\ncontent: {s0}[DFR]{s1}[DFR]...", one sentence
  per fragment token) and Self-RAG passages ("{title}\n{text}[DFR]"). Anything else keeps
  the whole prompt as text, with the uid as title.

Files are read line by line (`.gz` too), so a multi-gigabyte db never sits in memory.
"""
from __future__ import annotations

import gzip
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from onegen.documents import Document, join_sentences
from onegen.errors import OneGenError

log = logging.getLogger(__name__)

ENTITY_TOKEN = "[SE]"
FRAGMENT_TOKEN = "[Document Fragment Representation]"
_FRAGMENT_HEADER = "Here are document fragment:\n"

_ENTITY_PROMPT = re.compile(r"The description of (?P<name>[^\n]*?) is as follows:\n(?P<description>.*)", re.S)
_TRAILING_ENTITY_TOKENS = re.compile(r"(?:\s*" + re.escape(ENTITY_TOKEN) + r")+\s*$")
_MULTIHOP_FRAGMENT = re.compile(r"wiki title: (?P<title>[^\n]*)\ncontent: (?P<content>.*)", re.S)


class JsonlFormatError(OneGenError, ValueError):
    """A line that is not a usable record; the message names the file and line number."""


@dataclass
class JsonlStats:
    records: int = 0
    bad_lines: int = 0
    bad_examples: list[str] = field(default_factory=list)  # the first few error messages


@dataclass(frozen=True)
class DbEntry:
    """What a db.jsonl record says about one document."""

    uid: str
    title: str
    text: str
    sentences: list[str] | None = None
    kind: str = "raw"  # "entity", "multihop", "selfrag" or "raw"


def open_text(path: Path) -> TextIO:
    """Open a UTF-8 text file, transparently decompressing `.gz`."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def db_prompt(messages: Any) -> str:
    """The document prompt of a db record: message contents concatenated in order."""
    if not isinstance(messages, list) or not messages:
        raise ValueError('"messages" must be a non-empty list')
    parts = []
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise ValueError('every message needs a string "content"')
        parts.append(m["content"])
    return "".join(parts)


def parse_db_record(record: dict[str, Any]) -> DbEntry:
    """Recover title, text (and sentences) from an authors' db record."""
    if "uid" not in record:
        raise ValueError('db record lacks "uid"')
    uid = str(record["uid"])
    prompt = db_prompt(record.get("messages"))

    m = _ENTITY_PROMPT.search(prompt)
    if m:
        description = _TRAILING_ENTITY_TOKENS.sub("", m.group("description")).strip()
        return DbEntry(uid, m.group("name").strip(), description, kind="entity")

    if _FRAGMENT_HEADER in prompt and FRAGMENT_TOKEN in prompt:
        # The instruction names the token once before the header; only the body counts.
        body = prompt.split(_FRAGMENT_HEADER, 1)[1]
        mh = _MULTIHOP_FRAGMENT.match(body)
        if mh:
            sentences = [s for s in mh.group("content").split(FRAGMENT_TOKEN) if s.strip()]
            return DbEntry(uid, mh.group("title").strip(), join_sentences(sentences), sentences, "multihop")
        title, _, text = body.replace(FRAGMENT_TOKEN, "").partition("\n")
        return DbEntry(uid, title.strip(), text.strip(), kind="selfrag")

    return DbEntry(uid, uid, prompt.strip(), kind="raw")


def record_to_document(record: dict[str, Any], default_id: str) -> Document:
    """A plain `{"title", "text", ...}` record (or a db record) as a Document."""
    if "messages" in record:
        e = parse_db_record(record)
        return Document(id=e.uid, title=e.title, text=e.text, sentences=e.sentences,
                        extra={"uid": e.uid, "db_kind": e.kind})
    if "title" not in record or ("text" not in record and "sentences" not in record):
        raise ValueError('record needs "title" and "text" (or "sentences")')
    sentences = record.get("sentences")
    if sentences is not None and not (isinstance(sentences, list) and all(isinstance(s, str) for s in sentences)):
        raise ValueError('"sentences" must be a list of strings')
    text = record.get("text")
    if text is None:
        text = join_sentences(sentences)
    if not isinstance(text, str) or not isinstance(record["title"], str):
        raise ValueError('"title" and "text" must be strings')
    extra = {k: v for k, v in record.items() if k not in ("id", "title", "text", "sentences")}
    doc_id = str(record["id"]) if record.get("id") is not None else default_id
    return Document(id=doc_id, title=record["title"], text=text, sentences=sentences, extra=extra)


def iter_json_lines(path: Path, stats: JsonlStats, skip_bad: bool) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; bad lines raise or are counted."""
    with open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
            except ValueError as e:  # json.JSONDecodeError is a ValueError
                note_bad_line(stats, f"{path}:{lineno}: {e}", skip_bad)
                continue
            yield lineno, obj


def note_bad_line(stats: JsonlStats, message: str, skip_bad: bool) -> None:
    if not skip_bad:
        raise JsonlFormatError(message)
    stats.bad_lines += 1
    if len(stats.bad_examples) < 10:
        stats.bad_examples.append(message)
    log.warning("skipping bad line %s", message)


@dataclass
class JsonlSource:
    """Documents from a JSON Lines file (see the module docstring for the record shapes).

    Records without an id get f"{file name}:{line number}". With `skip_bad=True` malformed
    lines are skipped and counted in `stats`; otherwise the first one raises
    `JsonlFormatError` naming the file and line.
    """

    path: str | Path
    skip_bad: bool = False
    stats: JsonlStats = field(default_factory=JsonlStats, init=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not self.path.is_file():
            raise FileNotFoundError(f"JSONL corpus not found: {self.path}")

    def __iter__(self) -> Iterator[Document]:
        self.stats = JsonlStats()
        path = Path(self.path)
        for lineno, record in iter_json_lines(path, self.stats, self.skip_bad):
            try:
                doc = record_to_document(record, default_id=f"{path.name}:{lineno}")
            except ValueError as e:
                note_bad_line(self.stats, f"{path}:{lineno}: {e}", self.skip_bad)
                continue
            self.stats.records += 1
            yield doc

    def __length_hint__(self) -> int:
        return NotImplemented  # counting lines means reading the file


def iter_jsonl(path: str | Path, *, skip_bad: bool = False) -> Iterator[Document]:
    """Shorthand for `iter(JsonlSource(path, skip_bad=skip_bad))`."""
    return iter(JsonlSource(path, skip_bad=skip_bad))
