"""`python -m onegen bench engine`: the engine's decode throughput against `model.generate`.

Same random Llama-style model, same prompt ids, same number of new tokens, greedy, no retrieval.
The engine runs its real multi-hop loop (token bookkeeping, stop-string checks, trace records);
`generate` runs with `min_new_tokens = max_new_tokens`. To make both produce exactly N tokens
without changing the engine, the model itself cannot end or retrieve: the output rows of EOS and
of the protocol's tokens are zeroed, so their logit is 0 and never the greedy maximum (the
benchmark checks that both produced the same ids). Runs alternate engine/generate and report
medians.
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

HELP = "engine decode throughput vs model.generate (same model, same length, greedy, no retrieval)"
TASK = "multi-hop"
PROMPT = "Who directed the film that the director of the film born in the city was born in, and when?"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", default="5M,33M", help="comma-separated model sizes: 5M, 33M (default both)")
    p.add_argument("--new-tokens", type=int, help="tokens generated per run (default 128; --quick 32)")
    p.add_argument("--repeats", type=int, help="timed runs per implementation (default 7; --quick 3)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: stable timings on a shared machine)")
    p.add_argument("--profile", action="store_true", help="also print a cProfile of one engine run per size")


@dataclass
class SizeResult:
    """Timings of one model size. `*_cpu_s` is process CPU time, which other processes on a shared
    machine do not inflate; `*_wall_s` is wall-clock time. Both per call, prompt included."""

    size: str
    parameters: int
    vocab: int
    prompt_tokens: int
    new_tokens: int
    repeats: int
    engine_cpu_s: list[float] = field(default_factory=list)
    generate_cpu_s: list[float] = field(default_factory=list)
    engine_wall_s: list[float] = field(default_factory=list)
    generate_wall_s: list[float] = field(default_factory=list)
    identical: bool = False

    def tokens_per_s(self, times: list[float]) -> float:
        return self.new_tokens / statistics.median(times)

    @property
    def ratio(self) -> float:
        """Engine throughput / generate throughput by CPU time (>1: the engine is faster)."""
        return statistics.median(self.generate_cpu_s) / statistics.median(self.engine_cpu_s)

    @property
    def wall_ratio(self) -> float:
        return statistics.median(self.generate_wall_s) / statistics.median(self.engine_wall_s)

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(engine_tokens_per_cpu_s=round(self.tokens_per_s(self.engine_cpu_s), 1),
                 generate_tokens_per_cpu_s=round(self.tokens_per_s(self.generate_cpu_s), 1),
                 engine_tokens_per_wall_s=round(self.tokens_per_s(self.engine_wall_s), 1),
                 generate_tokens_per_wall_s=round(self.tokens_per_s(self.generate_wall_s), 1),
                 ratio=round(self.ratio, 3), wall_ratio=round(self.wall_ratio, 3))
        return d


class _NoRetrieval:
    """A retriever for runs that must not retrieve (the query token cannot win the argmax)."""

    def search(self, vector, k):
        raise AssertionError("the benchmark run emitted a retrieval token")

    def describe(self) -> dict:
        return {"path": "none"}


def silence_tokens(lm, token_ids: list[int]) -> None:
    """Zero the output rows of `token_ids`: logit 0, never the maximum of thousands of random logits."""
    import torch

    with torch.no_grad():
        lm.lm_head.weight[token_ids] = 0


def _engine_run(engine, settings) -> list[int]:
    trace = engine.run_trace(TASK, PROMPT, retriever=_NoRetrieval(), settings=settings)
    return [t.id for t in trace.tokens]


def _generate_run(lm, ids, n: int):
    import torch

    x = torch.tensor([ids], device=lm.device)
    out = lm.model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                            do_sample=False, pad_token_id=lm.tokenizer.pad_token_id)
    return out[0, len(ids):].tolist()


def bench_size(size_name: str, *, new_tokens: int, repeats: int, device: str, profile: bool = False) -> SizeResult:
    import torch

    from onegen.engine import Engine, RunSettings
    from .models import SIZES, parameter_count, random_model

    lm = random_model(SIZES[size_name], TASK, device=device)
    proto = lm.protocol(TASK)
    silence_tokens(lm, [proto.eos_id, *proto.ids.values()])
    engine = Engine(lm)
    prompt_ids = engine.prompt_ids(TASK, PROMPT)[1]
    settings = RunSettings(max_new_tokens=new_tokens, draft_tokens=0)  # the loop against generate(), token by token
    res = SizeResult(size_name, parameter_count(lm), len(lm.tokenizer), len(prompt_ids), new_tokens, repeats)

    with torch.inference_mode():
        engine_ids = _engine_run(engine, settings)  # warm-up, and the ids to compare
        generate_ids = _generate_run(lm, prompt_ids, new_tokens)
        res.identical = engine_ids == generate_ids
        for r in range(repeats):
            # Alternate which goes first so drift in machine load hits both alike.
            for which in (("engine", "generate") if r % 2 == 0 else ("generate", "engine")):
                c0, t0 = time.process_time(), time.perf_counter()
                ids = _engine_run(engine, settings) if which == "engine" else _generate_run(lm, prompt_ids, new_tokens)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                cpu, wall = time.process_time() - c0, time.perf_counter() - t0
                getattr(res, f"{which}_cpu_s").append(cpu)
                getattr(res, f"{which}_wall_s").append(wall)
                if len(ids) != new_tokens:
                    raise RuntimeError(f"{which} produced {len(ids)} tokens, not {new_tokens}")
    if profile:
        _profile(engine, settings)
    return res


def _profile(engine, settings) -> None:
    import cProfile
    import io
    import pstats
    import sys

    prof = cProfile.Profile()
    prof.runcall(_engine_run, engine, settings)
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(15)
    print(buf.getvalue(), file=sys.stderr)


def markdown(results: list[SizeResult], threads: int) -> str:
    rows = ["| model | parameters | vocab | prompt | new tokens | repeats | engine tok/s | generate tok/s | "
            "ratio engine/generate | wall-clock ratio | same ids |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"]
    for r in results:
        s = r.summary()
        rows.append(f"| random Llama {r.size} | {r.parameters / 1e6:.1f}M | {r.vocab} | {r.prompt_tokens} | "
                    f"{r.new_tokens} | {r.repeats} | {s['engine_tokens_per_cpu_s']} | "
                    f"{s['generate_tokens_per_cpu_s']} | **{s['ratio']:.2f}** | {s['wall_ratio']:.2f} | "
                    f"{'yes' if r.identical else 'NO'} |")
    return ("Decode throughput of the single-pass engine (its multi-hop loop, no retrieval) against "
            "`model.generate` on the same random model and prompt: greedy, exactly N new tokens each (EOS and "
            "the protocol's tokens are silenced in the model's output rows, so neither stops or retrieves), "
            f"{threads} torch thread(s). Tokens/s and the ratio use the median CPU time per call (prompt "
            "included) over runs that alternate engine and generate: CPU time is what each side spends, and "
            "other processes on a shared machine do not inflate it. The wall-clock ratio is shown for "
            "reference. Ratio = engine tokens/s over generate tokens/s (1.00 = parity). \"same ids\": both "
            "produced the same token ids.\n\n" + "\n".join(rows) + "\n")


def main(args: argparse.Namespace) -> int:
    import json
    import sys

    import torch

    from . import report

    from .models import SIZES

    new_tokens = args.new_tokens or (32 if args.quick else 128)
    repeats = args.repeats or (3 if args.quick else 7)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if new_tokens < 2 or repeats < 1 or unknown or not sizes:
        problem = (f"unknown model size {unknown[0]!r}; choose from {', '.join(SIZES)}" if unknown or not sizes
                   else "--new-tokens must be at least 2 and --repeats at least 1")
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.device.startswith("cpu"):
        torch.set_num_threads(max(1, args.threads))
    results = [bench_size(s, new_tokens=new_tokens, repeats=repeats, device=args.device, profile=args.profile)
               for s in sizes]
    machine = report.machine_info(args.device)
    if args.json:
        print(json.dumps({"benchmark": "engine", "machine": machine, "results": [r.summary() for r in results]}))
    else:
        print(markdown(results, torch.get_num_threads()))
    if args.write:
        path = report.write_section("engine", markdown(results, torch.get_num_threads()),
                                    command=report.command_line(), machine=machine,
                                    title="Engine decode throughput vs `generate`", path=args.write)
        if not args.json:
            print(f"wrote the engine section of {path}")
    return 0
