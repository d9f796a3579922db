"""Training the ImpRAG mode (onegen/imprag.py): its retrieval scores and its reader, over one forward.

Per question: the prompt, the answer the model should write, and candidate passages (the gold
ones and negatives). The losses, in the order of the published recipe:

- **warm-up** (multi-label NCE): the retrieval scores `query . passage / temperature` over the
  candidates, pushed towards the gold passages: -log(sum over gold of softmax(scores));
- **self-distillation**: the scores' distribution pulled (KL) towards the distribution of how well
  each candidate, read alone by the middle group, lets the model write the answer
  (softmax of the answer's log-likelihood / teacher temperature; the teacher is not differentiated);
- **LM**: the answer's negative log-likelihood with the gold passages in the reader, or (`reader:
  "candidates"`) with every candidate, gold among negatives, as the mode reads its top-k.

The warm-up runs for `warmup_steps`, then distillation replaces it; the LM loss runs throughout.
Everything is plain torch through `SplitForward`, so any Llama-family model trains (LoRA or not).
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from ..imprag import Centring, ImpragError, LayerSplit, SplitForward, SplitState, _LayerCache
from ..fsutil import atomic_write
from .trainer import Trainer


READERS = ("gold", "candidates")


@dataclass
class ImpragSpec:
    """The recipe key `imprag`: the layer groups and the losses' settings."""

    bottom: int
    top: int
    warmup_steps: int = 50
    temperature: float = 0.05  # on cosine scores, as the OneGen recipe's InfoNCE
    teacher_temperature: float = 1.0  # on the answer's log-likelihood per candidate
    retrieval_weight: float = 1.0
    lm_weight: float = 1.0
    # centre query and passage vectors by running means (RunningCentring) before scoring
    centre: bool = False
    centring_momentum: float = 0.95
    tokens: str = "last"  # onegen.imprag.TOKEN_POOLING: which tokens' states make the vectors
    # what the LM loss's reader reads: "gold" (the gold passages) or "candidates" (all of them, in
    # the sample's order, as a mode that reads several hits meets them; docs/imprag.md)
    reader: str = "gold"
    # how many of its top hits the exported mode's reader reads (None: every hit it lists); training
    # never reads it: it is the inference setting the evaluation chose (docs/imprag.md)
    reads: int | None = None

    def __post_init__(self):
        if self.warmup_steps < 0 or self.temperature <= 0 or self.teacher_temperature <= 0:
            raise ImpragError("imprag: warmup_steps must be >= 0 and the temperatures > 0")
        if not 0 <= self.centring_momentum < 1:
            raise ImpragError("imprag: centring_momentum must be in [0, 1)")
        if self.reads is not None and (not isinstance(self.reads, int) or self.reads < 1):
            raise ImpragError(f"imprag: reads must be a whole number of passages, 1 or more; got {self.reads!r}")
        if self.reader not in READERS:
            raise ImpragError(f"imprag: reader must be one of {', '.join(READERS)}; got {self.reader!r}")
        LayerSplit(1, 1, 1, self.tokens)  # an unknown pooling is refused with the recipe, not mid-run

    def split(self, n_layers: int) -> LayerSplit:
        return LayerSplit(self.bottom, self.top, n_layers, self.tokens)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ImpragSample:
    prompt: list[int]  # ends where the query is read (the last prompt token)
    answer: list[int]  # what the model writes after reading
    passages: list[list[int]]  # candidates, as the reader reads them
    gold: list[bool]  # one per candidate; at least one True


@dataclass
class ImpragLosses:
    retrieval: torch.Tensor  # multi-label NCE (warm-up) or distillation KL
    lm: torch.Tensor
    retrieval_kind: str  # "nce" or "distill"
    recall_at_1: float  # share of samples whose top-scored candidate is gold

    @property
    def total(self) -> torch.Tensor:
        return self.retrieval + self.lm


def fork(state: SplitState) -> SplitState:
    """A copy of an input's state before reading, sharing its bottom-group caches (the input's
    bottom forward runs once for every candidate it reads)."""
    if state.read:
        raise ImpragError("fork an input before it reads its passages")
    return SplitState(input_length=state.input_length, query=state.query, bottom_hidden=state.bottom_hidden,
                      caches=[_LayerCache(c.keys, c.values) for c in state.caches], next_position=state.next_position)


