"""The batched engine on a GPU, in one prepared run of a few minutes: a Llama-2-7B-shaped model with
random weights (cost depends on the shape, not the values), built on the device from its config, so
nothing is downloaded.

1. Decode throughput of the packed pass (`fused_llama.forward_packed`, the batched engine's step)
   at batch 1 to 64: a prompt prefilled, then greedy steps, tokens per second, against batch 1.
2. The fused decoder against transformers' `generate` at batch 1, same prompt, same number of
   greedy tokens (and how many of the tokens agree: in bf16 both paths round differently).
3. Exact top-10 search over 1.24 M x 4096 float32 vectors (faiss on the GPU when faiss has one,
   else a torch matmul and top-k on the device), against the memory-bandwidth floor: the bytes of
   the vectors divided by the bandwidth of one read over them (a sum).

`--tiny` runs the same code with tiny shapes on the CPU in seconds (tests/test_bench_gpu.py).
A step that would pass `--budget-s` is skipped and said so, so the run stays under its budget.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

HELP = "the batched engine on a GPU: 7B-shaped random model at batch 1-64, vs generate, exact search vs bandwidth"

# Llama-2-7B's shape.
SHAPE_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096)
SHAPE_TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=300, max_position_embeddings=512)


@dataclass
class Plan:
    shape: dict
    sizes: list[int]
    prompt: int  # prompt tokens per sequence
    steps: int  # greedy tokens decoded per sequence
    vectors: int  # search: rows
    dim: int  # search: width
    queries: list[int]  # search: query batch sizes


FULL = Plan(SHAPE_7B, [1, 2, 4, 8, 16, 32, 64], prompt=128, steps=64, vectors=1_240_000, dim=4096, queries=[1, 64])
TINY = Plan(SHAPE_TINY, [1, 2, 4], prompt=8, steps=4, vectors=2000, dim=64, queries=[1, 4])


def add_arguments(p) -> None:
    p.add_argument("--tiny", action="store_true", help="tiny shapes (a CPU check of the code path, seconds)")
    p.add_argument("--sizes", default=None, help="batch sizes, comma-separated (default 1,2,4,8,16,32,64)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"],
                   help="model dtype (default bfloat16)")
    p.add_argument("--budget-s", type=float, default=420.0,
                   help="skip the remaining steps once this many seconds have passed (default 420)")


def build_model(shape: dict, device, dtype):
    """A LlamaForCausalLM with random weights, allocated on `device` in `dtype` directly."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # parameters are created in the model dtype, never in float32 first
    try:
        with torch.device(device):
            model = LlamaForCausalLM(LlamaConfig(**shape))
    finally:
        torch.set_default_dtype(previous)
    model.generation_config.eos_token_id = None  # random weights: decode the full length every time
    model.generation_config.pad_token_id = 0
    return model.eval()


class Clock:
    """Wall time of device work: waits for the device's queue before reading the clock."""

    def __init__(self, device):
        import torch

        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def __enter__(self) -> "Clock":
        self.sync()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.sync()
        self.seconds = time.perf_counter() - self.t0


def prompts(n: int, length: int, vocab: int) -> list[list[int]]:
    import torch

    gen = torch.Generator().manual_seed(n * 1000 + length)
    return [torch.randint(3, vocab, (length,), generator=gen).tolist() for _ in range(n)]


def decode_packed(model, batch: list[list[int]], steps: int) -> tuple[list[list[int]], float, float]:
    """Greedy decoding of `batch` together: (tokens per sequence, prefill seconds, decode seconds).
    The prefill chooses each sequence's first token; each of the `steps` decode passes one more.
    As in the batched engine, the sequences' KV caches are rows of one `SharedKVCache`, so a decode
    step attends for every sequence in one call per layer."""
    import torch
    from onegen.fused_llama import FusedLlamaDecoder, SharedKVCache, forward_packed

    device = next(model.parameters()).device
    # Room for twice the longest sequence: the cache's own growth rule, so it never reallocates.
    capacity = 2 * (len(batch[0]) + steps + 1)
    cache = SharedKVCache(model, len(batch), capacity=capacity, any_device=True, share_prefixes=False)
    decoders = [FusedLlamaDecoder(model, any_device=True, shared=cache) for _ in batch]
    out: list[list[int]] = [[] for _ in batch]
    with torch.inference_mode():
        with Clock(device) as prefill:
            hidden = forward_packed(decoders, batch)
            last = model.lm_head(torch.stack([h[-1] for h in hidden])).argmax(-1)
        with Clock(device) as decode:
            for _ in range(steps):
                ids = last.tolist()  # the host reads each choice, as the engine's loop does
                for seq, t in zip(out, ids):
                    seq.append(t)
                hidden = forward_packed(decoders, [[t] for t in ids])
                last = model.lm_head(torch.cat(hidden)).argmax(-1)
            for seq, t in zip(out, last.tolist()):
                seq.append(t)
    return out, prefill.seconds, decode.seconds


