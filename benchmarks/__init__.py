"""Benchmarks behind `python -m onegen bench NAME`.

They live outside the `onegen` package because they drive the whole product (the index builder,
the CLI, the app's server); `onegen.commands.bench` hands them the command line at call time.
Each benchmark is a module here exposing:
    HELP: str                     one line for `--help`
    add_arguments(parser)         its own options (the common ones are added by `main`)
    main(args) -> int             run, print (a table, or JSON with --json), and with --write
                                  update its section of docs/benchmarks.md via `benchmarks.report`
Modules import torch inside main() only, so listing the benchmarks stays fast. To add one, write
the module and register it below.
"""
from __future__ import annotations

import argparse
import importlib

# benchmark name -> module under benchmarks
BENCHMARKS: dict[str, str] = {
    "engine": "benchmarks.engine",
    "single-pass": "benchmarks.single_pass",
    "embedded": "benchmarks.embedded",
    "index": "benchmarks.index",
    "app": "benchmarks.app",
    "train": "benchmarks.train",
    "real-data": "benchmarks.real_data",
    "why": "benchmarks.why",
    "batch": "benchmarks.batch",
    "gpu": "benchmarks.gpu",
    "users": "benchmarks.users",
}


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    from .report import DEFAULT_PATH

    p.add_argument("--quick", action="store_true", help="a short run (fewer tokens and repeats) for a smoke check")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 (default cpu)")
    p.add_argument("--write", nargs="?", const=str(DEFAULT_PATH), metavar="FILE",
                   help="write the results into their own section of docs/benchmarks.md (or FILE)")


def build_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Benchmarks; --write puts results in docs/benchmarks.md.")
    sub = p.add_subparsers(dest="benchmark", required=True, metavar="{" + ",".join(BENCHMARKS) + "}")
    for name, module_name in BENCHMARKS.items():
        module = importlib.import_module(module_name)
        bp = sub.add_parser(name, help=module.HELP, description=module.HELP)
        add_common_arguments(bp)
        module.add_arguments(bp)
        bp.set_defaults(_bench_module=module_name)
    return p


def main(argv: list[str], prog: str = "python -m onegen bench") -> int:
    args = build_parser(prog).parse_args(argv)
    return int(importlib.import_module(args._bench_module).main(args) or 0)
