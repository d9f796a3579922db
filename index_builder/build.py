"""Building an index folder: split a document stream into shards, encode the shards, merge them.

A build works in a folder beside the final index, `OUT.build/`:

    state.json                what is built (task, model fingerprint, source, shard size, limit) and
                              whether the split is complete
    shard-00000.arrow         documents of shard 0 (the split: one process reads the source)
    shard-00000.safetensors   their vectors and owners (any process may encode any shard)

Every file is written under a temporary name and renamed into place, so a shard file is either
complete or absent: a build killed at any moment continues where it stopped when run again, and
encodes no shard twice. The split comes first so that the encoding knows its total (progress and
ETA over the whole build) and so that several processes can share the shards (shard i belongs to
process i mod P). The merge streams the shards into `OUT` (vectors, documents, and an approximate
index when asked for) under a temporary name and renames it into place at the very end: a
half-built `OUT` never exists, and at no point are all vectors or all texts held in memory.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from onegen.documents import Document, split_sentences
from onegen.errors import OneGenError
from onegen.fsutil import atomic_write, remove_dead_temporaries, sha256_file, staged_dir
from onegen.index import ANN, DOCUMENTS, MANIFEST, VECTORS, DocumentStore, IndexManifest, VectorIndex, read_manifest
from onegen.protocols import SPECS, get_spec

from .ann import (AnnSettings, MemoryEstimate, available_memory, build_ann, check_memory, estimate_memory,
                  measure_recall)

log = logging.getLogger("index_builder")

BUILD_SCHEMA = "onegen-index-build/1"
STATE = "state.json"

# Shards are sized by time so that an interruption loses at most this much encoding, whatever the
# model and device: a fixed count is one shard for a whole CPU build and seconds of work on a GPU.
DEFAULT_SHARD_MINUTES = 2.0
PRECOMPUTED_SHARD_SIZE = 4096  # sources with vectors already: nothing to time
MAX_SHARD_VECTOR_BYTES = 512 << 20  # a shard's vectors are held in memory while it is encoded


class BuildError(OneGenError, RuntimeError):
    """A build that cannot start or continue; the message says what to do."""


def build_dir_for(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".build")


# -- documents ------------------------------------------------------------------------------------

def prepare_document(doc: Document, task: str) -> Document:
    """Fit a document to the task's protocol: multi-hop encodes one vector per sentence, so a
    document without sentences gets its text split into them."""
    if get_spec(task).vectors_per_sentence and not doc.sentences:
        sentences = split_sentences(doc.text) or [doc.text]
        return Document(id=doc.id, title=doc.title, text=doc.text, sentences=sentences, extra=doc.extra)
    return doc


def documents_table(docs: list[Document], metadata: dict[str, Any] | None = None):
    """Documents as an Arrow table with `DocumentStore`'s columns (so shards concatenate into
    the index's documents.arrow as they are)."""
    import pyarrow as pa

    table = pa.table({
        "id": pa.array([d.id for d in docs], pa.string()),
        "title": pa.array([d.title for d in docs], pa.string()),
        "text": pa.array([d.text for d in docs], pa.string()),
        "sentences": pa.array([json.dumps(d.sentences, ensure_ascii=False) if d.sentences is not None else ""
                               for d in docs], pa.string()),
        "extra": pa.array([json.dumps(d.extra, ensure_ascii=False) if d.extra else "" for d in docs], pa.string()),
    })
    if metadata:
        table = table.replace_schema_metadata({k: json.dumps(v) for k, v in metadata.items()})
    return table


def write_arrow(path: Path, table) -> None:
    import pyarrow as pa

    def write(p: Path) -> None:
        with pa.OSFile(str(p), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)

    atomic_write(path, write)


# -- the build folder -----------------------------------------------------------------------------

