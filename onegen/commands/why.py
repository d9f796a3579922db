"""`python -m onegen why TRACE.json`: why each retrieval token found what it found, and what the
answer read, for a finished run.

    python -m onegen why trace.json                     # the query lens strip
    python -m onegen why trace.json --layers            # + each retrieval's layer view
    python -m onegen why trace.json --layers 2 --attention --json why.json

The model is the one that made the trace (its registry name, or --model); the index is the one it
searched (its folder as the trace names it, else the model's default, or --index / --candidates).
Light imports at the top: argument mistakes answer before torch loads.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .run import CommandError, _positive_int, index_reference, model_reference, read_candidates


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("trace", metavar="TRACE.json", help="a Trace JSON (the app's download, `run --json`)")
    p.add_argument("--model", metavar="ID_OR_DIR", help="the model that made the trace (default: the one it names)")
    docs = p.add_mutually_exclusive_group()
    docs.add_argument("--index", metavar="DIR", help="the index the run searched (default: the folder the trace "
                                                     "names, else the model's default index)")
    docs.add_argument("--candidates", metavar="FILE", help="the run's own candidate documents (a run of `run "
                                                           "--candidates`), encoded again here")
    p.add_argument("--layers", nargs="?", const=0, type=_positive_int, metavar="STEP",
                   help="the layer view of retrieval STEP (1-based; without STEP every retrieval); refused for "
                        "indexes too big to re-encode at every layer")
    p.add_argument("--attention", action="store_true",
                   help="what it read: each written token's attention on each inserted paragraph")
    p.add_argument("--json", metavar="OUT", help="also write the views as JSON to OUT")
    p.add_argument("--device", help="cpu, cuda (default: cuda when available)")


def read_trace(path: str):
    from ..trace import Trace

    p = Path(path)
    if not p.is_file():
        raise CommandError(f"no trace file at {path}")
    try:
        return Trace.from_json(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise CommandError(f"{path} is not UTF-8 text: {e}") from None


def _index_ref(args, trace, model_ref: str) -> Path | None:
    if args.candidates:
        return None
    if args.index:
        return index_reference(args.index, model_ref, trace.task)
    named = (trace.index or {}).get("path")
    if named == "candidates":
        raise CommandError("the run searched its own candidate documents, which the trace does not keep: pass them "
                           "again with --candidates FILE")
    if named and Path(named).is_dir():
        return Path(named)
    return index_reference(None, model_ref, trace.task)


def main(args: argparse.Namespace) -> int:
    trace = read_trace(args.trace)
    candidates = read_candidates(args.candidates, trace.task) if args.candidates else None
    model_ref = model_reference(args.model or (trace.model or {}).get("name"))
    index_path = _index_ref(args, trace, model_ref)
    if args.layers is not None and args.layers > len(trace.retrievals):
        raise CommandError(f"--layers {args.layers}: the run has {len(trace.retrievals)} retrieval steps")

    from ..attention_read import explain
    from ..encode import encode_documents
    from ..index import VectorIndex
    from ..lens import layer_view, query_lens
    from ..loading import load_model
    from ..render_why import attention_text, layers_text, lens_text

    lm = load_model(model_ref, task=trace.task, device=args.device)
    if index_path is not None:
        index = VectorIndex.load(index_path, protocol=trace.task)
    else:
        vectors, owners, _ = encode_documents(lm, trace.task, candidates)
        index = VectorIndex(vectors, candidates, owners=owners)
    out: dict = {}
    both = explain(lm, trace, index) if args.attention else None  # one forward for both views
    lens = both.lens if both else query_lens(lm, trace, index)
    out["lens"] = lens.to_dict()
    sys.stdout.write(lens_text(lens))
    if args.layers is not None:
        steps = range(len(trace.retrievals)) if args.layers == 0 else [args.layers - 1]
        out["layers"] = []
        for step in steps:
            view = layer_view(lm, trace, index, step)
            out["layers"].append(view.to_dict())
            sys.stdout.write("\n" + layers_text(view))
    if both is not None:
        out["attention"] = both.read.to_dict()
        sys.stdout.write("\n" + attention_text(both.read))
    if args.json:
        from ..fsutil import atomic_write

        atomic_write(Path(args.json), json.dumps(out, ensure_ascii=False, indent=1))
        print(f"{args.json}: the views as JSON", file=sys.stderr)
    return 0
