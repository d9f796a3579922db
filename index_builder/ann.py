"""Approximate index kinds: building the faiss index, estimating memory, measuring recall.

Kinds (all inner product on unit vectors, i.e. cosine):
    flat   exact search over float32 vectors held in memory (the default)
    hnsw   faiss.IndexHNSWFlat: a navigable graph over the full float32 vectors; fast, no compression
    ivfpq  faiss.IndexIVFPQ: coarse clusters + product-quantised codes (a few hundred bytes a vector)
    sq8    faiss.IndexScalarQuantizer, 8 bits per dimension (4x smaller than float32), brute force

For ivfpq and sq8 the exact vectors stay on disk (memory-mapped by `VectorIndex.load`) and the
candidates of each query are re-scored exactly (`rerank` x k of them), which recovers most of the
recall that compression loses at the cost of reading a few rows per query.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import torch

from onegen.errors import OneGenError
from onegen.index import INDEX_KINDS, AnnIndex, VectorIndex, normalize
from onegen.memory import available_memory

GB = 1 << 30


class MemoryBudgetError(OneGenError, RuntimeError):
    """The index (plus model and documents) would not fit in the memory budget."""


@dataclass
class AnnSettings:
    """Construction and search parameters; None means "chosen from the corpus size"."""

    kind: str = "flat"
    hnsw_m: int = 32  # graph neighbours per node
    ef_construction: int = 80
    ef_search: int = 128
    nlist: int | None = None  # IVF clusters; default about sqrt(N)
    pq_m: int | None = None  # PQ sub-quantisers; default dim / 8 up to 256 (a divisor of dim)
    pq_bits: int | None = None  # bits per sub-quantiser code; default 8 (fewer for tiny corpora)
    nprobe: int = 32  # IVF clusters visited per query
    rerank: int | None = None  # exact re-scoring of rerank x k candidates; default 4 for ivfpq/sq8, off for hnsw
    train_size: int | None = None  # training sample; default enough for the clusters and codebooks
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"unknown index kind {self.kind!r}; choose one of {', '.join(INDEX_KINDS)}")
        for name in ("hnsw_m", "ef_construction", "ef_search", "nprobe"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")

    def resolved(self, count: int, dim: int) -> "AnnSettings":
        """A copy with every default filled in for `count` vectors of `dim` dimensions."""
        s = AnnSettings(**asdict(self))
        if s.kind == "ivfpq":
            # About sqrt(N) clusters keeps k-means training affordable on a CPU; faiss wants about
            # 39 training points per cluster, so tiny corpora get one cluster.
            s.nlist = s.nlist or max(1, min(int(round(math.sqrt(max(count, 1)))), count // 39))
            # 8-dimension sub-vectors, at most 256 codes a vector (4096-d: 256 bytes, 64x smaller).
            s.pq_m = s.pq_m or largest_divisor_at_most(dim, min(256, max(1, dim // 8)))
            if dim % s.pq_m:
                raise ValueError(f"pq_m={s.pq_m} must divide the dimension {dim}")
            s.pq_bits = s.pq_bits or max(1, min(8, int(math.log2(max(count, 2)))))
            s.nprobe = min(s.nprobe, s.nlist)
        if s.rerank is None:
            s.rerank = 4 if s.kind in ("ivfpq", "sq8") else 0
        if s.train_size is None:
            s.train_size = default_train_size(s, count)
        s.train_size = min(s.train_size, count)
        return s

    def search_params(self) -> dict[str, Any]:
        """What goes into the manifest (build.ann) and drives `AnnIndex.search`."""
        p: dict[str, Any] = {"rerank": self.rerank}
        if self.kind == "hnsw":
            p.update(M=self.hnsw_m, ef_construction=self.ef_construction, ef_search=self.ef_search)
        elif self.kind == "ivfpq":
            p.update(nlist=self.nlist, pq_m=self.pq_m, pq_bits=self.pq_bits, nprobe=self.nprobe,
                     train_size=self.train_size)
        elif self.kind == "sq8":
            p.update(train_size=self.train_size)
        return p


def largest_divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in range(1, max(1, limit) + 1) if n % d == 0)


def default_train_size(s: AnnSettings, count: int) -> int:
    if s.kind == "ivfpq":
        return max(40 * (s.nlist or 1), 40 * (1 << (s.pq_bits or 8)))
    if s.kind == "sq8":
        return 20_000  # per-dimension min/max: a modest sample is plenty
    return 0


# -- building ---------------------------------------------------------------------------------------

def new_faiss_index(s: AnnSettings, dim: int):
    """An empty (untrained) faiss index for resolved settings `s`."""
    import faiss

    ip = faiss.METRIC_INNER_PRODUCT
    if s.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, s.hnsw_m, ip)
        index.hnsw.efConstruction = s.ef_construction
        index.hnsw.efSearch = s.ef_search
        return index
    if s.kind == "ivfpq":
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFPQ(quantizer, dim, s.nlist, s.pq_m, s.pq_bits, ip)
        index.nprobe = s.nprobe  # faiss's wrapper keeps `quantizer` alive with the index
        return index
    if s.kind == "sq8":
        return faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit, ip)
    raise ValueError(f"{s.kind!r} has no approximate index")


def build_ann(settings: AnnSettings, dim: int, count: int, sample: Callable[[int], np.ndarray],
              batches: Iterable[np.ndarray]) -> AnnIndex:
    """Train on `sample(n)` (n rows drawn from the corpus) and add `batches` (all rows, in order)."""
    s = settings.resolved(count, dim)
    index = new_faiss_index(s, dim)
    if not index.is_trained:
        train = np.ascontiguousarray(sample(s.train_size), dtype=np.float32)
        index.train(train)
        del train
    added = 0
    for block in batches:
        index.add(np.ascontiguousarray(block, dtype=np.float32))
        added += len(block)
    if added != count:
        raise ValueError(f"added {added} vectors to the {s.kind} index, expected {count}")
    return AnnIndex(s.kind, index, s.search_params())


def attach_ann(index: VectorIndex, settings: AnnSettings, block: int = 65_536) -> VectorIndex:
    """Give an in-memory index an approximate index over its vectors (flat: remove it)."""
    if settings.kind == "flat":
        index.ann = None
        return index
    vectors = index.vectors
    rng = np.random.default_rng(settings.seed)

    def sample(n: int) -> np.ndarray:
        rows = np.sort(rng.choice(len(vectors), size=n, replace=False))
        return vectors[torch.from_numpy(rows)].numpy()

    blocks = (vectors[i:i + block].numpy() for i in range(0, len(vectors), block))
    index.ann = build_ann(settings, index.dim, len(vectors), sample, blocks)
    return index


# -- exact search and recall ------------------------------------------------------------------------

def exact_topk(vectors: torch.Tensor, queries: torch.Tensor, k: int, block: int = 65_536
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k rows by inner product, in blocks so memory-mapped vectors are never copied whole."""
    q = normalize(queries)
    best_s = torch.full((len(q), 0), float("-inf"))
    best_r = torch.zeros((len(q), 0), dtype=torch.long)
    for start in range(0, len(vectors), block):
        sims = q @ vectors[start:start + block].float().T
        s, r = sims.topk(min(k, sims.shape[1]), dim=1)
        best_s, pos = torch.cat([best_s, s], 1).topk(min(k, best_s.shape[1] + s.shape[1]), dim=1)
        best_r = torch.cat([best_r, r + start], 1).gather(1, pos)
    return best_s, best_r