@dataclass
class BuildSpec:
    """What a build produces; a build folder refuses to continue under another spec."""

    task: str
    model: str
    model_fingerprint: str
    dim: int
    source: dict[str, Any]  # {"name": ..., "args": {...}} as given on the command line
    # Documents per shard; None: as many as `shard_minutes` of encoding, measured when the build starts.
    shard_size: int | None = None
    limit: int | None = None
    model_dtype: str = "float32"
    precomputed: bool = False
    shard_minutes: float = DEFAULT_SHARD_MINUTES
    # Vectors read at a layer split (ImpRAG), recorded in the manifest; None: final hidden states.
    layer_split: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.task not in SPECS:
            raise BuildError(f"unknown task {self.task!r}; choose one of {', '.join(SPECS)}")
        if self.shard_size is not None and self.shard_size < 1:
            raise BuildError("--shard-size must be at least 1")
        if not self.shard_minutes > 0:
            raise BuildError("--shard-minutes must be more than 0")
        if self.limit is not None and self.limit < 1:
            raise BuildError("--limit must be at least 1")


@dataclass
class BuildState:
    spec: BuildSpec
    schema: str = BUILD_SCHEMA
    split_complete: bool = False
    shards: int = 0
    documents: int = 0
    # Documents per shard, fixed when the split starts (the spec's count, or planned by time) and
    # kept for every later run of the same build; 0 until then.
    shard_size: int = 0
    shard_plan: dict[str, Any] = field(default_factory=dict)  # how a time-based size was chosen
    # Not part of the identity: defaults for a later `merge`.
    out: str = ""
    kind: str = "flat"
    batch_size: int = 16
    model_bytes: int = 0
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


