"""Entity-linking results in ELEVANT's import format (`python -m onegen export --format elevant`).

ELEVANT (ad-freiburg/elevant) evaluates and shows entity-linking runs from a
`<experiment>.<benchmark>.linked_articles.jsonl` file, one article per line:

    {"id": 0, "title": ..., "text": ...,
     "entity_mentions": [{"span": [s, e], "id": ENTITY, "recognized_by": "OneGen", "linked_by": "OneGen",
                          "candidates": [ENTITY, ...]}, ...],
     "evaluation_span": [0, len(text)],
     "labels": [{"id": 0, "span": [s, e], "entity_id": ENTITY, "name": ..., "type": ...}, ...]}

and a `<experiment>.<benchmark>.metadata.json` beside it (the experiment's name and description).
Entities outside Wikidata (the generated world's) need ELEVANT's custom mappings (`evaluate.py
--custom_kb`): `<experiment>.<benchmark>.custom-mappings/` holds them, `entity_to_name.tsv` (from
the gold names and the hits' titles), `entity_to_types.tsv` and `whitelist_types.tsv` (from the
gold labels' types), to copy into ELEVANT's data folder.
Each of our result lines becomes one article, in data order: the predicted mentions are the
trace's linked entities (a mention the model wrote that is not in the text has no span and is
left out, counted in `unplaced`), their candidates the ids of the hits of the retrieval that
linked them, and the labels the dataset item's gold labels. Our "Unknown" gold entity is
ELEVANT's "<NIL>".
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .datasets import ELExample
from .errors import OneGenError
from .fsutil import atomic_write, staged_dir
from .metrics import UNKNOWN_ENTITY
from .results import ResultSet
from .tasks import get_task

LINKER = "OneGen"
ELEVANT_UNKNOWN = "<NIL>"
ARTICLES_SUFFIX = ".linked_articles.jsonl"
METADATA_SUFFIX = ".metadata.json"


class ElevantExportError(OneGenError, ValueError):
    """A result file that cannot be written in ELEVANT's format; the message says why."""


@dataclass(frozen=True)
class ElevantExport:
    experiment: str
    benchmark: str
    articles: list[dict[str, Any]]
    metadata: dict[str, Any]
    mentions: int  # predicted mentions written
    unplaced: int  # predicted mentions left out: not found in their text
    names: dict[str, str]  # entity id -> name, for ELEVANT's custom mappings
    types: dict[str, list[str]]  # entity id -> gold types


def file_name(name: str) -> str:
    """A name as ELEVANT's own scripts turn it into a file name: lowercase, [a-z0-9-] kept."""
    return re.sub(r"[^a-z0-9-]", "_", name.lower()) or "_"


