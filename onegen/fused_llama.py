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

    def __init__(self, model, capacity: int = 4 * _BLOCK, any_device: bool = False):
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
        self._alloc(min(capacity, self.max_positions))

    def _alloc(self, capacity: int) -> None:
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

    def truncate(self, length: int) -> None:
        """Forget every position from `length` on; their slots are overwritten by later calls."""
        self.length = max(0, min(self.length, length))

    @torch.inference_mode()
    def forward(self, ids: Sequence[int]) -> torch.Tensor:
        """Final-norm hidden states (len(ids), hidden) of `ids` appended to the sequence."""
        n, start = len(ids), self.length
        end = start + n
        if end > self.max_positions:
            raise ValueError(f"{end} positions exceed the model's {self.max_positions}")
        if end > self.capacity:
            self._alloc(min(self.max_positions, -(-2 * end // _BLOCK) * _BLOCK))
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


def _heads(x: torch.Tensor, n: int) -> torch.Tensor:
    """(tokens, n*d) -> (1, n, tokens, d)"""
    return x.view(x.shape[0], n, -1).transpose(0, 1).unsqueeze(0)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


@torch.inference_mode()
def forward_packed(decoders: Sequence[FusedLlamaDecoder], ids: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """Several sequences' new ids in one pass over the weights: every projection, the rotary
    embedding and the MLP run once over all their tokens packed into one matrix (no padding), and
    each sequence attends only to its own cache at its own positions: the one step taken per
    sequence, kept to a handful of tensor ops because at a large batch of single tokens their
    dispatch, not arithmetic, is what the per-sequence part costs. Returns each sequence's
    final-norm hidden states, as its own `forward` would (up to the float rounding of a matmul over
    more rows)."""
    first = decoders[0]
    spans, starts = [], []
    for dec, new in zip(decoders, ids):
        start, end = dec.length, dec.length + len(new)
        if end > dec.max_positions:
            raise ValueError(f"{end} positions exceed the model's {dec.max_positions}")
        if end > dec.capacity:
            dec._alloc(min(dec.max_positions, -(-2 * end // _BLOCK) * _BLOCK))
        starts.append(start)
        spans.append(len(new))
    flat = [t for new in ids for t in new]
    device = first.device
    x = F.embedding(torch.tensor(flat, dtype=torch.long, device=device), first.embed)
    positions = torch.tensor([p for s, n in zip(starts, spans) for p in range(s, s + n)], dtype=torch.float32,
                             device=device)
    cos, sin = first._angles(positions, x.dtype)
    cos, sin = cos[:, None, :], sin[:, None, :]  # (tokens, 1, head_dim): one angle per token, every head
    masks = [torch.ones(n, s + n, dtype=torch.bool, device=device).tril(s) if n > 1 else None for s, n in zip(starts, spans)]
    bounds = []
    a = 0
    for s, n in zip(starts, spans):
        bounds.append((a, a + n, s, s + n))
        a += n
    tokens, heads, kv_heads, d = len(flat), first.n_heads, first.n_kv, first.head_dim
    q_dim, kv_dim = heads * d, kv_heads * d
    for i, (norm1, w_qkv, w_o, norm2, w_gate_up, w_down) in enumerate(first.layers):
        qkv = norm1(x) @ w_qkv.T
        # Heads first, tokens second: a sequence's rows are then one slice of each.
        q = _rotate(qkv[:, :q_dim].view(tokens, heads, d), cos, sin).transpose(0, 1)
        k = _rotate(qkv[:, q_dim:q_dim + kv_dim].view(tokens, kv_heads, d), cos, sin).transpose(0, 1)
        v = qkv[:, q_dim + kv_dim:].view(tokens, kv_heads, d).transpose(0, 1)
        atts = []
        for dec, mask, (a, b, s, e) in zip(decoders, masks, bounds):
            keys, values = dec.keys[i][0], dec.values[i][0]
            keys[:, s:e] = k[:, a:b]
            values[:, s:e] = v[:, a:b]
            atts.append(F.scaled_dot_product_attention(q[None, :, a:b], keys[None, :, :e], values[None, :, :e],
                                                       attn_mask=mask, enable_gqa=True)[0])
        att = torch.cat(atts, dim=1).transpose(0, 1).reshape(tokens, q_dim)
        x = x + att @ w_o.T
        gate, up = (norm2(x) @ w_gate_up.T).chunk(2, dim=-1)
        x = x + (F.silu(gate) * up) @ w_down.T
    for dec, (a, b, s, e) in zip(decoders, bounds):
        dec.length = e
    h = first.final_norm(x)
    return [h[a:b] for a, b, _, _ in bounds]