class BuildFolder:
    """The shards and state of one build (see the module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def shard_docs(self, i: int) -> Path:
        return self.path / f"shard-{i:05d}.arrow"

    def shard_vectors(self, i: int) -> Path:
        return self.path / f"shard-{i:05d}.safetensors"

    # state
    def read_state(self) -> BuildState | None:
        f = self.path / STATE
        if not f.exists():
            return None
        try:
            raw = json.loads(f.read_text())
            if raw.get("schema") != BUILD_SCHEMA:
                raise BuildError(f"{f}: unsupported build schema {raw.get('schema')!r}")
            raw["spec"] = BuildSpec(**raw["spec"])
            return BuildState(**raw)
        except (json.JSONDecodeError, TypeError, KeyError) as e:
            raise BuildError(f"{f} is damaged ({e}); delete {self.path} to start the build again") from e

    def write_state(self, state: BuildState) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path / STATE, json.dumps(asdict(state), indent=2, ensure_ascii=False))

    def open(self, spec: BuildSpec, **defaults: Any) -> BuildState:
        """The build state for `spec`: continued when the folder holds the same build, created when
        there is none, refused when it holds another."""
        state = self.read_state()
        if state is None:
            state = BuildState(spec, **defaults)
            self.write_state(state)
            return state
        if asdict(state.spec) != asdict(spec):
            old, new = asdict(state.spec), asdict(spec)
            diff = ", ".join(f"{k}: {old[k]!r} -> {new[k]!r}" for k in old if old[k] != new.get(k))
            raise BuildError(f"{self.path} holds another build ({diff}); pass --restart to discard it, "
                             f"or delete the folder")
        return state

    def wait_for_split(self, poll: float = 1.0, say_every: float = 30.0) -> BuildState:
        """Block until the main process has split the corpus (other processes of a parallel build)."""
        start = last = time.monotonic()
        while True:
            state = self.read_state()
            if state is not None and state.split_complete:
                return state
            if time.monotonic() - last > say_every:
                log.info("waiting for process 0 to split the corpus (%.0f s so far)", time.monotonic() - start)
                last = time.monotonic()
            time.sleep(poll)

    # shards
    def split_shards(self) -> int:
        """Number of consecutive document shards from 0 on disk."""
        n = 0
        while self.shard_docs(n).exists():
            n += 1
        return n

    def shard_info(self, i: int) -> dict[str, Any]:
        import pyarrow as pa

        with pa.memory_map(str(self.shard_docs(i)), "r") as src:
            meta = pa.ipc.open_file(src).schema.metadata or {}
        return {k.decode(): json.loads(v) for k, v in meta.items()}

    def encoded(self, i: int) -> bool:
        return self.shard_vectors(i).exists()

    def read_documents(self, i: int) -> list[Document]:
        store = DocumentStore.read(self.shard_docs(i))
        return [store[j] for j in range(len(store))]

    def read_vectors(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from safetensors import safe_open

        with safe_open(str(self.shard_vectors(i)), framework="pt") as f:
            return f.get_tensor("vectors"), f.get_tensor("owners")

    def vectors_info(self, i: int) -> dict[str, Any]:
        """Metadata of an encoded shard (documents, tokens, seconds, rank) and its vector count."""
        from safetensors import safe_open

        with safe_open(str(self.shard_vectors(i)), framework="pt") as f:
            info = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
            info["vectors"] = int(f.get_slice("vectors").get_shape()[0])
        return info

    def write_vectors(self, i: int, vectors: torch.Tensor, owners: torch.Tensor, meta: dict[str, Any]) -> None:
        from safetensors.torch import save_file

        atomic_write(self.shard_vectors(i), lambda p: save_file(
            {"vectors": vectors.float().contiguous(), "owners": owners.long().contiguous()}, str(p),
            metadata={k: json.dumps(v) for k, v in meta.items()}))

    def clean_stale_temporaries(self) -> None:
        """Remove temporaries of processes that died (a killed build leaves its half-written file)."""
        remove_dead_temporaries(self.path)


# -- phase 0: plan the shards --------------------------------------------------------------------

@dataclass(frozen=True)
class ShardPlan:
    """How many documents a shard holds, and why."""

    shard_size: int
    documents_per_second: float | None = None  # measured on `sample` documents (None: a given count)
    sample: int = 0
    minutes: float | None = None
    capped_by_memory: bool = False

    def describe(self) -> str:
        if self.documents_per_second is None:
            return f"shards of {self.shard_size:,} documents"
        minutes = self.shard_size / self.documents_per_second / 60
        cap = f" (capped: a shard's vectors stay under {MAX_SHARD_VECTOR_BYTES >> 20} MiB)"
        why = cap if self.capped_by_memory else ""
        return (f"encoding runs at about {self.documents_per_second:.1f} documents/s (measured on the first "
                f"{self.sample} documents): shards of {self.shard_size:,} documents, about {minutes:.1f} minutes "
                f"of work each{why}")


def shard_size_for(documents_per_second: float, minutes: float, *, batch_size: int, dim: int,
                   vectors_per_document: float) -> tuple[int, bool]:
    """(documents per shard, capped by memory): `minutes` of encoding at the measured rate, at least
    one batch, and few enough that the shard's vectors fit in `MAX_SHARD_VECTOR_BYTES`."""
    by_time = max(int(documents_per_second * minutes * 60), batch_size, 1)
    by_memory = max(int(MAX_SHARD_VECTOR_BYTES // (dim * 4 * max(vectors_per_document, 1.0))), 1)
    return min(by_time, by_memory), by_memory < by_time


def measure_shard_size(spec: BuildSpec, sample: list[Document], lm, *, batch_size: int,
                       encode: Callable[..., tuple[torch.Tensor, torch.Tensor, int]],
                       clock: Callable[[], float] = time.perf_counter) -> ShardPlan:
    """Encode the first documents to time the model on this machine, and size shards from that.
    The first batch is not timed: it pays one-time costs (kernels, caches, memory)."""
    docs = [prepare_document(d, spec.task) for d in sample]
    warm, timed = docs[:batch_size], docs[batch_size:]
    encode(lm, spec.task, warm, batch_size=batch_size)
    timed = timed or warm  # a corpus of one batch: its size hardly matters
    t0 = clock()
    vectors, _, _ = encode(lm, spec.task, timed, batch_size=batch_size)
    seconds = max(clock() - t0, 1e-6)
    rate = len(timed) / seconds
    size, capped = shard_size_for(rate, spec.shard_minutes, batch_size=batch_size, dim=spec.dim,
                                  vectors_per_document=len(vectors) / max(len(timed), 1))
    return ShardPlan(size, round(rate, 3), len(docs), spec.shard_minutes, capped)


def plan_shards(folder: BuildFolder, state: BuildState, documents: Iterable[Document], lm, *, batch_size: int,
                encode: Callable[..., tuple[torch.Tensor, torch.Tensor, int]] | None = None,
                clock: Callable[[], float] = time.perf_counter) -> Iterator[Document]:
    """Fix the build's shard size once (kept in the state, so a resumed build splits the same way)
    and return the document stream, whole again after the documents read to measure."""
    stream = iter(documents)
    if state.shard_size:
        return stream
    spec = state.spec
    if spec.shard_size is not None:
        plan = ShardPlan(spec.shard_size)
    else:
        if lm is None:
            raise BuildError("a model is needed to size shards by time; pass --shard-size N")
        from onegen.encode import encode_documents

        sample = list(itertools.islice(stream, 2 * max(batch_size, 1)))
        if not sample:
            return stream
        plan = measure_shard_size(spec, sample, lm, batch_size=batch_size, encode=encode or encode_documents,
                                  clock=clock)
        stream = itertools.chain(sample, stream)
        state.shard_plan = {k: v for k, v in asdict(plan).items() if k != "shard_size"}
    state.shard_size = plan.shard_size
    folder.write_state(state)
    log.info("%s", plan.describe())
    return stream


# -- phase 1: split -------------------------------------------------------------------------------

def _progress(**kw: Any):
    from tqdm.auto import tqdm

    return tqdm(unit="doc", dynamic_ncols=True, smoothing=0.05, **kw)


def split(folder: BuildFolder, state: BuildState, documents: Iterable[Document], *, total: int | None = None,
          progress: bool = True) -> BuildState:
    """Cut the document stream into shard files of `shard_size` documents (resuming after the
    shards already on disk) and mark the split complete."""
    spec = state.spec
    if state.split_complete:
        return state
    size = state.shard_size or spec.shard_size
    if not size:
        raise BuildError("the shard size was not planned before the split")
    done = folder.split_shards()
    # Documents already in shard files (a short last shard means the stream had ended there).
    skip = sum(int(folder.shard_info(i)["documents"]) for i in range(done))
    ended = skip < done * size
    if total is not None and spec.limit is not None:
        total = min(total, spec.limit)
    bar = _progress(desc="reading documents", total=total or None, initial=skip, disable=not progress)
    seen, shard = 0, done
    batch: list[Document] = []

    def flush() -> None:
        nonlocal shard, batch
        per_sentence = get_spec(spec.task).vectors_per_sentence
        vectors_upper = sum(len(d.sentences or [1]) for d in batch) if per_sentence else len(batch)
        text_bytes = sum(len(d.text.encode()) + len(d.title.encode()) + len(d.id.encode()) for d in batch)
        write_arrow(folder.shard_docs(shard), documents_table(batch, {
            "documents": len(batch), "first_document": shard * size,
            "vectors_upper": vectors_upper, "text_bytes": text_bytes}))
        bar.update(len(batch))
        shard += 1
        batch = []

    for doc in documents:
        if spec.limit is not None and seen >= spec.limit:
            break
        seen += 1
        if seen <= skip:  # already in a shard file from an earlier run
            continue
        if ended:
            raise BuildError("the source gives more documents than when the split ended; it changed since "
                             "the build started: pass --restart")
        batch.append(prepare_document(doc, spec.task))
        if len(batch) == size:
            flush()
    if batch:
        flush()
    bar.close()
    if seen < skip:
        raise BuildError(f"the source now gives {seen} documents, fewer than the {skip} already split; "
                         "it changed since the build started: pass --restart")
    state.split_complete, state.shards, state.documents = True, shard, seen
    folder.write_state(state)
    log.info("split: %d documents in %d shards (%d already split by an earlier run)", seen, shard, done)
    return state


def split_precomputed(folder: BuildFolder, state: BuildState, batches: Iterable[tuple[torch.Tensor, list[Document]]],
                      progress: bool = True) -> BuildState:
    """The split for sources whose vectors exist already: each batch (one shard) is written with
    its vectors; nothing is encoded."""
    spec = state.spec
    if state.split_complete:
        return state
    bar = _progress(desc="copying vectors", disable=not progress)
    seen, shard = 0, 0
    for vectors, docs in batches:
        if spec.limit is not None:
            room = spec.limit - seen
            if room <= 0:
                break
            vectors, docs = vectors[:room], docs[:room]
        if vectors.shape[1] != spec.dim:
            raise BuildError(f"the vectors are {vectors.shape[1]}-d; the model {spec.model!r} makes {spec.dim}-d ones")
        if not folder.encoded(shard):
            text_bytes = sum(len(d.text.encode()) + len(d.title.encode()) + len(d.id.encode()) for d in docs)
            write_arrow(folder.shard_docs(shard), documents_table(docs, {
                "documents": len(docs), "first_document": seen, "vectors_upper": len(docs), "text_bytes": text_bytes}))
            folder.write_vectors(shard, vectors, torch.arange(len(docs)), {"documents": len(docs), "tokens": 0,
                                                                           "seconds": 0.0, "precomputed": True})
        seen += len(docs)
        shard += 1
        bar.update(len(docs))
    bar.close()
    state.split_complete, state.shards, state.documents = True, shard, seen
    folder.write_state(state)
    return state


# -- memory ---------------------------------------------------------------------------------------

def estimate_for_state(folder: BuildFolder, state: BuildState, kind: str, budget: int | None,
                       settings: AnnSettings | None = None) -> MemoryEstimate:
    """The memory the finished index will need, from the split's exact counts (vectors: one per
    sentence for multi-hop, an upper bound since over-long documents lose trailing sentences)."""
    vectors = text = 0
    for i in range(state.shards):
        info = folder.shard_info(i)
        vectors += int(info.get("vectors_upper", info.get("documents", 0)))
        text += int(info.get("text_bytes", 0))
    return estimate_memory(kind, vectors, state.spec.dim, state.documents, text, state.model_bytes, budget, settings)


def precheck_memory(kind: str, count: int | None, dim: int, model_bytes: int, budget: int | None,
                    settings: AnnSettings | None = None) -> None:
    """Before reading the corpus (when its size is known): refuse when even one vector per document
    and no text cannot fit."""
    if count:
        check_memory(estimate_memory(kind, count, dim, count, 0, model_bytes, budget, settings), settings)


# -- phase 2: encode ------------------------------------------------------------------------------

@dataclass
class EncodeReport:
    encoded: list[int] = field(default_factory=list)
    reused: list[int] = field(default_factory=list)
    documents: int = 0
    seconds: float = 0.0


def my_shards(state: BuildState, rank: int, world: int) -> list[int]:
    return [i for i in range(state.shards) if i % world == rank]


def encode_shards(folder: BuildFolder, state: BuildState, lm, *, rank: int = 0, world: int = 1, batch_size: int = 16,
                  progress: bool = True, encode: Callable[..., tuple[torch.Tensor, torch.Tensor, int]] | None = None
                  ) -> EncodeReport:
    """Encode this process's shards that have no vectors yet."""
    from onegen.encode import encode_documents

    encode = encode or encode_documents
    spec = state.spec
    made = getattr(encode, "dimension", None) or lm.hidden_size  # a layer-split encoder's own size
    if made != spec.dim:
        raise BuildError(f"the model makes {made}-d vectors; this build is {spec.dim}-d")
    mine = my_shards(state, rank, world)
    sizes = {i: int(folder.shard_info(i)["documents"]) for i in mine}
    report = EncodeReport(reused=[i for i in mine if folder.encoded(i)])
    todo = [i for i in mine if i not in report.reused]
    desc = "encoding" if world == 1 else f"encoding [process {rank + 1}/{world}]"
    bar = _progress(desc=desc, total=sum(sizes.values()), initial=sum(sizes[i] for i in report.reused),
                    disable=not progress, position=rank if world > 1 else None)
    chunk = max(batch_size * 8, 1)  # progress steps inside a shard; length-sorting happens per chunk
    t_all = time.perf_counter()
    for i in todo:
        docs = folder.read_documents(i)
        t0 = time.perf_counter()
        parts, owners, tokens = [], [], 0
        for start in range(0, len(docs), chunk):
            v, o, n = encode(lm, spec.task, docs[start:start + chunk], batch_size=batch_size)
            parts.append(v)
            owners.append(o + start)
            tokens += n
            bar.update(len(docs[start:start + chunk]))
        vectors = torch.cat(parts) if parts else torch.zeros(0, spec.dim)
        folder.write_vectors(i, vectors, torch.cat(owners) if owners else torch.zeros(0, dtype=torch.long), {
            "documents": len(docs), "tokens": tokens, "seconds": round(time.perf_counter() - t0, 3), "rank": rank})
        report.encoded.append(i)
        report.documents += len(docs)
    bar.close()
    report.seconds = time.perf_counter() - t_all
    log.info("process %d/%d: encoded %d shards (%d documents) in %.1f s, reused %d shards encoded earlier",
             rank + 1, world, len(report.encoded), report.documents, report.seconds, len(report.reused))
    return report


# -- phase 3: merge -------------------------------------------------------------------------------

def _safetensors_header(entries: list[tuple[str, str, list[int], int]]) -> tuple[bytes, list[int]]:
    """Header bytes for tensors written back to back; entries are (name, dtype, shape, nbytes)."""
    header: dict[str, Any] = {}
    offsets, pos = [], 0
    for name, dtype, shape, nbytes in entries:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [pos, pos + nbytes]}
        offsets.append(pos)
        pos += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format aligns the data to 8 bytes
    return len(raw).to_bytes(8, "little") + raw, offsets


def _missing_shards(folder: BuildFolder, state: BuildState) -> list[int]:
    return [i for i in range(state.shards) if not folder.encoded(i)]


def merge(build: str | os.PathLike, out: str | os.PathLike | None = None, *, kind: str | None = None,
          settings: AnnSettings | None = None, memory_budget: int | None = None, recall_sample: int = 200,
          batch_size: int | None = None, keep_build: bool = True) -> Path:
    """Assemble the encoded shards of `build` into the index folder `out` (atomically).

    `memory_budget`: bytes for index + documents + model (default: available RAM now; a standalone
    merge has no model loaded, the build's model size from its state is counted)."""
    folder = BuildFolder(build)
    state = folder.read_state()
    if state is None:
        raise BuildError(f"{folder.path} is not an index build folder (no {STATE})")
    if not state.split_complete:
        raise BuildError(f"{folder.path}: the corpus was not fully read yet; run the build command again to continue")
    missing = _missing_shards(folder, state)
    if missing:
        shown = ", ".join(str(i) for i in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise BuildError(f"{folder.path}: {len(missing)} of {state.shards} shards are not encoded yet ({shown}); "
                         "run the build command again (it continues where it stopped), then merge")
    if state.documents == 0:
        raise BuildError("the source gave no documents: nothing to index")
    out = Path(out or state.out)
    if not str(out):
        raise BuildError("give --out DIR")
    check_output_folder(out)
    s = settings or AnnSettings(kind=state.kind)
    if kind and s.kind != kind:
        s = replace(s, kind=kind)
    check_memory(estimate_for_state(folder, state, s.kind, memory_budget, s), s)

    t0 = time.perf_counter()
    spec = state.spec
    metas = [folder.vectors_info(i) for i in range(state.shards)]
    n, dim = sum(m["vectors"] for m in metas), spec.dim
    with staged_dir(out) as tmp:
        data_offset = _write_vectors(folder, state, tmp / VECTORS, n, dim)
        _write_documents(folder, state, tmp / DOCUMENTS)
        files = [VECTORS, DOCUMENTS]
        ann = None
        if s.kind != "flat":
            vectors = np.memmap(tmp / VECTORS, dtype=np.float32, mode="r", offset=data_offset, shape=(n, dim))
            ann = _build_ann(s, vectors)
            from onegen.index import write_ann

            write_ann(ann, tmp / ANN)
            files.append(ANN)
            del vectors
        tokens = sum(int(m.get("tokens", 0)) for m in metas)
        seconds = sum(float(m.get("seconds", 0)) for m in metas)
        ranks = {m["rank"] for m in metas if "rank" in m}
        build_info: dict[str, Any] = {
            "model_dtype": spec.model_dtype, "batch_size": batch_size or state.batch_size, "tokens": tokens,
            "seconds": round(seconds, 3), "documents_per_second": round(state.documents / seconds, 2) if seconds else None,
            "source": spec.source, "shards": state.shards, "shard_size": state.shard_size or spec.shard_size,
            "processes": len(ranks) or 1, "precomputed": spec.precomputed, "limit": spec.limit}
        if state.shard_plan:
            build_info["shard_plan"] = dict(state.shard_plan)
        if ann is not None:
            build_info["ann"] = dict(ann.params)
        manifest = IndexManifest(protocol=spec.task, model=spec.model, model_fingerprint=spec.model_fingerprint,
                                 dim=dim, count=n, documents=state.documents,
                                 multi_vector=get_spec(spec.task).vectors_per_sentence, build=build_info, kind=s.kind,
                                 layer_split=spec.layer_split,
                                 created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        manifest.files = {f: {"size": (tmp / f).stat().st_size, "sha256": sha256_file(tmp / f)} for f in files}
        (tmp / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2, ensure_ascii=False))
        if ann is not None:
            # Measured through the index as it will be loaded (search parameters, re-ranking).
            r = measure_recall(VectorIndex.load(tmp, verify=False), sample=recall_sample)
            manifest.build.update(recall_at_10=r.recall_at_10, recall_sample=r.sample, recall_queries=r.queries)
            (tmp / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2, ensure_ascii=False))
            log.info("%s recall@10 against exact search: %.3f (%d queries)", s.kind, r.recall_at_10, r.sample)
        manifest.build["merge_seconds"] = round(time.perf_counter() - t0, 3)
        (tmp / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2, ensure_ascii=False))
    log.info("wrote %s: %s index, %d documents, %d vectors of %d dimensions", out, s.kind, state.documents, n, dim)
    if not keep_build:
        shutil.rmtree(folder.path, ignore_errors=True)
    return out


