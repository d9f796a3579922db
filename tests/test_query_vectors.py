"""Query vectors kept in the trace (RunSettings.query_vectors, `--vectors`): compact, exact to
float16, absent unless asked for, and read back by Trace.from_json."""
from __future__ import annotations

import json

import pytest
import torch

from onegen.engine import Engine, HiddenStateQuery, QueryContext, QueryVector, RunSettings
from onegen.trace import StoredVector, Trace, TraceFormatError
from scripted import multi_hop_script, script
from tiny import PARAGRAPHS, load_tiny

pytestmark = pytest.mark.usefixtures("one_thread")


class Capture(HiddenStateQuery):
    def __init__(self):
        self.vectors: list[torch.Tensor] = []

    def __call__(self, ctx: QueryContext) -> QueryVector:
        self.vectors.append(ctx.hidden.detach().clone())
        return super().__call__(ctx)


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return load_tiny("multi-hop", tmp_path_factory.mktemp("tiny"))


def test_stored_vector_round_trips_at_its_precision():
    values = [0.1, -2.5, 3.0e-3, 1000.0, 0.0]
    half = StoredVector.encode(values)
    assert (half.dtype, half.dim) == ("float16", 5) and len(half.data) == 16  # 10 bytes, base64
    assert half.values() == pytest.approx(values, rel=1e-3)
    full = StoredVector.encode(values, dtype="float32")
    assert full.values() == pytest.approx(values, rel=1e-7)


@pytest.mark.parametrize("damage,match", [
    ({"dim": 6}, "6 float16 values"),
    ({"data": "not base64!"}, "float16 values"),
    ({"dtype": "int8"}, "unsupported query vector dtype"),
])
def test_a_damaged_vector_is_refused_when_the_trace_is_read(damage, match):
    trace = Trace("multi-hop", "onegen", {}, "q", "p", [1, 2])
    from onegen.trace import Retrieval

    trace.retrievals.append(Retrieval(step=0, position=1, token="[Q]", query_text="q", query_source="hidden-state",
                                      hits=[], chosen=None, query_vector=StoredVector.encode([1.0, 2.0, 3.0, 4.0, 5.0])))
    d = trace.to_dict()
    assert Trace.from_dict(json.loads(json.dumps(d))) == trace
    d["retrievals"][0]["query_vector"].update(damage)
    with pytest.raises(TraceFormatError, match=match):
        Trace.from_dict(d)


def test_the_engine_keeps_each_query_vector_only_when_asked(lm, monkeypatch):
    question = "Where was the director of Film A born?"
    script(monkeypatch, lm, multi_hop_script(lm))
    plain = Engine(lm).run_trace("multi-hop", question, candidates=PARAGRAPHS)
    assert plain.retrievals and all(r.query_vector is None for r in plain.retrievals)
    assert all("query_vector" not in r for r in plain.to_dict()["retrievals"])  # traces without stay as they were

    cap = Capture()
    kept = Engine(lm, query_encoder=cap).run_trace("multi-hop", question, candidates=PARAGRAPHS,
                                                    settings=RunSettings(query_vectors=True))
    assert len(kept.retrievals) == len(cap.vectors) == 2
    for r, hidden in zip(kept.retrievals, cap.vectors):
        assert r.query_vector.dim == lm.hidden_size and r.query_vector.dtype == "float16"
        stored = torch.tensor(r.query_vector.values())
        assert torch.allclose(stored, hidden.float(), rtol=1e-3, atol=1e-3)
    back = Trace.from_json(kept.to_json())
    assert back == kept
    assert [r.query_vector.values() for r in back.retrievals] == [r.query_vector.values() for r in kept.retrievals]
    # Same run otherwise: keeping vectors changes nothing the model did.
    assert [t.id for t in kept.tokens] == [t.id for t in plain.tokens]


def test_run_vectors_flag_writes_them_into_the_trace_json(lm, monkeypatch, tmp_path, capsys):
    from onegen import loading
    from onegen.__main__ import main as cli

    monkeypatch.setattr(loading, "load_model", lambda *a, **kw: lm)
    script(monkeypatch, lm, multi_hop_script(lm))
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"title": d.title, "text": d.text}) + "\n" for d in PARAGRAPHS))
    args = ["run", "--task", "multi-hop", "--model", "tiny", "--candidates", str(docs),
            "--text", "Where was the director of Film A born?", "--json"]
    for extra, kept in (([], False), (["--vectors"], True)):
        assert cli(args + extra) == 0
        trace = Trace.from_json(capsys.readouterr().out)
        assert trace.retrievals and all((r.query_vector is not None) == kept for r in trace.retrievals)
