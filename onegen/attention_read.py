"""What it read: how much attention each written token puts on each inserted paragraph.

For a finished multi-hop or single-hop run, one forward of the run's sequence with the eager
attention (the fused decoder and the fast attention kernels never form the weights) gives every
layer's attention rows. Per written token after the first insertion, the share of its attention
that lands on each inserted paragraph's tokens, averaged over heads and layers; what is left lands
on the prompt and the written text ("rest"), so shares + rest = 1 per token. The same shares per
layer group (bottom, middle, top third of the layers) show where in the stack the paragraph is read.

Entity linking inserts no paragraph (its retrievals link mentions after they are written), so it
has nothing to read: the result says so rather than show an empty strip.

    read = attention_read(lm, trace)   # AttentionRead: paragraphs, one ReadToken per written token
    both = explain(lm, trace, index)   # the lens and the read from one shared forward
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from .index import VectorIndex
from .lens import QueryLens, WhyError, WhyView, ids_tensor, check_model, lens_from_states, query_lens, trace_sequence
from .loading import LoadedModel
from .tasks import get_task
from .trace import Trace

LAYER_GROUPS = 3  # bottom, middle, top
GROUP_NAMES = ("bottom", "middle", "top")



@dataclass
class Paragraph:
    step: int  # the retrieval that inserted it
    title: str
    start: int  # positions [start, end) of its inserted tokens, <paragraph> and </paragraph> included
    end: int


@dataclass
class LayerGroup:
    name: str
    first: int  # decoder layers [first, last], 0-based
    last: int


@dataclass
class ReadToken:
    index: int  # into Trace.tokens
    position: int
    text: str
    shares: list[float]  # per paragraph (AttentionRead.paragraphs order), averaged over heads and layers
    rest: float  # on everything else (prompt, written text); shares + rest = 1
    groups: list[list[float]]  # per layer group, the shares averaged over that group's layers only

    @property
    def main(self) -> int | None:
        """The paragraph read most, None when none was read at all."""
        if not self.shares or max(self.shares) <= 0:
            return None
        return max(range(len(self.shares)), key=self.shares.__getitem__)


@dataclass
class AttentionRead(WhyView):
    KIND = "attention-read"

    task: str
    paragraphs: list[Paragraph]
    groups: list[LayerGroup]
    tokens: list[ReadToken]
    forward_tokens: int
    seconds: float
    note: str = ""

    @classmethod
    def _from_body(cls, body: dict[str, Any]) -> "AttentionRead":
        return cls(**{**body, "paragraphs": [Paragraph(**p) for p in body["paragraphs"]],
                      "groups": [LayerGroup(**g) for g in body["groups"]],
                      "tokens": [ReadToken(**t) for t in body["tokens"]]})


def no_paragraphs_note(trace: Trace) -> str:
    """Why a run has no paragraph to read: its task never inserts one, or this run inserted none."""
    task = get_task(trace.task)
    if task.spec.insertion is None:
        return (f"{task.label} inserts no paragraph: its retrievals link what was already written, so no "
                "generated token can read a retrieved document.")
    return "No paragraph was inserted in this run, so there is nothing the answer could read."


def inserted_paragraphs(trace: Trace) -> list[Paragraph]:
    """The inserted documents' spans, in order, each with the retrieval that inserted it."""
    spans: list[tuple[int, int]] = []
    for t in trace.tokens:
        if t.kind != "inserted":
            continue
        if spans and spans[-1][1] == t.position:
            spans[-1] = (spans[-1][0], t.position + 1)
        else:
            spans.append((t.position, t.position + 1))
    inserting = [r for r in trace.retrievals if r.inserted_tokens]
    out = []
    for (start, end), r in zip(spans, inserting):
        hit = r.chosen_hit
        out.append(Paragraph(step=r.step, title=hit.title if hit else "", start=start, end=end))
    return out


def layer_groups(layers: int, n: int = LAYER_GROUPS) -> list[LayerGroup]:
    """The decoder layers split into `n` contiguous groups (fewer for a model with fewer layers):
    bottom, middle, top; a two-layer model has bottom and top."""
    n = max(1, min(n, layers))
    bounds = [round(i * layers / n) for i in range(n + 1)]
    names = {1: ("all",), 2: ("bottom", "top"), 3: GROUP_NAMES}.get(n) or tuple(f"group {i + 1}" for i in range(n))
    return [LayerGroup(names[i], bounds[i], bounds[i + 1] - 1) for i in range(n)]


@contextmanager
def eager_attention(lm: LoadedModel) -> Iterator[None]:
    """The model's attention switched to the eager kernel (the one that forms the weights), and back."""
    model = lm.model
    before = getattr(model.config, "_attn_implementation", None)
    if before == "eager" or not hasattr(model, "set_attn_implementation"):
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)


@dataclass
class _Plan:
    """What an attention read needs before the forward: the paragraphs, the rows read, and why
    there is nothing to read (`note`, with no rows)."""

    paragraphs: list[Paragraph]
    groups: list[LayerGroup]
    rows: list[tuple[int, int]]  # (token index, position) of the written tokens after the first insertion
    note: str = ""