def _write_vectors(folder: BuildFolder, state: BuildState, path: Path, n: int, dim: int) -> int:
    """Stream every shard's vectors and owners (made global) into one safetensors file; returns
    the byte offset of the vector data."""
    header, offsets = _safetensors_header([("vectors", "F32", [n, dim], n * dim * 4), ("owners", "I64", [n], n * 8)])
    with open(path, "wb") as f:
        f.write(header)
        owners_all = []
        first = 0
        for i in range(state.shards):
            v, o = folder.read_vectors(i)
            f.write(np.ascontiguousarray(v.float().numpy()).tobytes())
            owners_all.append((o.long() + first).numpy())
            first += int(folder.shard_info(i)["documents"])
        # Owners are 8 bytes a vector: small enough to gather before writing them once.
        for o in owners_all:
            f.write(o.astype(np.int64).tobytes())
    if first != state.documents:
        raise BuildError(f"the shards hold {first} documents, the split said {state.documents}")
    return len(header) + offsets[0]


def _write_documents(folder: BuildFolder, state: BuildState, path: Path) -> None:
    import pyarrow as pa

    schema = documents_table([]).schema
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for i in range(state.shards):
            with pa.memory_map(str(folder.shard_docs(i)), "r") as src:
                table = pa.ipc.open_file(src).read_all().replace_schema_metadata(None)
                writer.write_table(table)


