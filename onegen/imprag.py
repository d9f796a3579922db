"""ImpRAG's layer-split forward over a Llama-family decoder (Zhang et al., arXiv 2506.02279).

No retrieval token and no query text: the decoder's layers are cut into three groups,

    bottom [0, b)   the input alone; its last token's attention *query* at layer b-1 is the query vector
    middle [b, t)   the input attends to the retrieved passages' tokens as well as to itself
    top    [t, N)   the input attends to itself only

and a passage's vector is its last token's attention *key* at the same layer b-1, computed from the
passage alone through the bottom group. Both are pooled per key-value group (the query heads that
share one key head are averaged), so `query . passage` is the pre-rotary attention logit the input's last token
would give the passage's last token, averaged over each group's heads and summed over the groups.

Inference is two-stage over one forward: `start` runs the input through the bottom group and returns
its query; `read` runs the chosen passages through the bottom and middle groups and continues the
same input upward from the bottom group's cache, so the input is never encoded twice. `step` feeds
generated tokens through all layers over the same per-layer caches.

    split = LayerSplit(bottom=4, top=8, n_layers=model.config.num_hidden_layers)
    forward = SplitForward(model, split)
    state = forward.start(input_ids)                 # bottom group only
    scores = passage_vectors @ state.query           # retrieval
    hidden = forward.read(state, [p1_ids, p2_ids])   # passages + middle and top groups of the input
    hidden = forward.step(state, next_ids)           # final-norm hidden states; forward.logits(hidden)

Everything here is plain torch over the model's own modules (no cache object of the library), so
the trainer can back-propagate through it. Attention is computed here, not by the model's attention
function, because the reader's attention to each passage is recorded.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import torch
import torch.nn.functional as F

from .errors import OneGenError

Group = Literal["bottom", "middle", "top"]
GROUPS: tuple[Group, ...] = ("bottom", "middle", "top")
POOLING = "mean over the query heads of each key-value group"
# Which tokens' states make the vectors: the last one (the paper's design), or the mean over all of
# the input's (a passage's) tokens. Measured on the untrained SmolLM2-135M (docs/imprag.md), the last
# token ranks passages at chance at every layer and the mean does not.
TOKEN_POOLING = ("last", "mean")
POOLING_MEAN = "mean over the tokens, then over the query heads of each key-value group"


class ImpragError(OneGenError, ValueError):
    """A layer split or input the ImpRAG forward cannot use; the message is for users."""


@dataclass(frozen=True)
class LayerSplit:
    """The boundaries b and t of the three layer groups of an N-layer decoder."""

    bottom: int  # b: layers [0, b) are the bottom group
    top: int  # t: layers [b, t) are the middle group, [t, N) the top group
    n_layers: int
    tokens: str = "last"  # TOKEN_POOLING: the last token's states, or the mean over the tokens

    def __post_init__(self):
        if not 0 < self.bottom <= self.top <= self.n_layers:
            raise ImpragError(f"layer boundaries must satisfy 0 < b <= t <= N: got b={self.bottom}, "
                              f"t={self.top}, N={self.n_layers}")
        if self.tokens not in TOKEN_POOLING:
            raise ImpragError(f"token pooling must be one of {', '.join(TOKEN_POOLING)}; got {self.tokens!r}")

    @property
    def pooling(self) -> str:
        """The pooling in words, as the trace and an index's manifest record it."""
        return POOLING if self.tokens == "last" else POOLING_MEAN

    @property
    def retrieval_layer(self) -> int:
        """The layer whose attention query (input) and key (passages) are the retrieval vectors:
        the last layer of the bottom group, so retrieving needs nothing above it."""
        return self.bottom - 1

    def group(self, layer: int) -> Group:
        return "bottom" if layer < self.bottom else "middle" if layer < self.top else "top"

    def layers(self, group: Group) -> range:
        return {"bottom": range(0, self.bottom), "middle": range(self.bottom, self.top),
                "top": range(self.top, self.n_layers)}[group]

    def to_json(self) -> dict:
        out = {"bottom": self.bottom, "top": self.top, "n_layers": self.n_layers}
        if self.tokens != "last":  # absent: the last token, as before the choice existed
            out["tokens"] = self.tokens
        return out

    @classmethod
    def from_json(cls, data: dict) -> "LayerSplit":
        return cls(int(data["bottom"]), int(data["top"]), int(data["n_layers"]), data.get("tokens", "last"))


