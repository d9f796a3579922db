"""Training step time of a recipe: min-padding micro-batches against greedily filled ones, and
(with --compiled) eager decoder layers against compiled ones.

Every variant runs the same steps' batches in turn, rotating which goes first, each a whole
optimiser step (`Trainer.optimizer_step`: forward, backward, AdamW); before any step all variants
must give the same losses on the same weights. The compiled variant is a second trainer built from
the same recipe (same initial weights), warmed up on steps that are not timed: its first steps
compile the graphs, which the report gives apart.
"""
from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from onegen.assets import assets_dir

HELP = "training: seconds per step of a recipe: micro-batch groupings, eager vs compiled layers"
GROUPINGS = ("fill", "min-padding")
COMPILED = "compiled"  # min-padding grouping, decoder layers compiled
BUDGET_MINUTES = 90


def add_arguments(p) -> None:
    p.add_argument("--recipe", default=str(assets_dir() / "recipes" / "onegen-smol.json"),
                   help="recipe JSON (default: assets/recipes/onegen-smol.json)")
    p.add_argument("--steps", type=int, default=6, help="steps timed per grouping")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the recipe's)")
    p.add_argument("--world", help="world folder to train on (default: generated from the recipe's world seed)")
    p.add_argument("--compiled", action="store_true",
                   help="also time min-padding steps with torch.compile'd decoder layers (needs a C++ compiler)")
    p.add_argument("--warmup", type=int, default=2, help="untimed compiled steps before timing (they compile)")


def padded_slots(trainer, step: int, grouping: str) -> tuple[int, int, int]:
    """(real tokens, padded slots, micro-batches) of `step`'s batch under `grouping`."""
    from onegen.encode import document_prompt
    from onegen.train.trainer import MICRO_BATCH_TOKENS, micro_batches

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

    from onegen.commands.train import ensure_world
    from onegen.train.recipe import Recipe
    from onegen.train.trainer import Trainer
    from .report import command_line, machine_info, write_section

    recipe = Recipe.load(args.recipe)
    n = 2 if args.quick else args.steps
    with tempfile.TemporaryDirectory() as tmp:  # never touch the recipe's own checkpoints
        recipe = replace(recipe, run_dir=str(Path(tmp) / "run"), threads=args.threads or recipe.threads, compile=False)
        world = Path(args.world) if args.world else ensure_world(recipe.world)
        trainer = Trainer(recipe, world, log=lambda *a: None)
        variants = list(GROUPINGS)
        compiled = None
        if args.compiled:
            compiled = Trainer(replace(recipe, run_dir=str(Path(tmp) / "compiled"), compile=True), world,
                               log=lambda *a: None)
            variants.append(COMPILED)

        def use(v: str):
            if v == COMPILED:
                return compiled
            trainer.grouping = v
            return trainer

        with torch.no_grad():  # same weights, same batch: no variant may change the losses
            losses = {v: [float(x) for x in use(v).forward_losses(*trainer.batch(0))[:4]] for v in variants}
        loss_gap = max(abs(a - b) for v in variants[1:] for a, b in zip(losses[variants[0]], losses[v]))
        warmup_s: list[float] = []
        if compiled is not None:
            warmup_s = [one_step(compiled, s) for s in range(args.warmup)]
        seconds: dict[str, list[float]] = {v: [] for v in variants}
        for step in range(n):
            k = step % len(variants)
            for v in variants[k:] + variants[:k]:  # rotate which variant runs first
                seconds[v].append(one_step(use(v), step))
        shape = {g: [padded_slots(trainer, s, g) for s in range(n)] for g in GROUPINGS}
    if compiled is not None:
        shape[COMPILED] = shape["min-padding"]  # same batches, same grouping
    result = {"recipe": args.recipe, "steps": n, "threads": torch.get_num_threads(), "max_loss_difference": loss_gap}
    for v in variants:
        real, slots, groups = (statistics.mean(x[i] for x in shape[v]) for i in range(3))
        med = statistics.median(seconds[v])
        result[v] = {"median_step_s": round(med, 2), "seconds": [round(s, 2) for s in seconds[v]],
                     "tokens": round(real), "padded_slots": round(slots), "padding_share": round(1 - real / slots, 3),
                     "micro_batches": round(groups, 1), "steps_in_budget": int(BUDGET_MINUTES * 60 // med)}
    result["speedup"] = round(result["fill"]["median_step_s"] / result["min-padding"]["median_step_s"], 2)
    if compiled is not None:
        med = result[COMPILED]["median_step_s"]
        result["compile_speedup"] = round(result["min-padding"]["median_step_s"] / med, 2)
        result[COMPILED]["warmup_seconds"] = [round(s, 1) for s in warmup_s]
        # What compiling cost: the warm-up steps beyond what they would have taken compiled.
        result[COMPILED]["compile_s"] = round(max(0.0, sum(warmup_s) - med * len(warmup_s)), 1)
        result["recipe_minutes"] = {
            v: round((recipe.steps * result[v]["median_step_s"] + (result[v].get("compile_s", 0))) / 60, 1)
            for v in ("min-padding", COMPILED)}
    print(json.dumps(result, indent=None if args.json else 2))
    if args.write:
        rows = [f"| {v} | {result[v]['median_step_s']} s | {result[v]['tokens']} | {result[v]['padded_slots']} "
                f"({result[v]['padding_share']:.0%} padding) | {result[v]['micro_batches']} | {result[v]['steps_in_budget']} |"
                for v in variants]
        lines = [
            f"Recipe `{args.recipe}` ({recipe.name}); {n} steps per variant, rotating which runs first; "
            "each a whole optimiser step.",
            "",
            f"| variant | median step | tokens | padded slots | micro-batches per step | steps in {BUDGET_MINUTES} min |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            f"min-padding is {result['speedup']}x faster per step than fill; the largest loss difference between "
            f"the variants on the same weights and batch was {loss_gap:.1e}.",
        ]
        if compiled is not None:
            c = result[COMPILED]
            lines += ["", f"Compiled decoder layers (`\"compile\": true`) are {result['compile_speedup']}x faster per step "
                      f"than eager ones; compiling took about {c['compile_s']} s (the {args.warmup} untimed warm-up steps "
                      f"took {', '.join(f'{s} s' for s in c['warmup_seconds'])}). At these medians the recipe's "
                      f"{recipe.steps} steps take {result['recipe_minutes']['min-padding']} min eager and "
                      f"{result['recipe_minutes'][COMPILED]} min compiled, loading not counted."]
        write_section("train", "\n".join(lines), command=command_line(), machine=machine_info("cpu"),
                      title="Training step time on this CPU", path=args.write)
    return 0
