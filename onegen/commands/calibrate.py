"""`python -m onegen calibrate`: measure an index's confidence threshold from result files of its
own model searching it, and write it beside the index (calibration.json).

    python -m onegen evaluate --task single-hop --candidates index --data heldout/singlehop.json --out sh.jsonl
    python -m onegen evaluate --task single-hop --candidates index --data heldout/out-of-world.json --out oow-sh.jsonl
    python -m onegen calibrate --index assets/indexes/heldout-passages --in-world sh.jsonl --out-of-world oow-sh.jsonl

The rule and the signals are in onegen/calibration.py; `python -m onegen card` then copies every
calibration of the model's indexes into its card.
"""
from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Sequence

from ..calibration import GOLD_QUANTILE, MAX_IN_WORLD_FLAGGED, SIGNALS, Calibration, Fold

if TYPE_CHECKING:
    from ..results import ResultSet


def add_arguments(p) -> None:
    p.add_argument("--index", required=True, help="the index folder to calibrate")
    p.add_argument("--in-world", nargs="+", required=True, metavar="RESULT",
                   help="result files of questions the index answers (`onegen evaluate --candidates index --out`), "
                        "one per kind of input: each keeps its own tolerance")
    p.add_argument("--out-of-world", nargs="*", default=[], metavar="RESULT",
                   help="result files of questions whose documents are not in the index")
    p.add_argument("--signal", choices=SIGNALS, default="top1",
                   help="top1: the top hit's cosine (default); margin: top hit minus the second")
    p.add_argument("--max-in-world-flagged", type=float, default=MAX_IN_WORLD_FLAGGED,
                   help=f"with --out-of-world: the largest share of each in-world file's runs the threshold may flag "
                        f"(default {MAX_IN_WORLD_FLAGGED})")
    p.add_argument("--gold-quantile", type=float, default=GOLD_QUANTILE,
                   help=f"without --out-of-world: the quantile of gold top hits' signal taken (default {GOLD_QUANTILE})")
    p.add_argument("--dry-run", action="store_true", help="print the calibration, do not write it")
    p.add_argument("--cross-fit", action="store_true",
                   help="also print a two-fold cross-fit: the threshold chosen on the even-numbered runs of every "
                        "file and measured on the odd ones, and back (needs --out-of-world)")
    p.add_argument("--json", action="store_true", help="print the calibration as JSON")


def main(args) -> int:
    from ..calibration import calibrate, cross_fit, write_calibration
    from ..index import VectorIndex
    from ..results import load_results

    index = VectorIndex.load(args.index)
    in_world = [load_results(p) for p in args.in_world]
    out_of_world = [load_results(p) for p in args.out_of_world]
    cal = calibrate(index, in_world, out_of_world, signal=args.signal,
                    max_in_world_flagged=args.max_in_world_flagged, gold_quantile=args.gold_quantile)
    if args.json:
        print(json.dumps(cal.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(summary(cal))
    if args.cross_fit:
        print(cross_fit_summary(cross_fit(in_world, out_of_world, signal=args.signal,
                                          max_in_world_flagged=args.max_in_world_flagged), in_world))
    if not args.dry_run:
        path = write_calibration(args.index, cal)
        print(f"written: {path}", file=sys.stderr)
    return 0


def summary(cal: Calibration) -> str:
    g = cal.gold
    lines = [f"{cal.protocol}: {cal.signal} threshold {cal.threshold:.4f} ({cal.rule})",
             f"gold top hits ({g.n}): min {g.min}, 1% {g.p01}, 5% {g.p05}, median {g.median}, max {g.max}"]
    for r in cal.in_world:
        lines.append(f"  in-world     {r.file}: {r.flagged}/{r.runs} runs flagged ({r.rate:.1%}); "
                     f"gold runs {r.gold_flagged}/{r.gold_runs} ({r.gold_rate:.1%})")
    for r in cal.out_of_world:
        lines.append(f"  out-of-world {r.file}: {r.flagged}/{r.runs} runs flagged ({r.rate:.1%})")
    lines.append(f"flagged: in-world {cal.in_world_rate:.1%} (gold runs {cal.gold_run_rate:.1%})"
                 + ("" if cal.out_of_world_rate is None else f", out-of-world {cal.out_of_world_rate:.1%}"))
    for alt in cal.alternatives:
        oow = alt["out_of_world_rate"]
        lines.append(f"same rule on {alt['signal']}: threshold {alt['threshold']:.4f}, in-world "
                     f"{alt['in_world_rate']:.1%} (gold runs {alt['gold_run_rate']:.1%})"
                     + ("" if oow is None else f", out-of-world {oow:.1%}"))
    return "\n".join(lines)


def cross_fit_summary(folds: list[Fold], in_world: Sequence["ResultSet"]) -> str:
    lines = ["cross-fit (threshold chosen on one half of every file, rates on the other):"]
    for name, fold in zip(("even -> odd", "odd -> even"), folds):
        ins = ", ".join(f"{rs.path.name} {r:.1%}" for rs, r in zip(in_world, fold.in_world_rates))
        lines.append(f"  {name}: threshold {fold.threshold:.4f}; in-world {ins}; out-of-world {fold.out_of_world_rate:.1%}")
    return "\n".join(lines)
