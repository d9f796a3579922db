"""Where the bundled data lives: the embedded model, its indexes, the held-out world, result files,
examples, recipes and the benchmark report the app draws (`assets/` in the repository).

Rule: the `assets/` folder beside this package when there is one (a checkout, or an editable
install: the working tree's files, edited in place), else the installed `onegen_assets` package,
which pyproject.toml maps onto that same folder so that `pip install .` carries it as package data.
No file moves and nothing needs setting: the data always comes with the code that runs.
"""
from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

PACKAGE = "onegen_assets"  # pyproject.toml: package-dir maps it onto assets/
CHECKOUT = Path(__file__).resolve().parent.parent / "assets"


@cache
def assets_dir() -> Path:
    return locate(CHECKOUT)


def locate(checkout: Path) -> Path:
    if checkout.is_dir():
        return checkout
    spec = importlib.util.find_spec(PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return checkout  # neither: callers name the missing file beneath it


def portable_path(path: str | Path) -> str:
    """How a result file records a file it read: "assets/..." for a bundled file (the same on
    every install: `resolve_recorded` finds it again), else the absolute path."""
    resolved = Path(path).resolve()
    try:
        return "assets/" + resolved.relative_to(assets_dir().resolve()).as_posix()
    except ValueError:
        return str(resolved)


def resolve_recorded(text: str) -> Path:
    """The file a recorded path names: "assets/..." under this install's assets, else as written
    (relative paths from the working directory)."""
    if text.startswith("assets/"):
        return assets_dir() / text[len("assets/"):]
    return Path(text)
