"""`python -m onegen bench NAME ...`: hand the command line to the `benchmarks` package.

    python -m onegen bench engine --quick
    python -m onegen bench engine --write      # update its section of docs/benchmarks.md

The benchmarks drive the whole product (index builder, CLI, app server), so they live in the
top-level `benchmarks` package of the repository and are imported here at call time, the one place
`onegen` reaches for them; an installation without that package says so instead of failing.
"""
from __future__ import annotations

import importlib

from .run import CommandError

PACKAGE = "benchmarks"


def main(argv: list[str]) -> int:
    try:
        benchmarks = importlib.import_module(PACKAGE)
    except ModuleNotFoundError as e:
        if e.name != PACKAGE:
            raise
        raise CommandError(f"the benchmarks are not installed: `python -m onegen bench` needs the `{PACKAGE}` "
                           "package of the OneGen Explorer repository; run it from a checkout") from None
    return benchmarks.main(argv, prog="python -m onegen bench")
