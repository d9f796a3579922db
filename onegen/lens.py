"""Why this token: the query lens and the layer view of a finished run.

OneGen's query is the final-norm hidden state of the step whose input is the retrieval token. The
lens asks what every other written token's state would have found had it been used the same way:
one forward of the run's whole sequence (prompt, written tokens, inserted documents, in the order
the engine fed them) gives every state at once, and each is searched in the run's index. The
lesson at a glance: only the trained retrieval token's state lands on the document the run chose.

The layer view reads one retrieval's query at every layer, against the index's documents encoded
at that same layer (each reading goes through the final norm, as the real query does), and gives
the rank of the document the run chose and the layer's own top-1. It re-encodes the whole index,
so it is refused past `MAX_LAYER_CELLS` documents x layer readings; the re-encoded vectors are kept
in memory and in the user cache (`layer_cache_dir`, keyed and checked by the weights' and the
index's fingerprints), so only the first request for a model and index pays for the encoding.

Both are recomputed on request; the decode path carries nothing for them. Their cost is counted:
the lens forwards the sequence once (no decoding) and times its searches.

    lens = query_lens(lm, trace, index)        # QueryLens: one LensToken per written token
    view = layer_view(lm, trace, index, step=0)  # LayerView: one LayerRow per layer reading
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Sequence

import torch

from .encode import document_prompt
from .errors import OneGenError
from .fsutil import atomic_write
from .index import VectorIndex, normalize
from .loading import LoadedModel, cache_dir
from .trace import Trace

log = logging.getLogger("onegen.lens")

LENS_TOP = 3  # hits kept per token
# Layer view: at most this many (documents x layer readings) are re-encoded on request. The
# embedded model (31 readings) over its 600-paragraph index is 18,600; a released 7B model over a
# real index is far past it.
MAX_LAYER_CELLS = 20_000


class WhyError(OneGenError, ValueError):
    """A trace, model or index that the lens, the layer view or the attention view cannot read."""


class WhyView:
    """A view's JSON form: its fields under a "kind" tag. Subclasses name `KIND` and rebuild their
    nested dataclasses in `_from_body`; a malformed dict is a WhyError, not a crash."""

    KIND: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.KIND, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        try:
            return cls._from_body({k: v for k, v in d.items() if k != "kind"})
        except (KeyError, TypeError, AttributeError) as e:
            raise WhyError(f"malformed {cls.KIND.replace('-', ' ')}: {e}") from e

    @classmethod
    def _from_body(cls, body: dict[str, Any]):
        raise NotImplementedError


# -- the sequence the engine fed ---------------------------------------------------------------------

def trace_sequence(trace: Trace) -> list[int]:
    """The ids the engine fed, in order: the prompt, then every recorded token (written and
    inserted) at its position. The last recorded token may be one the run stopped on without
    feeding it; a forward over it changes nothing before it."""
    if not trace.prompt_ids:
        raise WhyError("the trace has no prompt ids; it cannot be replayed through the model")
    ids = list(trace.prompt_ids)
    for t in trace.tokens:
        if t.position != len(ids):
            raise WhyError(f"the trace's tokens are not in feeding order: token {t.text!r} sits at position "
                           f"{t.position}, expected {len(ids)}")
        ids.append(t.id)
    return ids


def check_model(lm: LoadedModel, trace: Trace, index: VectorIndex | None = None) -> None:
    """Refuse a model other than the run's (its states would explain another model), and an index
    built by another model (its vectors would not match the states)."""
    if trace.task not in lm.tasks:
        raise WhyError(f"the model {lm.name!r} cannot read a {trace.task} run: its tokenizer lacks the protocol's tokens")
    made_by = (trace.model or {}).get("fingerprint")
    if made_by and made_by != lm.fingerprint:
        raise WhyError(f"the trace was made by model {trace.model.get('name', '?')!r} (fingerprint {made_by}), not by "
                       f"the loaded {lm.name!r}; load the model that made it")
    if index is not None:
        fp = index.manifest.model_fingerprint
        if fp and fp != lm.fingerprint:
            raise WhyError(f"the index was built with model {index.manifest.model!r}, not {lm.name!r}; its vectors "
                           "would not match this model's states")
        if index.dim != lm.hidden_size:
            raise WhyError(f"the index has {index.dim}-d vectors; the model makes {lm.hidden_size}-d states")
        if not len(index):
            raise WhyError("the index holds no documents")


def ids_tensor(lm: LoadedModel, ids: Sequence[int]) -> torch.Tensor:
    if len(ids) > lm.context_length:
        raise WhyError(f"the run's sequence has {len(ids):,} tokens; {lm.name} reads at most {lm.context_length:,}")
    return torch.tensor([list(ids)], dtype=torch.long, device=lm.device)


def query_rows(trace: Trace) -> list[tuple[int, int]]:
    """(token index or -1, position) of every state the lens reads: each written token (generated
    or forced), and a retrieval read at the end of the prompt (single-hop) as index -1."""
    rows = [(i, t.position) for i, t in enumerate(trace.tokens) if t.kind != "inserted"]
    written = {p for _, p in rows}
    prompt_queries = [(-1, r.position) for r in trace.retrievals if r.position not in written]
    return sorted(prompt_queries + rows, key=lambda x: x[1])


# -- the query lens -----------------------------------------------------------------------------------

@dataclass
class LensHit:
    id: str
    title: str
    score: float


@dataclass
class LensToken:
    index: int  # into Trace.tokens; -1: the query token at the end of the prompt (single-hop)
    position: int
    text: str
    score: float  # the top hit's cosine
    top: list[LensHit]
    # The retrieval this token's text leads up to (the next one at or after it); None after the last.
    retrieval: int | None = None
    query: bool = False  # this state was a real retrieval's query
    # The top hit is the document that retrieval chose; None where there is no such retrieval.
    agrees: bool | None = None


@dataclass
class QueryLens(WhyView):
    KIND = "query-lens"

    task: str
    mode: str
    index: str  # what was searched, in words
    tokens: list[LensToken]
    forward_tokens: int  # one forward of the whole sequence; no decoding
    forward_seconds: float
    searches: int
    search_seconds: float
    note: str = ""  # said with the strip (e.g. the run's own queries came from another encoder)

    @property
    def queries(self) -> list[LensToken]:
        return [t for t in self.tokens if t.query]

    @classmethod
    def _from_body(cls, body: dict[str, Any]) -> "QueryLens":
        tokens = [LensToken(**{**t, "top": [LensHit(**h) for h in t["top"]]}) for t in body.pop("tokens")]
        return cls(**body, tokens=tokens)


def index_label(index: VectorIndex) -> str:
    """The index in words: its folder's name (not the whole path, which says where one machine keeps it)."""
    where = f"the index {Path(index.path).name}" if index.path else "an in-memory index"
    return f"{where} ({len(index):,} documents)"


