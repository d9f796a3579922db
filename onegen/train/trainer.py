"""The OneGen trainer: LM loss on generated tokens + contrastive losses on retrieval-token states,
queries and their documents in one step, gradients through both sides.

Each step's batch is a pure function of (seed, step), so a resumed run sees exactly the batches
an uninterrupted one would; checkpoints hold only model, optimiser and scheduler state.
"""
from __future__ import annotations

import json
import math
import random
import time
from collections import Counter
from dataclasses import MISSING, asdict, dataclass, fields, is_dataclass
from itertools import zip_longest
from pathlib import Path

import torch

from ..encode import document_prompt
from ..fsutil import atomic_write
from ..loading import ensure_base, load_tokenizer
from ..protocols import get_spec
from ..result_checks import CHECKS
from ..tokenization import ProtocolTokenizer
from .examples import BUILDERS, IGNORE, Corpus, QuerySample, load_corpus, load_task_items
from .losses import bpr_loss, infonce_loss, recall_at_1, similarity
from .recipe import Recipe

MICRO_BATCH_TOKENS = 2048
# What one more micro-batch costs beyond its tokens (a forward and backward call through every
# layer), in padded-token equivalents; it keeps min-padding grouping from splitting needlessly.
GROUP_OVERHEAD_TOKENS = 64