def answer_nll(fwd: SplitForward, state: SplitState, passages: Sequence[Sequence[int]],
               answer: Sequence[int]) -> torch.Tensor:
    """Mean negative log-likelihood of `answer` after the input read `passages` (teacher forcing:
    the answer goes through all layers over the same caches, as generation does)."""
    last = fwd.read(state, passages)[:, -1:]
    hidden = last if len(answer) == 1 else torch.cat([last, fwd.step(state, list(answer[:-1]))], dim=1)
    logits = fwd.logits(hidden)[0].float()
    return F.cross_entropy(logits, torch.as_tensor(list(answer), device=logits.device))


class RunningCentring:
    """The running means of query and passage vectors that training centres by (`onegen.imprag.Centring`,
    measured in docs/imprag.md: raw vectors share one direction). Each batch's detached means move
    them by `1 - momentum`; the first batch sets them. The exported model stores them, and the mode
    and the index builder subtract the same means."""

    def __init__(self, momentum: float):
        self.momentum = momentum
        self.query: torch.Tensor | None = None
        self.passage: torch.Tensor | None = None

    def update(self, queries: torch.Tensor, passages: torch.Tensor) -> None:
        q, p = queries.detach().float().mean(0), passages.detach().float().mean(0)
        if self.query is None:
            self.query, self.passage = q, p
        else:
            self.query = self.momentum * self.query + (1 - self.momentum) * q
            self.passage = self.momentum * self.passage + (1 - self.momentum) * p

    def centring(self) -> Centring | None:
        if self.query is None:
            return None
        return Centring(tuple(self.query.tolist()), tuple(self.passage.tolist()))

    def state_dict(self) -> dict:
        return {} if self.query is None else {"query": self.query, "passage": self.passage}

    def load_state_dict(self, state: dict) -> None:
        self.query, self.passage = state.get("query"), state.get("passage")


def sample_losses(fwd: SplitForward, sample: ImpragSample, spec: ImpragSpec, distill: bool,
                  centring: RunningCentring | None = None, vectors=None):
    """(retrieval loss, LM loss, top candidate is gold) for one question. `vectors`: its
    (input state, passage vectors) if already computed; `centring`: means subtracted before scoring."""
    if not any(sample.gold):
        raise ImpragError("a training question needs at least one gold passage")
    state, passages = vectors if vectors is not None else (fwd.start(sample.prompt), fwd.passage_vectors(sample.passages))
    query = state.query
    if centring is not None and centring.query is not None:
        query = query - centring.query.to(query.dtype)
        passages = passages - centring.passage.to(passages.dtype)
    scores = F.normalize(passages, dim=-1) @ F.normalize(query, dim=0) / spec.temperature
    log_p = F.log_softmax(scores.float(), dim=0)
    gold = torch.tensor(sample.gold, device=scores.device)
    if distill:
        with torch.no_grad():
            ll = torch.stack([-answer_nll(fwd, fork(state), [p], sample.answer) * len(sample.answer)
                              for p in sample.passages])
            target = F.softmax(ll / spec.teacher_temperature, dim=0)
        retrieval = F.kl_div(log_p, target, reduction="sum")
    else:
        retrieval = -torch.logsumexp(log_p[gold], dim=0)
    read = sample.passages if spec.reader == "candidates" else [p for p, g in zip(sample.passages, sample.gold) if g]
    lm = answer_nll(fwd, fork(state), read, sample.answer)
    return retrieval, lm, bool(gold[int(scores.argmax())])


def batch_losses(fwd: SplitForward, samples: Sequence[ImpragSample], spec: ImpragSpec, step: int,
                 centring: RunningCentring | None = None) -> ImpragLosses:
    """The batch's losses; with `centring`, its running means first take in this batch's vectors."""
    distill = step >= spec.warmup_steps
    vectors = [(fwd.start(s.prompt), fwd.passage_vectors(s.passages)) for s in samples]
    if centring is not None:
        centring.update(torch.stack([st.query for st, _ in vectors]), torch.cat([p for _, p in vectors]))
    parts = [sample_losses(fwd, s, spec, distill, centring, v) for s, v in zip(samples, vectors)]
    retrieval = torch.stack([p[0] for p in parts]).mean()
    lm = torch.stack([p[1] for p in parts]).mean()
    return ImpragLosses(spec.retrieval_weight * retrieval, spec.lm_weight * lm, "distill" if distill else "nce",
                        sum(p[2] for p in parts) / len(parts))


