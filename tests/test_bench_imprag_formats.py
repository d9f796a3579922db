"""benchmarks/imprag_formats.py on a tiny layer-split model and an index of the whole held-out world."""
from __future__ import annotations

import torch

from benchmarks import imprag_formats as bf


def test_recall_at_1_ranks_by_cosine():
    passages = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    queries = torch.tensor([[2.0, 0.1], [0.1, 3.0], [0.0, -1.0]])
    assert bf.recall_at_1(queries, passages, [0, 1, 1]) == 2 / 3


def test_measure_reads_every_held_out_file(tmp_path):
    from tiny import HELDOUT_WORLD, build_imprag_index, build_tiny_model

    model = build_tiny_model("single-hop", tmp_path / "m", layers=4)
    index = build_imprag_index(model, tmp_path / "idx", limit=1000)  # every passage: each gold is there
    out = bf.measure(str(model), str(index), HELDOUT_WORLD, items=5)
    assert list(out) == list(bf.FILES)
    for r in out.values():
        assert r["items"] == 5 and 0 <= r["as_the_mode"] <= 1 and 0 <= r["format_mean"] <= 1
    assert bf.main(["--model", str(model), "--index", str(index), "--items", "2"]) == 0
