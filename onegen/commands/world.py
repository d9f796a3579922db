"""`python -m onegen world ...`: the world generator's own command line (`python -m onegen.world`)."""
from __future__ import annotations


def main(argv: list[str]) -> int:
    from ..world.__main__ import main as world_main

    return world_main(argv)
