"""Index builder figures: document encoding throughput on this machine, and search latency, recall@10
and memory of the four index kinds (flat, HNSW, IVF-PQ, SQ8) on random unit vectors.

Random unit vectors are the hardest case for approximate search: every point is about equally far
from every other, so any neighbour beyond the first is a near tie. Real embeddings cluster, and the
recall the builder records in each index's manifest (measured on that index's own vectors) is the
figure to trust for a real corpus.
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from onegen.assets import assets_dir

HELP = "index builder: encoding documents/s; search latency, recall@10, memory for flat/HNSW/IVF-PQ/SQ8"
ROOT = Path(__file__).resolve().parents[1]
HELDOUT = assets_dir() / "world" / "heldout"
KINDS = ("flat", "hnsw", "ivfpq", "sq8")

# (vectors, dimensions, kinds, why the row differs from "all kinds at 4096-d")
FULL_GRID: list[tuple[int, int, tuple[str, ...], str]] = [
    (10_000, 4096, KINDS, ""),
    (100_000, 4096, ("flat", "ivfpq", "sq8"), ""),
    (100_000, 256, ("hnsw",), "HNSW construction at 100k x 4096 takes tens of minutes on 2 CPUs"),
    (1_000_000, 256, ("flat", "ivfpq", "sq8"),
     "1M x 4096 float32 is 16 GB (32 GB with faiss's search copy), more than this machine's RAM"),
]
QUICK_GRID = FULL_GRID[:3]
# Clustered data, a smaller grid: it answers "how do the kinds do on data with structure".
CLUSTERED_GRID: list[tuple[int, int, tuple[str, ...], str]] = [
    (10_000, 4096, KINDS, ""),
    (100_000, 256, KINDS, "clustered rows at 100k use 256-d to keep HNSW construction affordable on 2 CPUs"),
]


def add_arguments(p) -> None:
    p.add_argument("--model", default=None, help="model for the encoding figure (default: the embedded model)")
    p.add_argument("--documents", type=int, default=None, help="documents per task to encode (default 96; quick 24)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--queries", type=int, default=200, help="held-out queries for recall@10")
    p.add_argument("--latency-queries", type=int, default=30, help="single queries timed per index")
    p.add_argument("--threads", type=int, default=None, help="torch and faiss threads (default: torch's)")
    p.add_argument("--grid", default=None, help="override, e.g. 10000x4096:flat+sq8,100000x256:hnsw")
    p.add_argument("--data", choices=("random", "clustered", "both"), default="both",
                   help="random unit vectors (the hardest case), clustered ones (closer to embeddings), or both")
    p.add_argument("--skip-encoding", action="store_true")


# -- encoding -------------------------------------------------------------------------------------

@dataclass
class EncodingResult:
    model: str
    model_note: str
    parameters: int
    dtype: str
    task: str
    documents: int
    vectors: int
    tokens: int
    seconds: float

    @property
    def documents_per_second(self) -> float:
        return self.documents / self.seconds

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds


def encoding_model(name: str | None, device: str):
    """The embedded model when it is installed; otherwise its base (SmolLM2-135M, same shape and
    compute) with the protocol tokens added; otherwise a small random model. Returns (lm, note)."""
    import torch

    from onegen.loading import LoadedModel, load_model, load_tokenizer
    from onegen.registry import lookup

    entry = lookup(name)
    if name is not None or (entry is not None and Path(entry.source).exists()):
        lm = load_model(name, device=device)
        return lm, "the embedded model" if entry is not None and entry.embedded else "as given"
    try:
        from transformers import AutoModelForCausalLM

        from onegen.loading import ensure_base

        recipe = json.loads((assets_dir() / "recipes" / "onegen-smol.json").read_text())
        base = ensure_base(recipe["base"])
        tokenizer = load_tokenizer(base)
        note = (f"embedded model not installed: its base {recipe['base']['name']} with the protocol tokens "
                "added (same shape and compute, untrained token rows)")
        model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    except Exception as e:  # no base package either: a random model, clearly labelled
        from transformers import LlamaConfig, LlamaForCausalLM

        shared = ROOT.parent / "shared" / "fixtures" / "llama2-tokenizers" / "multi-hop"
        if not shared.exists():
            raise RuntimeError(f"no model to benchmark encoding with ({e}); pass --model") from e
        tokenizer = load_tokenizer(shared)
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=512,
                                             num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2))
        note = f"embedded model and its base unavailable ({type(e).__name__}): a tiny random Llama (256-d, 4 layers)"
    from onegen.protocols import SPECS

    new = [t for spec in SPECS.values() for t in spec.token_strings if t not in tokenizer.get_vocab()]
    if new:
        tokenizer.add_special_tokens({"additional_special_tokens": list(dict.fromkeys(new))},
                                     replace_extra_special_tokens=False)
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model.to(device).eval()
    return LoadedModel(name=note.split(":")[0], model=model, tokenizer=tokenizer, device=torch.device(device),
                       dtype=torch.float32, source="folder"), note


def bench_encoding(lm, note: str, n: int, batch_size: int) -> list[EncodingResult]:
    from index_builder.build import prepare_document
    from index_builder.sources.world import WorldSource

    from onegen.encode import encode_documents

    out = []
    for task in ("entity-linking", "multi-hop"):
        docs = [prepare_document(d, task) for d, _ in zip(WorldSource(HELDOUT, task), range(n + batch_size))]
        encode_documents(lm, task, docs[:batch_size], batch_size=batch_size)  # warm-up
        docs = docs[batch_size:]
        t0 = time.perf_counter()
        vectors, _, tokens = encode_documents(lm, task, docs, batch_size=batch_size)
        seconds = time.perf_counter() - t0
        out.append(EncodingResult(lm.name, note, sum(p.numel() for p in lm.model.parameters()),
                                  str(lm.dtype).replace("torch.", ""), task, len(docs), len(vectors), tokens, seconds))
    return out


# -- search ---------------------------------------------------------------------------------------

@dataclass
class SearchResult:
    vectors: int
    dim: int
    kind: str
    build_seconds: float
    latency_ms: float  # median, one query per call
    recall_random: float | None  # held-out queries from the same distribution
    recall_near: float | None  # stored vectors + noise (the builder's check)
    memory_bytes: int
    params: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    data: str = "random"


def random_unit(n: int, dim: int, seed: int, block: int = 50_000, centres=None):
    """Random unit vectors; with `centres`, each is a centre plus noise of the same norm (cosine
    to its centre ~0.7, ~0.5 to its cluster's other members, ~0 to the rest)."""
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, block):
        x = rng.standard_normal((min(block, n - s), dim), dtype=np.float32) / np.sqrt(dim)
        if centres is not None:
            x += centres[rng.integers(0, len(centres), len(x))]
        out[s:s + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return torch.from_numpy(out)


def dataset(n: int, dim: int, n_queries: int, data: str):
    """(corpus, held-out queries) of `data` kind; clustered data has about 100 vectors a cluster."""
    centres = random_unit(max(1, n // 100), dim, seed=7).numpy() if data == "clustered" else None
    return random_unit(n, dim, n + dim, centres=centres), random_unit(n_queries, dim, 1, centres=centres)


def fits(n: int, dim: int) -> bool:
    from index_builder.ann import available_memory

    # vectors + faiss's flat copy + headroom for building
    return n * dim * 4 * 2.5 < available_memory()


def bench_search(n: int, dim: int, kinds: tuple[str, ...], n_queries: int, n_latency: int,
                 note: str = "", data: str = "random") -> list[SearchResult]:
    from index_builder.ann import AnnSettings, ann_bytes, attach_ann, measure_recall

    from onegen.index import VectorIndex

    vectors, queries = dataset(n, dim, n_queries, data)
    docs = placeholder_documents(n)
    results = []
    for kind in kinds:
        index = VectorIndex(vectors, docs, normalized=True)
        t0 = time.perf_counter()
        attach_ann(index, AnnSettings(kind=kind))
        build = time.perf_counter() - t0
        index.search(queries[0], k=10)  # warm-up (builds faiss's flat copy for exact search)
        times = []
        for q in queries[:n_latency]:
            t = time.perf_counter()
            index.search(q, k=10)
            times.append(time.perf_counter() - t)
            if sum(times) > 20:  # slow kinds: enough samples for a median
                break
        recall_random = recall_near = None
        if kind != "flat":
            recall_random = measure_recall(index, queries).recall_at_10
            recall_near = measure_recall(index, sample=n_queries).recall_at_10
        results.append(SearchResult(n, dim, kind, round(build, 2), round(1000 * statistics.median(times), 3),
                                    recall_random, recall_near, ann_bytes(kind, n, dim),
                                    dict(index.ann.params) if index.ann else {}, note, data))
        del index
    return results


def placeholder_documents(n: int):
    """`n` documents with ids only, as an Arrow-backed store (search does not read documents)."""
    import pyarrow as pa

    from onegen.index import DocumentStore

    ids = pa.array([f"d{i}" for i in range(n)], pa.string())
    empty = pa.array([""] * n, pa.string())
    return DocumentStore(table=pa.table({"id": ids, "title": ids, "text": empty, "sentences": empty, "extra": empty}))


def parse_grid(text: str) -> list[tuple[int, int, tuple[str, ...], str]]:
    grid = []
    for part in text.split(","):
        size, _, kinds = part.partition(":")
        n, _, d = size.lower().partition("x")
        ks = tuple(kinds.split("+")) if kinds else KINDS
        bad = [k for k in ks if k not in KINDS]
        if bad or not n.isdigit() or not d.isdigit():
            raise ValueError(f"bad grid entry {part!r}: use NxDIM[:kind+kind]")
        grid.append((int(n), int(d), ks, ""))
    return grid


# -- report ---------------------------------------------------------------------------------------

def fmt_mem(b: int) -> str:
    from index_builder.ann import fmt_bytes

    return fmt_bytes(b)


def render(enc: list[EncodingResult], search: list[SearchResult], skipped: list[str], threads: int) -> str:
    lines = []
    if enc:
        e0 = enc[0]
        lines += [
            "### Encoding documents (CPU)",
            "",
            f"Model: {e0.model_note}; {e0.parameters / 1e6:.0f}M parameters, "
            f"{e0.dtype}, {threads} torch thread(s), batch of documents sorted by length. Documents from the held-out "
            "world (entity descriptions; multi-hop paragraphs with one vector per sentence).",
            "",
            "| task | documents | vectors | tokens | seconds | documents/s | tokens/s | 1.24M documents at this rate |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for e in enc:
            hours = 1_240_000 / e.documents_per_second / 3600
            lines.append(f"| {e.task} | {e.documents} | {e.vectors} | {e.tokens} | {e.seconds:.1f} | "
                         f"{e.documents_per_second:.1f} | {e.tokens_per_second:.0f} | {hours:.0f} h |")
        lines.append("")
    lines += [
        "### Search: latency, recall@10 and memory per index kind",
        "",
        "Data: *random* unit vectors (the hardest case for approximate search: every neighbour beyond the "
        "first is a near tie) and *clustered* ones (about 100 vectors around each random centre, cosine ~0.5 "
        "within a cluster, closer to how embeddings behave). Latency: one query per call through "
        "`VectorIndex.search` (top-10), median. Recall@10 against exact search over vector rows, on held-out "
        "queries from the same distribution and on stored vectors plus noise (cosine ~0.95: the check "
        "`python -m index_builder` records in each manifest). RAM: the builder's estimate for searching "
        "(flat counts faiss's copy of the vectors; IVF-PQ and SQ8 keep the exact float32 vectors on disk, "
        "memory-mapped, for re-ranking). Parameters: HNSW M=32, efConstruction=80, efSearch=128; IVF-PQ "
        "~sqrt(N) lists, nprobe=32, 8-dimension sub-vectors (at most 256 bytes a vector), re-rank 4 x k; SQ8 "
        "8 bits a dimension, re-rank 4 x k.",
        "",
        "| data | vectors | dim | kind | build s | latency ms/query | recall@10 held-out queries "
        "| recall@10 near stored | RAM |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in search:
        rr = "1 (exact)" if r.kind == "flat" else f"{r.recall_random:.3f}"
        rn = "1 (exact)" if r.kind == "flat" else f"{r.recall_near:.3f}"
        lines.append(f"| {r.data} | {r.vectors:,} | {r.dim} | {r.kind} | {r.build_seconds:.1f} | {r.latency_ms:.2f} "
                     f"| {rr} | {rn} | {fmt_mem(r.memory_bytes)} |")
    notes = sorted({f"{r.vectors:,} x {r.dim}: {r.note}" for r in search if r.note} | set(skipped))
    if notes:
        lines += ["", "Rows not at 4096-d, or left out:", ""] + [f"- {n}" for n in notes]
    lines += ["", "Not measured here (no GPU was lent to this run): encoding with a 7B-shaped model in bf16 on a "
              "GPU, and exact top-10 over 1.24M x 4096 (the released entity vectors) on a GPU."]
    return "\n".join(lines) + "\n"


def run_row(n: int, dim: int, kinds: tuple[str, ...], note: str, data: str, args) -> list[SearchResult]:
    """One grid row, at a smaller dimension when the vectors would not fit in free memory."""
    from index_builder.ann import fmt_bytes

    d = dim
    while not fits(n, d) and d > 64:
        d //= 4
    if d != dim:
        note = (note + "; " if note else "") + f"{n:,} x {dim} does not fit in the free memory: {d}-d instead"
    results = bench_search(n, d, kinds, args.queries, args.latency_queries, note, data)
    for r in results:
        print(f"{data:<9} {r.vectors:>9,} x {r.dim:<4} {r.kind:<5} build {r.build_seconds:7.1f}s  "
              f"latency {r.latency_ms:8.2f} ms  recall held-out {r.recall_random}  near {r.recall_near}  "
              f"RAM {fmt_bytes(r.memory_bytes)}", flush=True)
    return results


def main(args) -> int:
    import torch

    if args.threads:
        import faiss

        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    grid = parse_grid(args.grid) if args.grid else (QUICK_GRID if args.quick else FULL_GRID)
    runs = [(data, grid) for data in ("random", "clustered") if args.data in (data, "both")]
    if not args.grid and args.data in ("clustered", "both"):
        runs = [(d, g if d == "random" else CLUSTERED_GRID[:1 if args.quick else 2]) for d, g in runs]
    enc: list[EncodingResult] = []
    if not args.skip_encoding:
        lm, note = encoding_model(args.model, args.device)
        enc = bench_encoding(lm, note, args.documents or (24 if args.quick else 96), args.batch_size)
        for e in enc:
            print(f"encoding {e.task}: {e.documents} documents, {e.documents_per_second:.1f} documents/s, "
                  f"{e.tokens_per_second:.0f} tokens/s ({e.model_note})", flush=True)
        del lm
    search: list[SearchResult] = []
    skipped: list[str] = []
    for data, rows in runs:
        for n, dim, kinds, note in rows:
            search += run_row(n, dim, kinds, note, data, args)
    if args.quick:
        skipped.append("1,000,000 vectors: left out by --quick")
    if "hnsw" not in {r.kind for r in search if r.vectors >= 1_000_000} and any(r.vectors >= 1_000_000 for r in search):
        skipped.append("1,000,000 x 256 HNSW: construction takes too long on 2 CPUs")
    if args.json:
        print(json.dumps({"encoding": [{**asdict(e), "documents_per_second": e.documents_per_second}
                                       for e in enc], "search": [asdict(r) for r in search]}, indent=2))
    if args.write:
        from .report import command_line, machine_info, write_section

        path = write_section("index", render(enc, search, skipped, torch.get_num_threads()),
                             command=command_line(), machine=machine_info(args.device),
                             title="Index builder: encoding throughput and index kinds", path=args.write)
        print(f"wrote {path}")
    return 0
