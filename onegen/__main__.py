"""`python -m onegen <command>`: run, replay, train, evaluate, compare, export, why, calibrate, card, bench, world.

A `OneGenError` from any command becomes one `error: ...` line on stderr and exit status 2, here
and nowhere else; any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import OneGenError

EXIT_ERROR = 2

# command name -> module in onegen.commands exposing add_arguments(parser) and main(args) -> int
COMMANDS = {
    "run": "Run one input through the single-pass engine and print its steps or its Trace JSON.",
    "train": "Train a small OneGen model from a recipe file.",
    "evaluate": "Run a dataset through the engine and print metrics.",
    "replay": "Run a saved trace again from one retrieval with another document there (a rank-K candidate, "
              "a random document, none) and compare the two continuations.",
    "compare": "Compare two result files of `evaluate` example by example.",
    "export": "Write a result file in another layout: gold (the gold file the authors' scorers pair it with), "
              "openinference (OTLP/JSON spans, also of one trace), elevant (ELEVANT's entity-linking import files).",
    "why": "Why each retrieval token found what it found (query lens, layer view) and what the answer read "
           "(attention on inserted paragraphs), for a finished Trace JSON.",
    "calibrate": "Measure an index's confidence threshold from result files and write it beside the index.",
    "card": "Write a model folder's held-out metrics into its card, from the result files its weights wrote.",
    "bench": "Benchmarks (engine, single-pass, index, app); results go to docs/benchmarks.md.",
    "world": "Generate the synthetic encyclopedia used to train and evaluate embedded models.",
}
# Commands whose modules parse their own command line: main(argv: list[str]) -> int.
OWN_PARSER = {"bench", "world"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv and argv[0] in OWN_PARSER:
            return int(importlib.import_module(f"onegen.commands.{argv[0]}").main(argv[1:]) or 0)
        return _dispatch(argv)
    except OneGenError as e:
        # One line: some messages (hub lookups) span several.
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return EXIT_ERROR


def _dispatch(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m onegen", description="OneGen Explorer command line")
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name in OWN_PARSER:  # listed here, parsed by its own module (see main)
            continue
        try:
            mod = importlib.import_module(f"onegen.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"onegen.commands.{name}":
                raise
            p.set_defaults(_missing=name)
            continue
        mod.add_arguments(p)
        modules[name] = mod
    args = parser.parse_args(argv)
    if getattr(args, "_missing", None):
        parser.error(f"the {args._missing!r} command is not available in this installation")
    return int(modules[args.command].main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
