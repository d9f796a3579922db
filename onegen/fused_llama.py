"""A lean decode path for Llama-family models on the CPU: the transformers forward's arithmetic
with four matmul calls per layer instead of seven and a KV cache that is written in place.

At batch 1 a small model's forward on this project's 2-core CPU is mostly per-op overhead and
weight reads, not arithmetic. Here q/k/v are one matmul over one fused weight, gate/up another, and
keys and values go into preallocated buffers instead of being concatenated onto the cache at every
call. The fused weights are the model's own storage (each projection's weight becomes a view of
them), so the model costs no extra memory and its transformers forward is unchanged. On the CPU the
hidden states equal the transformers forward's bit for bit (tests/test_fused_llama.py checks it);
where a model does not fit the pattern (biases, sliding windows, dynamic RoPE, quantized layers,
another architecture, a GPU) `fusable` says why and the engine uses the transformers forward.
Its tensors follow the model's device and dtype, so a caller that measures it on a GPU can opt in
(`any_device=True`, benchmarks/gpu.py).

    dec = FusedLlamaDecoder(lm.model)
    h = dec.forward([1, 2, 3])   # final-norm hidden states, one row per id
    dec.truncate(2)              # forget the last position (a refused draft)
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# RoPE variants whose inverse frequencies are fixed at load time (dynamic ones change with length).
_STATIC_ROPE = {"default", "linear", "llama3"}
_BLOCK = 256  # cache capacity grows in blocks of this many positions


def fusable(model, device: torch.device, any_device: bool = False) -> str | None:
    """None when `model` can run on the fused path; otherwise the reason it cannot. The engine uses
    it on the CPU only (where its hidden states are checked bit for bit against transformers);
    `any_device` lets a caller that measures the packed pass itself (benchmarks/gpu.py) run it on a
    GPU, where its tensors follow the model's device and dtype."""
    if device.type != "cpu" and not any_device:
        return f"the fused decoder runs on the CPU only (device {device.type})"
    if type(model).__name__ != "LlamaForCausalLM":
        return f"{type(model).__name__} is not a LlamaForCausalLM"
    cfg = model.config
    if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
        return "the model's projections have biases"
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"activation {cfg.hidden_act} is not silu"
    if (getattr(cfg, "pretraining_tp", 1) or 1) != 1:
        return "pretraining_tp > 1"
    rope = getattr(model.model.rotary_emb, "rope_type", "default")
    if rope not in _STATIC_ROPE:
        return f"RoPE type {rope} changes with the sequence length"
    for layer in model.model.layers:
        for lin in (*_attn_linears(layer), *_mlp_linears(layer)):
            if type(lin) is not nn.Linear or lin.weight.dtype not in (torch.float32, torch.bfloat16, torch.float16):
                return f"layer {type(lin).__name__} ({lin.weight.dtype}) is not a plain float linear layer"
    return None


def _attn_linears(layer):
    a = layer.self_attn
    return a.q_proj, a.k_proj, a.v_proj


def _mlp_linears(layer):
    return layer.mlp.gate_proj, layer.mlp.up_proj


def _fuse(linears: Sequence[nn.Linear]) -> torch.Tensor:
    """One weight for several projections of the same input; each projection's weight becomes a
    view of it, so the storage is shared rather than copied."""
    fused = torch.cat([lin.weight.detach() for lin in linears]).contiguous()
    start = 0
    for lin in linears:
        rows = lin.weight.shape[0]
        lin.weight = nn.Parameter(fused[start:start + rows], requires_grad=lin.weight.requires_grad)
        start += rows
    return fused


def _still_shared(fused: torch.Tensor, linears: Sequence[nn.Linear]) -> bool:
    start = 0
    for lin in linears:
        if lin.weight.data_ptr() != fused[start].data_ptr():
            return False
        start += lin.weight.shape[0]
    return start == fused.shape[0]