def _plan(lm: LoadedModel, trace: Trace) -> _Plan:
    groups = layer_groups(len(lm.backbone.layers))
    paragraphs = inserted_paragraphs(trace)
    if not paragraphs:
        return _Plan([], groups, [], no_paragraphs_note(trace))
    rows = [(i, t.position) for i, t in enumerate(trace.tokens) if t.kind != "inserted" and t.position >= paragraphs[0].end]
    note = "" if rows else "The run wrote nothing after its first inserted paragraph."
    return _Plan(paragraphs, groups, rows, note)


def _forward(lm: LoadedModel, ids: list[int], plan: _Plan) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One forward with eager attention: the final-norm states [S, dim], and per decoder layer the
    head-mean attention of the plan's rows summed over each paragraph's keys, [T, P]."""
    positions = torch.tensor([p for _, p in plan.rows], dtype=torch.long)
    # One column selector per paragraph: [S, P] with 1 where a key position belongs to it.
    member = torch.zeros(len(ids), len(plan.paragraphs))
    for j, p in enumerate(plan.paragraphs):
        member[p.start:p.end, j] = 1.0
    per_layer: list[torch.Tensor] = []

    def keep(module, args, output):
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if weights is None:
            raise WhyError("the model's attention did not return its weights; the attention view needs the eager "
                           "attention of a transformers model")
        heads = weights[0, :, positions.to(weights.device), :].float().mean(0).cpu()  # [T, S]
        per_layer.append(heads @ member)

    hooks = [layer.self_attn.register_forward_hook(keep) for layer in lm.backbone.layers]
    try:
        with eager_attention(lm), torch.inference_mode():
            states = lm.backbone(input_ids=ids_tensor(lm, ids), use_cache=False).last_hidden_state[0]
    finally:
        for h in hooks:
            h.remove()
    return states, per_layer


def _assemble(trace: Trace, plan: _Plan, per_layer: list[torch.Tensor], forward_tokens: int,
              seconds: float) -> AttentionRead:
    stacked = torch.stack(per_layer)  # [L, T, P]
    overall = stacked.mean(0)
    by_group = [stacked[g.first:g.last + 1].mean(0) for g in plan.groups]
    tokens = []
    for k, (i, pos) in enumerate(plan.rows):
        shares = [round(float(x), 6) for x in overall[k]]
        tokens.append(ReadToken(index=i, position=pos, text=trace.tokens[i].text, shares=shares,
                                rest=round(max(0.0, 1.0 - sum(shares)), 6),
                                groups=[[round(float(x), 6) for x in g[k]] for g in by_group]))
    return AttentionRead(task=trace.task, paragraphs=plan.paragraphs, groups=plan.groups, tokens=tokens,
                         forward_tokens=forward_tokens, seconds=round(seconds, 4))


def _empty(trace: Trace, plan: _Plan) -> AttentionRead:
    return AttentionRead(task=trace.task, paragraphs=plan.paragraphs, groups=plan.groups, tokens=[],
                         forward_tokens=0, seconds=0.0, note=plan.note)


def attention_read(lm: LoadedModel, trace: Trace) -> AttentionRead:
    """Each written token's attention on each inserted paragraph (see the module's docstring)."""
    check_model(lm, trace)
    plan = _plan(lm, trace)
    if not plan.rows:
        return _empty(trace, plan)
    ids = trace_sequence(trace)
    t0 = time.perf_counter()
    _, per_layer = _forward(lm, ids, plan)
    return _assemble(trace, plan, per_layer, len(ids), time.perf_counter() - t0)


@dataclass
class Explanation:
    """The query lens and the attention read of one run from one shared forward of its sequence."""

    lens: QueryLens
    read: AttentionRead
    forward_tokens: int  # the one forward both views read
    seconds: float  # from the request to both views: the forward, the searches, the sums

    def to_dict(self) -> dict[str, Any]:
        return {"lens": self.lens.to_dict(), "attention": self.read.to_dict(),
                "forward_tokens": self.forward_tokens, "seconds": self.seconds}


def explain(lm: LoadedModel, trace: Trace, index: VectorIndex) -> Explanation:
    """Both views of a finished run for the price of one forward: the eager-attention pass that
    gives the attention rows also gives the final-norm states the lens searches with."""
    t0 = time.perf_counter()
    check_model(lm, trace, index)
    plan = _plan(lm, trace)
    ids = trace_sequence(trace)
    if not plan.rows:
        lens = query_lens(lm, trace, index)
        read = _empty(trace, plan)
    else:
        states, per_layer = _forward(lm, ids, plan)
        forward_s = time.perf_counter() - t0
        lens = lens_from_states(trace, index, states, forward_s)
        read = _assemble(trace, plan, per_layer, len(ids), forward_s)
    return Explanation(lens=lens, read=read, forward_tokens=len(ids), seconds=round(time.perf_counter() - t0, 4))