@torch.inference_mode()
def final_states(lm: LoadedModel, ids: Sequence[int]) -> torch.Tensor:
    """Final-norm hidden states [len(ids), dim] of one forward, as the engine reads queries."""
    return lm.backbone(input_ids=ids_tensor(lm, ids), use_cache=False).last_hidden_state[0]


def query_lens(lm: LoadedModel, trace: Trace, index: VectorIndex, *, top: int = LENS_TOP) -> QueryLens:
    """Every written token's state searched in `index` as if it were the query."""
    check_model(lm, trace, index)
    ids = trace_sequence(trace)
    t0 = time.perf_counter()
    states = final_states(lm, ids)
    return lens_from_states(trace, index, states, time.perf_counter() - t0, top=top)


def lens_from_states(trace: Trace, index: VectorIndex, states: torch.Tensor, forward_seconds: float, *,
                     top: int = LENS_TOP) -> QueryLens:
    """The lens from final-norm states [sequence, dim] of the run's whole sequence (one forward,
    made by `query_lens` or shared with the attention view)."""
    rows = query_rows(trace)
    t0 = time.perf_counter()
    found = index.search(states[[p for _, p in rows]].float().cpu(), top)
    search_seconds = time.perf_counter() - t0
    by_position = {r.position: r for r in trace.retrievals}
    ahead = sorted(trace.retrievals, key=lambda r: r.position)
    # Two columns read once: a loaded index's documents are Arrow rows, slow to read one by one.
    ids, titles = index.documents.ids(), index.documents.titles()
    tokens = []
    for (i, pos), hits in zip(rows, found):
        nxt = next((r for r in ahead if r.position >= pos), None)
        chosen = nxt.chosen_hit if nxt is not None else None
        top_hits = [LensHit(id=ids[h.doc], title=titles[h.doc], score=round(h.score, 6)) for h in hits]
        text = trace.tokens[i].text if i >= 0 else (by_position[pos].token if pos in by_position else "")
        tokens.append(LensToken(index=i, position=pos, text=text, score=top_hits[0].score if top_hits else 0.0,
                                top=top_hits, retrieval=nxt.step if nxt is not None else None,
                                query=pos in by_position,
                                agrees=None if chosen is None or not top_hits else top_hits[0].id == chosen.id))
    note = ""
    if trace.mode != "onegen":
        note = (f"This run's queries came from the {trace.mode} mode's encoder; the lens reads the OneGen hidden "
                "states, so its scores at the retrieval tokens differ from the run's own.")
    return QueryLens(task=trace.task, mode=trace.mode, index=index_label(index), tokens=tokens,
                     forward_tokens=len(states), forward_seconds=round(forward_seconds, 4), searches=len(rows),
                     search_seconds=round(search_seconds, 4), note=note)


