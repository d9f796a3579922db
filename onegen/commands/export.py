"""`python -m onegen export --format FORMAT RESULT_FILE`: write a result file of `evaluate` (or a
subset exported from the error browser) in another layout.

Formats are a registry (`FORMATS`: name -> `ExportFormat`); a new one adds an entry with its
own options and writer, and nothing else here changes.

    python -m onegen export --format gold assets/results/heldout-multi-hop.jsonl --out gold.json
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
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


FORMATS: dict[str, ExportFormat] = {
    "gold": ExportFormat(
        help="the dataset items of the file's lines, in their order, in the layout the authors' scorer of the "
             "task reads (HotpotQA or 2Wiki JSON, entity-linking or Self-RAG jsonl)",
        add_arguments=_gold_arguments, write=_write_gold),
}


def add_arguments(p) -> None:
    p.add_argument("result", help="a result .jsonl of `onegen evaluate`, or a subset exported from the error browser")
    p.add_argument("--format", required=True, choices=tuple(FORMATS),
                   help="; ".join(f"{name}: {f.help}" for name, f in FORMATS.items()))
    p.add_argument("--out", help="the file to write (default: beside RESULT, named after the format)")
    for name, fmt in FORMATS.items():
        fmt.add_arguments(p.add_argument_group(f"--format {name}"))


def main(args) -> int:
    return FORMATS[args.format].write(args)