def micro_batches(lengths: list[int], max_tokens: int, strategy: str = "min-padding") -> list[list[int]]:
    """Split sequences (by index) into micro-batches of at most `max_tokens` padded slots (a longer
    sequence goes alone), each padded to its longest member.

    "min-padding" cuts the length-sorted list where padded slots plus a per-batch overhead are
    fewest (exact, by dynamic programming over the cut points); "fill" packs each batch greedily up
    to `max_tokens`, which pads short documents to the width of a long query.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    widths = [lengths[i] for i in order]
    n = len(order)
    if strategy == "fill":
        cuts, i = [], 0
        while i < n:
            j = i + 1
            while j < n and (j - i + 1) * widths[i] <= max_tokens:
                j += 1
            cuts.append((i, j))
            i = j
    elif strategy == "min-padding":
        best = [0.0] + [float("inf")] * n  # best[j]: cost of batching the j longest sequences
        start = [0] * (n + 1)
        for j in range(1, n + 1):
            for i in range(j - 1, -1, -1):  # batch i..j-1, padded to widths[i]
                if j - i > 1 and (j - i) * widths[i] > max_tokens:
                    break
                cost = best[i] + (j - i) * widths[i] + GROUP_OVERHEAD_TOKENS
                if cost < best[j]:
                    best[j], start[j] = cost, i
        cuts, j = [], n
        while j > 0:
            cuts.append((start[j], j))
            j = start[j]
        cuts.reverse()
    else:
        raise ValueError(f"unknown grouping {strategy!r}")
    return [order[i:j] for i, j in cuts]


@dataclass
class StepStats:
    step: int
    loss: float
    lm: float
    bpr: float
    infonce: float
    recall_at_1: float
    lr: float
    seconds: float
    tokens: int


class _Shim:
    """What encode.document_prompt needs from a LoadedModel: protocol tokenisers."""

    def __init__(self, ptoks: dict[str, ProtocolTokenizer]):
        self._ptoks = ptoks

    def ptok(self, task: str) -> ProtocolTokenizer:
        return self._ptoks[task]


def all_token_strings(tasks: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for t in tasks:
        out.update(get_spec(t).added_tokens)
    return out


# Recipe keys a run may change when it resumes: where things go, and how fast it runs.
RESUMABLE_KEYS = {"out", "run_dir", "threads", "compile", "checkpoint_every"}


# Settings of the exported model's inference that training never reads: changing them neither
# refuses a checkpoint nor needs a retrain (`--export-only` writes them).
INFERENCE_ONLY = {"imprag": ("reads",)}
INFERENCE_ONLY_KEYS = tuple(CHECKS)  # the result checks (onegen/result_checks.py)


def _training_view(recipe: dict) -> dict:
    out = {k: v for k, v in recipe.items() if k not in INFERENCE_ONLY_KEYS}
    for key, subkeys in INFERENCE_ONLY.items():
        if isinstance(out.get(key), dict):
            out[key] = {k: v for k, v in out[key].items() if k not in subkeys}
    return out


def recipe_changes(saved: dict, current: dict) -> list[str]:
    """Keys whose values differ between a checkpoint's recipe and the one resuming it. `steps` may
    grow under a constant schedule (a run stopped at N equals an N-step recipe), not under cosine."""
    saved, current = _training_view(saved), _training_view(current)
    free = RESUMABLE_KEYS | ({"steps"} if current.get("schedule", "constant") == "constant" else set())
    # A key a checkpoint lacks (it predates the key) had the recipe's default then.
    # Defaults as to_dict() writes them (a factory's value, a dataclass as a dict).
    defaults = {f.name: f.default_factory() if f.default_factory is not MISSING else f.default
                for f in fields(Recipe) if f.default is not MISSING or f.default_factory is not MISSING}
    defaults = {k: asdict(v) if is_dataclass(v) else v for k, v in defaults.items()}
    saved = {**defaults, **saved}
    return sorted(k for k in set(saved) | set(current) if k not in free and saved.get(k) != current.get(k))


def lr_factor(recipe: Recipe, step: int) -> float:
    """Learning-rate multiplier for optimiser step `step` (0-based): linear warm-up, then constant
    or a cosine decay that reaches min_lr_ratio at the recipe's last step."""
    if step + 1 < recipe.warmup or recipe.schedule == "constant":
        return min(1.0, (step + 1) / max(1, recipe.warmup))
    progress = (step + 1 - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    return recipe.min_lr_ratio + (1 - recipe.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def document_keys(samples: list[QuerySample], corpus: Corpus, max_documents: int, hard_negatives: int) -> list[str]:
    """Every positive, then hard negatives up to `max_documents`, one per anchor per round.

    Rounds interleave the tasks' anchors, and within a round a negative that shares its positive's
    title (a namesake) comes first, so a full budget still leaves each task (a single-hop question's
    only other candidate may be its negative) and each ambiguous name the documents that teach most.
    """
    keys: list[str] = []
    for s in samples:
        for a in s.anchors:
            if a.positive[0] not in keys:
                keys.append(a.positive[0])
    by_task: dict[str, list] = {}
    for s in samples:
        by_task.setdefault(s.task, []).extend(s.anchors)
    interleaved = [a for group in zip_longest(*by_task.values()) for a in group if a is not None]
    for round_ in range(hard_negatives):
        picks = [(a.negatives[round_], a.positive[0]) for a in interleaved if round_ < len(a.negatives)]
        picks.sort(key=lambda kp: corpus.docs[kp[0]].title != corpus.docs[kp[1]].title)  # stable: namesakes first
        for k, _ in picks:
            if len(keys) >= max_documents:
                return keys
            if k not in keys:
                keys.append(k)
    return keys


def sampling_weights(items: list[dict], type_weights: dict[str, float],
                     question_weights: dict[str, float], balance_answers: bool = False,
                     template_weights: dict[str, float] | None = None) -> list[float] | None:
    """Weight of each multi-hop item: its type's weight times that of each question prefix it
    starts with and that of its world template (the item's "template", set by varied
    phrasings), times its answer-position weight when `balance_answers`; None (uniform) when
    nothing is set. A prefix or template no item has is a typo."""
    template_weights = template_weights or {}
    if not type_weights and not question_weights and not template_weights and not balance_answers:
        return None
    position = answer_position_weights(items) if balance_answers else [1.0] * len(items)
    weights, used, templates = [], set(), set()
    for x, p in zip(items, position):
        w = type_weights.get(x.get("type", ""), 1.0) * p * template_weights.get(x.get("template", ""), 1.0)
        templates.add(x.get("template"))
        for prefix, factor in question_weights.items():
            if x.get("question", "").startswith(prefix):
                w *= factor
                used.add(prefix)
        weights.append(w)
    unused = [p for p in question_weights if p not in used]
    if unused:
        raise ValueError(f"question_weights: no training question starts with {unused}")
    unknown = sorted(set(template_weights) - templates)
    if unknown:
        raise ValueError(f"template_weights: no training question was made from template {unknown} "
                         "(templates are known with phrasings \"varied\")")
    return weights


def answer_position_weights(items: list[dict]) -> list[float]:
    """Per item, the weight that makes a comparison template's answers name its first option as
    often as its second (the template is the question up to its first comma); 1 for the rest.

    The world balances answer positions per question type, not per template, which leaves the
    bridge-comparison templates about 2:1 one way in the training world (and 5-12:1 the other way
    in the held-out one): a prior a model could learn instead of comparing. A template's total
    weight is kept; one whose answers all sit on one side cannot be balanced and keeps weight 1.
    """
    def key(x: dict) -> tuple[str, bool] | None:
        hops = x.get("decomposition") or []
        if x.get("type") not in ("comparison", "bridge_comparison") or not hops:
            return None
        return x.get("question", "").split(",")[0], x.get("answer_id") == hops[0].get("paragraph_id")

    keys = [key(x) for x in items]
    counts = Counter(k for k in keys if k)
    weights = []
    for k in keys:
        if k is None or not counts[(k[0], not k[1])]:
            weights.append(1.0)
        else:
            total = counts[(k[0], True)] + counts[(k[0], False)]
            weights.append(total / (2 * counts[k]))
    return weights


def cpp_compiler_problem() -> str | None:
    """Why inductor cannot build CPU kernels here (no working C++ compiler), or None if it can."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()  # raises when none is found
    except Exception as e:  # noqa: BLE001 - any failure here means compiled layers cannot run
        return str(e) or type(e).__name__
    return None


def compile_layers(model) -> None:
    """Compile every decoder layer in place (state-dict names unchanged). Layers of one kind share
    their graphs, so compiling costs a few graphs (with and without LoRA, with and without autograd,
    dynamic in batch and length), not one per layer."""
    import torch._dynamo

    problem = cpp_compiler_problem()
    if problem is not None:
        raise ValueError(f"the recipe compiles its layers, but no C++ compiler works here ({problem}); "
                         "install g++, or train with --no-compile (weights then differ by rounding)")
    layers = model.get_decoder().layers
    # Each of those variants is a recompile of the one layer code; a training step needs more of
    # them than dynamo's default limit (8), past which the remaining layers silently run eager.
    limit = 4 * len(layers)
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, limit)
    torch._dynamo.config.accumulated_recompile_limit = max(torch._dynamo.config.accumulated_recompile_limit, 8 * limit)
    for layer in layers:
        layer.compile(dynamic=True)


class Trainer:
    def __init__(self, recipe: Recipe, world_dir: Path, *, log=print):
        self.recipe = recipe
        self.world_dir = Path(world_dir)
        self.run_dir = Path(recipe.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log = log
        if recipe.threads:
            torch.set_num_threads(recipe.threads)
        torch.manual_seed(recipe.seed)
        self.model, self.tokenizer, self.new_ids = self._build_model()
        if recipe.compile:
            compile_layers(self.model)
        strings = all_token_strings(recipe.tasks)
        self.ptoks = {t: ProtocolTokenizer(self.tokenizer, list(get_spec(t).token_strings)) for t in recipe.tasks}
        self.shim = _Shim(self.ptoks)
        self.corpus: Corpus = load_corpus(self.world_dir)
        self.items = {t: load_task_items(self.world_dir, t, recipe.phrasings) for t in recipe.tasks}
        self.multi_hop_weights = sampling_weights(self.items.get("multi-hop", []), recipe.type_weights,
                                                  recipe.question_weights, recipe.balance_answers,
                                                  recipe.template_weights)
        self.token_strings = strings
        self.optimizer, self.scheduler = self._optimizer()
        self.grouping = "min-padding"  # micro-batching only; "fill" is the old way, kept to benchmark
        self.step = 0
        self._resume()

    # -- model ---------------------------------------------------------------------------------
    def _build_model(self):
        from transformers import AutoModelForCausalLM

        r = self.recipe
        base = r.base
        if "scratch" in base:
            from .scratch import scratch_model

            model, tokenizer = scratch_model(base, self.world_dir, r.seed)
        else:
            folder = ensure_base(base) if "gguf" in base else Path(base["path"])
            tokenizer = load_tokenizer(folder)
            model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        strings = all_token_strings(r.tasks)
        new = [t for t in strings if t not in tokenizer.get_vocab()]
        tokenizer.add_special_tokens({"additional_special_tokens": new}, replace_extra_special_tokens=False)
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        new_ids = torch.tensor([tokenizer.convert_tokens_to_ids(t) for t in new], dtype=torch.long)
        # New rows start as the mean embedding of a short description of the token's role.
        emb = model.get_input_embeddings().weight
        with torch.no_grad():
            for t, i in zip(new, new_ids.tolist()):
                desc = tokenizer(strings[t], add_special_tokens=False)["input_ids"]
                emb[i] = emb[desc].mean(0)
                out = model.get_output_embeddings().weight
                if out.data_ptr() != emb.data_ptr():
                    out[i] = out[desc].mean(0)
        if r.lora is not None:
            from peft import LoraConfig, get_peft_model

            n_layers = model.config.num_hidden_layers
            layers = None
            if r.lora.top_layers:
                layers = list(range(max(0, n_layers - r.lora.top_layers), n_layers))
                # Nothing below the first adapted layer learns from the input side, so its graph
                # need not be recorded: cut it at the embedding output.
                model.get_input_embeddings().register_forward_hook(lambda mod, inp, out: out.detach())
            model = get_peft_model(model, LoraConfig(r=r.lora.r, lora_alpha=r.lora.alpha, lora_dropout=r.lora.dropout,
                                                     target_modules=r.lora.targets, bias="none",
                                                     layers_to_transform=layers))
        emb = model.get_input_embeddings().weight
        emb.requires_grad_(True)
        if r.lora is not None:
            # Over a pretrained base only the new rows of the (tied) embedding learn: old rows get
            # zero gradient, and Adam with zero weight decay leaves such a row exactly unchanged.
            keep = torch.zeros(emb.shape[0], 1)
            keep[new_ids] = 1.0
            emb.register_hook(lambda g: g * keep.to(g.dtype))
        model.train()
        return model, tokenizer, new_ids

    def _optimizer(self):
        r = self.recipe
        emb = self.model.get_input_embeddings().weight
        others = [p for p in self.model.parameters() if p.requires_grad and p is not emb]
        opt = torch.optim.AdamW([{"params": others, "lr": r.lr, "weight_decay": r.weight_decay},
                                 {"params": [emb], "lr": r.token_lr, "weight_decay": 0.0}])

        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(r, step))

    # -- checkpoints ---------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    def _trainable_state(self) -> dict[str, torch.Tensor]:
        state = {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}
        if self.recipe.lora is not None:  # only the new embedding rows change over a frozen base
            emb_name = next(n for n, p in self.model.named_parameters() if p is self.model.get_input_embeddings().weight)
            state[emb_name] = state[emb_name][self.new_ids]
        return state

    def save_checkpoint(self) -> None:
        state = {"step": self.step, "params": self._trainable_state(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "recipe": self.recipe.to_dict()}
        atomic_write(self.checkpoint_path, lambda tmp: torch.save(state, tmp))

    def _resume(self) -> None:
        if not self.checkpoint_path.exists():
            return
        ck = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        changed = recipe_changes(ck.get("recipe", {}), self.recipe.to_dict())
        if changed:
            raise ValueError(f"{self.checkpoint_path} was trained with a different recipe ({', '.join(changed)} "
                             f"differ); use another run_dir, or delete the checkpoint to start again")
        emb = self.model.get_input_embeddings().weight
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for n, v in ck["params"].items():
                if params[n] is emb and self.recipe.lora is not None:
                    emb[self.new_ids] = v
                else:
                    params[n].copy_(v)
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        self.step = int(ck["step"])
        # Steps logged after the checkpoint will be trained again: drop their lines.
        log_path = self.run_dir / "log.jsonl"
        if log_path.exists():
            kept = [l for l in log_path.read_text().splitlines() if l.strip() and json.loads(l)["step"] <= self.step]
            log_path.write_text("".join(l + "\n" for l in kept))
        self.log(f"resumed from {self.checkpoint_path} at step {self.step}")

    # -- batches -------------------------------------------------------------------------------
    def batch(self, step: int) -> tuple[list[QuerySample], list[str]]:
        """Query samples and document keys for `step`; deterministic in (seed, step)."""
        r = self.recipe
        rng = random.Random(f"{r.seed}:{step}")
        samples: list[QuerySample] = []
        for task in r.tasks:
            items = self.items[task]
            weights = self.multi_hop_weights if task == "multi-hop" else None
            n = r.per_step.get(task, 0)
            tries = 0
            while n > 0 and tries < 20:
                tries += 1
                item = rng.choices(items, weights=weights)[0] if weights else rng.choice(items)
                extra = ({"bridge_roles": r.bridge_roles, "comparison_order": r.comparison_order}
                         if task == "multi-hop" else {})
                s = BUILDERS[task](item, self.ptoks[task], self.corpus, rng, r.hard_negatives, **extra)
                if len(s.ids) <= r.max_query_tokens and s.anchors:
                    samples.append(s)
                    n -= 1
        return samples, document_keys(samples, self.corpus, r.max_documents, r.hard_negatives)

    # -- one step ------------------------------------------------------------------------------
    def forward_losses(self, samples: list[QuerySample], keys: list[str]):
        r = self.recipe
        docs = [document_prompt(self.shim, k.split("|", 1)[0], self.corpus.docs[k], r.max_document_tokens) for k in keys]
        seqs = [s.ids for s in samples] + [d.ids for d in docs]
        hidden = self._hidden_states(seqs)
        head = self.model.get_output_embeddings()
        # LM loss over every labelled token of the query sequences.
        lm_h, lm_y = [], []
        for s, h in zip(samples, hidden):
            labels = torch.tensor(s.labels[1:])
            pos = (labels != IGNORE).nonzero().flatten()
            lm_h.append(h[pos])
            lm_y.append(labels[pos])
        logits = head(torch.cat(lm_h)).float()
        lm = torch.nn.functional.cross_entropy(logits, torch.cat(lm_y))
        # Contrastive losses per task: anchors against all of the step's document vectors of that task.
        bpr_terms, nce_terms, recalls = [], [], []
        doc_hidden = hidden[len(samples):]
        for task in r.tasks:
            vecs, owners, frags = [], [], []
            for k, d, h in zip(keys, docs, doc_hidden):
                if k.startswith(task + "|"):
                    vecs.append(h[d.vector_positions])
                    owners += [k] * len(d.vector_positions)
                    frags += list(range(len(d.vector_positions)))
            queries, positives, masks = [], [], []
            for s, h in zip(samples, hidden):
                if s.task != task:
                    continue
                for a in s.anchors:
                    key, frag = a.positive
                    idx = [i for i, (o, f) in enumerate(zip(owners, frags)) if o == key]
                    if not idx:
                        continue
                    pos_i = next((i for i in idx if frags[i] == frag), idx[0])
                    mask = torch.tensor([o != key or i == pos_i for i, o in enumerate(owners)])
                    queries.append(h[a.position])
                    positives.append(pos_i)
                    masks.append(mask)
            if not queries or len(owners) < 2:
                continue
            sim = similarity(torch.stack(queries), torch.cat(vecs))
            pos_t = torch.tensor(positives)
            cand = torch.stack(masks)
            neg = cand.clone()
            neg[torch.arange(len(pos_t)), pos_t] = False
            bpr_terms.append(bpr_loss(sim, pos_t, neg))
            nce_terms.append(infonce_loss(sim, pos_t, cand, r.temperature))
            recalls.append(recall_at_1(sim.detach(), pos_t, cand))
        bpr = torch.stack(bpr_terms).mean() if bpr_terms else lm * 0
        nce = torch.stack(nce_terms).mean() if nce_terms else lm * 0
        loss = r.lm_weight * lm + r.bpr_weight * bpr + r.infonce_weight * nce
        tokens = sum(len(x) for x in seqs)
        return loss, lm, bpr, nce, (sum(recalls) / len(recalls) if recalls else 0.0), tokens

    def _hidden_states(self, seqs: list[list[int]]) -> list[torch.Tensor]:
        """Final-norm hidden states of every sequence, run in length-sorted micro-batches."""
        backbone = self.model.get_decoder()
        out: list[torch.Tensor | None] = [None] * len(seqs)
        pad = self.tokenizer.pad_token_id or 0
        for group in micro_batches([len(s) for s in seqs], MICRO_BATCH_TOKENS, self.grouping):
            width = len(seqs[group[0]])
            ids = torch.full((len(group), width), pad, dtype=torch.long)
            mask = torch.zeros((len(group), width), dtype=torch.long)
            for r_, g in enumerate(group):
                ids[r_, : len(seqs[g])] = torch.tensor(seqs[g])
                mask[r_, : len(seqs[g])] = 1
            h = backbone(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            for r_, g in enumerate(group):
                out[g] = h[r_, : len(seqs[g])]
        return out  # type: ignore[return-value]

    def optimizer_step(self, step: int):
        """One update on `step`'s batch (forward, backward, clipping, AdamW, schedule); returns
        forward_losses' values. Does not advance self.step: train() and the benchmark share it."""
        loss, *rest = self.forward_losses(*self.batch(step))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], self.recipe.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        return (loss, *rest)

    def train(self, steps: int | None = None, progress: bool = True) -> list[StepStats]:
        r = self.recipe
        end = min(r.steps, self.step + steps) if steps else r.steps
        log_path = self.run_dir / "log.jsonl"
        stats: list[StepStats] = []
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=r.steps, initial=self.step, desc=f"training {r.name}", unit="step")
        while self.step < end:
            t0 = time.perf_counter()
            loss, lm, bpr, nce, rec, tokens = self.optimizer_step(self.step)
            self.step += 1
            st = StepStats(self.step, loss.item(), lm.item(), bpr.item(), nce.item(), rec,
                           self.scheduler.get_last_lr()[0], round(time.perf_counter() - t0, 3), tokens)
            stats.append(st)
            with open(log_path, "a") as f:
                f.write(json.dumps(st.__dict__) + "\n")
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{st.loss:.3f}", lm=f"{st.lm:.3f}", nce=f"{st.infonce:.3f}", r1=f"{rec:.2f}")
            if self.step % r.checkpoint_every == 0 or self.step == end:
                self.save_checkpoint()
        if bar is not None:
            bar.close()
        return stats
