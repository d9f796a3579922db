"""Why an ImpRAG model's implicit queries miss on formats it was not trained on, measured.

For a model and its index (by default the shipped `imprag-smol` and its held-out index), over the
first N items of each held-out single-hop file: recall@1 over the whole index with the query
vectors as the mode searches with them (`as_the_mode`: centred by the model's own query mean,
fitted on training questions, or raw for a model trained without centring), and centred by the mean
of that file's own query vectors instead (`format_mean`; no labels used). The
passage vectors stay as the index holds them. If the second is much higher, part of the miss is a
shift that the format's own words add to every query of that format.

    python -m benchmarks.imprag_formats
    python -m benchmarks.imprag_formats --model DIR --index DIR --items 100

No timing: recall only, deterministic for a given model and index.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

FILES = ("singlehop", "unseen-fact-verification", "unseen-fill-blank", "unseen-multiple-choice")


def recall_at_1(queries: torch.Tensor, passages: torch.Tensor, gold: list[int]) -> float:
    scores = F.normalize(queries.float(), dim=-1) @ F.normalize(passages.float(), dim=-1).T
    return sum(int(scores[i].argmax()) == g for i, g in enumerate(gold)) / len(gold)


def measure(model: str, index: str, world: Path, items: int) -> dict[str, dict[str, float]]:
    from onegen.imprag import SplitForward
    from onegen.loading import load_model
    from onegen.modes import get_mode
    from onegen.protocols import get_spec

    lm = load_model(model, device="cpu")
    engine = get_mode("imprag").make_engine(lm)
    mode, idx = engine.query_encoder, engine.load_index(index, "single-hop")
    fwd = SplitForward(lm.model, mode.split)
    template, ptok = get_spec("single-hop").prompt_template, lm.ptok("single-hop")
    row = {d.id: i for i, d in enumerate(idx.documents)}
    out = {}
    for name in FILES:
        data = json.loads((world / f"{name}.json").read_text())[:items]
        with torch.inference_mode():  # the bottom group only: what the mode searches with
            raw = torch.stack([fwd.start(ptok.encode_template(template, input=it["question"]).ids).query.float()
                               for it in data])
        gold = [row[it["gold_id"]] for it in data]
        out[name] = {"items": len(data),
                     "as_the_mode": round(recall_at_1(mode.centring.queries(raw) if mode.centring else raw,
                                                      idx.vectors, gold), 3),
                     "format_mean": round(recall_at_1(raw - raw.mean(0, keepdim=True), idx.vectors, gold), 3)}
    return out


def main(argv=None) -> int:
    from onegen.registry import ASSETS, DEFAULT_IMPRAG, lookup

    entry = lookup(DEFAULT_IMPRAG)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=DEFAULT_IMPRAG)
    p.add_argument("--index", default=entry.indexes["single-hop"])
    p.add_argument("--world", type=Path, default=ASSETS / "world" / "heldout")
    p.add_argument("--items", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    for name, r in measure(args.model, args.index, args.world, args.items).items():
        print(json.dumps({"file": name, **r}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