@dataclass
class RecallResult:
    recall_at_10: float
    sample: int
    queries: str
    k: int = 10


def recall_queries(vectors: torch.Tensor, sample: int = 200, noise: float = 0.3, seed: int = 0) -> torch.Tensor:
    """`sample` stored vectors with Gaussian noise (norm ~`noise`, cosine to the original ~0.95)."""
    g = torch.Generator().manual_seed(seed)
    n = min(sample, len(vectors))
    rows = torch.randperm(len(vectors), generator=g)[:n].sort().values
    base = vectors[rows].float()
    return normalize(base + noise * torch.randn(base.shape, generator=g) / math.sqrt(base.shape[1]))


def measure_recall(index: VectorIndex, queries: torch.Tensor | None = None, *, k: int = 10, sample: int = 200,
                   seed: int = 0) -> RecallResult:
    """recall@k of the index's search path (approximate when it has one) against exact search,
    over vector rows: |approx top-k  exact top-k| / k, averaged over queries."""
    what = "given queries"
    if queries is None:
        queries = recall_queries(index.vectors, sample, seed=seed)
        what = "stored vectors + Gaussian noise (cosine ~0.95)"
    k = min(k, len(index.vectors))
    _, exact = exact_topk(index.vectors, queries, k)
    _, approx = index.search_rows(queries, k)
    hits = sum(len(set(a.tolist()) & set(e.tolist()) - {-1}) for a, e in zip(approx, exact))
    return RecallResult(round(hits / (k * len(queries)), 4), len(queries), what, k)


# -- memory (available_memory: onegen/memory.py) -----------------------------------------------------------------------------------------

