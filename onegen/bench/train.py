"""Training step time of a recipe: min-padding micro-batches against greedily filled ones.

Both groupings run the same steps' batches, alternating which goes first, each a whole optimiser
step (`Trainer.optimizer_step`: forward, backward, AdamW); before any step the two must give the same losses.
"""
from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

HELP = "training: seconds per step of a recipe with min-padding vs greedily filled micro-batches"
GROUPINGS = ("fill", "min-padding")
BUDGET_MINUTES = 90


def add_arguments(p) -> None:
    p.add_argument("--recipe", default="assets/recipes/onegen-smol.json", help="recipe JSON")
    p.add_argument("--steps", type=int, default=6, help="steps timed per grouping")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the recipe's)")
    p.add_argument("--world", help="world folder to train on (default: generated from the recipe's world seed)")


def padded_slots(trainer, step: int, grouping: str) -> tuple[int, int, int]:
    """(real tokens, padded slots, micro-batches) of `step`'s batch under `grouping`."""
    from ..encode import document_prompt
    from ..train.trainer import MICRO_BATCH_TOKENS, micro_batches

    samples, keys = trainer.batch(step)
    r = trainer.recipe
    lengths = [len(s.ids) for s in samples] + [
        len(document_prompt(trainer.shim, k.split("|", 1)[0], trainer.corpus.docs[k], r.max_document_tokens).ids)
        for k in keys]
    groups = micro_batches(lengths, MICRO_BATCH_TOKENS, grouping)
    return sum(lengths), sum(len(g) * lengths[g[0]] for g in groups), len(groups)


def one_step(trainer, step: int) -> float:
    t0 = time.perf_counter()
    trainer.optimizer_step(step)
    return time.perf_counter() - t0


def main(args) -> int:
    import torch

    from ..commands.train import ensure_world
    from ..train.recipe import Recipe
    from ..train.trainer import Trainer
    from .report import command_line, machine_info, write_section

    recipe = Recipe.load(args.recipe)
    n = 2 if args.quick else args.steps
    with tempfile.TemporaryDirectory() as tmp:  # never touch the recipe's own checkpoints
        recipe = replace(recipe, run_dir=str(Path(tmp) / "run"), threads=args.threads or recipe.threads)
        world = Path(args.world) if args.world else ensure_world(recipe.world)
        trainer = Trainer(recipe, world, log=lambda *a: None)
        with torch.no_grad():  # same weights, same batch: the grouping must not change the losses
            losses = {}
            for g in GROUPINGS:
                trainer.grouping = g
                losses[g] = [float(x) for x in trainer.forward_losses(*trainer.batch(0))[:4]]
        loss_gap = max(abs(a - b) for a, b in zip(*losses.values()))
        seconds: dict[str, list[float]] = {g: [] for g in GROUPINGS}
        for step in range(n):
            for g in (GROUPINGS if step % 2 == 0 else GROUPINGS[::-1]):
                trainer.grouping = g
                seconds[g].append(one_step(trainer, step))
        shape = {g: [padded_slots(trainer, s, g) for s in range(n)] for g in GROUPINGS}
    result = {"recipe": args.recipe, "steps": n, "threads": torch.get_num_threads(), "max_loss_difference": loss_gap}
    for g in GROUPINGS:
        real, slots, groups = (statistics.mean(x[i] for x in shape[g]) for i in range(3))
        med = statistics.median(seconds[g])
        result[g] = {"median_step_s": round(med, 2), "seconds": [round(s, 2) for s in seconds[g]],
                     "tokens": round(real), "padded_slots": round(slots), "padding_share": round(1 - real / slots, 3),
                     "micro_batches": round(groups, 1), "steps_in_budget": int(BUDGET_MINUTES * 60 // med)}
    result["speedup"] = round(result["fill"]["median_step_s"] / result["min-padding"]["median_step_s"], 2)
    print(json.dumps(result, indent=None if args.json else 2))
    if args.write:
        rows = [f"| {g} | {result[g]['median_step_s']} s | {result[g]['tokens']} | {result[g]['padded_slots']} "
                f"({result[g]['padding_share']:.0%} padding) | {result[g]['micro_batches']} | {result[g]['steps_in_budget']} |"
                for g in GROUPINGS]
        body = "\n".join([
            f"Recipe `{args.recipe}` ({recipe.name}); {n} steps per grouping, alternating which runs first; "
            "each a whole optimiser step.",
            "",
            f"| micro-batches | median step | tokens | padded slots | micro-batches per step | steps in {BUDGET_MINUTES} min |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            f"min-padding is {result['speedup']}x faster per step; the largest loss difference between the two "
            f"groupings on the same weights and batch was {loss_gap:.1e}.",
        ])
        write_section("train", body, command=command_line(), machine=machine_info("cpu"),
                      title="Training step time on this CPU", path=args.write)
    return 0
