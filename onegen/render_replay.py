"""Views of a replay (onegen/replay.py `Comparison`): both continuations side by side from the changed
retrieval on, the first differing token marked, and the two results compared. Plain text for the
CLI, HTML for the app; pure functions, no torch (the Comparison type is only named here)."""
from __future__ import annotations

import itertools
import textwrap
from typing import TYPE_CHECKING

from .render_html import esc
from .render_text import PHASE_LABELS, clip
from .trace import Hit, TokenRecord, Trace

if TYPE_CHECKING:
    from .replay import Comparison

# Around the first differing token in the terminal view.
MARK_OPEN, MARK_CLOSE = "[[", "]]"
COLUMN = 44


def _doc(hit: Hit | None) -> str:
    return "no document" if hit is None else f"{hit.title!r} ({hit.id})"


def headline(c: Comparison, page: bool = False) -> str:
    """What was changed, in one sentence: the CLI names steps as --step does (from 0), the page as
    its step list does (from 1)."""
    old, new = c.original.retrievals[c.step], c.replayed.retrievals[c.step]
    query = f", query {clip(old.query_text, 80)!r}" if old.query_text else ""
    name = f"Step {c.step + 1}" if page else f"Retrieval {c.step}"
    return (f"{name} ({old.token} at position {old.position}{query}): {c.choice.describe()}, "
            f"{_doc(new.chosen_hit)}, instead of {_doc(old.chosen_hit)}.")


def replay_sentence(trace: Trace) -> str:
    """For a replayed trace shown on its own (the Trace viewer): what it replays; "" for a run."""
    r = trace.replay
    if r is None:
        return ""
    used = "no document" if r.document is None else repr(r.document)
    return (f"A replay of trace {r.original}: at step {r.step + 1} it used {used} instead of "
            f"{r.original_document!r} ({r.choice}); its first {r.prefix_tokens} positions are the original's.")


def cost_sentence(replayed: Trace) -> str:
    ft = replayed.cost.forward_tokens
    prefix = ft.get("replay_prefix", 0)
    recomputed = replayed.cost.total_forward_tokens - prefix
    return (f"The original's first {prefix} positions were prefilled in one pass ({PHASE_LABELS['replay_prefix']}); "
            f"{recomputed} forward tokens after them were computed again.")


def verdict(correct: bool | None) -> str:
    return "" if correct is None else (" (correct)" if correct else " (wrong)")


def comparison_text(c: Comparison) -> str:
    """The terminal view: the headline, both continuations in two columns (the first differing token
    between [[ and ]]), the first difference and both results."""
    start = c.start
    diff = None if c.first_difference is None else c.first_difference - start
    left = _text(c.continuation(c.original), diff, MARK_OPEN, MARK_CLOSE)
    right = _text(c.continuation(c.replayed), diff, MARK_OPEN, MARK_CLOSE)
    rows = [f"{'original':<{COLUMN}} | replayed", f"{'-' * COLUMN}-+-{'-' * COLUMN}"]
    for a, b in itertools.zip_longest(_wrap(left), _wrap(right), fillvalue=""):
        rows.append(f"{a:<{COLUMN}} | {b}")
    if diff is None:
        where = "The two runs wrote the same tokens after the changed retrieval."
    else:
        where = (f"First difference: token {diff} after the changed retrieval (token {c.first_difference} of the "
                 f"run), marked {MARK_OPEN} {MARK_CLOSE}.")
    same = "the same result" if c.same_result else "different results"
    results = (f"Result: original {c.original_result!r}{verdict(c.original_correct)} | "
               f"replayed {c.replayed_result!r}{verdict(c.replayed_correct)} ({same}).")
    return "\n".join([headline(c), cost_sentence(c.replayed), "", *rows, "", where, results]) + "\n"


def _text(tokens: list[TokenRecord], diff: int | None, open_: str, close: str) -> str:
    out = []
    for i, t in enumerate(tokens):
        out.append(f"{open_}{t.text}{close}" if i == diff else t.text)
    return "".join(out)


def _wrap(text: str) -> list[str]:
    lines: list[str] = []
    for para in text.split("\n"):
        lines.extend(textwrap.wrap(para, COLUMN, drop_whitespace=False, replace_whitespace=False) or [""])
    return lines


# -- JSON ----------------------------------------------------------------------------------------------

def _hit_dict(hit: Hit | None) -> dict | None:
    return None if hit is None else {"id": hit.id, "title": hit.title, "rank": hit.rank, "score": hit.score}


def _token_dict(t: TokenRecord | None) -> dict | None:
    return None if t is None else {"id": t.id, "text": t.text, "kind": t.kind, "position": t.position}


