"""docs/benchmarks.md is shared by every benchmark: each owns one section between markers

    <!-- bench:NAME -->
    ...
    <!-- /bench:NAME -->

and `write_section` replaces only that section (or appends it), stamped with the date, the machine
and the command that reproduces it. The file is rewritten atomically under a lock, so two
benchmarks finishing together do not lose each other's section.
"""
from __future__ import annotations

import hashlib
import os
import platform
import re
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from onegen.fsutil import atomic_write

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
TITLE = ("# Benchmarks\n\n"
         "Each section is written by `python -m onegen bench NAME --write`; edit the benchmark, not the numbers.\n")


def cpu_ticks(stat: Path = Path("/proc/stat")) -> tuple[int, int] | None:
    """(steal, total) clock ticks of all CPUs so far, from /proc/stat; None where there is none.
    Steal is time the hypervisor gave this VM's CPUs to another guest: a shared host's slowdown
    that the load average does not show."""
    try:
        fields = stat.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal (guest time is already inside user)
    ticks = [int(x) for x in fields[1:9]]
    return ticks[7], sum(ticks)


def steal_percent(before: tuple[int, int] | None, after: tuple[int, int] | None = None) -> float | None:
    """Share of CPU time stolen between two `cpu_ticks()` readings (after: now), in percent."""
    after = cpu_ticks() if after is None else after
    if before is None or after is None or after[1] <= before[1]:
        return None
    return round(100 * (after[0] - before[0]) / (after[1] - before[1]), 1)


# A benchmark imports this module as it starts: machine_info() reports the steal since then.
PROCESS_START_TICKS = cpu_ticks()


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """What the numbers depend on: CPU count and model, torch version and threads, the device,
    and how much other work there was (load average; CPU time stolen by the hypervisor)."""
    import torch

    info: dict[str, Any] = {"cpus": os.cpu_count(), "cpu": _cpu_name(), "python": platform.python_version(),
                            "torch": torch.__version__, "threads": torch.get_num_threads(), "device": device,
                            "os": f"{platform.system()} {platform.release()}"}
    if hasattr(os, "getloadavg"):  # other work on the machine skews timings: say how much there was
        info["load_average_1m"] = round(os.getloadavg()[0], 2)
    steal = steal_percent(PROCESS_START_TICKS)
    if steal is not None:
        info["steal_percent"] = steal
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(info: dict[str, Any]) -> str:
    parts = [f"{info.get('cpus')} CPUs ({info.get('cpu')})", f"torch {info.get('torch')}",
             f"{info.get('threads')} torch threads", f"device {info.get('device')}"]
    if "gpu" in info:
        parts.append(info["gpu"])
    if "transformers" in info:
        parts.append(f"transformers {info['transformers']}")
    parts.append(f"Python {info.get('python')}, {info.get('os')}")
    if "load_average_1m" in info:
        parts.append(f"load average {info['load_average_1m']} at the end of the run")
    if "steal_percent" in info:
        parts.append(f"{info['steal_percent']}% of CPU time stolen by the hypervisor during the run")
    return ", ".join(parts)


def command_line(argv: list[str] | None = None) -> str:
    """The command that reproduces a run, as `python -m onegen ...`."""
    args = sys.argv[1:] if argv is None else argv
    return "python -m onegen " + " ".join(_quote(a) for a in args)


def _quote(arg: str) -> str:
    return arg if re.fullmatch(r"[\w./:=,+-]+", arg) else "'" + arg.replace("'", "'\\''") + "'"


def section(name: str, body: str, *, command: str, machine: dict[str, Any], title: str | None = None,
            when: float | None = None) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(when))
    return (f"<!-- bench:{name} -->\n## {title or name}\n\n"
            f"- Date: {stamp}\n- Machine: {machine_line(machine)}\n- Reproduce: `{command}`\n\n"
            f"{body.strip()}\n<!-- /bench:{name} -->\n")


def replace_section(document: str, name: str, new_section: str) -> str:
    """`document` with the section `name` replaced by `new_section` (appended when absent)."""
    if not re.fullmatch(r"[\w.-]+", name):
        raise ValueError(f"benchmark name {name!r}: use letters, digits, '.', '_' or '-'")
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->\n.*?<!-- /bench:{re.escape(name)} -->\n?", re.S)
    if pattern.search(document):
        return pattern.sub(lambda _: new_section, document, count=1)
    base = document if document.strip() else TITLE
    return base.rstrip("\n") + "\n\n" + new_section


def write_section(name: str, body: str, *, command: str, machine: dict[str, Any], title: str | None = None,
                  path: str | os.PathLike = DEFAULT_PATH) -> Path:
    """Write or replace the section `name` of the benchmarks file, leaving the others as they are."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = section(name, body, command=command, machine=machine, title=title)
    with _locked(path):
        old = path.read_text(encoding="utf-8") if path.exists() else ""
        atomic_write(path, replace_section(old, name, new))
    return path


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic replace alone
        yield
        return
    # The lock file lives in the temp folder, not beside the document (no stray file in the repo).
    key = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    with open(Path(tempfile.gettempdir()) / f"onegen-bench-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
