"""Corpus sources: each turns one kind of corpus into `onegen.documents.Document`s.

The common shape (see `common.DocumentSource`): a source is constructed from its settings,
iterating it yields Documents one at a time in a stable order (streamed, never the whole
corpus in memory), `operator.length_hint(source)` gives the number of documents when that
is cheap to know (0 when unknown), and `source.stats` holds counts for the build log.
A source whose vectors already exist (`onegen-entities`) has `precomputed_vectors = True`
and an `iter_batches(batch_size)` yielding (float32 L2-normalised vectors, Documents).

`SOURCES` maps a source name to the callable that builds it from keyword arguments:

    src = SOURCES["parquet"](paths="dumps/*.parquet", mode="paragraphs")
    for doc in src: ...
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .common import DocumentSource
from .jsonl import JsonlSource
from .parquet import ParquetWikipediaSource
from .wikipedia import wikipedia_source
from .world import WorldSource


def onegen_entity_source(**kwargs: Any) -> Any:
    """`OneGenEntitySource(pkl_path, db_jsonl_path)`; imported on use because it needs torch."""
    from .onegen_entities import OneGenEntitySource

    return OneGenEntitySource(**kwargs)


SOURCES: dict[str, Callable[..., Any]] = {
    "wikipedia": wikipedia_source,  # titles= | category= | seeds= plus WikipediaOptions fields
    "jsonl": JsonlSource,  # path, skip_bad
    "parquet": ParquetWikipediaSource,  # paths, mode, batch_size
    "onegen-entities": onegen_entity_source,  # pkl_path, db_jsonl_path
    "world": WorldSource,  # path, task
}


def open_source(name: str, **kwargs: Any) -> Any:
    """Build the source registered as `name`; unknown names list the known ones."""
    try:
        factory = SOURCES[name]
    except KeyError:
        raise ValueError(f"unknown corpus source {name!r}; known: {sorted(SOURCES)}") from None
    return factory(**kwargs)


__all__ = ["SOURCES", "DocumentSource", "open_source"]
