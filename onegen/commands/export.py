"""`python -m onegen export --format FORMAT RESULT_FILE`: write a result file of `evaluate` (or a
subset exported from the error browser, or for `openinference` one Trace JSON) in another layout.

Formats are a registry (`FORMATS`: name -> `ExportFormat`); a new one adds an entry with its
own options and writer, and nothing else here changes.

    python -m onegen export --format gold assets/results/heldout-multi-hop.jsonl --out gold.json
    python -m onegen export --format openinference trace.json          # OTLP/JSON spans for Phoenix & co.
    python -m onegen export --format elevant assets/results/heldout-entity-linking.jsonl
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class ExportFormat:
    help: str
    add_arguments: Callable[[argparse._ArgumentGroup], None]  # the format's own options
    write: Callable[[argparse.Namespace], int]  # exit status


def _gold_arguments(group) -> None:
    group.add_argument("--data", help="the dataset file the run read (default: the one its run record names)")
    group.add_argument("--aliases", help="2WikiMultihopQA id_aliases.json (default: the one its run record names)")


def _write_gold(args) -> int:
    from ..gold import aliases_path_for, default_out, gold_for, write_gold

    gold = gold_for(args.result, data=args.data, aliases=args.aliases)
    out = args.out or default_out(args.result, gold.layout)
    written = write_gold(gold, out)
    print(f"{written[0]}: {len(gold.layout.items)} gold items in the {gold.layout.name} layout, in the order of "
          f"{gold.result.name}'s lines, from {gold.data}")
    if gold.layout.aliases is not None:
        print(f"{aliases_path_for(out)}: {len(gold.layout.aliases)} alias rows (the 2Wiki scorer's third file)")
    return 0


def _no_arguments(group) -> None:
    pass


def _write_openinference(args) -> int:
    from ..export_openinference import export
    from ..fsutil import atomic_write

    text, runs, spans = export(args.result)
    out = Path(args.out or Path(args.result).with_suffix(".openinference.json"))
    atomic_write(out, text)
    print(f"{out}: {spans} OpenInference spans (OTLP/JSON) of {runs} run{'s' if runs != 1 else ''}: "
          "one LLM span per run, one RETRIEVER span per retrieval")
    return 0


def _elevant_arguments(group) -> None:
    group.add_argument("--benchmark", help="the benchmark name in ELEVANT's file names (default: the stem of the "
                                           "dataset file the run read)")
    group.add_argument("--experiment", help="the experiment name ELEVANT shows (default: the result file's stem)")


def _write_elevant(args) -> int:
    from ..export_elevant import default_out, elevant_articles, write_elevant
    from ..results import load_results

    results = load_results(args.result)
    export = elevant_articles(results, experiment=args.experiment, benchmark=args.benchmark)
    written = write_elevant(export, args.out or default_out(results.path, export))
    print(f"{written[0]}: {len(export.articles)} articles with {export.mentions} predicted mentions and their "
          f"candidates, in ELEVANT's linked_articles format; {written[1].name}: the experiment's metadata; "
          f"{written[2].name}/: names and types of {len(export.names)} entities (ELEVANT's custom mappings)")
    if export.unplaced:
        print(f"{export.unplaced} predicted mention(s) not found in their text were left out (no span to place)")
    return 0


FORMATS: dict[str, ExportFormat] = {
    "gold": ExportFormat(
        help="the dataset items of the file's lines, in their order, in the layout the authors' scorer of the "
             "task reads (HotpotQA or 2Wiki JSON, entity-linking or Self-RAG jsonl)",
        add_arguments=_gold_arguments, write=_write_gold),
    "openinference": ExportFormat(
        help="OpenInference spans as OTLP/JSON (Phoenix, any OpenTelemetry reader) of a result file or one Trace "
             "JSON: an LLM span per run, a RETRIEVER span per retrieval with its documents",
        add_arguments=_no_arguments, write=_write_openinference),
    "elevant": ExportFormat(
        help="entity linking: ELEVANT's linked_articles jsonl (predicted mentions with their candidate lists, "
             "the gold labels) and its metadata file, for ELEVANT's evaluation and viewer",
        add_arguments=_elevant_arguments, write=_write_elevant),
}


def add_arguments(p) -> None:
    p.add_argument("result", help="a result .jsonl of `onegen evaluate`, or a subset exported from the error browser "
                                  "(openinference also takes one Trace JSON file)")
    p.add_argument("--format", required=True, choices=tuple(FORMATS),
                   help="; ".join(f"{name}: {f.help}" for name, f in FORMATS.items()))
    p.add_argument("--out", help="the file to write (default: beside RESULT, named after the format)")
    for name, fmt in FORMATS.items():
        fmt.add_arguments(p.add_argument_group(f"--format {name}"))


def main(args) -> int:
    return FORMATS[args.format].write(args)
