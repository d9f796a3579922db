"""How far batching can go on this machine, and what the shared KV cache's one attention call
saves (docs/batching.md, "How far batching can go"):

- **floor**: a task's held-out examples run at batch 1; their forward tokens
  (`cost.total_forward_tokens`, summed) are then timed as plain 256-token prefills of one
  `FusedLlamaDecoder`. No batching of those runs can take less time than that arithmetic, so
  batch 1's time over it bounds the speed-up;
- **step**: one packed step of N single tokens (runs of different lengths) with attention per run
  (decoders with caches of their own), in one call (a `SharedKVCache`), and one sequence forwarding
  N tokens (the same matmuls, next to no attention), interleaved.

    python -m benchmarks.batch_floor --tasks single-hop,entity-linking --examples 32 --runs 32
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def prefill_seconds(lm, tokens: int, chunk: int = 256) -> float:
    from onegen.fused_llama import FusedLlamaDecoder

    dec = FusedLlamaDecoder(lm.model, capacity=chunk)
    dec.forward(list(range(100, 100 + chunk)))  # untimed warm-up
    t0, left = time.perf_counter(), tokens
    while left > 0:
        n = min(chunk, left)
        dec.truncate(0)
        dec.forward([100 + i % 500 for i in range(n)])
        left -= n
    return time.perf_counter() - t0


def floor(lm, task: str, examples: int) -> dict:
    from benchmarks.embedded import task_inputs
    from onegen.engine import Engine, IndexRetriever
    from onegen.index import VectorIndex
    from onegen.registry import default_index

    index = VectorIndex.load(default_index(lm.name, task), protocol=task, model_fingerprint=lm.fingerprint)
    engine, retriever = Engine(lm), IndexRetriever(index)
    texts = task_inputs(task, examples)
    engine.run_trace(task, texts[0], retriever=retriever)  # untimed warm-up
    t0 = time.perf_counter()
    tokens = sum(engine.run_trace(task, t, retriever=retriever).cost.total_forward_tokens for t in texts)
    batch_one = time.perf_counter() - t0
    arithmetic = prefill_seconds(lm, tokens)
    return {"task": task, "examples": examples, "forward_tokens": tokens, "batch_1_s": round(batch_one, 1),
            "as_prefills_s": round(arithmetic, 1), "bound": round(batch_one / arithmetic, 2)}


def step(lm, runs: int, repeats: int = 5) -> dict:
    from onegen.fused_llama import FusedLlamaDecoder, SharedKVCache, forward_packed

    model = lm.model
    cache = SharedKVCache(model, runs)
    lengths = [200 + 7 * j for j in range(runs)]
    own = [FusedLlamaDecoder(model) for _ in lengths]
    shared = [FusedLlamaDecoder(model, shared=cache) for _ in lengths]
    for dec, n in [*zip(own, lengths), *zip(shared, lengths)]:
        dec.forward(list(range(5, 5 + n)))
    one = FusedLlamaDecoder(model)
    one.forward(list(range(5, 205)))

    def packed(decs):
        for d, n in zip(decs, lengths):
            d.truncate(n)
        forward_packed(decs, [[7 + j] for j in range(runs)])

    def sequence():
        one.truncate(200)
        one.forward([7] * runs)

    cases = {"attention_per_run": lambda: packed(own), "one_call": lambda: packed(shared), "one_sequence": sequence}
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):  # interleaved, so load hits every case alike
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {"runs": runs, "positions": f"{lengths[0]}-{lengths[-1]}", "repeats": repeats,
            **{f"{k}_ms": round(statistics.median(v) * 1000, 1) for k, v in times.items()}}


def main(argv=None) -> int:
    from onegen.loading import load_model

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="model (default: the embedded default)")
    p.add_argument("--tasks", default="single-hop", help="tasks for the floor, comma-separated ('' for none)")
    p.add_argument("--examples", type=int, default=32)
    p.add_argument("--runs", type=int, default=32, help="single tokens in the packed step")
    args = p.parse_args(argv)
    lm = load_model(args.model)
    with torch.inference_mode():
        out = {"step": step(lm, args.runs),
               "floor": [floor(lm, t.strip(), args.examples) for t in args.tasks.split(",") if t.strip()]}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
