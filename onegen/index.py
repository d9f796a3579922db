"""Vector indexes: L2-normalised vectors with document metadata, saved as a folder.

Layout of an index folder:
    manifest.json        protocol, model fingerprint, dim, counts, dtype, build parameters, file hashes
    vectors.safetensors  `vectors` [N, dim] and `owners` [N] (row -> document; several rows per
                         document for one-vector-per-sentence protocols)
    documents.arrow      Arrow IPC file (id, title, text, sentences, extra), memory-mapped on load
    ann.faiss            only for approximate kinds (manifest.kind "hnsw", "ivfpq" or "sq8"): a faiss
                         index over the same rows, in the same order
    calibration.json     optional: the score below which a retrieval has no confident match
                         (onegen/calibration.py), measured on these contents; it records their
                         `content_fingerprint` and is ignored, with `calibration_problem` saying
                         why, once the contents change. Not in the manifest's file list: adding
                         or replacing it leaves the index's verification untouched.

A folder is written under a temporary name and renamed into place, so a crash never leaves a
half-written index that loads. Search is exact inner product (= cosine on unit vectors) with faiss
on the CPU or a torch matmul on any device. An approximate index searches its `ann.faiss` instead;
its exact vectors stay on disk, memory-mapped, and are read only to re-rank candidates.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from .calibration import Calibration, CalibrationError, read_calibration
from .documents import Document
from .errors import OneGenError
from .fsutil import sha256_file, staged_dir

INDEX_SCHEMA = "onegen-index/1"
MANIFEST, VECTORS, DOCUMENTS = "manifest.json", "vectors.safetensors", "documents.arrow"
ANN = "ann.faiss"
INDEX_KINDS = ("flat", "hnsw", "ivfpq", "sq8")
log = logging.getLogger("onegen.index")


class IndexLoadError(OneGenError, ValueError):
    """An index folder that cannot be used: missing, corrupted, or built for another model."""


@dataclass
class IndexManifest:
    protocol: str
    model: str
    model_fingerprint: str
    dim: int
    count: int  # vectors
    documents: int
    dtype: str = "float32"
    normalized: bool = True
    multi_vector: bool = False
    build: dict[str, Any] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    created: str = ""
    kind: str = "flat"
    # Vectors read inside the model at a layer split (ImpRAG: onegen/imprag.py `index_layer_split`);
    # None: the model's final hidden states (OneGen).
    layer_split: dict[str, Any] | None = None
    schema: str = INDEX_SCHEMA

    @property
    def fingerprint(self) -> str | None:
        """What the index holds, wherever its folder lies: the hashes of its files with its protocol,
        model and counts (not its path, not when it was written). None for a manifest without file
        hashes (an index never saved)."""
        if not self.files or not all("sha256" in f for f in self.files.values()):
            return None
        return _digest({"protocol": self.protocol, "model_fingerprint": self.model_fingerprint, "dim": self.dim,
                        "count": self.count, "documents": self.documents, "kind": self.kind,
                        "files": {name: f["sha256"] for name, f in sorted(self.files.items())}})


def _digest(content: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:32]


@dataclass
class SearchHit:
    doc: int  # document row
    score: float
    fragment: int | None  # which of the document's vectors matched (multi-vector), else None


def normalize(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


@dataclass
class AnnIndex:
    """An approximate faiss index over an index's rows (row i of faiss = vector row i).

    `params`: `ef_search` (HNSW), `nprobe` (IVF-PQ), `rerank` (fetch rerank x k candidates and
    re-score them exactly from the stored vectors; 0 or 1 = off).
    """

    kind: str
    index: Any
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS or self.kind == "flat":
            raise ValueError(f"approximate index kind must be one of {INDEX_KINDS[1:]}, got {self.kind!r}")

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        k = max(1, min(k, self.index.ntotal))
        if self.kind == "hnsw":
            sp = faiss.SearchParametersHNSW(efSearch=max(int(self.params.get("ef_search", 64)), k))
        elif self.kind == "ivfpq":
            sp = faiss.SearchParametersIVF(nprobe=int(self.params.get("nprobe", 16)))
        else:
            sp = None
        return self.index.search(np.ascontiguousarray(q, dtype=np.float32), k, params=sp)


class DocumentStore:
    """Documents of an index; in memory when built, memory-mapped Arrow when loaded."""

    def __init__(self, docs: Sequence[Document] | None = None, table=None):
        self._docs = list(docs) if docs is not None else None
        self._table = table
        self._title_index: dict[str, list[int]] | None = None
        self._longest: int | None = None

    def __len__(self) -> int:
        return len(self._docs) if self._docs is not None else self._table.num_rows

    def __getitem__(self, i: int) -> Document:
        if self._docs is not None:
            return self._docs[i]
        row = self._table.slice(i, 1).to_pylist()[0]
        return Document(id=row["id"], title=row["title"], text=row["text"],
                        sentences=json.loads(row["sentences"]) if row["sentences"] else None,
                        extra=json.loads(row["extra"]) if row["extra"] else {})

    def titles(self) -> list[str]:
        if self._docs is not None:
            return [d.title for d in self._docs]
        return self._table.column("title").to_pylist()

    def ids(self) -> list[str]:
        if self._docs is not None:
            return [d.id for d in self._docs]
        return self._table.column("id").to_pylist()

    def longest_bytes(self) -> int:
        """The most UTF-8 bytes of any document's title and text together (0 when empty): a bound
        on the tokens an inserted document can take, since every token covers at least one byte."""
        if self._longest is None:
            if self._docs is not None:
                self._longest = max((len(d.title.encode()) + len(d.text.encode()) for d in self._docs), default=0)
            elif self._table.num_rows == 0:
                self._longest = 0
            else:
                import pyarrow.compute as pc

                title, text = self._table.column("title"), self._table.column("text")
                both = pc.add(pc.binary_length(title), pc.binary_length(text))
                self._longest = int(pc.max(both).as_py() or 0)
        return self._longest

    def present(self, column: str, values: Iterable[str]) -> set[str]:
        """Which of `values` are the `column` ("id" or "title") of some document, exactly. On a loaded
        index one hash lookup over the memory-mapped column: no Python string per document."""
        if column not in ("id", "title"):
            raise ValueError(f"column must be 'id' or 'title', not {column!r}")
        wanted = set(values)
        if not wanted:
            return set()
        if self._docs is not None:
            return wanted & {getattr(d, column) for d in self._docs}
        import pyarrow as pa
        import pyarrow.compute as pc

        col = self._table.column(column)
        hits = pc.filter(col, pc.is_in(col, value_set=pa.array(sorted(wanted), pa.string())))
        return set(pc.unique(hits).to_pylist())

    def write(self, path: Path) -> None:
        import pyarrow as pa

        docs = [self[i] for i in range(len(self))]
        table = pa.table({
            "id": [d.id for d in docs], "title": [d.title for d in docs], "text": [d.text for d in docs],
            "sentences": [json.dumps(d.sentences, ensure_ascii=False) if d.sentences is not None else "" for d in docs],
            "extra": [json.dumps(d.extra, ensure_ascii=False) if d.extra else "" for d in docs],
        })
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)

    @classmethod
    def read(cls, path: Path) -> "DocumentStore":
        import pyarrow as pa

        source = pa.memory_map(str(path), "r")
        return cls(table=pa.ipc.open_file(source).read_all())


class VectorIndex:
    def __init__(self, vectors: torch.Tensor, documents: Sequence[Document] | DocumentStore,
                 owners: torch.Tensor | None = None, manifest: IndexManifest | None = None,
                 path: Path | None = None, *, ann: AnnIndex | None = None, normalized: bool = False):
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be [N, dim], got shape {tuple(vectors.shape)}")
        # `normalized`: unit float32 rows already (e.g. memory-mapped); normalising would copy them.
        self.vectors = vectors if normalized and vectors.dtype == torch.float32 else normalize(vectors)
        if ann is not None and ann.index.ntotal != len(self.vectors):
            raise ValueError(f"the {ann.kind} index holds {ann.index.ntotal} vectors, the index {len(self.vectors)}")
        self.ann = ann
        self.documents = documents if isinstance(documents, DocumentStore) else DocumentStore(documents)
        self.owners = owners.long() if owners is not None else torch.arange(len(self.vectors))
        if len(self.owners) != len(self.vectors):
            raise ValueError("owners must have one entry per vector")
        if len(self.vectors) and int(self.owners.max()) >= len(self.documents):
            raise ValueError("an owner points past the last document")
        self.manifest = manifest or IndexManifest(
            protocol="", model="", model_fingerprint="", dim=self.vectors.shape[1],
            count=len(self.vectors), documents=len(self.documents),
            multi_vector=bool(len(self.owners) != len(self.documents)))
        self.path = path
        # The confidence threshold measured on these contents (calibration.json), if any; when a
        # file is there but unusable, the reason is kept for the page and the CLI to show.
        self.calibration: Calibration | None = None
        self.calibration_problem: str | None = None
        self._faiss = None
        self._fingerprint: str | None = None
        # Position of each vector among its document's vectors (the sentence number).
        first = torch.full((len(self.documents),), -1, dtype=torch.long)
        order = torch.arange(len(self.owners))
        first.scatter_reduce_(0, self.owners, order, reduce="amin", include_self=False)
        self._fragment = order - first[self.owners] if len(self.owners) else order
        # One vector per document, in order? Decided once: search used to re-check it per query.
        self._one_per_document = len(self.owners) == len(self.documents) and torch.equal(self.owners, order)

    def __len__(self) -> int:
        return len(self.documents)

    @property
    def fingerprint(self) -> str:
        """The manifest's content fingerprint (`IndexManifest.fingerprint`); an index built in memory
        hashes its vectors and documents instead (same contents, same fingerprint)."""
        if self._fingerprint is None:
            self._fingerprint = self.manifest.fingerprint or self._content_digest()
        return self._fingerprint

    def _content_digest(self) -> str:
        h = hashlib.sha256()
        h.update(self.vectors.float().contiguous().numpy().tobytes())
        h.update(self.owners.contiguous().numpy().tobytes())
        store = self.documents
        for i in range(len(store)):
            h.update(json.dumps(store[i].to_dict(), sort_keys=True, ensure_ascii=False).encode())
        return _digest({"protocol": self.manifest.protocol, "model_fingerprint": self.manifest.model_fingerprint,
                        "content": h.hexdigest()})

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    @property
    def kind(self) -> str:
        return self.ann.kind if self.ann is not None else "flat"

    # -- search -------------------------------------------------------------------------------
    def search(self, queries: torch.Tensor, k: int = 5, backend: str = "auto") -> list[list[SearchHit]]:
        """Top-k documents per query by cosine. A multi-vector document scores its best vector.

        backend: "auto" (the approximate index when there is one, else exact), "ann", or an exact
        one: "faiss" (CPU) or "torch" (any device)."""
        q = normalize(queries.reshape(-1, queries.shape[-1]).detach())
        if q.shape[1] != self.dim:
            raise ValueError(f"query dim {q.shape[1]} does not match index dim {self.dim}")
        n = len(self.vectors)
        if n == 0:
            return [[] for _ in range(len(q))]
        k = max(1, min(k, len(self.documents)))
        multi = not self._one_per_document
        # Multi-vector: over-fetch vectors, then keep each document's best one. An approximate
        # index cannot cheaply return every row, so it always over-fetches a fixed factor.
        use_ann = self.ann is not None and backend in ("auto", "ann")
        kv = n if multi and n <= 200_000 and not use_ann else min(n, k * 8 if multi else k)
        scores, rows = self.search_rows(q, kv, backend)
        out = []
        for s_row, r_row in zip(scores.tolist(), rows.tolist()):
            hits: list[SearchHit] = []
            seen: set[int] = set()
            for s, r in zip(s_row, r_row):
                if r < 0:
                    continue
                doc = int(self.owners[r])
                if doc in seen:
                    continue
                seen.add(doc)
                hits.append(SearchHit(doc=doc, score=float(s), fragment=int(self._fragment[r]) if multi else None))
                if len(hits) == k:
                    break
            out.append(hits)
        return out

    def search_rows(self, queries: torch.Tensor, k: int, backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k vector rows per query: (scores [Q, k], rows [Q, k]) on the CPU; rows may hold -1
        where an approximate index found fewer than k."""
        q = normalize(queries.reshape(-1, queries.shape[-1]).detach())
        n = len(self.vectors)
        k = max(1, min(k, n))
        if backend in ("auto", "ann") and self.ann is not None:
            return self._ann_rows(q.cpu(), k)
        if backend == "ann":
            raise ValueError("this index has no approximate index (its kind is flat)")
        if backend == "auto":
            backend = "torch" if q.device.type != "cpu" or n < 4096 else "faiss"
        if backend == "faiss":
            scores, rows = self._faiss_index().search(q.cpu().numpy().astype(np.float32), k)
            return torch.from_numpy(scores), torch.from_numpy(rows)
        if backend != "torch":
            raise ValueError(f"unknown search backend {backend!r}; use auto, ann, faiss or torch")
        sims = q @ self.vectors.to(q.device, q.dtype).T
        scores, rows = sims.topk(k, dim=1)
        return scores.cpu(), rows.cpu()

    def _ann_rows(self, q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.ann is not None
        rerank = int(self.ann.params.get("rerank", 0) or 0)
        fetch = min(len(self.vectors), k * rerank) if rerank > 1 else k
        scores, rows = self.ann.search(q.numpy(), fetch)
        scores, rows = torch.from_numpy(scores), torch.from_numpy(rows).long()
        if rerank > 1:
            # Exact re-scoring of the candidates: reads only these rows of the (memory-mapped) vectors.
            valid = rows >= 0
            cand = self.vectors[rows.clamp(min=0).flatten()].reshape(*rows.shape, -1)
            exact = torch.einsum("qd,qcd->qc", q, cand).masked_fill(~valid, float("-inf"))
            scores, pos = exact.topk(min(k, rows.shape[1]), dim=1)
            rows = rows.gather(1, pos).masked_fill(scores == float("-inf"), -1)
        return scores[:, :k], rows[:, :k]

    def _faiss_index(self):
        if self._faiss is None:
            import faiss

            idx = faiss.IndexFlatIP(self.dim)
            idx.add(self.vectors.numpy().astype(np.float32))
            self._faiss = idx
        return self._faiss

    def find_titles(self, query: str, limit: int = 20) -> list[int]:
        """Documents whose title contains `query` (case-insensitive), exact matches first."""
        ql = query.strip().lower()
        if not ql:
            return []
        titles = self.documents.titles()
        exact = [i for i, t in enumerate(titles) if t.lower() == ql]
        partial = [i for i, t in enumerate(titles) if ql in t.lower() and t.lower() != ql]
        return (exact + partial)[:limit]

    def document_vector(self, doc: int) -> torch.Tensor:
        """Mean of a document's vectors, normalised (its own vector for single-vector indexes)."""
        rows = (self.owners == doc).nonzero().flatten()
        return normalize(self.vectors[rows].mean(0))

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        with staged_dir(path) as tmp:
            save_file({"vectors": self.vectors.to(dtype).contiguous(), "owners": self.owners.contiguous()},
                      str(tmp / VECTORS))
            self.documents.write(tmp / DOCUMENTS)
            names = [VECTORS, DOCUMENTS]
            if self.ann is not None:
                write_ann(self.ann, tmp / ANN)
                names.append(ANN)
            m = self.manifest
            m.kind = self.kind
            if self.ann is not None:
                m.build = {**m.build, "ann": dict(self.ann.params)}
            m.dim, m.count, m.documents = self.dim, len(self.vectors), len(self.documents)
            m.dtype = str(dtype).replace("torch.", "")
            m.multi_vector = len(self.vectors) != len(self.documents)
            m.created = m.created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            m.files = {name: {"size": (tmp / name).stat().st_size, "sha256": sha256_file(tmp / name)}
                       for name in names}
            (tmp / MANIFEST).write_text(json.dumps(asdict(m), indent=2, ensure_ascii=False))
        self.path = path
        self._fingerprint = None  # the manifest now has file hashes
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, protocol: str | None = None, model_fingerprint: str | None = None,
             dim: int | None = None, verify: bool | None = None,
             layer_split: dict[str, Any] | None = None) -> "VectorIndex":
        """Load an index folder, refusing one built for another protocol, model or dimension, and,
        when a model is named, one whose vectors come from other layer boundaries (`layer_split`:
        the run's, None for final hidden states).

        `verify` checks file hashes (default: for files under 2 GB); sizes are always checked.
        """
        path = Path(path)
        manifest = read_manifest(path)
        where = f"index {path}"
        if protocol and manifest.protocol != protocol:
            raise IndexLoadError(f"{where} was built for the {manifest.protocol!r} protocol, not {protocol!r}")
        if model_fingerprint and manifest.model_fingerprint != model_fingerprint:
            raise IndexLoadError(
                f"{where} was built with model {manifest.model!r} (fingerprint {manifest.model_fingerprint[:12]}), "
                f"not the loaded model (fingerprint {model_fingerprint[:12]}); its vectors would not match the "
                "queries. Rebuild it with `python -m index_builder ... --model <this model>`.")
        if (model_fingerprint or layer_split) and manifest.layer_split != layer_split:
            raise IndexLoadError(f"{where} holds vectors of {_layers(manifest.layer_split)}; this run searches with "
                                 f"{_layers(layer_split)}. Rebuild it for this mode and these layer boundaries.")
        if dim and manifest.dim != dim:
            raise IndexLoadError(f"{where} has {manifest.dim}-d vectors; the model produces {dim}-d vectors")
        if manifest.kind not in INDEX_KINDS:
            raise IndexLoadError(f"{where} has unknown kind {manifest.kind!r}; known: {', '.join(INDEX_KINDS)}")
        approximate = manifest.kind != "flat"
        for name in (VECTORS, DOCUMENTS, *((ANN,) if approximate else ())):
            f = path / name
            if not f.exists():
                raise IndexLoadError(f"{where} is incomplete: {name} is missing")
            want = manifest.files.get(name, {})
            size = f.stat().st_size
            if "size" in want and want["size"] != size:
                raise IndexLoadError(f"{where} is corrupted: {name} has {size} bytes, the manifest says {want['size']}")
            check = verify if verify is not None else size < 2 << 30
            if check and "sha256" in want and sha256_file(f) != want["sha256"]:
                raise IndexLoadError(f"{where} is corrupted: {name} does not match its checksum")
        try:
            from safetensors.torch import load_file

            # Approximate kinds keep the exact vectors on disk: memory-mapped, read for re-ranking.
            tensors = _mmap_safetensors(path / VECTORS) if approximate else None
            if tensors is None or tensors["vectors"].dtype != torch.float32:
                tensors = load_file(str(path / VECTORS))
            vectors, owners = tensors["vectors"], tensors["owners"]
            documents = DocumentStore.read(path / DOCUMENTS)
            ann = read_ann(path / ANN, manifest) if approximate else None
        except Exception as e:  # safetensors/arrow/faiss raise many types for damaged files
            raise IndexLoadError(f"{where} is corrupted: {e}") from e
        if tuple(vectors.shape) != (manifest.count, manifest.dim) or len(documents) != manifest.documents:
            raise IndexLoadError(f"{where} is corrupted: contents do not match the manifest's counts")
        if ann is not None and (ann.index.ntotal != manifest.count or ann.index.d != manifest.dim):
            raise IndexLoadError(f"{where} is corrupted: {ANN} holds {ann.index.ntotal} x {ann.index.d}, "
                                 f"the manifest says {manifest.count} x {manifest.dim}")
        index = cls(vectors if approximate and manifest.normalized else vectors.float(), documents, owners=owners,
                    manifest=manifest, path=path, ann=ann, normalized=approximate and manifest.normalized)
        try:
            index.calibration = read_calibration(path, content_fingerprint(manifest))
        except CalibrationError as e:  # the index itself is fine; only its flags are off
            index.calibration_problem = str(e)
            log.warning("%s", e)
        return index


