"""Benchmarks behind `python -m onegen bench NAME`.

Each benchmark is a module here exposing:
    HELP: str                     one line for `--help`
    add_arguments(parser)         its own options (the common ones are added by the dispatcher)
    main(args) -> int             run, print (a table, or JSON with --json), and with --write
                                  update its section of docs/benchmarks.md via `bench.report`
Modules import torch inside main() only, so listing the benchmarks stays fast. To add one, write
the module and register it below.
"""
from __future__ import annotations

# benchmark name -> module under onegen.bench
BENCHMARKS: dict[str, str] = {
    "engine": "onegen.bench.engine",
    "single-pass": "onegen.bench.single_pass",
    "embedded": "onegen.bench.embedded",
    "index": "onegen.bench.index",
    "app": "onegen.bench.app",
    "train": "onegen.bench.train",
}