def _build_ann(s: AnnSettings, vectors: np.ndarray, block: int = 65_536):
    n, dim = vectors.shape
    rng = np.random.default_rng(s.seed)

    def sample(k: int) -> np.ndarray:
        return np.asarray(vectors[np.sort(rng.choice(n, size=k, replace=False))])

    blocks = (np.asarray(vectors[i:i + block]) for i in range(0, n, block))
    return build_ann(s, dim, n, sample, blocks)


def check_output_folder(out: Path) -> None:
    """Refuse to replace a folder that is not an index (a typo must not delete someone's data)."""
    if out.exists() and not (out / MANIFEST).exists() and (not out.is_dir() or any(out.iterdir())):
        raise BuildError(f"{out} exists and is not an index folder; choose another --out")
    if (out / MANIFEST).exists():
        read_manifest(out)  # raises for a damaged manifest: better to stop than to replace blindly


# -- the whole build --------------------------------------------------------------------------------

@dataclass
class Parallel:
    """Which share of the shards this process encodes, and how processes meet."""

    rank: int = 0
    world: int = 1
    mode: str = "single"  # "single", "accelerate" (a launched process group) or "explicit" (flags)
    barrier: Callable[[], None] | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0


@dataclass
class BuildResult:
    out: Path | None  # None when this process did not merge
    state: BuildState
    report: EncodeReport | None


