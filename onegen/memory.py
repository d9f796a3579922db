"""How much memory a job may plan on: the index builder's budget and a batch's KV cache ask here."""
from __future__ import annotations

GB = 1 << 30


def available_memory() -> int:
    """Bytes of RAM available now (Linux's MemAvailable; psutil elsewhere; 8 GB when neither answers)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - psutil ships with accelerate
        return 8 * GB
