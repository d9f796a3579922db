"""The single-pass engine: one decode loop over one KV cache that writes and retrieves.

The query vector of a retrieval is the final-norm hidden state of the step whose *input* is the
retrieval token; it falls out of the generation forward pass, so nothing is encoded twice. Every
kept token is forwarded exactly once and counted by phase (prompt, generated, inserted); greedy runs
may forward a guessed token or two with each chosen one (onegen/draft.py), and guesses greedy
decoding refuses are dropped from the cache and counted as draft_rejected. Every token is picked by
a `TokenChooser`: the model's own choice by default, a script in tests and benchmarks. Which hit of
a retrieval is used is the `DocumentChooser`'s call: the top hit, except where a replay
(`Engine.replay`, onegen/replay.py) picks another after prefilling the recorded prefix once.

    engine = Engine(load_model())
    for event in engine.run("multi-hop", "Where was the director of ... born?", retriever=...):
        ...  # TokenEvent, RetrievalEvent, then DoneEvent(trace)
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import ClassVar, Iterator, Protocol, Sequence, Union

import torch

from .calibration import result_retrievals, run_confidence
from .constrain import CopyConstraint, vocabulary_bytes
from .documents import Document
from .draft import NgramDrafter
from .encode import encode_documents
from .errors import OneGenError
from .fused_llama import FusedLlamaDecoder, fusable, fused_weights
from .index import VectorIndex
from .input_normalization import index_caser, normalize_input
from .loading import LoadedModel
from .protocols import LK, SPECS, ResolvedProtocol, get_spec
from .result_checks import resolve_checks
from .tasks import get_task
from .tokenization import Token, template_parts
from .trace import (Cost, Hit, Override, OverrideKind, Phase, Replay, ReplayChoiceKind, Retrieval, StopReason,
                    StoredVector, TokenKind, TokenRecord, Trace)
from .utf8_guard import utf8_guard

MAX_INPUT_CHARS = 20_000


class InputError(OneGenError, ValueError):
    """Bad user input: empty, too long for the model, or otherwise unusable. The message is for users."""


# -- events -----------------------------------------------------------------------------------------

@dataclass
class TokenEvent:
    token: TokenRecord


@dataclass
class RetrievalEvent:
    retrieval: Retrieval


@dataclass
class DoneEvent:
    trace: Trace


Event = Union[TokenEvent, RetrievalEvent, DoneEvent]


# -- retrieval plumbing (pluggable, so baselines reuse this loop) ------------------------------------

@dataclass
class QueryContext:
    task: str
    hidden: torch.Tensor  # final-norm hidden state at the retrieval token
    query_text: str
    query_ids: list[int]  # ids of the text that formed the query, retrieval token included
    # A layer-split decoder's pooled attention query (ImpRAG, onegen/imprag.py); None otherwise.
    layer_query: torch.Tensor | None = None


@dataclass
class QueryVector:
    vector: torch.Tensor
    source: str
    forward_tokens: int = 0  # extra forward tokens spent to make the vector (0 for OneGen)
    seconds: float = 0.0  # time spent in that extra pass (0 for OneGen)


class QueryEncoder(Protocol):
    name: str

    def __call__(self, ctx: QueryContext) -> QueryVector: ...


class HiddenStateQuery:
    """OneGen: the query vector is the hidden state already computed by the generation pass."""

    name = "onegen"

    def __call__(self, ctx: QueryContext) -> QueryVector:
        return QueryVector(ctx.hidden, "hidden-state", 0)


class Retriever(Protocol):
    """Top-k hits for a query vector. A retriever over a calibrated index also carries
    `calibration` (onegen/calibration.py), which the engine reads with getattr: retrievers without
    one (per-run candidates, the random control, test doubles) need not declare it."""

    def search(self, vector: torch.Tensor, k: int) -> list[Hit]: ...

    def describe(self) -> dict: ...


class IndexRetriever:
    """Top-k documents of a VectorIndex (a saved index, or candidates encoded for one question)."""

    def __init__(self, index: VectorIndex, label: str | None = None):
        self.index = index
        self.label = label or (str(index.path) if index.path else "in-memory")
        self.calibration = index.calibration

    def search(self, vector: torch.Tensor, k: int) -> list[Hit]:
        return self.search_many([vector], k)[0]

    def search_many(self, vectors: Sequence[torch.Tensor], k: int) -> list[list[Hit]]:
        """Top-k hits per vector, the vectors searched as one matrix (a batch's retrievals of a step)."""
        q = torch.stack([v.float().cpu().reshape(-1) for v in vectors])
        out = []
        for row in self.index.search(q, k):
            hits = []
            for rank, h in enumerate(row):
                doc = self.index.documents[h.doc]
                hits.append(Hit(rank=rank, id=doc.id, title=doc.title, score=round(h.score, 6), text=doc.text,
                                fragment=h.fragment))
            out.append(hits)
        return out

    def describe(self) -> dict:
        m = self.index.manifest
        out = {"path": self.label, "documents": len(self.index), "vectors": m.count, "protocol": m.protocol,
               "model_fingerprint": m.model_fingerprint}
        if self.calibration is not None:
            out["calibration"] = self.calibration.describe()
        return out


@dataclass
class Sampling:
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0


@dataclass
class RunSettings:
    top_k: int = 5
    # Tokens chosen per generation segment: the first, and each one after an inserted document
    # (multi-hop), as the released evaluator's one `generate` call per segment; tasks that insert
    # nothing while decoding have one segment. None: the task's default.
    max_new_tokens: int | None = None
    # Multi-hop: after this many retrievals the next segment runs to its stop (EOS, </FINAL-ANSWER>, or
    # the retrieval token, then not searched). Entity linking: [LK] is banned from then on.
    max_retrievals: int | None = None
    sampling: Sampling | None = None  # None: greedy
    # Prompt-lookup draft length (onegen/draft.py); greedy runs only, 0 forwards one token per call.
    # Drafts change the speed, not the output; their rejected tokens are counted as "draft_rejected".
    draft_tokens: int = 2
    # Entity linking only: the output must be the input with mention tags (onegen/constrain.py).
    # False lets the model write anything, as the authors' loop does.
    copy_input: bool = True
    # Copy-constrained greedy runs: where a mention is open and the model's first choice would
    # leave the input (it wants to skip the words after a name), end the mention there, at a word
    # edge, rather than let the mask copy those words into it. False: the mask alone decides.
    early_close: bool = True
    # Copy-constrained greedy runs: where the model's first choice is refused outside a mention and
    # the mask's best token would open one, copy the input instead, unless the model's choice was
    # itself a `<MENTION>` in another spelling. False: the mask may open mentions the model did not.
    model_opens: bool = True
    # Checks of the result against what the run read (onegen/result_checks.py). None: the model's
    # own setting (its onegen_model.json), else "off", the result as the authors' loops report it.
    # Every task: before the run, the typed input's names in the index's case and a closing mark
    # where it has none (onegen/input_normalization.py): "off" or "normalize".
    input_normalization: str | None = None
    # Entity linking: each linked mention's span against the linked entity's name in the input
    # (onegen/name_alignment.py): "off", "snap" or "strict".
    name_alignment: str | None = None
    # QA: an answer misspelt while copying against the documents the run read
    # (onegen/answer_alignment.py): "off" or "snap".
    answer_alignment: str | None = None
    # Multi-hop: a comparison the chain states, recomputed from the values it wrote
    # (onegen/comparison_check.py): "off" or "recompute".
    comparison_check: str | None = None
    # Llama models on the CPU: the fused decode path (onegen/fused_llama.py), same hidden states as
    # the transformers forward with fewer op calls. False always uses the transformers forward.
    fused_decoder: bool = True
    # End a run whose last `repetition_window` written tokens repeat one n-gram of at most 8 tokens
    # ("kickickick..." until the token limit): stop reason "repetition". 0 turns the guard off.
    # Copy-constrained entity linking is exempt: its output is bounded by its input.
    repetition_window: int = 32
    # Keep each retrieval's query vector in the trace (float16, base64; Retrieval.query_vector).
    query_vectors: bool = False


# -- the decode state -------------------------------------------------------------------------------

class TransformersDecoder:
    """The model's own forward over a transformers DynamicCache: any architecture, any device."""

    def __init__(self, lm: LoadedModel):
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        self.lm = lm
        self.cache = DynamicCache(config=lm.model.config)
        # Truncating slices each layer's keys and values, which is right for full-attention layers
        # only; a model with sliding-window layers decodes one token a call.
        self.truncatable = all(type(layer) is DynamicLayer for layer in self.cache.layers)

    def forward(self, ids: Sequence[int]) -> torch.Tensor:
        x = torch.tensor([list(ids)], dtype=torch.long, device=self.lm.device)
        return self.lm.backbone(input_ids=x, past_key_values=self.cache, use_cache=True).last_hidden_state[0]

    def truncate(self, length: int) -> None:
        for layer in self.cache.layers:  # a view: no copy (Cache.crop's argument differs across versions)
            layer.keys = layer.keys[..., :length, :]
            layer.values = layer.values[..., :length, :]

    def __len__(self) -> int:
        return self.cache.get_seq_length()


def make_decoder(lm: LoadedModel, fused: bool = True) -> FusedLlamaDecoder | TransformersDecoder:
    """The fused Llama path where it applies (same hidden states, fewer op calls), else the model's
    own forward."""
    if fused and fusable(lm.model, lm.device) is None:
        return FusedLlamaDecoder(lm.model)
    return TransformersDecoder(lm)


class DecodeState:
    """One sequence on one KV cache. `feed` forwards only new ids and returns their final-norm
    hidden states; nothing ever re-forwards the history."""

    def __init__(self, lm: LoadedModel, cost: Cost, draft_tokens: int = 0, fused: bool = True, decoder=None):
        self.lm = lm
        self.cost = cost
        # A batched run (onegen/batch.py) or a mode with its own forward (ImpRAG) passes its decoder.
        self.decoder = decoder if decoder is not None else make_decoder(lm, fused)
        self.ids: list[int] = []
        self._sync = lm.device.type == "cuda"
        truncatable = getattr(self.decoder, "truncatable", True)
        self.drafter = NgramDrafter(draft_len=draft_tokens) if draft_tokens > 0 and truncatable else None

    @property
    def decoder_name(self) -> str:
        named = getattr(self.decoder, "name", None)
        if named:
            return named
        if isinstance(self.decoder, FusedLlamaDecoder):
            return "fused-llama"
        return "transformers" if isinstance(self.decoder, TransformersDecoder) else type(self.decoder).__name__

    def feed(self, ids: Sequence[int], phase: Phase) -> torch.Tensor:
        t0 = time.perf_counter()
        hidden = self.decoder.forward(ids)
        if self._sync:
            torch.cuda.synchronize()
        # A batched run may take a prompt's leading positions from another run's identical prefix
        # (fused_llama.SharedKVCache): those rows are not computed, and are counted apart.
        shared = len(ids) - hidden.shape[0]
        if shared:
            self.cost.forward_tokens["prefix_shared"] = self.cost.forward_tokens.get("prefix_shared", 0) + shared
        self.cost.forward_tokens[phase] = self.cost.forward_tokens.get(phase, 0) + len(ids) - shared
        self._add_seconds(phase, time.perf_counter() - t0)
        self.ids.extend(ids)
        if self.drafter is not None:
            self.drafter.extend(ids)
        return hidden

    def read(self, passages: list[list[int]]) -> torch.Tensor:
        """A layer-split decoder reads passages beside the sequence (not into it): the input's
        final-norm hidden states after reading; the passages' tokens count as inserted."""
        t0 = time.perf_counter()
        hidden = self.decoder.read(passages)
        n = sum(len(p) for p in passages)
        self.cost.forward_tokens["inserted"] = self.cost.forward_tokens.get("inserted", 0) + n
        self._add_seconds("inserted", time.perf_counter() - t0)
        return hidden

    def drop_after(self, length: int, phase: Phase) -> None:
        """Forget the ids past `length` (a draft greedy decoding did not keep); their forward tokens
        move from `phase` to "draft_rejected"."""
        dropped = len(self.ids) - length
        if dropped <= 0:
            return
        self.decoder.truncate(length)
        del self.ids[length:]
        if self.drafter is not None:
            self.drafter.truncate(length)
        self.cost.forward_tokens[phase] -= dropped
        self.cost.forward_tokens["draft_rejected"] = self.cost.forward_tokens.get("draft_rejected", 0) + dropped

    def logits(self, hidden_last: torch.Tensor) -> torch.Tensor:
        # A batched run's decoder computed the head for its step's rows together with the other runs'.
        known = getattr(self.decoder, "known_logits", None)
        ready = known(hidden_last) if known is not None else None
        return ready if ready is not None else self.lm.lm_head(hidden_last).float()

    def _add_seconds(self, phase: Phase, s: float) -> None:
        self.cost.seconds[phase] = self.cost.seconds.get(phase, 0.0) + s

    def __len__(self) -> int:
        return len(self.ids)


# -- token choice -----------------------------------------------------------------------------------

def repeats(ids: Sequence[int], window: int, max_period: int = 8) -> bool:
    """Are the last `window` ids one n-gram (n <= max_period) over and over?"""
    if window <= 0 or len(ids) < window:
        return False
    tail = ids[-window:]
    return any(all(tail[i] == tail[i - p] for i in range(p, window)) for p in range(1, min(max_period, window // 2) + 1))


def choose_token(logits: torch.Tensor, *, step: int = 0, forced: int | None = None, banned: Sequence[int] = (),
                 allowed: Sequence[int] | None = None, sampling: Sampling | None = None,
                 generator: torch.Generator | None = None) -> int:
    """The model's own choice (the default TokenChooser): greedy or sampled with -inf masking. A
    forced token is the only finite logit, banned tokens and (when `allowed` is given) every token
    outside it are -inf, so sampling can never pick around the protocol. `step` is unused: the
    model's choice depends on its logits alone."""
    logits = logits.clone()
    if forced is not None:
        allowed = [forced]
    if allowed is not None:
        keep = logits[list(allowed)].clone()
        logits.fill_(float("-inf"))
        logits[list(allowed)] = keep
    for b in banned:
        if b != forced:
            logits[b] = float("-inf")
    if sampling is None or forced is not None:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / max(sampling.temperature, 1e-5), dim=-1)
    if sampling.top_p < 1.0:
        sorted_p, idx = probs.sort(descending=True)
        cut = sorted_p.cumsum(0) - sorted_p > sampling.top_p
        sorted_p[cut] = 0
        probs = torch.zeros_like(probs).scatter_(0, idx, sorted_p)
    return int(torch.multinomial(probs / probs.sum(), 1, generator=generator))


class TokenChooser(Protocol):
    """Picks every token of a run: the model's own choice (`choose_token`), or a script in tests and
    benchmarks.

    `step` is the choice's 0-based index among the run's chosen tokens (forced ones included,
    inserted ones not); `logits` are the model's at that position, computed once per position. The
    protocol arrives as arguments and a chooser must honour it: return `forced` when given, never a
    `banned` id, only an id of `allowed` when given. With `sampling` None the answer must depend on
    the arguments alone: the engine asks again for the same step to check a draft's guesses and to
    find the copy constraint's overrides.
    """

    def __call__(self, logits: torch.Tensor, *, step: int, forced: int | None = None, banned: Sequence[int] = (),
                 allowed: Sequence[int] | None = None, sampling: Sampling | None = None,
                 generator: torch.Generator | None = None) -> int: ...


class ScriptedChooser:
    """Chooses `ids[step]` (EOS once they run out) as if the model's logits were one-hot on it. The
    protocol still applies through `choose_token`: a forced token wins, banned and disallowed ids are
    masked, sampling samples the one-hot logits. Random test and benchmark models never write
    retrieval tokens; with this only the choice is scripted and every forward pass stays real."""

    def __init__(self, ids: Sequence[int], eos_id: int):
        self.ids, self.eos_id = list(ids), eos_id

    def __call__(self, logits: torch.Tensor, *, step: int, forced: int | None = None, banned: Sequence[int] = (),
                 allowed: Sequence[int] | None = None, sampling: Sampling | None = None,
                 generator: torch.Generator | None = None) -> int:
        one_hot = torch.zeros_like(logits)
        one_hot[self.ids[step] if step < len(self.ids) else self.eos_id] = 100.0
        return choose_token(one_hot, forced=forced, banned=banned, allowed=allowed, sampling=sampling,
                            generator=generator)


# -- document choice ----------------------------------------------------------------------------------

@dataclass
class DocumentChoice:
    """Which hit of a retrieval the run uses (inserts, or links for entity linking)."""

    chosen: int | None  # index into `hits`; None: use nothing and write on (the hits are still recorded)
    hits: list[Hit] | None = None  # replaces the search's hits when given (a document drawn from outside them)
    kind: ReplayChoiceKind = "rank"  # how it was chosen, for a replay's record
    seed: int | None = None  # "random": the seed of the draw


class DocumentChooser(Protocol):
    """Decides which hit of each retrieval is used: the top hit in a normal run (`top_hit`); a
    replay (onegen/replay.py) picks another at one step. `query` is the step's query vector."""

    def __call__(self, step: int, hits: list[Hit], query: torch.Tensor) -> DocumentChoice: ...


def top_hit(step: int, hits: list[Hit], query: torch.Tensor) -> DocumentChoice:
    """The default DocumentChooser: the best hit, as the released loop does."""
    return DocumentChoice(0 if hits else None)


@dataclass
class Resume:
    """Where a replay starts: `trace`'s recorded sequence through the token of retrieval `step` is
    prefilled in one pass, and decoding goes on from there with `documents` choosing."""

    trace: Trace
    step: int
    documents: DocumentChooser


# The released entity-linking rule is exactly "</MENTION>[LK]" -> "[_CONTINUE_]": [_CONTINUE_] is
# forced only after a [LK] written right after "</MENTION>"; a bare [LK] forces nothing.
# TaskSpec.forced_after names the token ([LK]); this is the text that must come right before it.
# The released code compares token ids; comparing text gives the same answer whenever the tag is
# written in its usual tokens, and also when the copy constraint made the model spell it otherwise
# (the constraint allows only [_CONTINUE_] after such an [LK], so the two agree).
FORCED_ONLY_AFTER: dict[str, str] = {LK: "</MENTION>"}


@dataclass(frozen=True)
class ForcingRule:
    """After `token`, written right after the text `after_text`, the protocol sets the next token
    to `forced`."""

    token: int
    after_text: str
    forced: int


def forcing_rules(proto: ResolvedProtocol) -> list[ForcingRule]:
    return [ForcingRule(proto.ids[token], FORCED_ONLY_AFTER.get(token, ""), proto.ids[forced])
            for token, forced in proto.spec.forced_after.items()]


# -- the engine -------------------------------------------------------------------------------------


class Engine:
    # Every token choice goes through a TokenChooser. It belongs to the engine, like the query
    # encoder, rather than to RunSettings: settings are plain data recorded in each trace, a chooser
    # is code. A run of an engine made without one uses `default_chooser`, read when the run starts,
    # so tests of paths that make their own engines (the CLI, the evaluation) script them by setting it.
    default_chooser: ClassVar[TokenChooser] = staticmethod(choose_token)

    def __init__(self, lm: LoadedModel, query_encoder: QueryEncoder | None = None,
                 chooser: TokenChooser | None = None):
        self.lm = lm
        self.query_encoder = query_encoder or HiddenStateQuery()
        self.chooser: TokenChooser | None = chooser
        if fusable(lm.model, lm.device) is None:
            fused_weights(lm.model)  # once, here, rather than inside the first answer's timing

    @property
    def own_decoder(self) -> bool:
        """Whether the mode brings its own forward (ImpRAG's layer split), which the batched engine's
        packed pass cannot share: such runs decode one at a time."""
        return hasattr(self.query_encoder, "make_decoder")

    def make_decoder(self, fused: bool = True):
        """A new sequence's decoder; the batched engine (onegen/batch.py) hands out slots of its batch,
        and a mode with its own forward (ImpRAG) makes it through its query encoder."""
        if self.own_decoder:
            return self.query_encoder.make_decoder(self.lm)
        return make_decoder(self.lm, fused)

    # Public entry points ---------------------------------------------------------------------------
    def run(self, task: str, text: str, *, retriever: Retriever | None = None,
            candidates: Sequence[Document] | None = None, settings: RunSettings | None = None) -> Iterator[Event]:
        """Stream a run: TokenEvents and RetrievalEvents as they happen, then DoneEvent(trace).

        Give either a `retriever` (a saved index) or `candidates` (documents encoded for this run
        only, once, e.g. a question's own context paragraphs).
        """
        settings = settings or RunSettings()
        proto = self.lm.protocol(task)
        text = self._check_input(text)
        cost = Cost()
        if retriever is None:
            if not candidates:
                raise InputError("no documents to retrieve from: give an index or candidate documents")
            retriever = self.candidate_retriever(task, candidates, cost)
        yield from _Run(self, proto, text, retriever, settings, cost).events()

    def replay(self, resume: Resume, retriever: Retriever, settings: RunSettings,
               cost: Cost | None = None) -> Iterator[Event]:
        """Stream a run that repeats `resume.trace` through its retrieval `resume.step` without
        recomputing it (one prefill of the recorded ids, phase "replay_prefix"), lets
        `resume.documents` choose at that step, and decodes the rest as a run would."""
        trace = resume.trace
        proto = self.lm.protocol(trace.task)
        yield from _Run(self, proto, self._check_input(trace.input), retriever, settings, cost or Cost(),
                        resume).events()

    def run_trace(self, task: str, text: str, **kwargs) -> Trace:
        """Run to completion and return the trace."""
        trace = None
        for ev in self.run(task, text, **kwargs):
            if isinstance(ev, DoneEvent):
                trace = ev.trace
        assert trace is not None
        return trace

    def load_index(self, path, task: str) -> VectorIndex:
        """The index at `path`, refused unless this engine's model built it for `task` with the vectors
        its mode searches (a layer-split mode: vectors of its own size, layer groups and centring)."""
        query = self.query_encoder
        return VectorIndex.load(path, protocol=task, model_fingerprint=self.lm.fingerprint,
                                dim=getattr(query, "dimension", None) or self.lm.hidden_size,
                                layer_split=getattr(query, "layer_split", None))

    def candidate_retriever(self, task: str, docs: Sequence[Document], cost: Cost | None = None) -> IndexRetriever:
        """Encode a run's own candidate documents once; every hop of the run searches them."""
        t0 = time.perf_counter()
        encode = getattr(self.query_encoder, "encode_documents", encode_documents)  # a mode's own vectors
        vectors, owners, tokens = encode(self.lm, task, docs)
        if cost is not None:
            cost.document_tokens += tokens
            cost.seconds["documents"] = cost.seconds.get("documents", 0.0) + time.perf_counter() - t0
        return IndexRetriever(VectorIndex(vectors, list(docs), owners=owners), label="candidates")

    def prompt_ids(self, task: str, text: str) -> tuple[str, list[int]]:
        spec = get_spec(task)
        enc = self.lm.ptok(task).encode_template(spec.prompt_template, input=text)
        return spec.prompt_template.replace("{input}", text), enc.ids

    def _check_input(self, text: str) -> str:
        if not isinstance(text, str) or not text.strip():
            raise InputError("the input is empty: type a sentence or a question")
        if len(text) > MAX_INPUT_CHARS:
            raise InputError(f"the input has {len(text):,} characters; the limit is {MAX_INPUT_CHARS:,}")
        return text


@dataclass
class Fed:
    """What feeding a chosen token, with the draft guesses kept after it, gave."""

    hidden: torch.Tensor  # final-norm hidden states, the chosen token's first, the last kept guess's last
    # Logits at the first refused guess's position, already computed (its head runs once); None:
    # compute them from hidden[-1].
    next_logits: torch.Tensor | None
    stop: StopReason | None = None  # a kept guess ended the run (recorded, not fed)


@dataclass
class Retrieved:
    """Where decoding resumes after a retrieval."""

    hidden: torch.Tensor  # the inserted document's hidden states, or the query token's when nothing is inserted
    stop: StopReason | None = None  # "no_hits" or "context_full": the document could not be inserted


class _Run:
    """State of one run; split from Engine so the loop reads top to bottom."""

    def __init__(self, engine: Engine, proto: ResolvedProtocol, text: str, retriever: Retriever,
                 settings: RunSettings, cost: Cost, resume: Resume | None = None):
        self.engine, self.lm, self.proto, self.spec = engine, engine.lm, proto, proto.spec
        self.resume = resume
        self.documents: DocumentChooser = resume.documents if resume is not None else top_hit
        self.task = get_task(self.spec.name)
        self.ptok = engine.lm.ptok(self.spec.name)
        self.chooser: TokenChooser = engine.chooser or engine.default_chooser
        self.retriever, self.settings, self.cost = retriever, settings, cost
        self.max_new = settings.max_new_tokens or self.spec.max_new_tokens
        self.max_retrievals = settings.max_retrievals if settings.max_retrievals is not None else self.spec.max_retrievals
        # Retrieval tokens written while decoding are queries (entity linking, multi-hop); single-hop
        # reads its one query at the end of the prompt.
        self.queries_while_decoding = self.spec.query_from == "generated"
        # Multi-hop: each retrieval inserts a document and starts a new generation segment, as in the
        # released evaluator, where each segment is one `generate` call. The token limit applies to
        # each segment, and after the last allowed retrieval the next segment runs to its stop.
        self.segmented = self.queries_while_decoding and self.spec.insertion is not None
        self.checks = resolve_checks(self.task.declared_settings, settings, self.lm)
        edits = resume.trace.input_edits if resume is not None else None  # a replay reads what its original read
        if resume is None and self.checks.get("input_normalization") == "normalize":
            index = getattr(retriever, "index", None)  # its titles spell the names
            caser = None if index is None else index_caser(index)
            read = normalize_input(text, caser, closing=self.task.closing_mark)
            text, edits = read.text, read.edits or None
        self.text = text  # what the model reads
        self.prompt_text, self.prompt_ids = engine.prompt_ids(self.spec.name, text)
        ctx = self.lm.context_length
        if len(self.prompt_ids) >= ctx:
            raise InputError(f"the input is too long: its prompt has {len(self.prompt_ids):,} tokens and "
                             f"{self.lm.name} reads at most {ctx:,}")
        drafts = settings.draft_tokens if settings.sampling is None else 0
        self.state = DecodeState(self.lm, cost, draft_tokens=drafts, decoder=engine.make_decoder(settings.fused_decoder))
        self.forcing = forcing_rules(proto)
        # Tokens that steer the loop (retrieval, forcing, end) are never drafted: each gets its own step.
        self.undraftable = frozenset({proto.query_id, proto.eos_id, *(r.token for r in self.forcing)})
        # A multi-task checkpoint knows every protocol's tokens; another task's (a reflection token
        # in a multi-hop answer, [LK] in a Self-RAG one) is never what this protocol means.
        vocab = self.ptok.hf.get_vocab()
        own = set(self.spec.token_strings)
        self.foreign = sorted({vocab[t] for spec in SPECS.values() for t in spec.token_strings
                               if t not in own and t in vocab})
        # Masks the tokens that would leave a character's bytes unfinished (onegen/utf8_guard.py).
        self.utf8 = utf8_guard(self.ptok.hf)
        self.utf8_state = 0
        self.copy: CopyConstraint | None = None
        if self.task.copies_input and settings.copy_input:
            self.copy = CopyConstraint(text, vocabulary_bytes(self.ptok.hf), link_id=proto.query_id,
                                       continue_id=proto.forced_ids()[proto.query_id], eos_id=proto.eos_id)
            self.copy_states = self.copy.start
        # Both rules compare with the model's first choice, which only greedy decoding has.
        greedy_copy = self.copy is not None and settings.sampling is None
        self.early_close = greedy_copy and settings.early_close
        self.model_opens = greedy_copy and settings.model_opens
        self.trace = Trace(task=self.spec.name, mode=engine.query_encoder.name, model=self._model_info(),
                           input=text, prompt_text=self.prompt_text, prompt_ids=list(self.prompt_ids),
                           cost=cost, index=retriever.describe(), input_edits=edits,
                           settings={"top_k": settings.top_k, "max_new_tokens": self.max_new,
                                     "max_new_tokens_per": "segment" if self.segmented else "run",
                                     "max_retrievals": self.max_retrievals, "draft_tokens": drafts,
                                     "copy_input": self.copy is not None, "early_close": self.early_close,
                                     "model_opens": self.model_opens,
                                     **self.checks,
                                     "decoder": self.state.decoder_name,
                                     "repetition_window": 0 if self.copy is not None else settings.repetition_window,
                                     "decoding": "greedy" if settings.sampling is None else vars(settings.sampling)})
        # The index's calibration judges this run's retrievals only when its scores were measured
        # with the same kind of query vectors (a second-pass baseline's lie elsewhere).
        calibration = getattr(retriever, "calibration", None)
        self.calibration = calibration if calibration is not None and calibration.mode == self.trace.mode else None
        self.generator = None
        if settings.sampling is not None:
            self.generator = torch.Generator().manual_seed(settings.sampling.seed)
        self.generated: list[int] = []  # chosen ids (forced included, inserted excluded)
        self.segment_start = 0  # index into self.generated where the current generation segment starts
        # Index into self.state.ids where the next query's text starts: after the prompt, or at 0 when
        # the prompt itself is the query (single-hop).
        self.query_start = len(self.prompt_ids) if self.queries_while_decoding else 0
        self.t_start = time.perf_counter()

    def _model_info(self) -> dict:
        return {"name": self.lm.name, "fingerprint": self.lm.fingerprint, "device": str(self.lm.device),
                "dtype": str(self.lm.dtype).replace("torch.", "")}

    # -- the loop -----------------------------------------------------------------------------------
    @torch.inference_mode()
    def events(self) -> Iterator[Event]:
        """Prefill, then choose a token, record it, stop or feed it; a retrieval token's step is a
        query, and its document (if the task inserts one) is prefilled before the next choice."""
        after: Retrieved | None = None
        if self.resume is not None:  # a replay: the recorded run through its changed retrieval
            after = yield from self._resume(self.resume)
        else:
            hidden = self.state.feed(self.prompt_ids, "prompt")
            if not self.queries_while_decoding:  # single-hop: the prompt ends in the query token
                after = yield from self._retrieve(hidden[-1], position=len(self.state) - 1, query_text=self.text)
        if after is not None:
            if after.stop:
                yield DoneEvent(self._finish(after.stop))
                return
            hidden = after.hidden
        logits = self.state.logits(hidden[-1])
        forced: int | None = self._forced_next() if self.generated else None
        stop: StopReason | None = None
        while True:
            banned = self._banned()
            allowed = self._allowed(banned) if forced is None else None
            if allowed == []:  # the tokenizer cannot spell the rest of the input
                stop = "copy_dead_end"
                break
            tok, override = self._pick(logits, forced=forced, banned=banned, allowed=allowed, position=len(self.state))
            if override is not None:
                self.trace.overrides.append(override)
            yield TokenEvent(self._record(tok, "forced" if forced is not None else "generated"))
            stop = self._stop_reason(tok)
            if stop:
                break
            fed = yield from self._advance(tok, banned)
            if fed.stop:
                stop = fed.stop
                break
            hidden, logits = fed.hidden, fed.next_logits
            if self._is_query(self.state.ids[-1]):
                after = yield from self._retrieve(hidden[-1], position=len(self.state) - 1)
                if after.stop:
                    stop = after.stop
                    break
                hidden, logits = after.hidden, None
            if logits is None:
                logits = self.state.logits(hidden[-1])
            forced = self._forced_next()
        yield DoneEvent(self._finish(stop))

    # -- steps --------------------------------------------------------------------------------------
    def _choose(self, logits: torch.Tensor, *, ahead: int = 0, forced: int | None = None,
                banned: Sequence[int] = (), allowed: list[int] | None = None) -> int:
        """The chooser's pick for the position `ahead` tokens after the last recorded one."""
        return self.chooser(logits, step=len(self.generated) + ahead, forced=forced, banned=banned, allowed=allowed,
                            sampling=self.settings.sampling, generator=self.generator)

    def _advance(self, tok: int, banned: Sequence[int]) -> Iterator[Event]:
        """Feed the chosen token, with a prompt-lookup draft after it when one applies, and record
        the guesses greedy decoding would have chosen anyway (returns a `Fed`)."""
        self._copy_advance(tok, banned)
        draft = self._draft(tok)
        start = len(self.state) + 1  # position of draft[0]
        hidden = self.state.feed([tok, *draft], "generated")
        kept, logits = 0, None
        while kept < len(draft):  # row i of `hidden` predicts draft[i]; each position's head runs once
            logits = self.state.logits(hidden[kept])
            banned = self._banned()  # as one-token decoding would ban here (an open character)
            allowed = self._allowed(banned)
            if allowed == []:
                break
            tok_here, override = self._pick(logits, ahead=kept, banned=banned, allowed=allowed, position=start + kept)
            if tok_here != draft[kept]:
                break
            if override is not None:
                self.trace.overrides.append(override)
            self._copy_advance(draft[kept], banned)
            logits = None
            kept += 1
        for i in range(kept):
            yield TokenEvent(self._record(draft[i], "generated", position=start + i))
            stop = self._stop_reason(draft[i])
            if stop:  # one-token decoding would not have forwarded this token or any after it
                self.state.drop_after(start + i, "generated")
                return Fed(hidden[:i + 1], None, stop)
        self.state.drop_after(start + kept, "generated")
        return Fed(hidden[:kept + 1], logits)

    def _is_query(self, tok: int) -> bool:
        return tok == self.proto.query_id and self.queries_while_decoding

    def _banned(self) -> list[int]:
        """Other protocols' tokens always, and tokens that would break a UTF-8 character; entity
        linking also bans [LK] once the retrieval limit
        is reached, so the rest of the input is still written (a segmented run instead stops at
        its next retrieval token, `_stop_reason`)."""
        utf8 = self.utf8.banned(self.utf8_state)
        if self.queries_while_decoding and not self.segmented and len(self.trace.retrievals) >= self.max_retrievals:
            return [*self.foreign, *utf8, self.proto.query_id]
        return [*self.foreign, *utf8] if utf8 else self.foreign

    def _forced_next(self) -> int | None:
        """The token the protocol sets next, if the last generated token and the text before it
        match a forcing rule; the next query's text starts after it."""
        for rule in self.forcing:
            if self.generated[-1] != rule.token:
                continue
            # Every token spells at least one byte, so this many tokens hold the text if it is there.
            before = self.generated[-1 - len(rule.after_text.encode()):-1] if rule.after_text else []
            if self.ptok.decode(before).endswith(rule.after_text):
                self.query_start = len(self.state) + 1
                return rule.forced
        return None

    # -- copy constraint (entity linking) ------------------------------------------------------------
    def _allowed(self, banned: Sequence[int]) -> list[int] | None:
        if self.copy is None:
            return None
        return self.copy.allowed(self.copy_states, may_link=self.proto.query_id not in banned)

    def _copy_advance(self, tok: int, banned: Sequence[int]) -> None:
        self.utf8_state = self.utf8.after(self.utf8_state, tok)
        if self.copy is not None:
            self.copy_states = self.copy.after(self.copy_states, tok, may_link=self.proto.query_id not in banned)

    def _pick(self, logits: torch.Tensor, *, position: int, ahead: int = 0, forced: int | None = None,
              banned: Sequence[int] = (), allowed: list[int] | None = None) -> tuple[int, Override | None]:
        """The token at `position`: the chooser's pick within `allowed`; where the model's own first
        choice is refused, within the tokens that end the open mention (early close) or, instead of
        a `<MENTION>` the model did not choose, within the tokens that copy (model opens). With the
        Override to record when, in a greedy run, the token differs from the chooser's own first
        choice among the tokens the protocol itself permits (a banned [LK] is not the constraint's
        doing)."""
        tok = self._choose(logits, ahead=ahead, forced=forced, banned=banned, allowed=allowed)
        if allowed is None or self.settings.sampling is not None:
            return tok, None
        preferred = self._choose(logits, ahead=ahead, banned=banned)
        if preferred == tok:
            return tok, None
        kind: OverrideKind = "mask"
        if self.early_close:
            closing = self.copy.closing(self.copy_states, allowed)
            if closing and tok not in closing:
                tok, kind = self._choose(logits, ahead=ahead, banned=banned, allowed=closing), "early_close"
        if self.model_opens and kind == "mask" and not self.copy.spells_open(preferred):
            opening = set(self.copy.opening(self.copy_states, allowed))
            copying = [a for a in allowed if a not in opening]
            if tok in opening and copying:
                tok, kind = self._choose(logits, ahead=ahead, banned=banned, allowed=copying), "no_open"
        return tok, Override(position=position, chosen=tok, preferred=preferred,
                             preferred_text=self.ptok.decode([preferred]), kind=kind)

    def _draft(self, tok: int) -> list[int]:
        drafter = self.state.drafter
        if drafter is None or tok in self.undraftable:
            return []
        # Far from the context limit only, so "context_full" stops where one-token decoding stops.
        if len(self.state) + drafter.draft_len + 3 >= self.lm.context_length:
            return []
        return drafter.propose(tok, stop=self.undraftable, limit=self.max_new - self._segment_tokens())

    def _record(self, tok: int, kind: TokenKind, position: int | None = None) -> TokenRecord:
        self.generated.append(tok)
        rec = TokenRecord(id=tok, text=self.ptok.token_text(self.generated, len(self.generated) - 1), kind=kind,
                          position=len(self.state) if position is None else position)
        self.trace.tokens.append(rec)
        return rec

    def _segment_tokens(self) -> int:
        """Tokens chosen since the prompt or the last insertion."""
        return len(self.generated) - self.segment_start

    def _stop_reason(self, tok: int) -> StopReason | None:
        if tok == self.proto.eos_id:
            return "eos"
        if self.spec.stop_strings:
            tail = self.ptok.decode(self.generated[-12:])
            if any(tail.endswith(s) for s in self.spec.stop_strings):
                return "final_answer"
        if self.segmented and self._is_query(tok) and len(self.trace.retrievals) >= self.max_retrievals:
            return "retrieval_limit"
        if self.copy is None and repeats(self.generated, self.settings.repetition_window):
            return "repetition"
        if self._segment_tokens() >= self.max_new:
            return "max_new_tokens"
        if len(self.state) + 1 >= self.lm.context_length:
            return "context_full"
        return None

    def _retrieve(self, hidden: torch.Tensor, position: int, query_text: str | None = None) -> Iterator[Event]:
        """Search with the hidden state at `position` (the retrieval token's step) and insert the chosen
        document when the task inserts one (returns a `Retrieved`)."""
        t0 = time.perf_counter()
        query_ids = self.state.ids[self.query_start:position + 1]
        if query_text is None:
            query_text = self.task.query_text(self.ptok.decode(query_ids[:-1]))
        qv = self.engine.query_encoder(QueryContext(self.spec.name, hidden, query_text, query_ids,
                                                    getattr(self.state.decoder, "query", None)))
        if qv.forward_tokens:
            self.cost.forward_tokens["query_reencoding"] += qv.forward_tokens
        if qv.seconds:
            self.cost.seconds["query_reencoding"] = self.cost.seconds.get("query_reencoding", 0.0) + qv.seconds
        hits = self.retriever.search(qv.vector, self.settings.top_k)
        step = len(self.trace.retrievals)
        choice = self.documents(step, hits, qv.vector)
        hits = hits if choice.hits is None else choice.hits
        r = Retrieval(step=step, position=position, token=self.spec.query_token,
                      query_text=query_text, query_source=qv.source, hits=hits, chosen=choice.chosen,
                      seconds=time.perf_counter() - t0,
                      confident=None if self.calibration is None else self.calibration.confident(hits))
        if self.settings.query_vectors:
            r.query_vector = StoredVector.encode(qv.vector.float().cpu().reshape(-1).tolist())
        self.cost.seconds["retrieval"] = self.cost.seconds.get("retrieval", 0.0) + r.seconds
        return (yield from self._use(r, hidden))

    def _use(self, r: Retrieval, hidden: torch.Tensor) -> Iterator[Event]:
        """Record retrieval `r` and insert its chosen document when the task inserts one (returns a
        `Retrieved`). No hits at all end the run; a hit deliberately not chosen (a replay's "none")
        inserts nothing and decoding goes on from the retrieval token."""
        self.trace.retrievals.append(r)
        yield RetrievalEvent(r)
        self.query_start = len(self.state)
        if self.spec.insertion is None:
            return Retrieved(hidden.unsqueeze(0))
        if not r.hits:
            return Retrieved(hidden.unsqueeze(0), "no_hits")
        if r.chosen_hit is None:
            self.segment_start = len(self.generated)
            return Retrieved(hidden.unsqueeze(0))
        inserted = self._insert(r)
        if inserted is None:
            return Retrieved(hidden.unsqueeze(0), "context_full")
        for t in self.trace.tokens[-r.inserted_tokens:]:
            yield TokenEvent(t)
        self.query_start = len(self.state)
        self.segment_start = len(self.generated)
        return Retrieved(inserted)

    def _resume(self, resume: Resume) -> Iterator[Event]:
        """A replay's start: prefill the recorded ids through the retrieval token of `resume.step` in
        one forward (phase "replay_prefix"); rebuild what the loop knows at that point (chosen ids,
        the copy and UTF-8 states, earlier retrievals, the segment) from the recorded tokens without
        forwarding them again; then make that retrieval again from its recorded hits with the
        document chooser's pick (returns a `Retrieved`)."""
        original, step = resume.trace, resume.step
        old = original.retrievals[step]
        prefix = (original.prompt_ids + [t.id for t in original.tokens])[:old.position + 1]
        if prefix[:len(self.prompt_ids)] != self.prompt_ids:
            raise InputError("the trace's prompt ids are not what this model's tokenizer makes of its input: "
                             "replay it with the model that wrote it")
        hidden = self.state.feed(prefix, "replay_prefix")
        earlier = {r.position: r for r in original.retrievals[:step]}
        for t in original.tokens:
            if t.position > old.position:
                break
            self.trace.tokens.append(copy.copy(t))
            if t.kind == "inserted":
                continue
            self._copy_advance(t.id, self._banned())
            self.generated.append(t.id)
            r = earlier.get(t.position)
            if r is not None:
                self.trace.retrievals.append(copy.deepcopy(r))
                if r.inserted_tokens:
                    self.segment_start = len(self.generated)
        self.trace.overrides = [copy.copy(o) for o in original.overrides if o.position <= old.position]
        query = hidden[-1]
        choice = self.documents(step, [copy.copy(h) for h in old.hits], query)
        r = copy.deepcopy(old)
        r.hits = choice.hits if choice.hits is not None else r.hits
        r.chosen, r.inserted_text, r.inserted_tokens, r.seconds = choice.chosen, "", 0, 0.0
        self.trace.replay = Replay(original=original.digest(), step=step, choice=choice.kind,
                                   rank=choice.chosen if choice.kind == "rank" else None, seed=choice.seed,
                                   document=r.chosen_hit.id if r.chosen_hit else None,
                                   original_document=old.chosen_hit.id if old.chosen_hit else None,
                                   prefix_tokens=len(prefix))
        return (yield from self._use(r, query))

    def _insert(self, r: Retrieval) -> torch.Tensor | None:
        """Prefill the chosen document onto the cache (only its new ids are forwarded); None when it
        would not fit the context."""
        if hasattr(self.state.decoder, "read"):
            return self._read(r)
        open_t, body, close_t = self.spec.insertion
        hit = r.chosen_hit
        parts = [Token(open_t), *template_parts(body, title=hit.title, text=hit.text), Token(close_t)]
        ids = self.ptok.encode(parts).ids
        room = self.lm.context_length - len(self.state) - 1
        if len(ids) > room:
            return None
        start = len(self.state)
        hidden = self.state.feed(ids, "inserted")
        r.inserted_tokens = len(ids)
        r.inserted_text = self.ptok.decode(ids)
        for i, t in enumerate(ids):
            self.trace.tokens.append(TokenRecord(id=t, text=self.ptok.token_text(ids, i), kind="inserted",
                                                 position=start + i))
        return hidden

    def _read(self, r: Retrieval) -> torch.Tensor:
        """ImpRAG: the top hits (all of them, or as many as the model's reader reads) are read by the
        middle layers beside the input; none enters the sequence."""
        reads = getattr(self.engine.query_encoder, "reads", None)
        texts = [template_parts(self.spec.insertion[1], title=h.title, text=h.text) for h in r.hits[:reads]]
        passages = [self.ptok.encode([Token(self.spec.insertion[0]), *t, Token(self.spec.insertion[2])]).ids
                    for t in texts]
        hidden = self.state.read(passages)
        r.inserted_tokens = sum(len(p) for p in passages)
        r.inserted_text = "\n".join(self.ptok.decode(p) for p in passages)
        return hidden

    # -- results ------------------------------------------------------------------------------------
    def _finish(self, stop: StopReason) -> Trace:
        tr = self.trace
        tr.stop_reason = stop
        record = getattr(self.state.decoder, "record", None)  # a layer-split decoder's own record
        if record is not None:
            record(tr)
        tr.cost.seconds["total"] = time.perf_counter() - self.t_start
        tr.result.output_text = tr.generated_text
        # Only a limit that binds counts: single-hop retrieves exactly once by design.
        tr.result.retrieval_limit_reached = self.queries_while_decoding and len(tr.retrievals) >= self.max_retrievals
        self.task.fill_result(tr, self.text, self.proto.eos_id)
        self.task.check_result(tr, self.text)
        tr.result.confident = run_confidence(result_retrievals(tr))  # after the checks: what the result kept
        return tr
