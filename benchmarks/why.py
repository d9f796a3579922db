"""The "why" views of finished multi-hop answers of the embedded model: seconds from the request to
the query lens and the attention strip together (what the app's button does: one shared forward
with eager attention, plus the lens's searches), the lens alone (the CLI without --attention), and
what the lens shows (how often a retrieval token's state, and any other
written token's state, finds the document the run chose); and the layer view's first request (the
index re-encoded at every layer) against its cached ones (from the disk cache, from memory)."""
from __future__ import annotations

import json
import statistics
import time

HELP = "why views: seconds to the query lens and the attention strip of multi-hop answers (goal <= 2 s)"


def add_arguments(p) -> None:
    p.add_argument("--model", default=None, help="model (default: the embedded default)")
    p.add_argument("--examples", type=int, default=10, help="held-out multi-hop questions")
    p.add_argument("--no-layers", dest="layers", action="store_false",
                   help="skip the layer view (timed by default: the first answer's first retrieval with the index "
                        "re-encoded at every layer, then from the disk cache as a new server reads it, then from "
                        "memory)")


def _p90(values: list[float]) -> float:
    return sorted(values)[int(0.9 * (len(values) - 1))]


def measure(lm, n: int, layers: bool = False) -> dict:
    import torch

    from onegen.attention_read import explain
    from onegen.engine import Engine, IndexRetriever
    from onegen.index import VectorIndex
    from onegen.lens import layer_view, query_lens
    from onegen.registry import default_index

    from .embedded import task_inputs
    from .report import cpu_ticks, steal_percent

    index = VectorIndex.load(default_index(lm.name, "multi-hop"), protocol="multi-hop", model_fingerprint=lm.fingerprint)
    engine, retriever = Engine(lm), IndexRetriever(index)
    traces = [engine.run_trace("multi-hop", q, retriever=retriever) for q in task_inputs("multi-hop", n)]
    explain(lm, traces[0], index)  # first call at new shapes, not timed (as the app's warm-up does for runs)
    ticks = cpu_ticks()
    lens_s, both_s, single_s, tokens, query_hits, queries, other_hits, others = [], [], [], [], 0, 0, 0, 0
    threads = torch.get_num_threads()
    for i, tr in enumerate(traces):
        # Rotating which goes first, so machine load hits all alike. "single": the app's request on
        # one torch thread, which a CPU shared with other work (spin-waiting threads) may run faster.
        kinds = ["both", "lens", "single"]
        for which in kinds[i % 3:] + kinds[:i % 3]:
            torch.set_num_threads(1 if which == "single" else threads)
            t0 = time.perf_counter()
            if which == "lens":
                lens = query_lens(lm, tr, index)
                lens_s.append(time.perf_counter() - t0)
            else:
                explain(lm, tr, index)
                (both_s if which == "both" else single_s).append(time.perf_counter() - t0)
        torch.set_num_threads(threads)
        tokens.append(lens.forward_tokens)
        queries += len(lens.queries)
        query_hits += sum(bool(t.agrees) for t in lens.queries)
        rest = [t for t in lens.tokens if not t.query and t.agrees is not None]
        others += len(rest)
        other_hits += sum(bool(t.agrees) for t in rest)
    out = {"answers": len(traces), "median_sequence_tokens": int(statistics.median(tokens)),
           "max_sequence_tokens": max(tokens),
           "lens_median_s": round(statistics.median(lens_s), 3), "lens_p90_s": round(_p90(lens_s), 3),
           "both_median_s": round(statistics.median(both_s), 3), "both_p90_s": round(_p90(both_s), 3),
           "both_max_s": round(max(both_s), 3), "threads": threads,
           "one_thread_median_s": round(statistics.median(single_s), 3), "one_thread_p90_s": round(_p90(single_s), 3),
           "retrieval_tokens": queries, "retrieval_tokens_finding_chosen": query_hits,
           "other_tokens": others, "other_tokens_finding_chosen": other_hits,
           "steal_percent": steal_percent(ticks)}
    if layers:
        out["layer_view"] = measure_layers(lm, index, next(t for t in traces if t.retrievals))
    return out


