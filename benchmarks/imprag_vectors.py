"""Why an ImpRAG model retrieves or does not: its query and passage vectors, measured.

For a recipe with the `imprag` key (or a trained run's checkpoint), over world single-hop items:

- **collapse**: the mean cosine between different questions' query vectors, and between different
  passages' vectors (near 1: every vector points the same way and ranking is noise);
- **recall@1** among each question's candidates (gold + the recipe's negatives), as the trainer
  scores them (raw), and with the vectors centred (`onegen.imprag.Centring`, fitted on other items);
- **gradient reach**: the norm of the retrieval loss's gradient on the LoRA weights, per layer group;
- **layers** (`--layers`, instead of the above): recall@1 at every layer of the model, for the
  paper's last-token vectors and for the mean over the question's and the passage's own tokens;
- **overfit** (optional): retrieval alone on one fixed batch, to tell "cannot learn" from "has not
  generalised yet".

    python -m benchmarks.imprag_vectors --recipe assets/recipes/imprag-smol.json --items 64
    python -m benchmarks.imprag_vectors --recipe R --world assets/world/heldout --checkpoint runs/imprag-smol
    python -m benchmarks.imprag_vectors --recipe R --items 8 --grad-items 0 --overfit 8
    python -m benchmarks.imprag_vectors --recipe R --world assets/world/heldout --items 96 --layers

No timing: these are properties of the vectors, deterministic in the recipe's seed.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import random
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F


def mean_offdiag_cosine(v: torch.Tensor) -> float:
    u = F.normalize(v.float(), dim=-1)
    c = u @ u.T
    n = c.shape[0]
    return float((c.sum() - c.diagonal().sum()) / (n * (n - 1)))


def measure(trainer, items: list[dict], fit_items: list[dict], n_neg: int, seed: int = 0) -> dict:
    from onegen.imprag import Centring
    from onegen.train.imprag import world_sample

    fwd, ptok, corpus = trainer.forward_, trainer.ptoks["single-hop"], trainer.corpus
    rng = random.Random(seed)
    samples = [world_sample(it, ptok, corpus, rng, n_neg) for it in items]
    fit = [world_sample(it, ptok, corpus, rng, n_neg) for it in fit_items]
    with torch.no_grad():
        queries = torch.stack([fwd.start(s.prompt).query for s in samples]).float()
        cands = [fwd.passage_vectors(s.passages).float() for s in samples]
        golds = torch.cat([c[s.gold.index(True)][None] for c, s in zip(cands, samples)])
        centring = Centring.fit(torch.stack([fwd.start(s.prompt).query for s in fit]).float(),
                                torch.cat([fwd.passage_vectors(s.passages) for s in fit]).float())

    def recall(q_map, p_map) -> float:
        hits = 0
        for q, c, s in zip(queries, cands, samples):
            scores = F.normalize(p_map(c), dim=-1) @ F.normalize(q_map(q), dim=0)
            hits += s.gold[int(scores.argmax())]
        return hits / len(samples)

    out = {
        "items": len(samples), "candidates": n_neg + 1,
        "query_cosine": round(mean_offdiag_cosine(queries), 4),
        "passage_cosine": round(mean_offdiag_cosine(golds), 4),
        "centred_query_cosine": round(mean_offdiag_cosine(centring.queries(queries)), 4),
        "centred_passage_cosine": round(mean_offdiag_cosine(centring.passages(golds)), 4),
        "recall_at_1_raw": round(recall(lambda q: q, lambda p: p), 4),
        "recall_at_1_centred": round(recall(centring.queries, centring.passages), 4),
    }
    trained = trainer.exported_centring()
    if trained is not None:  # the running means the run trained with (what the exported model applies)
        out["recall_at_1_trained_means"] = round(recall(trained.queries, trained.passages), 4)
    return out


def gradient_reach(trainer, items: list[dict], n_neg: int) -> dict:
    """Norm of the warm-up NCE loss's gradient on LoRA weights, bottom group vs the layers above."""
    import re

    from onegen.train.imprag import sample_losses, world_sample

    rng = random.Random(1)
    trainer.model.zero_grad(set_to_none=True)
    for it in items:
        s = world_sample(it, trainer.ptoks["single-hop"], trainer.corpus, rng, n_neg)
        retrieval, _, _ = sample_losses(trainer.forward_, s, trainer.spec, distill=False)
        retrieval.backward()
    norms = {"bottom": 0.0, "above": 0.0}
    for name, p in trainer.model.named_parameters():
        m = re.search(r"layers\.(\d+)\.", name)
        if p.grad is None or m is None or "lora" not in name:
            continue
        norms["bottom" if int(m.group(1)) < trainer.spec.bottom else "above"] += float(p.grad.float().norm() ** 2)
    trainer.model.zero_grad(set_to_none=True)
    return {k: round(v ** 0.5, 6) for k, v in norms.items()}