# -- the layer view -----------------------------------------------------------------------------------

@dataclass
class LayerRow:
    layer: int  # 0: the token embeddings; n: after decoder layer n; the last reading is the real query
    rank: int | None  # 1-based rank of the run's chosen document at this layer; None: no chosen document
    chosen_score: float | None
    top_id: str
    top_title: str
    top_score: float


@dataclass
class LayerView(WhyView):
    KIND = "layer-view"

    step: int
    chosen_id: str | None
    chosen_title: str | None
    documents: int
    layers: list[LayerRow]
    forward_tokens: int  # the query's prefix plus the documents' prompts
    seconds: float
    cached: bool = False  # the documents' per-layer vectors came from an earlier request

    @classmethod
    def _from_body(cls, body: dict[str, Any]) -> "LayerView":
        return cls(**{**body, "layers": [LayerRow(**r) for r in body["layers"]]})


def layer_readings(lm: LoadedModel) -> int:
    """How many layer readings a state has: the embeddings, then one after every decoder layer."""
    return int(lm.model.config.num_hidden_layers) + 1


def layer_limit_problem(lm: LoadedModel, index: VectorIndex) -> str | None:
    """Why the layer view refuses this index (None: it does not)."""
    cells = len(index) * layer_readings(lm)
    if cells <= MAX_LAYER_CELLS:
        return None
    return (f"The layer view re-encodes every document at every layer: {len(index):,} documents x "
            f"{layer_readings(lm)} layers = {cells:,}, over the limit of {MAX_LAYER_CELLS:,}. Use a smaller index "
            "(e.g. a question's own candidate paragraphs) or a smaller model.")


def _readings(lm: LoadedModel, hidden_states: Sequence[torch.Tensor]) -> torch.Tensor:
    """[readings, ..., dim]: every layer's state through the final norm (the last is already normed),
    unit length."""
    norm = lm.backbone.norm
    out = [norm(h) for h in hidden_states[:-1]] + [hidden_states[-1]]
    return normalize(torch.stack(out).float())


# (index fingerprint, model fingerprint) -> (per-layer vectors [readings, N, dim], forward tokens); one kept.
_LAYER_CACHE: dict[tuple[str, str], tuple[torch.Tensor, int]] = {}
LAYER_CACHE_SCHEMA = "onegen-layer-vectors/1"


def layer_cache_dir() -> Path:
    """Where the per-layer document vectors are kept between processes: the user cache (never the
    repository's assets), so the first request of a new server reads them instead of re-encoding."""
    return cache_dir() / "layer-vectors"


