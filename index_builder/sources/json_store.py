"""Small JSON files written atomically, and a keyed on-disk cache built from them.

Every write goes through `onegen.fsutil.atomic_write` (a temporary file beside the target,
flushed to disk, then renamed over it): a crash or Ctrl-C leaves either the old file or the new
one, never half a file. That is what lets an interrupted crawl resume from its cache and state file.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from onegen.fsutil import atomic_write

log = logging.getLogger(__name__)


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, ensure_ascii=False))


def read_json(path: Path) -> Any | None:
    """The file's JSON, or None when it is absent or unreadable (treated as a cache miss)."""
    try:
        with path.open("r", encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("ignoring unreadable cache file %s: %s", path, e)
        return None


def cache_key(*parts: str) -> str:
    """A filesystem-safe key: SHA-256 of the parts (titles may hold '/', ':' or any script)."""
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()


class JsonCache:
    """One JSON file per key under `root`, sharded by the key's first two hex digits."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, *parts: str) -> Path:
        key = cache_key(*parts)
        return self.root / key[:2] / f"{key}.json"

    def get(self, *parts: str) -> Any | None:
        return read_json(self.path(*parts))

    def put(self, obj: Any, *parts: str) -> None:
        write_json(self.path(*parts), obj)
