"""Does an ImpRAG model's reader use the passages it reads? Measured per middle-group width.

ImpRAG's middle layers [b, t) are the only ones that see the retrieved passages. For world
single-hop items this measures, at each top boundary t (b from the recipe), the answer's
log-likelihood per token when the input reads:

- **none**: no passage (what the model knows without reading);
- **gold**: the gold passage alone (the LM loss's setting in training);
- **wrong**: one other candidate passage alone;
- **all**: the gold passage among the recipe's negatives, shuffled (what the mode reads at top-k).

Only the answer's value tokens count (the answer text between the protocol's reflection tokens), so
a model that has learnt the output shape but not to read scores the same in every condition. The
reader is useful where `gold` beats `wrong` and `none`: `gold_beats_wrong` is the share of items whose
value tokens are likelier with the gold passage than with the wrong one (0.5: the passage is ignored).

    python -m benchmarks.imprag_reader --recipe assets/recipes/imprag-smol.json --world assets/world/heldout --tops 20,23,26,30
    python -m benchmarks.imprag_reader --recipe R --checkpoint runs/imprag-smol --world assets/world/heldout --tops 23

No timing: likelihoods only, deterministic in the items' seed.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics

import torch
import torch.nn.functional as F

CONDITIONS = ("none", "gold", "wrong", "all")


def value_nll(fwd, prompt: list[int], passages: list[list[int]], answer: list[int]) -> float:
    """Mean negative log-likelihood of the answer's value tokens (after the first reflection token,
    before the last three: support, utility, end) once the input has read `passages`."""
    state = fwd.start(prompt)
    last = fwd.read(state, passages)[:, -1:]
    hidden = torch.cat([last, fwd.step(state, answer[:-1])], dim=1)
    logits = fwd.logits(hidden)[0].float()
    nll = F.cross_entropy(logits, torch.as_tensor(answer), reduction="none")
    return float(nll[1:-3].mean())


def reader_table(trainer, items: list[dict], tops: list[int], n_neg: int, seed: int = 0) -> list[dict]:
    from onegen.imprag import LayerSplit, SplitForward
    from onegen.train.imprag import world_sample

    model = trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else trainer.model
    n_layers = model.config.num_hidden_layers
    rng = random.Random(seed)
    samples = [world_sample(x, trainer.ptoks["single-hop"], trainer.corpus, rng, n_neg) for x in items]
    rows = []
    for t in tops:
        fwd = SplitForward(model, LayerSplit(trainer.spec.bottom, t, n_layers, trainer.spec.tokens))
        nll = {c: [] for c in CONDITIONS}
        with torch.no_grad():
            for s in samples:
                gold = next(p for p, g in zip(s.passages, s.gold) if g)
                wrong = next(p for p, g in zip(s.passages, s.gold) if not g)
                for c, read in (("none", []), ("gold", [gold]), ("wrong", [wrong]), ("all", s.passages)):
                    nll[c].append(value_nll(fwd, s.prompt, read, s.answer))
        rows.append({"top": t, "middle_layers": t - trainer.spec.bottom,
                     **{f"nll_{c}": round(statistics.mean(v), 3) for c, v in nll.items()},
                     "gold_beats_wrong": round(statistics.mean(g < w for g, w in zip(nll["gold"], nll["wrong"])), 3),
                     "all_beats_wrong": round(statistics.mean(a < w for a, w in zip(nll["all"], nll["wrong"])), 3)})
    return rows


def main(argv=None) -> int:
    from benchmarks.imprag_vectors import build_trainer, model_arguments

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    model_arguments(p, items=32)
    p.add_argument("--tops", default="", help="top boundaries t to measure, comma-separated (default: the recipe's)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    with build_trainer(args.recipe, args.world, args.checkpoint, args.threads) as trainer:
        tops = [int(x) for x in args.tops.split(",") if x] or [trainer.spec.top]
        items = list(trainer.items["single-hop"])
        random.Random(7).shuffle(items)
        rows = reader_table(trainer, items[:args.items], tops, trainer.recipe.hard_negatives)
    print(json.dumps({"step": trainer.step, "bottom": trainer.spec.bottom, "items": min(args.items, len(items)),
                      "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