def content_fingerprint(manifest: IndexManifest) -> str:
    """Identity of an index's contents: protocol, model and the checksums of its files, as its
    manifest records them (a calibration names the contents it was measured on by this)."""
    key = {"protocol": manifest.protocol, "model_fingerprint": manifest.model_fingerprint,
           "files": {name: f.get("sha256", f.get("size")) for name, f in sorted(manifest.files.items())}}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def write_ann(ann: AnnIndex, path: Path) -> None:
    import faiss

    faiss.write_index(ann.index, str(path))


def read_ann(path: Path, manifest: IndexManifest) -> AnnIndex:
    import faiss

    index = faiss.read_index(str(path))
    return AnnIndex(manifest.kind, index, dict(manifest.build.get("ann", {})))


_SAFETENSORS_DTYPES = {"F32": np.float32, "I64": np.int64}


def _mmap_safetensors(path: Path) -> dict[str, torch.Tensor] | None:
    """Tensors of a safetensors file as copy-on-write memory maps (pages load on first touch).
    None when a tensor's dtype has no numpy equivalent here; the caller then reads the file."""
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_len))
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = _SAFETENSORS_DTYPES.get(info["dtype"])
        if dt is None:
            return None
        start, end = info["data_offsets"]
        shape = tuple(info["shape"])
        if end - start != int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize:
            raise ValueError(f"{path.name}: {name} has {end - start} bytes for shape {shape}")
        if end == start:
            out[name] = torch.from_numpy(np.zeros(shape, dtype=dt))
            continue
        out[name] = torch.from_numpy(np.memmap(path, dtype=dt, mode="c", offset=8 + header_len + start, shape=shape))
    return out


def _layers(split: dict[str, Any] | None) -> str:
    if not split:
        return "the model's final hidden states"
    text = f"{split.get('mode', 'a layer split')} layer groups b={split.get('bottom')}, t={split.get('top')}"
    return text + (f" centred by means {split['centring']}" if split.get("centring") else "")


def read_manifest(path: str | os.PathLike) -> IndexManifest:
    path = Path(path)
    if not (path / MANIFEST).exists():
        raise IndexLoadError(f"{path} is not an index folder (no {MANIFEST})")
    try:
        raw = json.loads((path / MANIFEST).read_text())
        if raw.get("schema") != INDEX_SCHEMA:
            raise IndexLoadError(f"{path}: unsupported index schema {raw.get('schema')!r}")
        return IndexManifest(**raw)
    except (json.JSONDecodeError, TypeError) as e:
        raise IndexLoadError(f"{path}/{MANIFEST} is corrupted: {e}") from e
