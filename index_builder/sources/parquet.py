"""Local Wikipedia dumps in the `wikimedia/wikipedia` parquet layout (columns id, url, title, text).

Files are streamed record batch by record batch; a dump shard never sits in memory whole.
In paragraph mode each article becomes one Document per paragraph (text split on blank
lines, heading-like lines kept as the section name) with ids f"{id}#{n}".
"""
from __future__ import annotations

import glob
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from onegen.documents import Document

from .common import paragraph_documents, sections_from_dump_text

COLUMNS = ("id", "url", "title", "text")
MODES = ("pages", "paragraphs")


@dataclass
class ParquetStats:
    files: int = 0
    rows: int = 0
    documents: int = 0
    empty_rows: int = 0  # rows with no text


def expand_paths(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    """Paths and glob patterns to a sorted, de-duplicated file list; a pattern that
    matches nothing or a missing file is an error, not an empty corpus."""
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not items:
        raise ValueError("no parquet paths given")
    out: list[Path] = []
    for item in items:
        s = str(item)
        if glob.has_magic(s):
            matches = sorted(glob.glob(s, recursive=True))
            if not matches:
                raise FileNotFoundError(f"no parquet file matches {s!r}")
            out.extend(Path(m) for m in matches)
        else:
            if not Path(s).is_file():
                raise FileNotFoundError(f"parquet file not found: {s}")
            out.append(Path(s))
    return list(dict.fromkeys(out))


def check_columns(pf: pq.ParquetFile, path: Path) -> None:
    names = set(pf.schema_arrow.names)
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected the wikimedia/wikipedia "
                         f"layout {list(COLUMNS)}, found {sorted(names)}")


@dataclass
class ParquetWikipediaSource:
    """Documents from one or more parquet dump files (paths or glob patterns).

    `mode="pages"`: one Document per article, extra={"url"}.
    `mode="paragraphs"`: one Document per paragraph with sentences, extra={"url", "paragraph", "section"?}.
    """

    paths: str | Path | Sequence[str | Path]
    mode: str = "pages"
    batch_size: int = 1024
    stats: ParquetStats = field(default_factory=ParquetStats, init=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        self.files = expand_paths(self.paths)

    def __iter__(self) -> Iterator[Document]:
        self.stats = ParquetStats()
        for path in self.files:
            pf = pq.ParquetFile(path)
            check_columns(pf, path)
            self.stats.files += 1
            for batch in pf.iter_batches(batch_size=self.batch_size, columns=list(COLUMNS)):
                cols = {name: batch.column(name).to_pylist() for name in COLUMNS}
                for row_id, url, title, text in zip(cols["id"], cols["url"], cols["title"], cols["text"]):
                    self.stats.rows += 1
                    for doc in self._row_documents(str(row_id), url or "", title or "", text or ""):
                        self.stats.documents += 1
                        yield doc

    def _row_documents(self, row_id: str, url: str, title: str, text: str) -> Iterator[Document]:
        if not text.strip():
            self.stats.empty_rows += 1
            return
        if self.mode == "pages":
            yield Document(id=row_id, title=title, text=text, extra={"url": url})
        else:
            yield from paragraph_documents(row_id, title, sections_from_dump_text(text), url=url)

    def __length_hint__(self) -> int:
        if self.mode != "pages":
            return NotImplemented  # paragraphs per article are unknown until read
        # Row counts live in the footer metadata: no data page is read.
        return sum(pq.ParquetFile(p).metadata.num_rows for p in self.files)


def iter_parquet(paths: str | Path | Sequence[str | Path], *, mode: str = "pages",
                 batch_size: int = 1024) -> Iterator[Document]:
    """Shorthand for `iter(ParquetWikipediaSource(paths, mode=mode, batch_size=batch_size))`."""
    return iter(ParquetWikipediaSource(paths, mode=mode, batch_size=batch_size))