# -- from the world's single-hop items ---------------------------------------------------------------

def world_sample(item: dict, ptok, corpus, rng: random.Random, n_neg: int) -> ImpragSample:
    """A world single-hop item: the single-hop prompt, its answer in the protocol's output shape,
    the gold paragraph and `n_neg` of the item's other context paragraphs, shuffled."""
    from ..protocols import get_spec
    from .examples import SequenceBuilder, insertion_parts

    spec = get_spec("single-hop")
    prompt = ptok.encode_template(spec.prompt_template, input=item["question"]).ids
    out = SequenceBuilder(ptok)
    out.gen_token("[Relevant]")
    out.gen_text(item["answers"][0])
    out.gen_token("[Fully supported]")
    out.gen_token("[Utility:5]")
    out.gen([ptok.hf.eos_token_id])
    gold_key = f"single-hop|{item['gold_id']}"
    negs = [f"single-hop|{c['id']}" for c in item["ctxs"]
            if c["id"] != item["gold_id"] and f"single-hop|{c['id']}" in corpus.docs]
    keys = [gold_key, *rng.sample(negs, min(n_neg, len(negs)))]
    rng.shuffle(keys)
    passages = [ptok.encode(insertion_parts("single-hop", corpus.docs[k].title, corpus.docs[k].text)).ids
                for k in keys]
    return ImpragSample(prompt, out.ids, passages, [k == gold_key for k in keys])


# -- the trainer ------------------------------------------------------------------------------------

class ImpragTrainer(Trainer):
    """A recipe with the `imprag` key: the same model build (new tokens, LoRA), optimizer, schedule,
    checkpoints and log as OneGen's trainer, with the ImpRAG losses on single-hop world items.
    In the step log, `infonce` is the retrieval loss (NCE in the warm-up, then the distillation KL),
    `bpr` is 0 and `recall_at_1` is the share of questions whose top candidate is gold."""

    def __init__(self, recipe, world_dir, *, log=print):
        if recipe.imprag is None:
            raise ValueError("the recipe has no imprag key")
        if recipe.tasks != ["single-hop"]:
            raise ValueError("an imprag recipe trains single-hop only: set \"tasks\": [\"single-hop\"]")
        self.spec = ImpragSpec(**recipe.imprag)
        self.centring = RunningCentring(self.spec.centring_momentum) if self.spec.centre else None
        super().__init__(recipe, world_dir, log=log)
        model = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        n = model.config.num_hidden_layers
        lora = recipe.lora
        if lora is not None and lora.top_layers and n - lora.top_layers > self.spec.bottom - 1:
            raise ValueError(f"imprag: LoRA's top {lora.top_layers} layers do not reach the retrieval layer "
                             f"{self.spec.bottom - 1}; nothing below them learns")
        self.forward_ = SplitForward(model, self.spec.split(n))

    def batch(self, step: int):
        """Samples for `step` (deterministic in seed and step), and the step itself (the losses
        switch from warm-up to distillation at `warmup_steps`)."""
        rng = random.Random(f"{self.recipe.seed}:{step}")
        items = self.items["single-hop"]
        n = self.recipe.per_step.get("single-hop", 1)
        samples = [world_sample(rng.choice(items), self.ptoks["single-hop"], self.corpus, rng, self.recipe.hard_negatives)
                   for _ in range(n)]
        return samples, step

    def forward_losses(self, samples, step):
        losses = batch_losses(self.forward_, samples, self.spec, step, self.centring)
        tokens = sum(len(s.prompt) + len(s.answer) + sum(map(len, s.passages)) for s in samples)
        zero = losses.lm.detach() * 0
        return losses.total, losses.lm, zero, losses.retrieval, losses.recall_at_1, tokens

    def save_checkpoint(self) -> None:
        super().save_checkpoint()
        if self.centring is not None:  # beside the weights, so a resumed run centres as before
            atomic_write(self.run_dir / "centring.pt", lambda tmp: torch.save(self.centring.state_dict(), tmp))

    def _resume(self) -> None:
        super()._resume()
        path = self.run_dir / "centring.pt"
        if self.centring is not None and self.step and path.exists():
            self.centring.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))

    def exported_centring(self) -> Centring | None:
        """The means the exported model records (`imprag.centring`), or None without centring."""
        return None if self.centring is None else self.centring.centring()
