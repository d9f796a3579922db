"""Command line: `python -m onegen.world --seed 7 --split heldout --entities 600 --out DIR` writes a
world; `python -m onegen.world paraphrased --out DIR` writes the evaluation sets in held-out
wordings and the out-of-world set beside the held-out world (see heldout_sets.py)."""
from __future__ import annotations

import argparse
import sys

from onegen.world.build import generate_world
from onegen.world.examples import curate_examples
from onegen.world.export import export_world
from onegen.world.heldout_sets import HELDOUT_WORLD, TRAIN_WORLD, write_heldout_sets


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m onegen.world",
                                description="Generate a OneGen training or held-out world and write its files.")
    p.add_argument("--seed", type=int, required=True, help="random seed; the same seed gives identical files")
    p.add_argument("--split", choices=("train", "heldout"), required=True,
                   help="which half of the invented name words to use")
    p.add_argument("--entities", type=int, default=600, help="number of entities (default 600, at least 120)")
    p.add_argument("--el", type=int, default=None, help="entity-linking texts (default entities/2)")
    p.add_argument("--multihop", type=int, default=None, help="multi-hop questions (default 2*entities/3)")
    p.add_argument("--singlehop", type=int, default=None, help="single-hop questions (default entities/2)")
    p.add_argument("--out", required=True, help="output directory for the world files")
    p.add_argument("--examples", default=None, help="also write 12 curated examples per task into this directory")
    return p


def build_paraphrased_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m onegen.world paraphrased",
        description="Write the held-out world's tasks in held-out wordings, and questions and sentences "
                    "about the training world's entities to ask against the held-out index.")
    held_out = {"seed": "held-out world seed", "entities": "held-out world entities",
                "el": "held-out world EL texts, and paraphrased ones to write",
                "multihop": "held-out world multi-hop questions", "singlehop": "held-out world single-hop questions"}
    for key, what in held_out.items():
        p.add_argument(f"--{key}", type=int, default=HELDOUT_WORLD[key], help=f"{what} (default: %(default)s)")
    p.add_argument("--train-seed", type=int, default=TRAIN_WORLD["seed"],
                   help="training world the out-of-world set asks about (default: %(default)s, the shipped recipe's)")
    p.add_argument("--train-entities", type=int, default=TRAIN_WORLD["entities"],
                   help="its entities (default: %(default)s)")
    p.add_argument("--out", required=True, help="the held-out world's folder")
    return p


def main_paraphrased(argv: list[str]) -> int:
    args = build_paraphrased_parser().parse_args(argv)
    heldout = {"seed": args.seed, "entities": args.entities, "el": args.el, "multihop": args.multihop,
               "singlehop": args.singlehop}
    try:
        paths = write_heldout_sets(args.out, heldout, {"seed": args.train_seed, "entities": args.train_entities})
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"  wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["paraphrased"]:
        return main_paraphrased(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        world = generate_world(args.seed, args.entities, args.split, n_el=args.el,
                               n_multihop=args.multihop, n_singlehop=args.singlehop)
        paths = export_world(world, args.out)
        if args.examples:
            paths += curate_examples(world, args.examples)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    stats = world.stats()
    print(f"{args.split} world, seed {args.seed}: {stats['entities']} entities, "
          f"{stats['files']['entity_linking.jsonl']} EL texts, {stats['files']['multihop.json']} multi-hop "
          f"and {stats['files']['singlehop.json']} single-hop questions, "
          f"{stats['ambiguous_entity_fraction']:.1%} of entities share a name")
    for path in paths:
        print(f"  wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
