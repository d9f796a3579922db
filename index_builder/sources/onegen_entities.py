"""The OneGen authors' precomputed entity vectors, loaded without running their pickle.

The released file is a plain Python pickle of `(Tensor[N, 4096] bf16, list[str] uids)`,
made from CUDA tensors. A pickle can name any importable callable and the loader calls it,
so `pickle.load` on a downloaded file can run arbitrary code. `SafeTensorUnpickler` resolves
only the few globals that rebuilding a tensor needs and refuses everything else before it
is called. How `pickle.dumps(tensor)` encodes a tensor:

    torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, OrderedDict())
    storage = torch.storage._load_from_bytes(b)   # b: a legacy (non-zip) torch.save payload

`_load_from_bytes` is replaced by a loader that reads `b` with torch's own weights-only
unpickler and `map_location="cpu"`, so storages saved on "cuda:0" load on a machine without
a GPU and the inner payload cannot run code either.

Memory: the storage bytes are read once by pickle and copied once into the tensor, so a load
peaks near twice the file size (about 20 GB for the 10 GB release), then drops to 1x.
`iter_entity_batches` converts to float32 one batch at a time.
"""
from __future__ import annotations

import collections
import contextlib
import io
import json
import logging
import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from onegen.documents import Document
from onegen.errors import OneGenError

from .jsonl import parse_db_record

log = logging.getLogger(__name__)

ZIP_MAGIC = b"PK\x03\x04"


class UnsafePickleError(OneGenError, pickle.UnpicklingError):
    """The pickle names a global outside the allow-list; nothing from it was called."""


def _storage_from_bytes(b: bytes) -> Any:
    """Stand-in for `torch.storage._load_from_bytes`: same payload, safe loader, CPU."""
    if not isinstance(b, (bytes, bytearray)):
        raise UnsafePickleError(f"storage payload must be bytes, got {type(b).__name__}")
    return torch.load(io.BytesIO(b), map_location="cpu", weights_only=True)


def _tensor_from_storage(storage: Any, offset: int, size: Any, stride: Any, *_ignored: Any) -> torch.Tensor:
    """Stand-in for `torch._utils._rebuild_tensor_v2` (and v1): a view on the storage.
    Autograd flags and backward hooks from the file are dropped: vectors need neither."""
    if not isinstance(storage, torch.storage.TypedStorage):
        raise UnsafePickleError(f"tensor rebuild expects a storage, got {type(storage).__name__}")
    return torch._utils._rebuild_tensor(storage, int(offset), tuple(size), tuple(stride))


class SafeTensorUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild plain tensors, lists, tuples, dicts and strings, nothing else."""

    ALLOWED: dict[tuple[str, str], Any] = {
        ("torch._utils", "_rebuild_tensor_v2"): _tensor_from_storage,
        ("torch._utils", "_rebuild_tensor"): _tensor_from_storage,
        ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
        ("collections", "OrderedDict"): collections.OrderedDict,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refused global {module}.{name}: only tensor-rebuilding globals are allowed "
                f"when loading entity vectors") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"refused persistent id {pid!r}: not expected in a plain pickle")


def load_entity_vectors(pkl_path: str | Path) -> tuple[torch.Tensor, list[str]]:
    """Load `(vectors[N, d], uids)` from the authors' pickle, on CPU, keeping the stored dtype.

    Also accepts a zip-format `torch.save` file of the same tuple (read with
    `weights_only=True`). Raises UnsafePickleError for a pickle that names any other
    global, and ValueError when the contents are not a matching (2-D tensor, uid list) pair.
    """
    path = Path(pkl_path)
    if not path.is_file():
        raise FileNotFoundError(f"entity vector file not found: {path}")
    with path.open("rb") as f:
        magic = f.read(4)
        f.seek(0)
        if magic == ZIP_MAGIC:
            obj = torch.load(f, map_location="cpu", weights_only=True)
        else:
            obj = SafeTensorUnpickler(f).load()
    return _check_pair(obj, path)


def _check_pair(obj: Any, path: Path) -> tuple[torch.Tensor, list[str]]:
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise ValueError(f"{path}: expected a 2-tuple (vectors, uids), got {type(obj).__name__}")
    vectors, uids = obj
    if not isinstance(vectors, torch.Tensor) or vectors.dim() != 2:
        raise ValueError(f"{path}: first item must be a 2-D tensor, got "
                         f"{getattr(vectors, 'shape', type(vectors).__name__)}")
    if not isinstance(uids, (list, tuple)):
        raise ValueError(f"{path}: second item must be a list of uids, got {type(uids).__name__}")
    if len(uids) != vectors.shape[0]:
        raise ValueError(f"{path}: {vectors.shape[0]} vectors but {len(uids)} uids")
    return vectors, [str(u) for u in uids]


@dataclass
class EntityJoinStats:
    vectors: int = 0
    with_description: int = 0
    without_description: int = 0  # uid absent from db.jsonl: title=uid, text=""
    db_entries: int = 0
    db_entries_without_vector: int = 0
    dim: int = 0


def index_db_offsets(db_path: Path) -> dict[str, int]:
    """uid -> byte offset of its line in db.jsonl. Keeps ~1.2 M offsets instead of
    ~1.2 M descriptions in memory; the lines are re-read when their batch comes up."""
    offsets: dict[str, int] = {}
    with db_path.open("rb") as f:
        lineno = 0
        while True:
            pos = f.tell()
            line = f.readline()
            if not line:
                break
            lineno += 1
            if not line.strip():
                continue
            try:
                uid = json.loads(line)["uid"]
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{db_path}:{lineno}: not a db record with a uid ({e})") from None
            offsets.setdefault(str(uid), pos)
    return offsets


def _read_entry(f: Any, offset: int, db_path: Path) -> tuple[str, str]:
    f.seek(offset)
    record = json.loads(f.readline())
    try:
        entry = parse_db_record(record)
    except ValueError as e:
        raise ValueError(f"{db_path} (byte {offset}): {e}") from None
    return entry.title, entry.text


@dataclass
class OneGenEntitySource:
    """The released entity vectors joined with their descriptions from db.jsonl by uid.

    Iterating yields Documents in vector order; `iter_batches` yields (float32 L2-normalised
    vectors, Documents) pairs, which is what an index writer for precomputed vectors wants.
    `stats` is filled as batches are produced.
    """

    pkl_path: str | Path
    db_jsonl_path: str | Path | None = None
    stats: EntityJoinStats = field(default_factory=EntityJoinStats, init=False)
    precomputed_vectors: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        self._loaded: tuple[torch.Tensor, list[str]] | None = None

    def load(self) -> tuple[torch.Tensor, list[str]]:
        if self._loaded is None:
            self._loaded = load_entity_vectors(self.pkl_path)
        return self._loaded

    def iter_batches(self, batch_size: int = 4096) -> Iterator[tuple[torch.Tensor, list[Document]]]:
        """(Tensor[b, d] float32 L2-normalised, Documents) per batch, in uid order."""
        vectors, _ = self.load()
        for start, docs in self._document_batches(batch_size):
            block = vectors[start:start + len(docs)].to(torch.float32)
            yield torch.nn.functional.normalize(block, p=2.0, dim=1), docs

    def __iter__(self) -> Iterator[Document]:
        for _, docs in self._document_batches(4096):
            yield from docs

    def _document_batches(self, batch_size: int) -> Iterator[tuple[int, list[Document]]]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        vectors, uids = self.load()
        db_path = Path(self.db_jsonl_path) if self.db_jsonl_path is not None else None
        offsets = index_db_offsets(db_path) if db_path is not None else {}
        self.stats = EntityJoinStats(vectors=len(uids), db_entries=len(offsets), dim=vectors.shape[1])
        self.stats.db_entries_without_vector = len(offsets.keys() - set(uids))
        with db_path.open("rb") if db_path is not None else contextlib.nullcontext() as db:
            for start in range(0, len(uids), batch_size):
                yield start, [self._document(uid, offsets, db, db_path) for uid in uids[start:start + batch_size]]
        log.info("entity vectors: %d, with description: %d, without: %d, db entries without vector: %d",
                 self.stats.vectors, self.stats.with_description, self.stats.without_description,
                 self.stats.db_entries_without_vector)

    def _document(self, uid: str, offsets: dict[str, int], db: Any, db_path: Path | None) -> Document:
        offset = offsets.get(uid)
        if offset is None:
            self.stats.without_description += 1
            return Document(id=uid, title=uid, text="", extra={"uid": uid})
        self.stats.with_description += 1
        title, text = _read_entry(db, offset, db_path)  # type: ignore[arg-type]
        return Document(id=uid, title=title, text=text, extra={"uid": uid})

    def __length_hint__(self) -> int:
        return len(self._loaded[1]) if self._loaded is not None else NotImplemented


def iter_entity_batches(
    pkl_path: str | Path,
    db_jsonl_path: str | Path | None,
    batch_size: int = 4096,
    *,
    stats: EntityJoinStats | None = None,
) -> Iterator[tuple[torch.Tensor, list[Document]]]:
    """Yield (Tensor[b, d] float32 L2-normalised, Documents) in the pickle's uid order.

    Documents have id=uid, title=entity name, text=description, extra={"uid"}; a uid
    missing from db.jsonl gets title=uid and text="". Pass `stats` to receive the counts.
    """
    source = OneGenEntitySource(pkl_path, db_jsonl_path)
    for item in source.iter_batches(batch_size):
        if stats is not None:
            stats.__dict__.update(source.stats.__dict__)
        yield item
    if stats is not None:
        stats.__dict__.update(source.stats.__dict__)
