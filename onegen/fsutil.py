"""File-system helpers shared by index saving, model export, training, evaluation and the index builder.

What is written here is written under a temporary name beside its target, `.NAME.XXXXXXXX.tmp-PID`,
and renamed into place only once it is whole: a crash or Ctrl-C leaves the old file or folder or
the new one, never half of one. The PID at the end lets a later run remove what a dead process
left behind (`remove_dead_temporaries`).

    atomic_write(path, text_or_bytes)                   # or a function that writes the temporary path
    with staged_dir(out) as tmp: ...                    # fill tmp; it becomes `out` when the block succeeds
"""
from __future__ import annotations

import glob
import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


def _tmp_suffix() -> str:
    return f".tmp-{os.getpid()}"


def atomic_write(path: str | os.PathLike, data: str | bytes | Callable[[Path], object], *, mode: int = 0o644) -> Path:
    """Write `data` to `path` atomically: text (UTF-8), bytes, or a function that writes the file at
    the temporary path it is given (safetensors, torch.save, arrow writers). The file is flushed to
    disk before the rename, so the new name never points at data still in a cache."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_tmp_suffix(), dir=path.parent)
    tmp = Path(name)
    try:
        if callable(data):
            os.close(fd)
            data(tmp)
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
        fd = os.open(tmp, os.O_RDWR)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)  # mkstemp makes it private; what is written here is read by others
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


@contextmanager
def staged_dir(out: str | os.PathLike, *, replace: bool = True, mode: int = 0o755) -> Iterator[Path]:
    """An empty temporary folder beside `out` to fill; when the block ends without an exception it
    is renamed into place as `out` (an existing `out` is swapped out only then, see `publish`),
    otherwise it is removed. With replace=False an `out` that exists by then is kept and the new
    copy dropped: another process made the same thing first."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temporaries(out.parent, f".{glob.escape(out.name)}.*.tmp-*")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=_tmp_suffix(), dir=out.parent))
    try:
        tmp.chmod(mode)  # mkdtemp makes it private; models and indexes are read by whoever serves them
        yield tmp
        if replace or not out.exists():
            publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish(tmp: Path, out: Path) -> None:
    """Rename a finished folder into place. An existing folder is replaced only once the new one is
    whole, and put back if the swap is interrupted between its two renames."""
    old = None
    try:
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(tmp, out)
    except BaseException:
        if old is not None and old.exists() and not out.exists():
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_dead_temporaries(folder: Path, pattern: str = ".*.tmp-*") -> None:
    """Remove the temporaries matching `pattern` in `folder` whose writing process has died
    (a killed build or download leaves its half-written file or folder)."""
    if not folder.exists():
        return
    for f in folder.glob(pattern):
        pid = f.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(f, ignore_errors=True) if f.is_dir() else f.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()