def run_build(spec: BuildSpec, out: str | os.PathLike, *, documents: Callable[[], Iterable[Document]] | None = None,
              batches: Callable[[], Iterator[tuple[torch.Tensor, list[Document]]]] | None = None,
              total: int | None = None, lm=None, model_bytes: int = 0, kind: str = "flat",
              settings: AnnSettings | None = None, batch_size: int = 16, memory_budget: int | None = None,
              parallel: Parallel | None = None, restart: bool = False, keep_build: bool = False,
              recall_sample: int = 200, progress: bool = True,
              encode: Callable[..., tuple[torch.Tensor, torch.Tensor, int]] | None = None,
              clock: Callable[[], float] = time.perf_counter) -> BuildResult:
    """Split (main process), encode (every process, its shards), merge (main process, once all
    shards are encoded). `documents` / `batches` are called only when the split still has work.
    Before the split, the shard size is fixed: the spec's count, or `spec.shard_minutes` of
    encoding timed (with `clock`) on the first documents.

    `model_bytes`: the model's size in RAM (0 when it sits on a GPU); it counts against
    `memory_budget` (bytes; default: available RAM now plus the already loaded model)."""
    par = parallel or Parallel()
    out = Path(out)
    folder = BuildFolder(build_dir_for(out))
    settings = settings or AnnSettings(kind=kind)
    budget = memory_budget if memory_budget is not None else available_memory() + model_bytes
    check_output_folder(out)
    if par.main:
        if restart and folder.path.exists():
            shutil.rmtree(folder.path)
        folder.clean_stale_temporaries()
        state = folder.open(spec, out=str(out), kind=settings.kind, batch_size=batch_size, model_bytes=model_bytes)
        # Later runs may change the kind (e.g. after a memory refusal); the shards stay valid.
        state.kind, state.batch_size, state.out = settings.kind, batch_size, str(out)
        folder.write_state(state)
        if not state.split_complete:
            known = [x for x in (total, spec.limit) if x]
            precheck_memory(settings.kind, min(known) if known else None, spec.dim, model_bytes, budget, settings)
            if spec.precomputed:
                assert batches is not None
                if not state.shard_size:
                    state.shard_size = spec.shard_size or PRECOMPUTED_SHARD_SIZE
                state = split_precomputed(folder, state, batches(), progress)
            else:
                assert documents is not None
                stream = plan_shards(folder, state, documents(), lm, batch_size=batch_size, encode=encode,
                                     clock=clock)
                state = split(folder, state, stream, total=total, progress=progress)
        # Exact counts now: refuse before spending time on encoding (only here: each process
        # measures its own free memory, and the index is served from one place).
        check_memory(estimate_for_state(folder, state, settings.kind, budget, settings), settings)
    elif restart and par.barrier is None:
        # Launched processes wait for process 0 at a barrier; processes started by hand cannot.
        raise BuildError("only process 0 may pass --restart: it owns the build folder")
    if par.barrier is not None:
        par.barrier()  # launched processes meet once the split is complete (or was discarded and redone)
    if not par.main:
        # Started by hand, the others cannot meet process 0: they watch the build state instead.
        state = folder.read_state() if par.barrier is not None else folder.wait_for_split()
        if state is None or not state.split_complete:
            raise BuildError(f"{folder.path}: process 0 did not split the corpus")
        if asdict(state.spec) != asdict(spec):
            raise BuildError(f"{folder.path} holds another build than this process was asked for")

    report = None
    if not spec.precomputed:
        if lm is None:
            raise BuildError("a model is needed to encode documents")
        report = encode_shards(folder, state, lm, rank=par.rank, world=par.world, batch_size=batch_size,
                               progress=progress, encode=encode)
    if par.barrier is not None:
        par.barrier()
    if par.mode == "explicit":
        # Processes started by hand do not meet; whoever finishes says how to merge.
        missing = _missing_shards(folder, state)
        log.info("%s; then run:\n  python -m index_builder merge %s --out %s",
                 f"{len(missing)} shards are still to be encoded by the other processes" if missing
                 else "all shards are encoded", folder.path, out)
        return BuildResult(None, state, report)
    if not par.main:
        return BuildResult(None, state, report)
    path = merge(folder.path, out, settings=settings, memory_budget=budget, recall_sample=recall_sample,
                 batch_size=batch_size, keep_build=keep_build)
    return BuildResult(path, state, report)