def trace_summary(trace: Trace, step: int, result: str, correct: bool | None) -> dict:
    """One side of a replay in a few fields: what it chose at the changed step, what it wrote after
    that step, its result and cost. The whole trace is what `--out` writes."""
    start = trace.retrievals[step].position + 1 - len(trace.prompt_ids)
    return {
        "digest": trace.digest(),
        "document": _hit_dict(trace.retrievals[step].chosen_hit),
        "continuation": "".join(t.text for t in trace.tokens[start:]),
        "retrievals": [{"step": r.step, "position": r.position, "document": _hit_dict(r.chosen_hit)}
                       for r in trace.retrievals],
        "result": result,
        "correct": correct,
        "stop_reason": trace.stop_reason,
        "forward_tokens": dict(trace.cost.forward_tokens),
        "total_forward_tokens": trace.cost.total_forward_tokens,
    }


def comparison_dict(c: Comparison) -> dict:
    """The replayed comparison as one JSON-ready object: what was changed, both sides' summaries, the
    first differing token (index into the run's tokens and after the changed retrieval, both sides'
    token there; null when the runs wrote the same), the results compared and the forward tokens
    computed again after the original's prefix."""
    a, b = c.original, c.replayed
    diff = c.first_difference

    def at(trace: Trace) -> TokenRecord | None:
        return trace.tokens[diff] if diff is not None and diff < len(trace.tokens) else None

    prefix = b.cost.forward_tokens.get("replay_prefix", 0)
    return {
        "task": a.task, "mode": a.mode, "model": a.model.get("name"),
        "step": c.step, "choice": c.choice.describe(), "headline": headline(c),
        "original": trace_summary(a, c.step, c.original_result, c.original_correct),
        "replayed": trace_summary(b, c.step, c.replayed_result, c.replayed_correct),
        "first_difference": None if diff is None else {
            "token": diff, "after_step": diff - c.start, "original": _token_dict(at(a)), "replayed": _token_dict(at(b))},
        "same_result": c.same_result,
        "prefix_tokens": prefix,
        "recomputed_forward_tokens": b.cost.total_forward_tokens - prefix,
    }


# -- HTML ----------------------------------------------------------------------------------------------

def comparison_html(c: Comparison) -> str:
    """Both continuations side by side (inserted tokens shaded, the first differing token marked in
    both), then the two results; every text escaped."""
    start = c.start
    diff = None if c.first_difference is None else c.first_difference - start
    cols = []
    for label, trace, correct, result in (("original", c.original, c.original_correct, c.original_result),
                                          ("replayed", c.replayed, c.replayed_correct, c.replayed_result)):
        tokens = "".join(_token_html(t, i == diff) for i, t in enumerate(c.continuation(trace)))
        mark = "" if correct is None else (' <span class="og-whatif-ok">correct</span>' if correct
                                           else ' <span class="og-whatif-bad">wrong</span>')
        cols.append(f'<div class="og-whatif-col" data-side="{label}"><div class="og-whatif-head">{label}: '
                    f'{esc(_doc(trace.retrievals[c.step].chosen_hit))}</div>'
                    f'<div class="og-whatif-text">{tokens or "<i>nothing written</i>"}</div>'
                    f'<div class="og-whatif-result">result: <b>{esc(result)}</b>{mark}</div></div>')
    if diff is None:
        where = "The two runs wrote the same tokens after the changed retrieval."
    else:
        where = f"First difference: token {diff} after the changed retrieval (marked)."
    same = "same result" if c.same_result else "different result"
    return (f'<div class="og-whatif" data-same="{str(c.same_result).lower()}">'
            f'<p class="og-whatif-line">{esc(headline(c, page=True))}</p>'
            f'<p class="og-whatif-line og-whatif-cost">{esc(cost_sentence(c.replayed))}</p>'
            f'<div class="og-whatif-cols">{"".join(cols)}</div>'
            f'<p class="og-whatif-line og-whatif-where">{esc(where)} <b>{same}</b></p></div>')


def _token_html(t: TokenRecord, first_diff: bool) -> str:
    cls = ["og-whatif-ins"] if t.kind == "inserted" else []
    if first_diff:
        cls.append("og-whatif-diff")
    title = ' title="first differing token"' if first_diff else ""
    return f'<span class="{" ".join(cls)}"{title}>{esc(t.text)}</span>' if cls else esc(t.text)


WHATIF_CSS = """
.og-whatif-cols { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
.og-whatif-col { border: 1px solid #d0d7de; border-radius: 6px; padding: 8px; min-width: 0; }
.og-whatif-head { font-weight: 600; margin-bottom: 4px; }
.og-whatif-text { white-space: pre-wrap; word-break: break-word; font-family: ui-monospace, monospace; font-size: 0.85em; }
.og-whatif-ins { background: #eef3fb; color: #445; }
.og-whatif-diff { outline: 2px solid #d1242f; background: #ffebe9; }
.og-whatif-ok { color: #1a7f37; font-weight: 600; }
.og-whatif-bad { color: #d1242f; font-weight: 600; }
.og-whatif-line { margin: 4px 0; }
"""
