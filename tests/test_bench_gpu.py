"""`python -m onegen bench gpu --tiny`: the GPU benchmark's whole code path with tiny shapes on the
CPU (the model built from its config in bf16, the packed pass at several sizes, generate, search)."""
from __future__ import annotations

import json

import pytest

from onegen.__main__ import main as cli

pytestmark = pytest.mark.usefixtures("one_thread")


def test_bench_gpu_tiny_runs_every_part_and_writes_its_section(tmp_path, capsys):
    out = tmp_path / "benchmarks.md"
    assert cli(["bench", "gpu", "--tiny", "--sizes", "1,2", "--json", "--write", str(out)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["dtype"] == "bfloat16" and result["device"] == "cpu"
    rows = result["decode"]["rows"]
    assert [r["batch_size"] for r in rows] == [1, 2] and rows[0]["vs_batch_1"] == 1.0
    assert all(r["tokens_per_s"] > 0 for r in rows)
    gen = result["generate"]
    # The fused decoder and transformers' generate decode the same greedy tokens here (same model,
    # CPU): a check that the benchmark compares like with like.
    assert gen["same_tokens_prefix"] == gen["tokens"] == result["plan"]["steps"] + 1
    search = result["search"]
    assert search["backend"].startswith("torch") and all(r["self_found"] for r in search["rows"])
    text = out.read_text()
    assert "<!-- bench:gpu -->" in text and "| 2 |" in text and "bandwidth floor" in text


def test_bench_gpu_batched_tokens_equal_batch_1():
    import torch

    from benchmarks.gpu import TINY, build_model, decode_packed, prompts

    model = build_model(TINY.shape, torch.device("cpu"), torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16
    batch = prompts(3, 6, TINY.shape["vocab_size"])
    together, _, _ = decode_packed(model, batch, 5)
    alone = [decode_packed(model, [p], 5)[0][0] for p in batch]
    assert together == alone


def test_bench_gpu_without_a_gpu_says_so(capsys):
    assert cli(["bench", "gpu"]) == 2
    assert "needs a GPU" in capsys.readouterr().out
