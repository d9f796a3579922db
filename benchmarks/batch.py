"""Batched decoding (onegen/batch.py) on the embedded model: examples per second at each batch size
per task, the share of outputs identical to batch 1, and the peak memory a batch adds.

Batch 1 is the plain engine, one run after another (what `evaluate --batch-size 1` does). The batch
sizes of a task run in a rotating order, round after round, so machine load hits every size alike.
"""
from __future__ import annotations

import json
import sys
import threading
import time

HELP = "batched decoding: examples/s at batch 1, 4, 8, 16, 32 per task, identical outputs, peak memory"
TASKS = ("multi-hop", "entity-linking", "single-hop")


def add_arguments(p) -> None:
    p.add_argument("--model", default=None, help="model (default: the embedded default)")
    p.add_argument("--examples", type=int, default=32, help="held-out examples per task (default 32)")
    p.add_argument("--sizes", default="1,4,8,16,32", help="batch sizes, comma-separated (1 is always run)")
    p.add_argument("--rounds", type=int, default=2, help="rounds over the sizes (default 2)")
    p.add_argument("--tasks", default=",".join(TASKS), help="tasks, comma-separated")


class PeakRss:
    """The highest resident memory of this process while the block runs, sampled every 5 ms
    (/proc/self/statm), less what it held when the block started."""

    def __init__(self):
        import os

        self.page = os.sysconf("SC_PAGE_SIZE")
        self.start = self.peak = 0
        self._stop = threading.Event()

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> "PeakRss":
        self.start = self.peak = self._rss()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def added(self) -> int:
        return self.peak - self.start


def run_size(lm, task: str, texts: list[str], retriever, size: int, share: bool = True):
    """(traces in input order, seconds, bytes of peak memory added) for one pass over `texts`;
    `share`: batched runs copy a common prompt prefix from each other (docs/batching.md)."""
    from onegen.batch import BatchEngine, BatchJob
    from onegen.engine import Engine

    with PeakRss() as mem:
        t0 = time.perf_counter()
        if size == 1:
            engine = Engine(lm)
            traces = [engine.run_trace(task, t, retriever=retriever) for t in texts]
        else:
            results = BatchEngine(lm, batch_size=size, share_prefixes=share).run_all([BatchJob(task, t, retriever=retriever) for t in texts])
            bad = [r.error for r in results if r.error is not None]
            if bad:
                raise bad[0]
            traces = [r.trace for r in results]
        seconds = time.perf_counter() - t0
    return traces, seconds, mem.added


def bench_task(lm, task: str, texts: list[str], sizes: list[int], rounds: int, retriever) -> dict:
    from onegen.batch import compare
    from benchmarks.report import cpu_ticks, steal_percent

    from onegen.errors import OneGenError

    run_size(lm, task, texts[:1], retriever, 1)  # untimed: the process's first run of the task warms up
    ticks = cpu_ticks()
    # Every size with shared prompt prefixes, and the largest once more without: what sharing adds.
    variants = [(s, True) for s in sizes] + ([(max(sizes), False)] if max(sizes) > 1 else [])
    seconds: dict[tuple, list[float]] = {v: [] for v in variants}
    peak: dict[tuple, int] = {v: 0 for v in variants}
    traces: dict[tuple, list] = {}
    refused: dict[tuple, str] = {}  # a size the machine refuses (memory) is reported, not fatal to a long run
    for r in range(rounds):
        for v in variants[r % len(variants):] + variants[:r % len(variants)]:
            if v in refused:
                continue
            s, share = v
            try:
                out, sec, added = run_size(lm, task, texts, retriever, s, share)
            except OneGenError as e:
                if s == 1:
                    raise
                refused[v] = str(e)
                print(f"bench batch: {task} batch {s} refused: {e}", file=sys.stderr, flush=True)
                continue
            # Progress on stderr: a full run takes a while, and this shows where it is.
            print(f"bench batch: {task} round {r + 1}/{rounds} batch {s}{'' if share else ' (prefixes not shared)'}: "
                  f"{len(texts)} examples in {sec:.1f} s", file=sys.stderr, flush=True)
            seconds[v].append(sec)
            peak[v] = max(peak[v], added)
            traces.setdefault(v, out)
    rows = []
    base = min(seconds[(1, True)])
    for v in variants:
        s, share = v
        if v in refused:
            rows.append({"batch_size": s, "shared_prefixes": share, "refused": refused[v]})
            continue
        agreements = [compare(lm, one, other) for one, other in zip(traces[(1, True)], traces[v])]
        rows.append({"batch_size": s, "shared_prefixes": share,
                     "examples_per_s": round(len(texts) / min(seconds[v]), 3),
                     "speedup": round(base / min(seconds[v]), 2), "seconds": [round(x, 2) for x in seconds[v]],
                     "identical": sum(a.identical for a in agreements),
                     "near_ties": sum(a.near_tie for a in agreements),
                     "peak_added_mib": round(peak[v] / 2**20, 1)})
    return {"examples": len(texts), "rows": rows, "steal_percent": steal_percent(ticks)}


