"""The committed ImpRAG model (assets/models/imprag-smol), loaded through the registry, answers the
held-out single-hop examples through the engine with its committed index; the index is the one its
layer groups and weights made."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from onegen.metrics import qa_scores

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "assets" / "examples" / "single-hop.jsonl"


@pytest.fixture(scope="module")
def engine_and_index():
    import torch

    from onegen.engine import IndexRetriever
    from onegen.loading import load_model
    from onegen.modes import get_mode
    from onegen.registry import DEFAULT_IMPRAG, lookup

    torch.set_num_threads(min(2, torch.get_num_threads()))
    lm = load_model(DEFAULT_IMPRAG, device="cpu")
    assert lm.source == "embedded" and "single-hop" in lm.tasks
    engine = get_mode("imprag").make_engine(lm)  # its index must match the mode's size, groups and centring
    return engine, IndexRetriever(engine.load_index(lookup(DEFAULT_IMPRAG).indexes["single-hop"], "single-hop"))


def test_the_shipped_model_records_its_layer_groups_and_reads_its_top_passage(engine_and_index):
    engine, retriever = engine_and_index
    q = engine.query_encoder
    assert (q.split.bottom, q.split.top, q.split.tokens, q.reads) == (18, 26, "mean", 1)
    assert q.centring is not None and retriever.index.manifest.layer_split["centring"] == q.centring.fingerprint()


def test_single_hop_examples_answered(engine_and_index):
    from onegen.engine import RunSettings

    engine, retriever = engine_and_index
    picked = [json.loads(x) for x in EXAMPLES.read_text().splitlines() if x.strip()]
    right = 0
    for ex in picked:
        trace = engine.run_trace("single-hop", ex["text"], retriever=retriever, settings=RunSettings(top_k=5))
        r = trace.retrievals[0]
        assert len(r.hits) == 5 and r.layer_read.read == 1 and trace.cost.forward_tokens["query_reencoding"] == 0
        answers = ex["answer"] if isinstance(ex["answer"], list) else [ex["answer"]]
        right += qa_scores(trace.result.answer, answers)["em"] == 1.0
    # 8 of 12 when committed: three retrievals found another passage (recall@1 0.78 on held-out
    # questions, docs/imprag.md) and one answer stopped short; slack of one for other CPUs' rounding.
    assert right >= 7, f"{right} of {len(picked)} single-hop examples answered"