def layer_cache_path(model_fingerprint: str, index_fingerprint: str) -> Path:
    # Both fingerprints name the file; the metadata inside repeats them and is checked on reading.
    return layer_cache_dir() / f"{model_fingerprint[:24]}-{index_fingerprint[:24]}.safetensors"


def _cache_key(model_fingerprint: str, index_fingerprint: str, shape: Sequence[int]) -> dict:
    """What a cache file's metadata must say to be used (it also records the forward `tokens`)."""
    return {"schema": LAYER_CACHE_SCHEMA, "model_fingerprint": model_fingerprint,
            "index_fingerprint": index_fingerprint, "shape": ",".join(str(n) for n in shape)}


def read_layer_cache(model_fingerprint: str, index_fingerprint: str,
                     shape: Sequence[int]) -> tuple[torch.Tensor, int] | None:
    """The vectors kept on disk for this model and index, or None when there are none, or when the
    file is not whole or was made for other weights, another index or another shape: such a file is
    removed, and the vectors are encoded again."""
    from safetensors import safe_open

    path = layer_cache_path(model_fingerprint, index_fingerprint)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tokens = meta.pop("tokens", "")
            if meta != _cache_key(model_fingerprint, index_fingerprint, shape) or not tokens.isdigit():
                raise ValueError(f"made for another model, index or shape ({meta})")
            vectors = f.get_tensor("vectors")
        if tuple(vectors.shape) != tuple(shape) or vectors.dtype != torch.float32:
            raise ValueError(f"holds a {tuple(vectors.shape)} {vectors.dtype} tensor")
    except Exception as e:  # noqa: BLE001 - a broken cache file is rebuilt, never a failed view
        log.warning("layer-view cache %s refused and removed: %s", path, e)
        path.unlink(missing_ok=True)
        return None
    return vectors, int(tokens)


def write_layer_cache(model_fingerprint: str, index_fingerprint: str, vectors: torch.Tensor, tokens: int) -> None:
    """Keep the vectors for the next process (written whole or not at all); a cache that cannot be
    written (a read-only home) only costs the next process the encoding."""
    from safetensors.torch import save_file

    meta = {**_cache_key(model_fingerprint, index_fingerprint, vectors.shape), "tokens": str(tokens)}
    path = layer_cache_path(model_fingerprint, index_fingerprint)
    try:
        atomic_write(path, lambda tmp: save_file({"vectors": vectors.contiguous()}, str(tmp), metadata=meta))
    except OSError as e:
        log.warning("layer-view cache %s not written: %s", path, e)


def layer_vectors_kept(lm: LoadedModel, index: VectorIndex) -> bool:
    """Whether a layer view of this model and index would find its document vectors kept (in memory
    or in the user cache) instead of re-encoding the index: what a page says before it starts."""
    return ((index.fingerprint, lm.fingerprint) in _LAYER_CACHE
            or layer_cache_path(lm.fingerprint, index.fingerprint).is_file())