def main(args) -> int:
    from onegen.engine import IndexRetriever
    from onegen.index import VectorIndex
    from onegen.loading import load_model
    from onegen.registry import default_index
    from benchmarks.embedded import task_inputs
    from benchmarks.report import command_line, machine_info, write_section

    sizes = sorted({1, *(int(x) for x in args.sizes.split(",") if x.strip())})
    if args.quick:
        sizes = [s for s in sizes if s <= 8]
    n = min(args.examples, 8) if args.quick else args.examples
    rounds = 1 if args.quick else args.rounds
    lm = load_model(args.model, device=args.device)
    result: dict = {"model": lm.name, "sizes": sizes, "rounds": rounds, "tasks": {}}
    for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        index = VectorIndex.load(default_index(lm.name, task), protocol=task, model_fingerprint=lm.fingerprint)
        result["tasks"][task] = bench_task(lm, task, task_inputs(task, n), sizes, rounds, IndexRetriever(index))
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    if args.write:
        write_section("batch", report_body(result, lm), command=command_line(), machine=machine_info(args.device),
                      title="Batched decoding on this CPU", path=args.write)
    return 0


def report_body(result: dict, lm) -> str:
    lines = [f"Model `{lm.name}`, held-out world, each task's own index; {result['rounds']} round(s) over the sizes "
             "in a rotating order, the best round counted.", "",
             "| task | batch | examples/s | vs batch 1 | identical to batch 1 | near ties | peak memory added |",
             "|---|---|---|---|---|---|---|"]
    for task, r in result["tasks"].items():
        for row in r["rows"]:
            size = f"{row['batch_size']}" + ("" if row.get("shared_prefixes", True) else ", prefixes not shared")
            if "refused" in row:
                lines.append(f"| {task} | {size} | refused: {row['refused']} | | | | |")
                continue
            lines.append(f"| {task} | {size} | {row['examples_per_s']} | {row['speedup']}x | "
                         f"{row['identical']}/{r['examples']} | {row['near_ties']} | {row['peak_added_mib']} MiB |")
    steal = {t: r["steal_percent"] for t, r in result["tasks"].items() if r.get("steal_percent") is not None}
    lines += ["", "Batch 1 is the plain engine, one example after another (prompt-lookup drafts on); larger sizes "
              "decode that many examples together (onegen/batch.py, docs/batching.md), runs copying a common prompt "
              "prefix from each other; the largest size runs once more with every prompt computed in full "
              "(\"prefixes not shared\"), which is what batching alone gives. \"identical\" counts "
              "examples whose trace equals batch 1's token for token (retrievals and stop reason included); a "
              "\"near tie\" differs first where batch 1's top-two logit margin is below `batch.NEAR_TIE`. Peak "
              "memory is the resident memory the pass added at its highest."
              + (f" Hypervisor steal per task: {', '.join(f'{t} {s}%' for t, s in steal.items())}." if steal else "")
              + " Figures from a machine shared with other work (see the load average above) are indicative."]
    return "\n".join(lines)