def _shared_ends(seqs: list[list[int]]) -> tuple[int, int]:
    """Ids every sequence starts with and ends with (a template's fixed parts)."""
    first = min(len(s) for s in seqs)
    head = next((i for i in range(first) if len({s[i] for s in seqs}) > 1), first)
    tail = next((i for i in range(1, first - head + 1) if len({s[-i] for s in seqs}) > 1), first - head + 1) - 1
    return head, tail


def layer_pooling(trainer, items: list[dict], fit_items: list[dict], n_neg: int) -> list[dict]:
    """Which layer and which pooling carry a question's retrieval signal before any training:
    recall@1 (gold among its candidates), raw and centred, at every layer of the base, for the
    paper's vectors (the input's last token's query states, a passage's last token's key states)
    and for the mean over the tokens that differ between inputs (the question's tokens inside the
    prompt template; a passage's tokens inside its delimiters), pooled per key-value group alike."""
    from onegen.imprag import Centring, pool_key, pool_query
    from onegen.train.imprag import world_sample

    fwd, ptok, corpus = trainer.forward_, trainer.ptoks["single-hop"], trainer.corpus
    rng = random.Random(0)
    samples = [world_sample(it, ptok, corpus, rng, n_neg) for it in [*items, *fit_items]]
    q_head, q_tail = _shared_ends([s.prompt for s in samples])
    p_head, p_tail = _shared_ends([p for s in samples for p in s.passages])

    def per_layer(ids, head, tail, query: bool):
        """{(pooling, layer): vector} over every layer, the sequence alone."""
        h = fwd._embed(ids)
        positions = torch.arange(h.shape[1], device=h.device)
        out = {}
        for i in range(fwd.split.n_layers):
            h, (q, k) = fwd._layer(i, h, positions, None)
            states = q if query else k
            pool = (lambda x: pool_query(x, fwd.kv_heads)) if query else pool_key
            out[("last", i)] = pool(states[:, -1, :]).float()
            out[("mean", i)] = pool(states[:, head:states.shape[1] - tail, :].mean(1)).float()
        return out

    with torch.no_grad():
        queries = [per_layer(s.prompt, q_head, q_tail, True) for s in samples]
        passages = [[per_layer(p, p_head, p_tail, False) for p in s.passages] for s in samples]
    n, rows = len(items), []
    for key in queries[0]:
        q = torch.stack([v[key] for v in queries])
        p = [torch.stack([c[key] for c in cands]) for cands in passages]
        centring = Centring.fit(q[n:], torch.cat(p[n:]))
        hits = {"raw": 0, "centred": 0}
        for j in range(n):
            for kind, qm, pm in (("raw", lambda x: x, lambda x: x), ("centred", centring.queries, centring.passages)):
                scores = F.normalize(pm(p[j]), dim=-1) @ F.normalize(qm(q[j]), dim=0)
                hits[kind] += samples[j].gold[int(scores.argmax())]
        rows.append({"pooling": key[0], "layer": key[1], "recall_at_1_raw": round(hits["raw"] / n, 4),
                     "recall_at_1_centred": round(hits["centred"] / n, 4)})
    return rows