@torch.inference_mode()
def layer_document_vectors(lm: LoadedModel, task: str, index: VectorIndex, *, batch_size: int = 4,
                           lock: AbstractContextManager | None = None) -> tuple[torch.Tensor, int, bool]:
    """The index's document vectors re-encoded at every layer reading: [readings, N, dim] in the
    index's row order, the tokens forwarded, and whether they came from the cache. Small batches:
    every layer's states of a batch are held at once. `lock` is taken per batch (the app's model
    lock), so a long first encoding lets other visitors' runs step in between."""
    key = (index.fingerprint, lm.fingerprint)
    if key in _LAYER_CACHE:
        vectors, tokens = _LAYER_CACHE[key]
        return vectors, tokens, True
    shape = (layer_readings(lm), len(index.owners), lm.hidden_size)
    kept = read_layer_cache(lm.fingerprint, index.fingerprint, shape)
    if kept is not None:
        _LAYER_CACHE.clear()
        _LAYER_CACHE[key] = kept
        return kept[0], kept[1], True
    docs = [index.documents[i] for i in range(len(index))]
    prompts = [document_prompt(lm, task, d) for d in docs]
    counts = torch.bincount(index.owners, minlength=len(docs)).tolist()
    for d, p, n in zip(docs, prompts, counts):
        if len(p.vector_positions) != n:
            raise WhyError(f"document {d.id!r} has {n} vectors in the index but {len(p.vector_positions)} when "
                           "re-encoded; the index was built with other settings")
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    per_doc: list[torch.Tensor | None] = [None] * len(docs)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i].ids))
    tokens = 0
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        width = max(len(prompts[i].ids) for i in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, i in enumerate(chunk):
            ids[r, :len(prompts[i].ids)] = torch.tensor(prompts[i].ids)
            mask[r, :len(prompts[i].ids)] = 1
        with lock or nullcontext():
            out = lm.backbone(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device), use_cache=False,
                              output_hidden_states=True)
        for r, i in enumerate(chunk):
            at = prompts[i].vector_positions
            per_doc[i] = _readings(lm, [h[r, at] for h in out.hidden_states]).cpu()  # [readings, n_i, dim]
        tokens += sum(len(prompts[i].ids) for i in chunk)
    # Rows in the index's order: document i's vectors are the rows whose owner is i, in order.
    rows = torch.empty(layer_readings(lm), len(index.owners), lm.hidden_size)
    taken = [0] * len(docs)
    for row, owner in enumerate(index.owners.tolist()):
        rows[:, row] = per_doc[owner][:, taken[owner]]  # type: ignore[index]
        taken[owner] += 1
    _LAYER_CACHE.clear()
    _LAYER_CACHE[key] = (rows, tokens)
    write_layer_cache(lm.fingerprint, index.fingerprint, rows, tokens)
    return rows, tokens, False


def layer_view(lm: LoadedModel, trace: Trace, index: VectorIndex, step: int, *,
               lock: AbstractContextManager | None = None) -> LayerView:
    """Retrieval `step`'s query read at every layer against the documents encoded at that layer.
    `lock` is held around each forward (see `layer_document_vectors`)."""
    check_model(lm, trace, index)
    if not 0 <= step < len(trace.retrievals):
        raise WhyError(f"the run has no retrieval step {step + 1}; it has {len(trace.retrievals)}")
    problem = layer_limit_problem(lm, index)
    if problem:
        raise WhyError(problem)
    r = trace.retrievals[step]
    ids = trace_sequence(trace)[:r.position + 1]
    t0 = time.perf_counter()
    with torch.inference_mode(), lock or nullcontext():
        out = lm.backbone(input_ids=ids_tensor(lm, ids), use_cache=False, output_hidden_states=True)
        query = _readings(lm, [h[0, -1] for h in out.hidden_states]).cpu()  # [readings, dim]
    docs, tokens, cached = layer_document_vectors(lm, trace.task, index, lock=lock)
    chosen = r.chosen_hit
    chosen_row = None
    if chosen is not None:
        ids_ = index.documents.ids()
        chosen_row = ids_.index(chosen.id) if chosen.id in ids_ else None
    rows = []
    for layer in range(len(query)):
        sims = docs[layer] @ query[layer]  # [N vectors]
        # A multi-vector document scores its best vector, as the index's own search does.
        per_doc = torch.full((len(index),), float("-inf")).scatter_reduce(0, index.owners, sims, reduce="amax")
        best = int(per_doc.argmax())
        rank = score = None
        if chosen_row is not None:
            score = float(per_doc[chosen_row])
            rank = 1 + int((per_doc > per_doc[chosen_row]).sum())
        doc = index.documents[best]
        rows.append(LayerRow(layer=layer, rank=rank, chosen_score=None if score is None else round(score, 6),
                             top_id=doc.id, top_title=doc.title, top_score=round(float(per_doc[best]), 6)))
    return LayerView(step=step, chosen_id=chosen.id if chosen else None, chosen_title=chosen.title if chosen else None,
                     documents=len(index), layers=rows, forward_tokens=len(ids) + (0 if cached else tokens),
                     seconds=round(time.perf_counter() - t0, 4), cached=cached)
