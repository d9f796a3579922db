"""`python -m onegen train --recipe FILE`: train a small OneGen model and export it."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from .run import CommandError


def add_arguments(p) -> None:
    p.add_argument("--recipe", required=True, help="recipe JSON (see assets/recipes/)")
    p.add_argument("--steps", type=int, help="train at most this many steps in this invocation (resumable)")
    p.add_argument("--world", help="world folder to train on (default: generated from the recipe's world seed)")
    p.add_argument("--out", help="export folder (default: the recipe's `out`)")
    p.add_argument("--no-export", action="store_true", help="only train and checkpoint")
    p.add_argument("--export-only", action="store_true",
                   help="export the latest checkpoint as it is (to inspect a run before it ends)")
    p.add_argument("--threads", type=int, help="CPU threads (default: recipe or all cores)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="compile the decoder layers with torch.compile (default: the recipe's `compile`)")


def ensure_world(world: dict, root: Path = Path("runs/worlds")) -> Path:
    """Generate the training world once (deterministic by seed) and reuse it."""
    name = f"{world.get('split', 'train')}-s{world['seed']}-n{world.get('entities', 3000)}"
    out = root / name
    if (out / "stats.json").exists():
        return out
    cmd = [sys.executable, "-m", "onegen.world", "--seed", str(world["seed"]), "--split", world.get("split", "train"),
           "--entities", str(world.get("entities", 3000)), "--out", str(out), *map(str, world.get("args", []))]
    print("generating the training world:", " ".join(cmd[1:]), file=sys.stderr)
    subprocess.run(cmd, check=True)
    return out


def main(args) -> int:
    from ..train.export import export_embedded
    from ..train.recipe import Recipe
    from ..train.trainer import Trainer

    try:
        recipe = Recipe.load(args.recipe)
    except ValueError as e:  # a recipe that does not parse: a message, not a traceback
        raise CommandError(str(e)) from None
    if args.threads:
        recipe.threads = args.threads
    if args.compile is not None:
        recipe.compile = args.compile
    if recipe.world.get("split") == "heldout":
        raise CommandError("a recipe must not train on the held-out world")
    world_dir = Path(args.world) if args.world else ensure_world(recipe.world)
    try:
        if recipe.imprag is not None:  # the ImpRAG mode's losses (onegen/train/imprag.py)
            from ..train.imprag import ImpragTrainer

            trainer = ImpragTrainer(recipe, world_dir)
        else:
            trainer = Trainer(recipe, world_dir)
    except ValueError as e:  # e.g. a checkpoint of another recipe in run_dir
        raise CommandError(str(e)) from None
    if args.export_only:
        out = export_embedded(trainer, args.out or recipe.out)
        print(f"exported {out} at step {trainer.step}")
        return 0
    trainer.train(steps=args.steps)
    if not args.no_export and trainer.step >= recipe.steps:
        out = export_embedded(trainer, args.out or recipe.out)
        print(f"exported {out}")
    elif not args.no_export:
        print(f"trained to step {trainer.step} of {recipe.steps}; run again to continue (checkpoint in {recipe.run_dir})")
    return 0