def ann_bytes(kind: str, vectors: int, dim: int, settings: AnnSettings | None = None) -> int:
    """RAM that searching `vectors` rows of `dim` needs for `kind` (vector storage and structures)."""
    s = (settings or AnnSettings(kind=kind)).resolved(max(vectors, 1), dim) if kind != "flat" else None
    per_row = 16  # owners + fragment numbers kept by VectorIndex
    if kind == "flat":
        # float32 rows, plus faiss's own copy for CPU searches over >= 4096 rows
        return vectors * (per_row + 4 * dim * (2 if vectors >= 4096 else 1))
    assert s is not None
    if kind == "hnsw":
        graph = int(2 * s.hnsw_m * 4 * 1.1) + 16  # level-0 links, upper levels, level table
        return vectors * (per_row + 4 * dim + graph)
    if kind == "ivfpq":
        code = math.ceil(s.pq_m * s.pq_bits / 8) + 8  # code + stored id
        fixed = s.nlist * dim * 4 + (1 << s.pq_bits) * dim * 4
        tables = min(s.nlist * s.pq_m * (1 << s.pq_bits) * 4, 2 * GB)  # faiss's precomputed tables
        return vectors * (per_row + code) + fixed + tables
    if kind == "sq8":
        return vectors * (per_row + dim) + 2 * dim * 4
    raise ValueError(f"unknown index kind {kind!r}")


@dataclass
class MemoryEstimate:
    kind: str
    vectors: int
    dim: int
    documents: int
    index_bytes: int
    document_bytes: int
    model_bytes: int
    build_bytes: int  # extra working set while building (training sample)
    budget: int
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.index_bytes + self.document_bytes + self.model_bytes + self.build_bytes

    @property
    def fits(self) -> bool:
        return self.total <= self.budget

    def describe(self) -> str:
        parts = [f"{self.kind} index {fmt_bytes(self.index_bytes)} ({self.vectors:,} x {self.dim})",
                 f"documents {fmt_bytes(self.document_bytes)} ({self.documents:,})",
                 f"model {fmt_bytes(self.model_bytes)}"]
        if self.build_bytes:
            parts.append(f"training sample {fmt_bytes(self.build_bytes)}")
        return (f"needs about {fmt_bytes(self.total)} = " + " + ".join(parts)
                + f"; budget {fmt_bytes(self.budget)}" + "".join(f"; {n}" for n in self.notes))


def fmt_bytes(n: float) -> str:
    for unit, size in (("GB", GB), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def document_bytes(documents: int, text_bytes: int) -> int:
    # Arrow text (memory-mapped, touched as displayed) + ids/titles lists and id lookups the app builds.
    return text_bytes + documents * 200


def estimate_memory(kind: str, vectors: int, dim: int, documents: int, text_bytes: int, model_bytes: int,
                    budget: int | None = None, settings: AnnSettings | None = None) -> MemoryEstimate:
    s = settings or AnnSettings(kind=kind)
    if s.kind != kind:
        s = AnnSettings(**{**asdict(s), "kind": kind})
    train = s.resolved(max(vectors, 1), dim).train_size if kind != "flat" else 0
    notes = []
    if kind != "flat":
        notes.append(f"the exact vectors ({fmt_bytes(vectors * dim * 4)}) stay on disk, memory-mapped")
    if model_bytes == 0:
        notes.append("model not counted (not loaded)")
    return MemoryEstimate(kind, vectors, dim, documents, ann_bytes(kind, vectors, dim, s),
                          document_bytes(documents, text_bytes), model_bytes, (train or 0) * dim * 4,
                          available_memory() if budget is None else budget, notes)


def check_memory(est: MemoryEstimate, settings: AnnSettings | None = None) -> None:
    """Raise MemoryBudgetError with suggestions when `est` does not fit its budget."""
    if est.fits:
        return
    options = []
    for kind in ("sq8", "ivfpq"):
        if kind == est.kind:
            continue
        alt = estimate_memory(kind, est.vectors, est.dim, est.documents, est.document_bytes - est.documents * 200,
                              est.model_bytes, est.budget, settings)
        options.append(f"--kind {kind} (about {fmt_bytes(alt.total)}{', fits' if alt.fits else ''})")
    room = est.budget - est.model_bytes - est.build_bytes
    per_doc = (est.index_bytes + est.document_bytes) / max(est.documents, 1)
    if room > 0 and per_doc > 0:
        options.append(f"--limit {int(room / per_doc):,} (documents that fit as {est.kind})")
    else:
        options.append(f"a smaller model (this one alone needs {fmt_bytes(est.model_bytes)})")
    options.append("a larger --memory-budget if the index will be used where more memory is free")
    raise MemoryBudgetError(f"the index will not fit in memory: it {est.describe()}. Options: "
                            + "; ".join(options) + ".")


__all__ = ["AnnSettings", "MemoryBudgetError", "MemoryEstimate", "RecallResult", "ann_bytes", "attach_ann",
           "available_memory", "build_ann", "check_memory", "estimate_memory", "exact_topk", "measure_recall",
           "recall_queries", "fmt_bytes"]