def overfit(trainer, items: list[dict], n_neg: int, steps: int, lr: float) -> list[dict]:
    """Retrieval alone (warm-up NCE, no LM loss) on one fixed batch, the recipe's LoRA and centring:
    whether the retrieval path can learn at all, apart from generalising to new questions."""
    from onegen.train.imprag import RunningCentring, sample_losses, world_sample

    rng = random.Random(0)
    samples = [world_sample(it, trainer.ptoks["single-hop"], trainer.corpus, rng, n_neg) for it in items]
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    centring = RunningCentring(trainer.spec.centring_momentum) if trainer.spec.centre else None
    fwd, rows = trainer.forward_, []
    for step in range(steps):
        vectors = [(fwd.start(s.prompt), fwd.passage_vectors(s.passages)) for s in samples]
        if centring is not None:
            centring.update(torch.stack([st.query for st, _ in vectors]), torch.cat([p for _, p in vectors]))
        losses, hits = [], 0
        for s, (state, passages) in zip(samples, vectors):
            query = state.query
            if centring is not None:
                query, passages = query - centring.query, passages - centring.passage
            scores = F.normalize(passages, dim=-1) @ F.normalize(query, dim=0) / trainer.spec.temperature
            log_p = F.log_softmax(scores.float(), dim=0)
            losses.append(-torch.logsumexp(log_p[torch.tensor(s.gold)], dim=0))
            hits += s.gold[int(scores.argmax())]
        loss = torch.stack(losses).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, trainer.recipe.max_grad_norm)
        opt.step()
        rows.append({"step": step, "nce": round(loss.item(), 4), "recall_at_1": hits / len(samples)})
    return rows


@contextlib.contextmanager
def build_trainer(recipe_path: str, world: str | None, checkpoint: str | None, threads: int):
    """A recipe's ImpRAG trainer (its model untrained, or a run's checkpoint), its items and corpus
    from `world` when given (the same model), for measurements that train nothing."""
    from onegen.commands.train import ensure_world
    from onegen.train.examples import load_corpus, load_task_items
    from onegen.train.imprag import ImpragTrainer
    from onegen.train.recipe import Recipe

    recipe = Recipe.load(recipe_path)
    recipe.threads = threads
    train_world = ensure_world(recipe.world)
    with tempfile.TemporaryDirectory() as tmp:
        recipe.run_dir = checkpoint or tmp
        trainer = ImpragTrainer(recipe, train_world, log=lambda *a: None)
        if world:  # other items and their corpus, the same model
            trainer.corpus = load_corpus(Path(world))
            trainer.items = {"single-hop": load_task_items(Path(world), "single-hop", recipe.phrasings)}
        yield trainer


def model_arguments(p: argparse.ArgumentParser, items: int) -> None:
    """The options `build_trainer` takes, and how many items to measure."""
    p.add_argument("--recipe", required=True)
    p.add_argument("--world", help="items from this world (default: the recipe's training world)")
    p.add_argument("--checkpoint", help="a run folder whose checkpoint.pt to load (default: the base, untrained)")
    p.add_argument("--items", type=int, default=items)
    p.add_argument("--threads", type=int, default=1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    model_arguments(p, items=64)
    p.add_argument("--grad-items", type=int, default=4)
    p.add_argument("--layers", action="store_true",
                   help="recall@1 at every layer, last-token and mean pooling (`layer_pooling`), instead of the rest")
    p.add_argument("--overfit", type=int, default=0, metavar="STEPS",
                   help="then train retrieval alone for STEPS steps on one fixed batch of 8 items (recall per step)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    with build_trainer(args.recipe, args.world, args.checkpoint, args.threads) as trainer:
        items = list(trainer.items["single-hop"])
        random.Random(7).shuffle(items)
        n = min(args.items, len(items) // 2)
        if args.layers:
            print(json.dumps({"step": trainer.step, "items": n, "candidates": trainer.recipe.hard_negatives + 1,
                              "layers": layer_pooling(trainer, items[:n], items[n:2 * n], trainer.recipe.hard_negatives)},
                             indent=1))
            return 0
        result = {"step": trainer.step, **measure(trainer, items[:n], items[n:2 * n], trainer.recipe.hard_negatives)}
        if args.grad_items:
            result["lora_grad_norm"] = gradient_reach(trainer, items[:args.grad_items], trainer.recipe.hard_negatives)
        if args.overfit:
            result["overfit"] = overfit(trainer, items[:8], trainer.recipe.hard_negatives, args.overfit, trainer.recipe.lr)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
