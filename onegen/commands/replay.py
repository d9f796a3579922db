"""`python -m onegen replay`: run a saved trace again from one retrieval with another document there.

    python -m onegen replay trace.json --step 0 --choose 1
    python -m onegen replay trace.json --step 1 --choose random --seed 7 --out replayed.json
    python -m onegen replay trace.json --step 0 --choose none --candidates paragraphs.jsonl
    python -m onegen replay trace.json --step 0 --choose 2 --json   # one JSON object instead

Prints both continuations side by side (the first differing token between [[ and ]]) and both
results. The model defaults to the one the trace names, the index to the folder it searched; a run
over per-run candidates needs them again (--candidates). Light imports only until main().
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .run import CommandError, _device, index_reference, model_reference, read_candidates, whole_number


_step = whole_number(0, low_says="steps count from 0")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("trace", metavar="TRACE.json", help="a trace written by `run --json`, the app's download, or --out")
    p.add_argument("--step", type=_step, required=True, metavar="S", help="the retrieval to change (0-based)")
    p.add_argument("--choose", required=True, metavar="K|random|none",
                   help="use the recorded rank-K candidate there (0: the top hit, as the run did), a random "
                        "document of the index (--seed), or none (insert nothing and write on)")
    p.add_argument("--seed", type=int, default=0, help="seed of --choose random (default 0; recorded in the trace)")
    p.add_argument("--model", metavar="ID_OR_DIR", help="the model (default: the one the trace names)")
    docs = p.add_mutually_exclusive_group()
    docs.add_argument("--index", metavar="DIR", help="index folder (default: the one the trace searched)")
    docs.add_argument("--candidates", metavar="FILE", help="the per-run candidate documents the run searched")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--out", metavar="FILE", help="also write the replayed trace's JSON here")
    p.add_argument("--json", action="store_true",
                   help="print the comparison as one JSON object (both runs' summaries, the first differing token, "
                        "the results compared, the forward tokens computed again) instead of the two columns")


def read_trace(path: str):
    from ..trace import Trace

    p = Path(path)
    if not p.is_file():
        raise CommandError(f"trace file {path} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CommandError(f"{path} is not UTF-8 text: give a trace JSON file") from None
    return Trace.from_json(text)


def main(args: argparse.Namespace) -> int:
    from ..replay import Choice, check_model, check_step

    trace = read_trace(args.trace)
    choice = Choice.parse(args.choose, seed=args.seed)
    check_step(trace, args.step, choice, None, need_index=False)
    candidates = read_candidates(args.candidates, trace.task) if args.candidates else None
    # What can be refused before the model loads is refused now (the rest once it has).
    recorded = (trace.index or {}).get("path")
    if candidates is None and args.index is None and recorded in (None, "candidates", "in-memory"):
        raise CommandError("this run searched documents given for it alone (candidates): pass them again with "
                           "--candidates FILE, or an index with --index DIR")
    model_ref = model_reference(args.model or trace.model.get("name"))
    index_path = None if candidates is not None else index_reference(args.index or recorded, model_ref, trace.task)

    import torch

    from ..engine import Engine
    from ..fsutil import atomic_write
    from ..index import VectorIndex
    from ..loading import load_model
    from ..render_replay import comparison_dict, comparison_text
    from ..replay import replay

    lm = load_model(model_ref, task=trace.task, device=_device(args.device, torch))
    check_model(trace, lm)
    index = None
    if index_path is not None:
        index = VectorIndex.load(index_path, protocol=trace.task, model_fingerprint=lm.fingerprint, dim=lm.hidden_size)
    comparison = replay(trace, Engine(lm), index if index is not None else candidates, args.step, choice)
    if args.json:
        sys.stdout.write(json.dumps(comparison_dict(comparison), ensure_ascii=False, indent=1) + "\n")
    else:
        sys.stdout.write(comparison_text(comparison))
    if args.out:
        atomic_write(args.out, comparison.replayed.to_json(indent=1))
        print(f"replayed trace written to {args.out}", file=sys.stderr)
    return 0