def measure_layers(lm, index, trace) -> dict:
    """The layer view of `trace`'s first retrieval three ways: a first request (nothing cached: the
    index re-encoded at every layer, in a cache folder of its own so the user's is not touched), a
    first request of a new server (read from the disk cache), and a later one (from memory)."""
    import tempfile
    from pathlib import Path

    from onegen import lens

    before = lens.layer_cache_dir
    with tempfile.TemporaryDirectory(prefix="bench-layer-vectors-") as folder:
        lens.layer_cache_dir = lambda: Path(folder)
        try:
            lens._LAYER_CACHE.clear()
            cold = lens.layer_view(lm, trace, index, 0)
            lens._LAYER_CACHE.clear()  # as a new process: only the disk cache
            disk = lens.layer_view(lm, trace, index, 0)
            memory = lens.layer_view(lm, trace, index, 0)
            size = sum(f.stat().st_size for f in Path(folder).iterdir())
        finally:
            lens.layer_cache_dir = before
            lens._LAYER_CACHE.clear()
    assert not cold.cached and disk.cached and memory.cached and disk.layers == cold.layers
    return {"documents": cold.documents, "readings": len(cold.layers), "cold_s": cold.seconds,
            "cold_forward_tokens": cold.forward_tokens, "disk_s": disk.seconds, "memory_s": memory.seconds,
            "cached_forward_tokens": disk.forward_tokens, "cache_mb": round(size / 2**20, 1)}


def main(args) -> int:
    from onegen.loading import load_model

    from .report import command_line, machine_info, write_section

    lm = load_model(args.model, device=args.device)
    n = 3 if args.quick else args.examples
    r = measure(lm, n, layers=args.layers)
    print(json.dumps(r, indent=None if args.json else 2))
    if args.write:
        steal = f"; {r['steal_percent']}% steal" if r.get("steal_percent") is not None else ""
        rows = [
            f"Model `{lm.name}`, {r['answers']} held-out multi-hop answers (sequences of median "
            f"{r['median_sequence_tokens']}, at most {r['max_sequence_tokens']} tokens), searched in its 600-paragraph "
            "index. Each view is recomputed from the finished trace on request.",
            "",
            "| measure | median / p90 | goal |",
            "|---|---|---|",
            f"| lens and attention strip, from the request: one shared forward with eager attention + one search per "
            f"written token (the app's button; max {r['both_max_s']} s{steal}) | {r['both_median_s']} / "
            f"{r['both_p90_s']} s | <= 2 s |",
            f"| the same on 1 torch thread instead of {r['threads']} | {r['one_thread_median_s']} / "
            f"{r['one_thread_p90_s']} s | |",
            f"| query lens alone: one forward + the searches (`why` without --attention) | {r['lens_median_s']} / "
            f"{r['lens_p90_s']} s | |",
            "",
            f"What the lens shows on these answers: {r['retrieval_tokens_finding_chosen']} of {r['retrieval_tokens']} "
            f"retrieval tokens' states find the document the run chose (the run's own search, recomputed); "
            f"{r['other_tokens_finding_chosen']} of {r['other_tokens']} other written tokens' states find the "
            "document the retrieval they lead up to chose.",
            "",
            "Nearly all of the time is the forward of the run's sequence (the searches take about 0.07 s). That "
            "forward costs what a prefill of the same tokens costs, so the seconds follow the CPU's load: the load "
            "average in the machine line is for 2 cores, and other work there slows the multi-threaded forward "
            "most (its threads wait on each other).",
        ]
        if "layer_view" in r:
            lv = r["layer_view"]
            rows += ["", f"Layer view of the first answer's first retrieval ({lv['documents']} documents x "
                         f"{lv['readings']} layer readings; one request each):", "",
                     "| layer view | seconds | forward tokens |", "|---|---|---|",
                     f"| first request: the index re-encoded with every layer's states, then kept in the user "
                     f"cache ({lv['cache_mb']} MB) | {lv['cold_s']:.1f} | {lv['cold_forward_tokens']:,} |",
                     f"| first request of a new server: the vectors read from the disk cache | {lv['disk_s']:.2f} | "
                     f"{lv['cached_forward_tokens']:,} |",
                     f"| later requests: from memory | {lv['memory_s']:.2f} | {lv['cached_forward_tokens']:,} |"]
        write_section("why", "\n".join(rows), command=command_line(), machine=machine_info(args.device),
                      title="Why views: query lens and attention strip")
    return 0