def decode_generate(model, prompt: list[int], steps: int) -> tuple[list[int], float]:
    import torch

    device = next(model.parameters()).device
    x = torch.tensor([prompt], device=device)
    with torch.inference_mode(), Clock(device) as clock:
        y = model.generate(x, max_new_tokens=steps, min_new_tokens=steps, do_sample=False,
                           attention_mask=torch.ones_like(x))
    return y[0, len(prompt):].tolist(), clock.seconds


def bench_decode(model, plan: Plan, sizes: list[int], deadline: float, bandwidth: float,
                 repeats: int = 3) -> dict:
    """Tokens per second of the packed pass at each size: one untimed decode at that size first
    (the kernels a size picks are chosen and loaded on first use), then the median of `repeats`.
    Each row's floor is one read of the weights and of the batch's KV cache at its mean length."""
    from onegen.fused_llama import FusedLlamaDecoder

    vocab = plan.shape["vocab_size"]
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    # The cache's geometry as the decoder reads it from the config (head_dim included).
    probe = FusedLlamaDecoder(model, capacity=1, any_device=True)
    kv_per_token = 2 * len(probe.layers) * probe.n_kv * probe.head_dim * probe.embed.element_size()
    rows, skipped, base = [], [], None
    for size in sizes:
        if time.perf_counter() > deadline:
            skipped.append(size)
            continue
        batch = prompts(size, plan.prompt, vocab)
        decode_packed(model, batch, 2)
        runs = sorted((decode_packed(model, batch, plan.steps)[1:] for _ in range(repeats)), key=lambda r: r[1])
        prefill, decode = runs[len(runs) // 2]
        rate = size * plan.steps / decode
        base = base or (rate if size == 1 else None)
        floor_s = (weight_bytes + size * (plan.prompt + plan.steps / 2) * kv_per_token) / bandwidth
        rows.append({"batch_size": size, "tokens_per_s": round(rate, 1), "prefill_s": round(prefill, 3),
                     "step_ms": round(1000 * decode / plan.steps, 2), "floor_ms": round(1000 * floor_s, 2),
                     "vs_batch_1": round(rate / base, 2) if base else None})
    best = max(rows, key=lambda r: r["tokens_per_s"]) if rows else None
    return {"rows": rows, "skipped_sizes": skipped, "repeats": repeats, "weight_gib": round(weight_bytes / 2**30, 2),
            "best_batch_size": best and best["batch_size"], "best_vs_batch_1": best and best["vs_batch_1"]}


def bench_generate(model, plan: Plan, repeats: int = 3) -> dict:
    """Batch 1, the fused decoder against `generate`, interleaved, the median of `repeats` each."""
    prompt = prompts(1, plan.prompt, plan.shape["vocab_size"])[0]
    decode_generate(model, prompt, 2)  # untimed warm-up
    decode_packed(model, [prompt], 2)
    # Both: the prompt's prefill, then `steps` passes, steps + 1 greedy tokens, timed end to end.
    ours_t, theirs_t = [], []
    for _ in range(repeats):
        ours, prefill_s, decode_s = decode_packed(model, [prompt], plan.steps)
        theirs, theirs_s = decode_generate(model, prompt, plan.steps + 1)
        ours_t.append(prefill_s + decode_s)
        theirs_t.append(theirs_s)
    ours_s, theirs_s = sorted(ours_t)[repeats // 2], sorted(theirs_t)[repeats // 2]
    n = plan.steps + 1
    agree = next((i for i, (a, b) in enumerate(zip(ours[0], theirs)) if a != b), min(len(ours[0]), len(theirs)))
    return {"tokens": n, "engine_tokens_per_s": round(n / ours_s, 1), "generate_tokens_per_s": round(n / theirs_s, 1),
            "engine_vs_generate": round(theirs_s / ours_s, 2), "same_tokens_prefix": agree}


def bench_search(plan: Plan, device, repeats: int = 5) -> dict:
    """Exact top-10 by inner product over unit vectors, against bytes read / measured bandwidth."""
    import torch

    gen = torch.Generator(device=device).manual_seed(0)
    vectors = torch.randn(plan.vectors, plan.dim, device=device, generator=gen)
    vectors /= vectors.norm(dim=1, keepdim=True)
    nbytes = vectors.numel() * vectors.element_size()
    bandwidth = read_bandwidth(vectors, repeats)
    search, backend = _searcher(vectors, device)
    rows = []
    for q in plan.queries:
        queries = vectors[:q].clone()
        search(queries)  # untimed warm-up
        times = []
        for _ in range(repeats):
            with Clock(device) as c:
                ids = search(queries)
            times.append(c.seconds)
        exact = bool((ids[:, 0].cpu() == torch.arange(q)).all())  # each query's nearest is itself
        floor = nbytes / bandwidth
        rows.append({"queries": q, "seconds": round(min(times), 5), "floor_s": round(floor, 5),
                     "vs_floor": round(min(times) / floor, 2), "self_found": exact})
    return {"backend": backend, "vectors": plan.vectors, "dim": plan.dim, "gib": round(nbytes / 2**30, 2),
            "read_gb_per_s": round(bandwidth / 1e9, 1), "rows": rows}


def read_bandwidth(tensor, repeats: int = 5) -> float:
    """Bytes per second of one read over `tensor` (a sum), the best of `repeats` after a warm-up."""
    tensor.sum()
    reads = []
    for _ in range(repeats):
        with Clock(tensor.device) as c:
            tensor.sum()
        reads.append(c.seconds)
    return tensor.numel() * tensor.element_size() / min(reads)


def _searcher(vectors, device):
    """faiss's exact inner-product index on the GPU when faiss has a GPU; otherwise torch."""
    import torch

    if device.type == "cuda":
        try:
            import faiss

            if faiss.get_num_gpus() > 0:
                import faiss.contrib.torch_utils  # noqa: F401  (lets faiss take torch tensors)

                res = faiss.StandardGpuResources()
                index = faiss.GpuIndexFlatIP(res, vectors.shape[1])
                index.add(vectors)
                return (lambda q: index.search(q, 10)[1]), "faiss GpuIndexFlatIP"
        except ImportError:
            pass

    def search(q):
        return torch.topk(q @ vectors.T, 10, dim=1).indices

    return search, f"torch matmul + topk ({device.type})"


def main(args) -> int:
    import torch
    from benchmarks.report import command_line, machine_info, write_section

    plan = TINY if args.tiny else FULL
    device = torch.device("cpu" if args.tiny and args.device == "cpu" else args.device)
    if device.type == "cpu" and not args.tiny:
        print("bench gpu needs a GPU (--device cuda); --tiny checks the code path on the CPU")
        return 2
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else plan.sizes
    sizes = sorted({1, *sizes})
    deadline = time.perf_counter() + args.budget_s
    t0 = time.perf_counter()
    dtype = getattr(torch, args.dtype)
    model = build_model(plan.shape, device, dtype)
    result: dict = {"plan": asdict(plan) | {"sizes": sizes}, "dtype": args.dtype, "device": str(device),
                    "build_s": round(time.perf_counter() - t0, 1)}
    # The decode floor's bandwidth, read over a buffer several times the cache, not the weights.
    probe = torch.randn(plan.vectors * plan.dim // 4, device=device)
    bandwidth = read_bandwidth(probe)
    del probe
    result["decode"] = bench_decode(model, plan, sizes, deadline, bandwidth)
    result["read_gb_per_s"] = round(bandwidth / 1e9, 1)
    result["generate"] = bench_generate(model, plan)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    result["search"] = bench_search(plan, device)
    result["total_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    if args.write:
        write_section("gpu", report_body(result), command=command_line(), machine=machine_info(str(device)),
                      title="The batched engine on a GPU", path=args.write)
    return 0


def report_body(result: dict) -> str:
    shape, d, g, s = result["plan"]["shape"], result["decode"], result["generate"], result["search"]
    lines = [f"A Llama-2-7B-shaped model ({shape['num_hidden_layers']} layers, hidden {shape['hidden_size']}) "
             f"with random {result['dtype']} weights; prompt {result['plan']['prompt']} tokens, "
             f"{result['plan']['steps']} greedy steps per sequence; each size warmed up untimed, then the median of "
             f"{d['repeats']} runs. Floor: one read of the weights ({d['weight_gib']} GiB) and of the batch's KV cache "
             f"per step at the measured read bandwidth ({result['read_gb_per_s']} GB/s).", "",
             "| batch | tokens/s | vs batch 1 | ms per step | floor ms per step | prefill s |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['batch_size']} | {r['tokens_per_s']} | {r['vs_batch_1']}x | {r['step_ms']} | {r['floor_ms']} | "
              f"{r['prefill_s']} |" for r in d["rows"]]
    if d["skipped_sizes"]:
        lines.append(f"\nSkipped (time budget): {d['skipped_sizes']}.")
    lines += ["", f"Batch 1, the fused decoder {g['engine_tokens_per_s']} tokens/s vs transformers' `generate` "
              f"{g['generate_tokens_per_s']} tokens/s ({g['engine_vs_generate']}x; the first "
              f"{g['same_tokens_prefix']} of {g['tokens']} tokens agree).", "",
              f"Exact top-10 over {s['vectors']:,} x {s['dim']} float32 vectors ({s['gib']} GiB), {s['backend']}; "
              f"read bandwidth {s['read_gb_per_s']} GB/s.", "",
              "| queries | seconds | bandwidth floor | vs floor |", "|---|---|---|---|"]
    lines += [f"| {r['queries']} | {r['seconds']} | {r['floor_s']} | {r['vs_floor']}x |" for r in s["rows"]]
    return "\n".join(lines)