def elevant_articles(results: ResultSet, *, experiment: str | None = None,
                     benchmark: str | None = None) -> ElevantExport:
    """The articles and metadata of an entity-linking result file."""
    if get_task(results.task).example_class is not ELExample:  # ELEVANT's articles are entity-linking items
        raise ElevantExportError(f"{results.path.name} is a {results.task} result file; ELEVANT takes "
                                 "entity-linking results")
    articles, mentions, unplaced, seconds = [], 0, 0, 0.0
    names: dict[str, str] = {}
    types: dict[str, list[str]] = {}
    for number, record in enumerate(results.records):
        ex, trace = record.example, record.trace
        predicted: dict[tuple[int, int], dict[str, Any]] = {}
        for entity in (trace.result.entities or []) if trace is not None else []:
            if entity.start is None or entity.end is None:
                unplaced += 1
                continue
            hits = trace.retrievals[entity.retrieval].hits if 0 <= entity.retrieval < len(trace.retrievals) else []
            for h in hits:
                names.setdefault(h.id, h.title)
            # ELEVANT keys mentions by span: a second link of the same span is dropped, as it would drop it.
            predicted.setdefault((entity.start, entity.end), {
                "span": [entity.start, entity.end], "id": entity.entity_id, "recognized_by": LINKER,
                "linked_by": LINKER, "candidates": sorted({h.id for h in hits})})
        mentions += len(predicted)
        seconds += record.seconds
        labels = []
        for j, label in enumerate(ex.labels):
            gold = {"id": j, "span": list(label.span),
                    "entity_id": ELEVANT_UNKNOWN if label.entity_id == UNKNOWN_ENTITY else label.entity_id,
                    "name": label.name or label.surface.strip(), "type": label.type or "OTHER"}
            if label.optional:
                gold["optional"] = True
            labels.append(gold)
            if label.entity_id != UNKNOWN_ENTITY:
                names[label.entity_id] = gold["name"]  # the gold name wins over a hit's title
                if label.type and label.type not in types.setdefault(label.entity_id, []):
                    types[label.entity_id].append(label.type)
        articles.append({"id": number, "title": ex.title or ex.id, "text": ex.text,
                         "entity_mentions": [predicted[span] for span in sorted(predicted)],
                         "evaluation_span": [0, len(ex.text)], "labels": labels})
    run = results.run
    experiment = experiment or results.path.stem
    benchmark = benchmark or (Path(str(run["data"])).stem if run.get("data") else "onegen")
    described = ", ".join(f"{k} {run[k]}" for k in ("mode", "model", "candidates", "top_k") if run.get(k) is not None)
    metadata = {"experiment_name": experiment,
                "experiment_description": f"OneGen single-pass entity linking ({described}), exported from "
                                          f"{results.path.name}",
                "linker_name": LINKER,
                "timestamp": time.strftime("%Y/%m/%d %H:%M", time.localtime(results.path.stat().st_mtime)),
                "linking_time": round(seconds, 4)}
    return ElevantExport(experiment=experiment, benchmark=benchmark, articles=articles, metadata=metadata,
                         mentions=mentions, unplaced=unplaced, names=names, types=types)


def default_out(result: Path, export: ElevantExport) -> Path:
    """`<experiment>.<benchmark>.linked_articles.jsonl` beside the result file, as ELEVANT names them."""
    return Path(result).parent / f"{file_name(export.experiment)}.{file_name(export.benchmark)}{ARTICLES_SUFFIX}"


def metadata_path(out: Path) -> Path:
    name = out.name
    stem = name[:-len(ARTICLES_SUFFIX)] if name.endswith(ARTICLES_SUFFIX) else out.stem
    return out.with_name(stem + METADATA_SUFFIX)


def mappings_path(out: Path) -> Path:
    return metadata_path(out).with_name(metadata_path(out).name[:-len(METADATA_SUFFIX)] + ".custom-mappings")


def _cell(text: str) -> str:
    """One TSV cell: ELEVANT splits lines on tabs and newlines."""
    return " ".join(str(text).split())


def write_elevant(export: ElevantExport, out: str | Path) -> list[Path]:
    """Write the articles file, its metadata file and the custom-mappings folder (each atomically);
    returns the three paths."""
    out = Path(out)
    atomic_write(out, "".join(json.dumps(a, ensure_ascii=False) + "\n" for a in export.articles))
    meta = atomic_write(metadata_path(out), json.dumps(export.metadata, ensure_ascii=False) + "\n")
    all_types = sorted({t for ts in export.types.values() for t in ts})
    with staged_dir(mappings_path(out)) as tmp:
        (tmp / "entity_to_name.tsv").write_text(
            "".join(f"{_cell(i)}\t{_cell(n)}\n" for i, n in sorted(export.names.items())), encoding="utf-8")
        (tmp / "entity_to_types.tsv").write_text(
            "".join(f"{_cell(i)}\t" + "\t".join(_cell(t) for t in ts) + "\n" for i, ts in sorted(export.types.items())),
            encoding="utf-8")
        (tmp / "whitelist_types.tsv").write_text("".join(f"{_cell(t)}\t{_cell(t)}\n" for t in all_types),
                                                 encoding="utf-8")
    return [out, meta, mappings_path(out)]