def fused_weights(model) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer (q|k|v, gate|up), fused once per model and kept on it, so every decoder over the
    same model shares them; fused again if something replaced the weights since (a `.to()`)."""
    cached = getattr(model, "_onegen_fused", None)
    if cached is not None and all(_still_shared(qkv, _attn_linears(layer)) and _still_shared(gu, _mlp_linears(layer))
                                  for (qkv, gu), layer in zip(cached, model.model.layers)):
        return cached
    fused = [(_fuse(_attn_linears(layer)), _fuse(_mlp_linears(layer))) for layer in model.model.layers]
    model._onegen_fused = fused
    return fused


class FusedLlamaDecoder:
    """One sequence's forward passes over its own KV cache. `forward` takes only new ids."""

    def __init__(self, model, capacity: int = 4 * _BLOCK, any_device: bool = False,
                 shared: "SharedKVCache | None" = None):
        reason = fusable(model, next(model.parameters()).device, any_device)
        if reason:
            raise ValueError(reason)
        cfg, m = model.config, model.model
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.max_positions = int(getattr(cfg, "max_position_embeddings", 4096))
        self.embed = m.embed_tokens.weight
        self.final_norm = m.norm
        self.inv_freq = m.rotary_emb.inv_freq
        self.rope_scaling = m.rotary_emb.attention_scaling
        self.layers = [(layer.input_layernorm, qkv, layer.self_attn.o_proj.weight,
                        layer.post_attention_layernorm, gate_up, layer.mlp.down_proj.weight)
                       for layer, (qkv, gate_up) in zip(m.layers, fused_weights(model))]
        self.dtype, self.device = self.embed.dtype, self.embed.device
        self.length = 0
        self.shared, self.slot = None, -1  # a SharedKVCache and this sequence's row in it
        if shared is not None:
            shared.attach(self)
        else:
            self._alloc(min(capacity, self.max_positions))

    def _alloc(self, capacity: int) -> None:
        if self.shared is not None:  # the shared cache grows for every sequence in it
            self.shared.grow(capacity)
            return
        shape = (1, self.n_kv, capacity, self.head_dim)
        # Slots past `length` are never read (attention stops at the sequence end): no need to zero.
        new_k = [torch.empty(shape, dtype=self.dtype, device=self.device) for _ in self.layers]
        new_v = [torch.empty(shape, dtype=self.dtype, device=self.device) for _ in self.layers]
        if self.length:
            for old, new in ((self.keys, new_k), (self.values, new_v)):
                for o, n in zip(old, new):
                    n[:, :, :self.length] = o[:, :, :self.length]
        self.keys, self.values, self.capacity = new_k, new_v, capacity

    def __len__(self) -> int:
        return self.length

    def _reserve(self, end: int) -> None:
        """Room for positions up to `end` (the cache grows in blocks, to twice what is needed)."""
        if end > self.max_positions:
            raise ValueError(f"{end} positions exceed the model's {self.max_positions}")
        if end > self.capacity:
            self._alloc(min(self.max_positions, -(-2 * end // _BLOCK) * _BLOCK))

    def truncate(self, length: int) -> None:
        """Forget every position from `length` on; their slots are overwritten by later calls."""
        self.length = max(0, min(self.length, length))

    @torch.inference_mode()
    def forward(self, ids: Sequence[int]) -> torch.Tensor:
        """Final-norm hidden states (len(ids), hidden) of `ids` appended to the sequence."""
        n, start = len(ids), self.length
        end = start + n
        self._reserve(end)
        x = F.embedding(torch.tensor(ids, dtype=torch.long, device=self.device), self.embed)
        cos, sin = self._rope(start, end, x.dtype)
        # One new token attends to everything; several attend causally among themselves.
        mask = torch.ones(n, end, dtype=torch.bool, device=self.device).tril(start) if n > 1 else None
        q_dim, kv_dim = self.n_heads * self.head_dim, self.n_kv * self.head_dim
        for i, (norm1, w_qkv, w_o, norm2, w_gate_up, w_down) in enumerate(self.layers):
            qkv = norm1(x) @ w_qkv.T
            q = _heads(qkv[:, :q_dim], self.n_heads)
            k = _heads(qkv[:, q_dim:q_dim + kv_dim], self.n_kv)
            v = _heads(qkv[:, q_dim + kv_dim:], self.n_kv)
            self.keys[i][:, :, start:end] = _rotate(k, cos, sin)
            self.values[i][:, :, start:end] = v
            att = F.scaled_dot_product_attention(_rotate(q, cos, sin), self.keys[i][:, :, :end],
                                                 self.values[i][:, :, :end], attn_mask=mask, enable_gqa=True)
            x = x + att[0].transpose(0, 1).reshape(n, q_dim) @ w_o.T
            gate, up = (norm2(x) @ w_gate_up.T).chunk(2, dim=-1)
            x = x + (F.silu(gate) * up) @ w_down.T
        self.length = end
        return self.final_norm(x)

    def _rope(self, start: int, end: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        return self._angles(torch.arange(start, end, dtype=torch.float32, device=self.device), dtype)

    def _angles(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # As transformers computes it: float32 angles, cos/sin scaled, then cast to the model dtype.
        freqs = positions[:, None] * self.inv_freq.float()[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * self.rope_scaling).to(dtype), (emb.sin() * self.rope_scaling).to(dtype)


class SharedKVCache:
    """The KV caches of up to `slots` sequences as one tensor per layer (slot, kv head, position,
    dim). Each attached decoder's cache is a view of its slot, so its own `forward` works unchanged,
    while `forward_packed` attends for all of a step's single tokens and drafts with one call per
    layer instead of one per sequence; with `share_prefixes`, a run starting with a prompt prefix
    another run has copies it (`_share_prefixes`). A decoder is attached when made
    (`FusedLlamaDecoder(..., shared=cache)`) and detached when its run ends; a full cache refuses to attach (the caller
    makes a decoder with its own cache instead). Growing past the capacity reallocates every slot.
    Slots start zeroed: a padded row of the batched attention reads finite numbers it then drops."""

    def __init__(self, model, slots: int, capacity: int = 2 * _BLOCK, any_device: bool = False,
                 share_prefixes: bool = True):
        self.share_prefixes = share_prefixes  # runs take a common prompt prefix from each other
        probe = FusedLlamaDecoder(model, capacity=1, any_device=any_device)
        self.n_kv, self.head_dim, self.layers = probe.n_kv, probe.head_dim, len(probe.layers)
        self.max_positions, self.dtype, self.device = probe.max_positions, probe.dtype, probe.device
        self.owners: list[FusedLlamaDecoder | None] = [None] * slots
        self.prompts: deque[_Prompt] = deque(maxlen=slots)  # recent first forwards, for `shared_prefix`
        self.capacity = 0
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.grow(min(capacity, self.max_positions))

    def free(self) -> int:
        return self.owners.count(None)

    def attach(self, dec: FusedLlamaDecoder) -> None:
        if None not in self.owners:
            raise ValueError(f"all {len(self.owners)} slots of the shared KV cache are taken")
        slot = self.owners.index(None)
        self.owners[slot] = dec
        dec.shared, dec.slot = self, slot
        self._bind(dec)

    def detach(self, dec: FusedLlamaDecoder) -> None:
        if dec.shared is self:
            self.owners[dec.slot] = None
            dec.keys, dec.values, dec.shared, dec.slot, dec.capacity = [], [], None, -1, 0

    def grow(self, capacity: int) -> None:
        if capacity <= self.capacity:
            return
        shape = (len(self.owners), self.n_kv, capacity, self.head_dim)
        keys = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(self.layers)]
        values = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(self.layers)]
        for old, new in ((self.keys, keys), (self.values, values)):
            for o, n in zip(old, new):
                n[:, :, :self.capacity] = o
        self.keys, self.values, self.capacity = keys, values, capacity
        for dec in self.owners:
            if dec is not None:
                self._bind(dec)

    def shared_prefix(self, ids: Sequence[int]) -> "tuple[_Prompt | None, int]":
        """The remembered prompt sharing the longest prefix with `ids`, and that prefix's length
        (short of the whole: the last id is always computed, its hidden state is what the run reads)."""
        best, best_len = None, 0
        for prompt in self.prompts:
            n = _common_prefix(prompt.ids, ids)
            if n > best_len:
                best, best_len = prompt, n
        return best, best_len

    def remember(self, ids: Sequence[int], dec: FusedLlamaDecoder) -> None:
        """Keep a copy of a first forward's keys and values (the slot is rewritten by its next run)."""
        n = len(ids)
        if any(p.ids == tuple(ids) for p in self.prompts):
            return
        self.prompts.append(_Prompt(tuple(ids), [k[0, :, :n].clone() for k in dec.keys],
                                    [v[0, :, :n].clone() for v in dec.values]))

    def _bind(self, dec: FusedLlamaDecoder) -> None:
        s = dec.slot
        dec.keys = [k[s:s + 1] for k in self.keys]
        dec.values = [v[s:s + 1] for v in self.values]
        dec.capacity = self.capacity


@dataclass
class _Prompt:
    """A first forward's ids and its keys and values per layer (kv head, position, dim)."""

    ids: tuple[int, ...]
    keys: list[torch.Tensor]
    values: list[torch.Tensor]


def _heads(x: torch.Tensor, n: int) -> torch.Tensor:
    """(tokens, n*d) -> (1, n, tokens, d)"""
    return x.view(x.shape[0], n, -1).transpose(0, 1).unsqueeze(0)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


# Runs share a common prompt prefix of at least this many ids (shorter ones are not worth a copy).
SHARE_MIN = 8

# A sequence with at most this many new ids (a decoded token and its draft) attends in the shared
# cache's one call per layer; a longer one (a prompt, a document) on its own.
SHORT = 4


@torch.inference_mode()
def forward_packed(decoders: Sequence[FusedLlamaDecoder], ids: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """Several sequences' new ids in one pass over the weights: every projection, the rotary
    embedding and the MLP run once over all their tokens packed into one matrix (no padding).
    Attention keeps each sequence to its own cache at its own positions: the short steps (decoded
    tokens, drafts) of sequences in one `SharedKVCache` in one masked call per layer, padded to the
    longest of them; any other sequence alone. Returns each sequence's final-norm hidden states, as
    its own `forward` would (up to float rounding: a matmul over more rows, a masked attention)."""
    first = decoders[0]
    pool = first.shared
    ids, copies, fresh = _share_prefixes(decoders, ids) if pool is not None and pool.share_prefixes else (ids, {}, [])
    spans, starts = [], []
    for dec, new in zip(decoders, ids):
        start = dec.length
        dec._reserve(start + len(new))
        starts.append(start)
        spans.append(len(new))
    flat = [t for new in ids for t in new]
    device = first.device
    x = F.embedding(torch.tensor(flat, dtype=torch.long, device=device), first.embed)
    positions = torch.tensor([p for s, n in zip(starts, spans) for p in range(s, s + n)], dtype=torch.float32,
                             device=device)
    cos, sin = first._angles(positions, x.dtype)
    cos, sin = cos[:, None, :], sin[:, None, :]  # (tokens, 1, head_dim): one angle per token, every head
    bounds, a = [], 0
    for s, n in zip(starts, spans):
        bounds.append((a, a + n, s, s + n))
        a += n
    # A run that copies its prefix from another run of this call attends after that run wrote it.
    together = [j for j, dec in enumerate(decoders) if pool is not None and dec.shared is pool and spans[j] <= SHORT
                and not isinstance(copies.get(j), int)]
    alone = sorted(set(range(len(decoders))) - set(together))
    step = _SharedStep(pool, [decoders[j].slot for j in together], [bounds[j] for j in together], len(flat),
                       device) if together else None
    masks = {j: torch.ones(spans[j], bounds[j][3], dtype=torch.bool, device=device).tril(starts[j])
             if spans[j] > 1 else None for j in alone}
    tokens, heads, kv_heads, d = len(flat), first.n_heads, first.n_kv, first.head_dim
    q_dim, kv_dim = heads * d, kv_heads * d
    for i, (norm1, w_qkv, w_o, norm2, w_gate_up, w_down) in enumerate(first.layers):
        qkv = norm1(x) @ w_qkv.T
        q = _rotate(qkv[:, :q_dim].view(tokens, heads, d), cos, sin)
        k = _rotate(qkv[:, q_dim:q_dim + kv_dim].view(tokens, kv_heads, d), cos, sin)
        v = qkv[:, q_dim + kv_dim:].view(tokens, kv_heads, d)
        att = torch.empty_like(q) if alone else None
        if step is not None:
            shared = step.attend(i, q, k, v)
            if att is None:
                att = shared
            else:
                att[step.rows] = shared
        # Heads first, tokens second: a sequence's rows are then one slice of each.
        q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
        for j in alone:
            a, b, s, e = bounds[j]
            keys, values = decoders[j].keys[i][0], decoders[j].values[i][0]
            if isinstance(copies.get(j), int):
                source = decoders[copies[j]]
                keys[:, :s] = source.keys[i][0, :, :s]
                values[:, :s] = source.values[i][0, :, :s]
            keys[:, s:e] = k[:, a:b]
            values[:, s:e] = v[:, a:b]
            att[a:b] = F.scaled_dot_product_attention(q[None, :, a:b], keys[None, :, :e], values[None, :, :e],
                                                      attn_mask=masks[j], enable_gqa=True)[0].transpose(0, 1)
        x = x + att.reshape(tokens, q_dim) @ w_o.T
        gate, up = (norm2(x) @ w_gate_up.T).chunk(2, dim=-1)
        x = x + (F.silu(gate) * up) @ w_down.T
    for dec, (a, b, s, e) in zip(decoders, bounds):
        dec.length = e
    for j, full in fresh:
        pool.remember(full, decoders[j])
    h = first.final_norm(x)
    return [h[a:b] for a, b, _, _ in bounds]


def _share_prefixes(decoders: Sequence[FusedLlamaDecoder], ids: Sequence[Sequence[int]]):
    """Runs of a shared cache that start a sequence with a prefix another run already has (the
    task's instruction, a dataset's common template) take that prefix's keys and values instead of
    computing them: from a remembered prompt (copied now), or from an earlier run of this same call
    (copied layer by layer, once that run has written it). Their positions are identical in either
    case (same ids, same positions, causal attention); only the float rounding of a shorter matmul
    differs. Returns the ids left to compute, {run: remembered prompt or earlier run}, and the
    first forwards to remember afterwards, (run, ids)."""
    pool = decoders[0].shared
    ids = list(ids)
    copies: dict[int, "_Prompt | int"] = {}
    fresh: list[tuple[int, Sequence[int]]] = []
    for j, dec in enumerate(decoders):
        if dec.shared is not pool or dec.length or len(ids[j]) <= SHARE_MIN:
            continue
        full = ids[j]
        source: "_Prompt | int | None"
        source, n = pool.shared_prefix(full)
        for e, other in fresh:
            m = _common_prefix(other, full)
            if m > n:
                source, n = e, m
        fresh.append((j, full))
        if source is None or n < SHARE_MIN:
            continue
        copies[j] = source
        dec._reserve(len(full))
        if not isinstance(source, int):
            for i in range(len(dec.keys)):
                dec.keys[i][0, :, :n] = source.keys[i][:, :n]
                dec.values[i][0, :, :n] = source.values[i][:, :n]
        dec.length = n
        ids[j] = full[n:]
    return ids, copies, fresh


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Leading ids `a` and `b` share, short of all of `b` (its last id is always computed)."""
    n = min(len(a), len(b) - 1)
    for i in range(n):
        if a[i] != b[i]:
            return i
    return max(n, 0)


class _SharedStep:
    """One packed call's short sequences in a shared cache, laid out once for every layer: where
    each token's key and value go (slot, position), where its query sits in the padded
    (slot, step, head, dim) block, and which positions each query may see."""

    def __init__(self, pool: SharedKVCache, slots: list[int], bounds: list[tuple[int, int, int, int]],
                 tokens: int, device: torch.device):
        self.pool = pool
        width = max(b - a for a, b, _, _ in bounds)
        self.used = max(slots) + 1  # slots 0..used-1 take part; the others' rows are padding
        self.length = max(e for _, _, _, e in bounds)
        rows, slot_of, step_of, pos_of = [], [], [], []
        for slot, (a, b, s, _) in zip(slots, bounds):
            for t in range(b - a):
                rows.append(a + t)
                slot_of.append(slot)
                step_of.append(t)
                pos_of.append(s + t)
        as_long = lambda xs: torch.tensor(xs, dtype=torch.long, device=device)  # noqa: E731
        self.rows, self.slot_of, self.step_of, self.pos_of = map(as_long, (rows, slot_of, step_of, pos_of))
        self.every_row = rows == list(range(tokens))  # all of the call's tokens, in order
        # A padded query sees position 0 only (finite numbers, dropped); a real one its own past.
        last = torch.zeros(self.used, width, dtype=torch.long, device=device)
        last[self.slot_of, self.step_of] = self.pos_of
        self.mask = (torch.arange(self.length, device=device)[None, None, :] <= last[:, :, None])[:, None]
        self.width = width

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Writes these tokens' keys and values (tokens, kv head, dim) into their slots; returns
        their attention output (tokens, head, dim), in `self.rows` order."""
        if not self.every_row:
            q, k, v = q[self.rows], k[self.rows], v[self.rows]
        keys, values = self.pool.keys[layer], self.pool.values[layer]
        keys[self.slot_of, :, self.pos_of] = k
        values[self.slot_of, :, self.pos_of] = v
        padded = q.new_zeros(self.used, self.width, q.shape[1], q.shape[2])
        padded[self.slot_of, self.step_of] = q
        out = F.scaled_dot_product_attention(padded.transpose(1, 2), keys[:self.used, :, :self.length],
                                             values[:self.used, :, :self.length], attn_mask=self.mask,
                                             enable_gqa=True)
        return out.transpose(1, 2)[self.slot_of, self.step_of]
