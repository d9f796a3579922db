"""Checks of a finished run's result against the documents it read, and the one step before a run,
chosen per run or declared by a model: entity linking's name alignment (onegen/name_alignment.py),
the QA tasks' answer alignment (onegen/answer_alignment.py), multi-hop's comparison check
(onegen/comparison_check.py), and every task's input normalization (onegen/input_normalization.py).

The result checks leave the model's tokens and retrievals as they were; every setting records what
it changed, so a reader sees the model's own output (or the typed input) beside the checked one. A
model folder declares the settings its evaluation used (keys of its `onegen_model.json`, written
from its recipe; a task's `declared_settings`); any other model runs them "off", as the authors'
loops report results.
"""
from __future__ import annotations

from typing import Any

# Each check's settings; the first is "off".
CHECKS: dict[str, tuple[str, ...]] = {
    "input_normalization": ("off", "normalize"),
    "name_alignment": ("off", "snap", "strict"),
    "answer_alignment": ("off", "snap"),
    "comparison_check": ("off", "recompute"),
}


def check_value(key: str, value: Any) -> str:
    """`value` when it is one of the check's settings; a ValueError that lists them otherwise."""
    if value not in CHECKS[key]:
        raise ValueError(f"{key.replace('_', ' ')} must be one of {list(CHECKS[key])}, not {value!r}")
    return value


def model_check(lm, key: str) -> str:
    """A model's own setting of a check (its onegen_model.json); "off" when it declares none."""
    return check_value(key, ((getattr(lm, "info", None) or {}).get(key)) or "off")


def resolve_check(key: str, asked: str | None, lm) -> str:
    """The setting a run uses: the one asked for, else the model's own."""
    return check_value(key, asked) if asked is not None else model_check(lm, key)


def resolve_checks(keys: tuple[str, ...], settings, lm) -> dict[str, str]:
    """The settings of the checks `keys` (a task's `result_checks`) for a run of `settings`
    (RunSettings, whose fields carry the checks' names) on model `lm`."""
    return {key: resolve_check(key, getattr(settings, key), lm) for key in keys}
