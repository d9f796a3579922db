"""`python -m onegen bench NAME`: run one registered benchmark (see onegen/bench/__init__.py).

    python -m onegen bench engine --quick
    python -m onegen bench engine --write      # update its section of docs/benchmarks.md
"""
from __future__ import annotations

import argparse
import importlib

from ..bench import BENCHMARKS
from ..bench.report import DEFAULT_PATH


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="a short run (fewer tokens and repeats) for a smoke check")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 (default cpu)")
    p.add_argument("--write", nargs="?", const=str(DEFAULT_PATH), metavar="FILE",
                   help="write the results into their own section of docs/benchmarks.md (or FILE)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="benchmark", required=True, metavar="{" + ",".join(BENCHMARKS) + "}")
    for name, module_name in BENCHMARKS.items():
        module = importlib.import_module(module_name)
        bp = sub.add_parser(name, help=module.HELP, description=module.HELP)
        add_common_arguments(bp)
        module.add_arguments(bp)
        bp.set_defaults(_bench_module=module_name)


def main(args: argparse.Namespace) -> int:
    return int(importlib.import_module(args._bench_module).main(args) or 0)