@dataclass
class ForwardCost:
    """Tokens that went through each layer group (a token through a group counts once per group)."""

    bottom: int = 0
    middle: int = 0
    top: int = 0

    def add(self, groups: Sequence[Group], n: int) -> None:
        for g in groups:
            setattr(self, g, getattr(self, g) + n)

    def to_json(self) -> dict:
        return {"bottom": self.bottom, "middle": self.middle, "top": self.top}


@dataclass
class _LayerCache:
    """One layer's keys and values (after rotary) in the order the layer's queries may see them."""

    keys: torch.Tensor | None = None  # (1, kv_heads, T, head_dim)
    values: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.keys is None else self.keys.shape[2]

    def extend(self, k: torch.Tensor, v: torch.Tensor) -> None:
        self.keys = k if self.keys is None else torch.cat([self.keys, k], dim=2)
        self.values = v if self.values is None else torch.cat([self.values, v], dim=2)


@dataclass
class SplitState:
    """One input's forward in progress: per-layer caches, the query vector, the passages read."""

    input_length: int
    query: torch.Tensor  # (kv_heads * head_dim,)
    bottom_hidden: torch.Tensor  # the input's hidden states after the bottom group, (1, L, hidden)
    caches: list[_LayerCache]
    cost: ForwardCost = field(default_factory=ForwardCost)
    passage_spans: list[tuple[int, int]] = field(default_factory=list)  # [start, end) in middle caches
    passage_tokens: int = 0  # all passages' tokens (the input's shift in the middle and top groups)
    next_position: int = 0  # the position id of the next fed token (past the passages once read)
    # reader attention: [layer offset in the middle group][passage] -> summed share, over `reader_queries`
    reader_mass: list[list[float]] = field(default_factory=list)
    reader_queries: int = 0
    read: bool = False

    def reader_attention(self) -> list[list[float]]:
        """Per middle layer, per passage: the mean share of attention (over heads and over the
        input's and the answer's tokens) that went to that passage's tokens."""
        n = max(self.reader_queries, 1)
        return [[m / n for m in row] for row in self.reader_mass]


