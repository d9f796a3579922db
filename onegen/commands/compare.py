"""`python -m onegen compare A.jsonl B.jsonl`: two result files of `onegen evaluate`, example by
example: metrics over the examples both hold, which examples one run fixed or broke, and how many
produced the very same tokens (two decoding settings, two index builds, two models)."""
from __future__ import annotations

import json

from ..render_text import clip

SHOWN_FLIPS = 10


def add_arguments(p) -> None:
    p.add_argument("a", help="result file A (the reference)")
    p.add_argument("b", help="result file B")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def main(args) -> int:
    from ..results import compare_results, load_results

    c = compare_results(load_results(args.a), load_results(args.b))
    if args.json:
        print(json.dumps({
            "task": c.a.task, "a": str(c.a.path), "b": str(c.b.path), "shared": len(c.shared),
            "only_a": len(c.only_a), "only_b": len(c.only_b), "same_tokens": c.same_tokens,
            "both_right": c.both_right, "both_wrong": c.both_wrong,
            "fixed": [f.key for f in c.fixed], "broken": [f.key for f in c.broken],
            "metrics": {k: {"a": va, "b": vb} for k, (va, vb) in c.metrics.items()}}))
        return 0
    print(f"A: {c.a.label}\nB: {c.b.label}")
    print(f"{len(c.shared)} examples in both (only A {len(c.only_a)}, only B {len(c.only_b)}); "
          f"same tokens in {c.same_tokens}; both right {c.both_right}, both wrong {c.both_wrong}, "
          f"fixed by B {len(c.fixed)}, broken by B {len(c.broken)}")
    for key, (va, vb) in c.metrics.items():
        if va is None and vb is None:
            continue
        delta = f" ({vb - va:+.3f})" if va is not None and vb is not None else ""
        print(f"  {key}: {_num(va)} -> {_num(vb)}{delta}")
    for title, flips in (("fixed by B", c.fixed), ("broken by B", c.broken)):
        if flips:
            print(f"{title}:")
        for f in flips[:SHOWN_FLIPS]:
            where = f"; {f.retrieval}" if f.retrieval else ""
            print(f"  {f.key}: {clip(f.input, 80)} [{f.a} -> {f.b}{where}]")
        if len(flips) > SHOWN_FLIPS:
            print(f"  ... and {len(flips) - SHOWN_FLIPS} more (--json lists every key)")
    return 0


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"
