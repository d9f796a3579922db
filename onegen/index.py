"""Vector indexes: L2-normalised vectors with document metadata, saved as a folder.

Layout of an index folder:
    manifest.json        protocol, model fingerprint, dim, counts, dtype, build parameters, file hashes
    vectors.safetensors  `vectors` [N, dim] and `owners` [N] (row -> document; several rows per
                         document for one-vector-per-sentence protocols)
    documents.arrow      Arrow IPC file (id, title, text, sentences, extra), memory-mapped on load

A folder is written under a temporary name and renamed into place, so a crash never leaves a
half-written index that loads. Search is exact inner product (= cosine on unit vectors) with faiss
on the CPU or a torch matmul on any device.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .documents import Document

INDEX_SCHEMA = "onegen-index/1"
MANIFEST, VECTORS, DOCUMENTS = "manifest.json", "vectors.safetensors", "documents.arrow"


class IndexLoadError(ValueError):
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
    schema: str = INDEX_SCHEMA


@dataclass
class SearchHit:
    doc: int  # document row
    score: float
    fragment: int | None  # which of the document's vectors matched (multi-vector), else None


def normalize(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


class DocumentStore:
    """Documents of an index; in memory when built, memory-mapped Arrow when loaded."""

    def __init__(self, docs: Sequence[Document] | None = None, table=None):
        self._docs = list(docs) if docs is not None else None
        self._table = table
        self._title_index: dict[str, list[int]] | None = None

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
                 path: Path | None = None):
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be [N, dim], got shape {tuple(vectors.shape)}")
        self.vectors = normalize(vectors)
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
        self._faiss = None
        # Position of each vector among its document's vectors (the sentence number).
        first = torch.full((len(self.documents),), -1, dtype=torch.long)
        order = torch.arange(len(self.owners))
        first.scatter_reduce_(0, self.owners, order, reduce="amin", include_self=False)
        self._fragment = order - first[self.owners] if len(self.owners) else order

    def __len__(self) -> int:
        return len(self.documents)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    # -- search -------------------------------------------------------------------------------
    def search(self, queries: torch.Tensor, k: int = 5, backend: str = "auto") -> list[list[SearchHit]]:
        """Top-k documents per query by cosine. A multi-vector document scores its best vector."""
        q = normalize(queries.reshape(-1, queries.shape[-1]).detach())
        if q.shape[1] != self.dim:
            raise ValueError(f"query dim {q.shape[1]} does not match index dim {self.dim}")
        n = len(self.vectors)
        if n == 0:
            return [[] for _ in range(len(q))]
        k = max(1, min(k, len(self.documents)))
        multi = len(self.owners) != len(self.documents) or not torch.equal(self.owners, torch.arange(n))
        # Multi-vector: over-fetch vectors, then keep each document's best one.
        kv = n if multi and n <= 200_000 else min(n, k * 8 if multi else k)
        if backend == "auto":
            backend = "torch" if q.device.type != "cpu" or n < 4096 else "faiss"
        if backend == "faiss":
            scores, rows = self._faiss_index().search(q.cpu().numpy().astype(np.float32), kv)
            scores, rows = torch.from_numpy(scores), torch.from_numpy(rows)
        else:
            sims = q @ self.vectors.to(q.device, q.dtype).T
            scores, rows = sims.topk(kv, dim=1)
            scores, rows = scores.cpu(), rows.cpu()
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
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        old: Path | None = None
        try:
            save_file({"vectors": self.vectors.to(dtype).contiguous(), "owners": self.owners.contiguous()},
                      str(tmp / VECTORS))
            self.documents.write(tmp / DOCUMENTS)
            m = self.manifest
            m.dim, m.count, m.documents = self.dim, len(self.vectors), len(self.documents)
            m.dtype = str(dtype).replace("torch.", "")
            m.multi_vector = len(self.vectors) != len(self.documents)
            m.created = m.created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            m.files = {name: {"size": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)}
                       for name in (VECTORS, DOCUMENTS)}
            (tmp / MANIFEST).write_text(json.dumps(asdict(m), indent=2, ensure_ascii=False))
            if path.exists():
                old = path.with_name(f".{path.name}.old-{os.getpid()}")
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            # Interrupted between the two renames: put the previous index back.
            if old is not None and old.exists() and not path.exists():
                os.replace(old, path)
            raise
        self.path = path
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, protocol: str | None = None, model_fingerprint: str | None = None,
             dim: int | None = None, verify: bool | None = None) -> "VectorIndex":
        """Load an index folder, refusing one built for another protocol, model or dimension.

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
        if dim and manifest.dim != dim:
            raise IndexLoadError(f"{where} has {manifest.dim}-d vectors; the model produces {dim}-d vectors")
        for name in (VECTORS, DOCUMENTS):
            f = path / name
            if not f.exists():
                raise IndexLoadError(f"{where} is incomplete: {name} is missing")
            want = manifest.files.get(name, {})
            size = f.stat().st_size
            if "size" in want and want["size"] != size:
                raise IndexLoadError(f"{where} is corrupted: {name} has {size} bytes, the manifest says {want['size']}")
            check = verify if verify is not None else size < 2 << 30
            if check and "sha256" in want and _sha256(f) != want["sha256"]:
                raise IndexLoadError(f"{where} is corrupted: {name} does not match its checksum")
        try:
            from safetensors.torch import load_file

            tensors = load_file(str(path / VECTORS))
            vectors, owners = tensors["vectors"], tensors["owners"]
            documents = DocumentStore.read(path / DOCUMENTS)
        except Exception as e:  # safetensors/arrow raise many types for damaged files
            raise IndexLoadError(f"{where} is corrupted: {e}") from e
        if tuple(vectors.shape) != (manifest.count, manifest.dim) or len(documents) != manifest.documents:
            raise IndexLoadError(f"{where} is corrupted: contents do not match the manifest's counts")
        return cls(vectors.float(), documents, owners=owners, manifest=manifest, path=path)


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