def pool_query(q: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """(heads, head_dim) query states -> (kv_heads * head_dim,): the mean of the query heads that
    share each key-value head (grouped-query attention's grouping, heads in order)."""
    heads, dim = q.shape
    if heads % kv_heads:
        raise ImpragError(f"{heads} query heads do not split into {kv_heads} key-value groups")
    return q.view(kv_heads, heads // kv_heads, dim).mean(dim=1).reshape(-1)


def pool_key(k: torch.Tensor) -> torch.Tensor:
    """(kv_heads, head_dim) key states -> (kv_heads * head_dim,): one key head per group already."""
    return k.reshape(-1)


@dataclass(frozen=True)
class Centring:
    """Mean query and mean passage vector, subtracted before scoring.

    Measured on SmolLM2-135M (docs/imprag.md): the last input token of every single-hop prompt is
    the same template token, and every passage ends in the same delimiter, so raw vectors share one
    dominant direction (mean cosine near 1 between different questions) and ranking by cosine ranks
    noise. Subtracting each side's mean leaves what differs between inputs. The means travel with
    the model (`onegen_model.json`, key `imprag.centring`), are applied to passages when an index is
    built and to queries at search time, and their fingerprint is part of the index's `layer_split`,
    so an index centred otherwise is refused."""

    query_mean: tuple[float, ...]
    passage_mean: tuple[float, ...]

    def __post_init__(self):
        if len(self.query_mean) != len(self.passage_mean) or not self.query_mean:
            raise ImpragError("imprag centring needs a query mean and a passage mean of the same dimension")

    @classmethod
    def fit(cls, queries: torch.Tensor, passages: torch.Tensor) -> "Centring":
        """The means of (n, dim) query vectors and (m, dim) passage vectors."""
        return cls(tuple(queries.float().mean(0).tolist()), tuple(passages.float().mean(0).tolist()))

    def _apply(self, x: torch.Tensor, mean: tuple[float, ...]) -> torch.Tensor:
        if x.shape[-1] != len(mean):
            raise ImpragError(f"centring is for {len(mean)}-d vectors, got {x.shape[-1]}-d")
        return x - torch.tensor(mean, dtype=x.dtype, device=x.device)

    def queries(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply(x, self.query_mean)

    def passages(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply(x, self.passage_mean)

    def to_json(self) -> dict:
        return {"query_mean": list(self.query_mean), "passage_mean": list(self.passage_mean)}

    @classmethod
    def from_json(cls, data: dict) -> "Centring":
        try:
            return cls(tuple(float(v) for v in data["query_mean"]), tuple(float(v) for v in data["passage_mean"]))
        except (KeyError, TypeError, ValueError):
            raise ImpragError("imprag centring must hold two lists of numbers, query_mean and passage_mean") from None

    def fingerprint(self) -> str:
        import hashlib
        import json

        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:16]


class SplitForward:
    """The ImpRAG forward of a transformers Llama-family causal LM (`model.model.layers`, each with
    `self_attn.{q,k,v,o}_proj`, `input_layernorm`, `post_attention_layernorm`, `mlp`)."""

    def __init__(self, model, split: LayerSplit):
        self.model = model
        base = model.model
        self.layers = base.layers
        if len(self.layers) != split.n_layers:
            raise ImpragError(f"the split is for {split.n_layers} layers but the model has {len(self.layers)}")
        self.split = split
        cfg = model.config
        self.heads = cfg.num_attention_heads
        self.kv_heads = getattr(cfg, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads
        self.dimension = self.kv_heads * self.head_dim

    # --- the parts -------------------------------------------------------------------------

    def _rotary(self, x: torch.Tensor, positions: torch.Tensor):
        return self.model.model.rotary_emb(x, positions.unsqueeze(0))

    def _layer(self, i: int, h: torch.Tensor, positions: torch.Tensor, cache: _LayerCache | None,
               spans: list[tuple[int, int]] | None = None, state: SplitState | None = None,
               block_starts: list[int] | None = None):
        """Layer i over hidden states h (1, T, hidden) at `positions`, attending to `cache` (keys it
        may see, extended with these tokens) and causally to itself. `block_starts` makes the
        attention block-diagonal (independent passages in one call). Returns the new hidden states
        and the pre-rotary (query, key) states, for retrieval vectors."""
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        layer = self.layers[i]
        attn = layer.self_attn
        T = h.shape[1]
        x = layer.input_layernorm(h)
        q = attn.q_proj(x).view(1, T, self.heads, self.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(1, T, self.kv_heads, self.head_dim).transpose(1, 2)
        v = attn.v_proj(x).view(1, T, self.kv_heads, self.head_dim).transpose(1, 2)
        raw = (q[0], k[0])  # pre-rotary (heads, T, head_dim), (kv_heads, T, head_dim)
        cos, sin = self._rotary(v, positions)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        past = 0
        if cache is not None:
            past = cache.length
            cache.extend(k, v)
            keys, values = cache.keys, cache.values
        else:
            keys, values = k, v
        # None: every key allowed (one new token) or plainly causal (nothing cached before these tokens)
        allowed = None
        if (past and T > 1) or block_starts is not None:
            allowed = torch.ones(T, past + T, dtype=torch.bool, device=h.device)
            allowed[:, past:] = torch.ones(T, T, dtype=torch.bool, device=h.device).tril()
        if block_starts is not None:
            block = torch.zeros(T, dtype=torch.long, device=h.device)
            for s in block_starts[1:]:
                block[s:] += 1
            allowed[:, past:] &= block.unsqueeze(1) == block.unsqueeze(0)
        if spans and state is not None and self.split.group(i) == "middle":
            out = self._attend_and_measure(i, q, keys, values, allowed, spans, state)
        else:
            # the fused kernel: no (T, past+T) score matrix kept, key-value groups shared in place
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=allowed,
                                                 is_causal=allowed is None and past == 0 and T > 1,
                                                 enable_gqa=self.kv_heads != self.heads)
        out = out.transpose(1, 2).reshape(1, T, self.heads * self.head_dim)
        h = h + attn.o_proj(out)
        h = h + layer.mlp(layer.post_attention_layernorm(h))
        return h, raw

    def _attend_and_measure(self, i: int, q, keys, values, allowed, spans, state) -> torch.Tensor:
        """Attention written out, for the middle layers of an input that reads passages: the share
        of each query's attention on a passage's tokens, averaged over heads, is what the app shows
        as "which passage the model read" per middle layer."""
        T, past_t = q.shape[2], keys.shape[2]
        if allowed is None:
            allowed = torch.ones(T, past_t, dtype=torch.bool, device=q.device).tril(past_t - T)
        rep = self.heads // self.kv_heads
        scores = (q @ keys.repeat_interleave(rep, dim=1).transpose(2, 3)) * (self.head_dim ** -0.5)
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        with torch.no_grad():
            row = state.reader_mass[i - self.split.bottom]
            for j, (a, b) in enumerate(spans):
                row[j] += float(probs[0, :, :, a:b].sum(-1).mean(0).sum())
        return probs @ values.repeat_interleave(rep, dim=1)

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        ids = torch.as_tensor(ids, dtype=torch.long, device=self._device()).reshape(1, -1)
        if ids.shape[1] == 0:
            raise ImpragError("an empty input or passage cannot be encoded")
        return self.model.model.embed_tokens(ids)

    def _device(self):
        return self.model.model.embed_tokens.weight.device

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The LM head over final-norm hidden states from `read` or `step`."""
        return self.model.lm_head(hidden)

    # --- retrieval vectors -----------------------------------------------------------------

    def passage_vector(self, ids) -> torch.Tensor:
        """A passage's retrieval vector: its last token's key at the retrieval layer, the passage
        alone through the bottom group (nothing above it runs)."""
        return self.passage_vectors([ids])[0]

    def passage_vectors(self, passages: Sequence) -> torch.Tensor:
        """(n, dimension): several passages in one forward, each attending to itself only (the keys
        are read before rotary positions, so each equals `passage_vector` of that passage alone)."""
        dev = self._device()
        ids = [torch.as_tensor(p, dtype=torch.long, device=dev).reshape(-1) for p in passages]
        if not ids or any(p.numel() == 0 for p in ids):
            raise ImpragError("an empty input or passage cannot be encoded")
        ends = torch.tensor([p.numel() for p in ids]).cumsum(0)
        starts = [0, *ends[:-1].tolist()]
        h = self._embed(torch.cat(ids))
        positions = torch.arange(h.shape[1], device=dev)
        raw = None
        for i in self.split.layers("bottom"):
            h, raw = self._layer(i, h, positions, None, block_starts=starts)
        if self.split.tokens == "mean":
            return torch.stack([pool_key(raw[1][:, s:e, :].mean(1)) for s, e in zip(starts, ends.tolist())])
        return torch.stack([pool_key(raw[1][:, e - 1, :]) for e in ends.tolist()])

    # --- the two-stage forward -------------------------------------------------------------

    def start(self, input_ids) -> SplitState:
        """Stage one: the input through the bottom group; its query vector for retrieval."""
        h = self._embed(input_ids)
        L = h.shape[1]
        # why positions 0..L-1 although the input sits past the passages above: the bottom group
        # attends to the input only and rotary attention depends on position differences alone
        positions = torch.arange(L, device=h.device)
        caches = [_LayerCache() for _ in range(self.split.n_layers)]
        raw = None
        for i in self.split.layers("bottom"):
            h, raw = self._layer(i, h, positions, caches[i])
        q = raw[0][:, -1, :] if self.split.tokens == "last" else raw[0].mean(1)
        state = SplitState(input_length=L, query=pool_query(q, self.kv_heads), bottom_hidden=h,
                           caches=caches, next_position=L)
        state.cost.add(("bottom",), L)
        return state

    def read(self, state: SplitState, passages: Sequence) -> torch.Tensor:
        """Stage two: the passages through the bottom and middle groups (each alone, one after the
        other in positions), then the input from its bottom-group states through the middle group
        (attending to the passages and itself, positions shifted past them) and the top group
        (itself only). Returns the input's final-norm hidden states (1, L, hidden)."""
        if state.read:
            raise ImpragError("this input has already read its passages")
        dev = self._device()
        passage_ids = [torch.as_tensor(p, dtype=torch.long, device=dev).reshape(-1) for p in passages]
        spans, offset = [], 0
        for p in passage_ids:
            if p.numel() == 0:
                raise ImpragError("an empty passage cannot be read")
            spans.append((offset, offset + p.numel()))
            offset += p.numel()
        state.passage_spans = spans
        state.passage_tokens = offset
        state.reader_mass = [[0.0] * len(spans) for _ in self.split.layers("middle")]
        if passage_ids:
            ph = self._embed(torch.cat(passage_ids))
            positions = torch.arange(offset, device=dev)
            starts = [a for a, _ in spans]
            for i in list(self.split.layers("bottom")) + list(self.split.layers("middle")):
                # passage keys land only in middle-group caches: the bottom and top groups never see them
                cache = _LayerCache() if i < self.split.bottom else state.caches[i]
                ph, _ = self._layer(i, ph, positions, cache, block_starts=starts)
            state.cost.add(("bottom", "middle"), offset)
        state.next_position = offset + state.input_length
        h = state.bottom_hidden
        positions = torch.arange(offset, offset + state.input_length, device=dev)
        for i in range(self.split.bottom, self.split.n_layers):
            h, _ = self._layer(i, h, positions, state.caches[i], spans=spans, state=state)
        state.reader_queries += state.input_length
        state.cost.add(("middle", "top"), state.input_length)
        state.read = True
        return self.model.model.norm(h)

    def step(self, state: SplitState, ids) -> torch.Tensor:
        """Generated tokens through all layers over the same caches (the middle group still sees
        the passages; the top group does not). Returns their final-norm hidden states (1, T, hidden)."""
        if not state.read:
            raise ImpragError("read the passages (possibly none) before generating")
        h = self._embed(ids)
        T = h.shape[1]
        dev = h.device
        positions = torch.arange(state.next_position, state.next_position + T, device=dev)
        # the bottom group's cache holds the input at positions 0..L-1; shifting the new tokens by the
        # same amount keeps their distances to it right
        shift = state.next_position - state.passage_tokens
        bottom_positions = torch.arange(shift, shift + T, device=dev)
        for i in range(self.split.n_layers):
            pos = bottom_positions if i < self.split.bottom else positions
            h, _ = self._layer(i, h, pos, state.caches[i], spans=state.passage_spans, state=state)
        state.next_position += T
        state.reader_queries += T
        state.cost.add(GROUPS, T)
        return self.model.model.norm(h)


# -- the engine's side: one decode loop, the same Trace ----------------------------------------------

def default_split(n_layers: int) -> LayerSplit:
    """Boundaries in the proportions of a published re-implementation (layers 0-14 / 15-19 / 20-27 of a
    28-layer model) for a model that records none of its own."""
    bottom = max(1, round(n_layers * 15 / 28))
    return LayerSplit(bottom, max(bottom, round(n_layers * 20 / 28)), n_layers)


def model_split(lm) -> LayerSplit:
    """The split a model was trained with (`lm.info["imprag"]`: {"bottom", "top"}), else the default."""
    n = lm.model.config.num_hidden_layers
    recorded = (lm.info or {}).get("imprag")
    if recorded:
        return LayerSplit(int(recorded["bottom"]), int(recorded["top"]), n, recorded.get("tokens", "last"))
    return default_split(n)


def model_centring(lm, split: LayerSplit) -> Centring | None:
    """The centring means a model was trained with (`lm.info["imprag"]["centring"]`), when `split`
    is the split they were measured at; else None (vectors are used as they are)."""
    recorded = (lm.info or {}).get("imprag") or {}
    if "centring" not in recorded or split != model_split(lm):
        return None
    return Centring.from_json(recorded["centring"])


def model_reads(lm) -> int | None:
    """How many of its top hits a model's reader reads (`lm.info["imprag"]["reads"]`); None: every
    hit listed. A small model reads better with fewer distractors beside the passage it needs."""
    reads = ((lm.info or {}).get("imprag") or {}).get("reads")
    return int(reads) if reads else None


def passage_ids(lm, task: str, title: str, text: str) -> list[int]:
    """A passage's ids as the reader reads it: the task's insertion template, delimiters included
    (the same ids make its retrieval vector, so what is searched is what is read)."""
    from .protocols import get_spec
    from .tokenization import Token, template_parts

    spec = get_spec(task)
    if spec.insertion is None:
        raise ImpragError(f"the ImpRAG mode reads passages into the middle layers; {task} inserts none")
    open_t, body, close_t = spec.insertion
    return lm.ptok(task).encode([Token(open_t), *template_parts(body, title=title, text=text), Token(close_t)]).ids


class ImpragDecoder:
    """The engine's decoder for one run in the ImpRAG mode. The prompt's forward stops after the
    bottom group (`query` is then set); `read` continues it upward with the retrieved passages; each
    later forward runs a generated token through all layers. Drafting is off (no truncation)."""

    truncatable = False

    def __init__(self, lm, split: LayerSplit):
        self.lm = lm
        self.forward_ = SplitForward(lm.model, split)
        self.state: SplitState | None = None
        self.length = 0

    @property
    def query(self) -> torch.Tensor | None:
        return None if self.state is None else self.state.query

    def forward(self, ids: Sequence[int]) -> torch.Tensor:
        """The prompt: its bottom-group hidden states (rows, not final-norm: nothing reads logits
        before the passages are read). Later: final-norm hidden states of generated tokens."""
        self.length += len(ids)
        if self.state is None:
            self.state = self.forward_.start(list(ids))
            return self.state.bottom_hidden[0]
        if not self.state.read:
            raise ImpragError("the ImpRAG mode answers single-hop questions only: it reads its passages "
                              "once, right after the input")
        return self.forward_.step(self.state, list(ids))[0]

    def read(self, passages: Sequence[Sequence[int]]) -> torch.Tensor:
        """The input's final-norm hidden states after the middle group read `passages`."""
        if self.state is None:
            raise ImpragError("the input must be forwarded before passages are read")
        return self.forward_.read(self.state, [list(p) for p in passages])[0]

    def truncate(self, length: int) -> None:
        if length != self.length:
            raise ImpragError("the ImpRAG decoder cannot drop tokens")

    def __len__(self) -> int:
        return self.length

    def record(self, trace) -> None:
        """Fill the trace's per-group forward tokens and the retrieval's layer record."""
        from .trace import LayerRead

        if self.state is None:
            return
        split = self.forward_.split
        trace.cost.layer_groups = self.state.cost.to_json()
        if trace.retrievals:
            trace.retrievals[-1].layer_read = LayerRead(
                layer=split.retrieval_layer, pooling=split.pooling, dimension=self.forward_.dimension,
                bottom=split.bottom, top=split.top, n_layers=split.n_layers, read=len(self.state.passage_spans),
                reader_attention=[[round(x, 6) for x in row] for row in self.state.reader_attention()]
                if self.state.read else [])


class ImpragQuery:
    """The mode's query encoder: the vector the input's own bottom-group forward left (no query text,
    no extra tokens). It also makes the mode's decoder and its document vectors."""

    name = "imprag"

    def __init__(self, lm, split: LayerSplit | None = None):
        self.split = split or model_split(lm)
        self.centring = model_centring(lm, self.split)
        self.reads = model_reads(lm)  # the engine's reader reads this many of the hits (None: all)
        cfg = lm.model.config
        heads = cfg.num_attention_heads
        # what an index searched by this mode must hold (checked when it loads)
        self.dimension = (getattr(cfg, "num_key_value_heads", None) or heads) * \
            (getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
        self.layer_split = index_layer_split(self.split, self.centring)

    def __call__(self, ctx):
        from .engine import QueryVector

        if ctx.layer_query is None:
            raise ImpragError("no layer query: the ImpRAG mode needs its own decoder")
        label = f"attention query at layer {self.split.retrieval_layer}"
        if self.centring is None:
            return QueryVector(ctx.layer_query, label, 0)
        # the same subtraction the index's passages got when it was built (PassageEncoder)
        return QueryVector(self.centring.queries(ctx.layer_query), label + ", centred", 0)

    def make_decoder(self, lm) -> ImpragDecoder:
        return ImpragDecoder(lm, self.split)

    def encode_documents(self, lm, task: str, docs) -> tuple[torch.Tensor, torch.Tensor, int]:
        return PassageEncoder(lm, self.split)(lm, task, docs)  # centred as this query is


class PassageEncoder:
    """Passage vectors from the bottom group only, in the shape of `onegen.encode.encode_documents`
    (the index builder's `encode`): (vectors [N, dim], owners [N], tokens forwarded). `layer_split`
    is what an index built with it records, and what loading it for a run checks."""

    def __init__(self, lm, split: LayerSplit | None = None):
        self.split = split or model_split(lm)
        self.centring = model_centring(lm, self.split)
        self.forward_ = SplitForward(lm.model, self.split)
        self.dimension = self.forward_.dimension

    @property
    def layer_split(self) -> dict:
        return index_layer_split(self.split, self.centring)

    def __call__(self, lm, task: str, docs, batch_size: int = 16, **_options) -> tuple[torch.Tensor, torch.Tensor, int]:
        ids = [passage_ids(lm, task, d.title, d.text) for d in docs]
        if not ids:
            return torch.zeros(0, self.dimension), torch.zeros(0, dtype=torch.long), 0
        with torch.inference_mode():  # `batch_size` passages a forward, each attending to itself only
            vectors = torch.cat([self.forward_.passage_vectors(ids[i:i + batch_size]).float().cpu()
                                 for i in range(0, len(ids), max(batch_size, 1))])
        if self.centring is not None:
            vectors = self.centring.passages(vectors)
        return vectors, torch.arange(len(ids)), sum(map(len, ids))


def index_layer_split(split: LayerSplit, centring: Centring | None = None) -> dict:
    """What an ImpRAG index's manifest records of the layer groups its vectors came from (and, for a
    centred model, the fingerprint of the means its passages were centred by)."""
    out = {"mode": "imprag", **split.to_json(), "layer": split.retrieval_layer, "pooling": split.pooling}
    if centring is not None:
        out["centring"] = centring.fingerprint()
    return out
