"""JSON Lines corpora (or one JSON list): plain document records and the OneGen authors' `db.jsonl` files.

Two layouts are accepted, told apart by the file's first character: JSON Lines (one record per
line; read line by line, `.gz` too, so a multi-gigabyte db never sits in memory) and one JSON list
of records (read whole: give JSON Lines for a corpus that does not fit in memory). A UTF-8 byte
order mark at the start is skipped. Two record shapes are read, detected per record:

* a document record: `{"title", "text"}` with optional `"id"` and `"sentences"` (a list of
  strings, for one-vector-per-sentence indexes); any other key goes to `Document.extra`;
* an authors' db record: `{"uid", "messages": [{"role", "content"}, ...]}`. The document
  prompt is the message contents concatenated in order. For the three prompt families the
  released models were trained on, the title and text are recovered from the prompt:
  entity descriptions ("The description of {name} is as follows:\n{description}[SE]"),
  multi-hop fragments ("wiki title: {title}\ncontent: {s0}[DFR]{s1}[DFR]...", one sentence
  per fragment token) and Self-RAG passages ("{title}\n{text}[DFR]"). Anything else keeps
  the whole prompt as text, with the uid as title.

`JsonlSource.check()` reads the layout and the first record without loading anything else, so a
build refuses a file it cannot read before it loads a model.
"""
from __future__ import annotations

import contextlib
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


ACCEPTED = ('accepted: JSON Lines with one {"title", "text"} (or "sentences") object per line, the authors\' '
            'db.jsonl records ({"uid", "messages"}), or one JSON list of such objects')


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
    """Open a UTF-8 text file, transparently decompressing `.gz`; a leading byte order mark is skipped."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return path.open("r", encoding="utf-8-sig")


def file_layout(path: Path) -> str:
    """"lines" (JSON Lines) or "list" (one JSON array), from the first non-blank character."""
    try:
        with open_text(path) as f:
            while True:
                chunk = f.read(4096)
                if not chunk:
                    raise JsonlFormatError(f"{path} is empty: no documents to index; {ACCEPTED}")
                text = chunk.lstrip()
                if text:
                    break
    except UnicodeDecodeError as e:
        raise JsonlFormatError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); {ACCEPTED}") from None
    except (OSError, EOFError) as e:  # gzip raises BadGzipFile (an OSError) or EOFError
        raise JsonlFormatError(f"{path} cannot be read ({e}); {ACCEPTED}") from None
    if text[0] == "[":
        return "list"
    if text[0] == "{":
        return "lines"
    raise JsonlFormatError(f"{path} is neither JSON Lines nor a JSON list: it starts with {text[:20]!r}; {ACCEPTED}")


def read_json_list(path: Path) -> list[Any]:
    """The items of a file holding one JSON list."""
    try:
        with open_text(path) as f:
            items = json.load(f)
    except UnicodeDecodeError as e:
        raise JsonlFormatError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); {ACCEPTED}") from None
    except json.JSONDecodeError as e:
        raise JsonlFormatError(f"{path}: line {e.lineno} column {e.colno}: the JSON list is not valid JSON "
                               f"({e.msg}); {ACCEPTED}") from None
    if not isinstance(items, list):
        raise JsonlFormatError(f"{path} holds one JSON {type(items).__name__}, not a list; {ACCEPTED}")
    return items


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
        lineno = 0
        while True:
            try:
                line = f.readline()
            except UnicodeDecodeError as e:
                raise JsonlFormatError(f"{path}:{lineno + 1}: not UTF-8 text ({e.reason}); {ACCEPTED}") from None
            if not line:
                return
            lineno += 1
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                note_bad_line(stats, f"{path}:{lineno}: not a JSON object ({e.msg}); {ACCEPTED}", skip_bad)
                continue
            if not isinstance(obj, dict):
                note_bad_line(stats, f"{path}:{lineno}: expected a JSON object, got {_json_type(obj)}", skip_bad)
                continue
            yield lineno, obj


def iter_json_list(path: Path, items: list[Any], stats: JsonlStats,
                   skip_bad: bool) -> Iterator[tuple[int, dict[str, Any]]]:
    """(item number, object) for each item of a JSON list; items that are not objects raise or are counted."""
    for i, obj in enumerate(items):
        if not isinstance(obj, dict):
            note_bad_line(stats, f"{path}: item {i}: expected a JSON object, got {_json_type(obj)}", skip_bad)
            continue
        yield i, obj


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


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
    _items: list[Any] | None = field(default=None, init=False, repr=False)  # a JSON list, once read

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not self.path.is_file():
            raise FileNotFoundError(f"JSONL corpus not found: {self.path}")

    def check(self) -> None:
        """Refuse a file that is not one of the accepted layouts, or whose first record is not a
        document (unless `skip_bad`), before a build loads its model."""
        with contextlib.closing(iter(self)) as docs:
            try:
                first = next(docs, None)
            except JsonlFormatError as e:
                # The first problem met: say what would have been read.
                raise e if ACCEPTED in str(e) else JsonlFormatError(f"{e}; {ACCEPTED}") from None
            if first is None:
                skipped = f" ({self.stats.bad_lines} bad records skipped)" if self.stats.bad_lines else ""
                raise JsonlFormatError(f"{self.path} holds no documents{skipped}; {ACCEPTED}")

    def _records(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(default id, where, record) in file order."""
        path = Path(self.path)
        if file_layout(path) == "lines":
            for lineno, record in iter_json_lines(path, self.stats, self.skip_bad):
                yield f"{path.name}:{lineno}", f"{path}:{lineno}", record
            return
        if self._items is None:
            self._items = read_json_list(path)
        for i, record in iter_json_list(path, self._items, self.stats, self.skip_bad):
            yield f"{path.name}:{i}", f"{path}: item {i}", record

    def __iter__(self) -> Iterator[Document]:
        self.stats = JsonlStats()
        for default_id, where, record in self._records():
            try:
                doc = record_to_document(record, default_id=default_id)
            except ValueError as e:
                note_bad_line(self.stats, f"{where}: {e}", self.skip_bad)
                continue
            self.stats.records += 1
            yield doc

    def __length_hint__(self) -> int:
        if self._items is not None:
            return len(self._items)  # a JSON list already read (by `check`)
        return NotImplemented  # counting lines means reading the file


def iter_jsonl(path: str | Path, *, skip_bad: bool = False) -> Iterator[Document]:
    """Shorthand for `iter(JsonlSource(path, skip_bad=skip_bad))`."""
    return iter(JsonlSource(path, skip_bad=skip_bad))
