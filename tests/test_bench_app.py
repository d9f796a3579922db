"""`python -m onegen bench app`: the arithmetic, the goal verdicts and the report, from fabricated
results (no timing assertions). One slow test spawns the real `python app.py` and waits for HTTP 200
(the model is not loaded: it loads on the first run)."""
from __future__ import annotations

import json
import os

import pytest

from benchmarks import BENCHMARKS
from benchmarks import app as bench_app
from benchmarks.app import AppBenchResult, RunSample, StartSample, goals, markdown, overhead_pct, summarize


def fabricated(browser: bool = True) -> AppBenchResult:
    r = AppBenchResult(model="onegen-smol", tasks=["entity-linking", "single-hop"], repeats=2, browser=browser,
                       notes=["Load average 2.00 at the start, on 2 CPUs."])
    r.starts = [StartSample(9.0, 21.0 if browser else None, 23.0, 2.0, "entity-linking", model_ready_s=17.0),
                StartSample(11.0, 19.0 if browser else None, 21.0, 2.0, "entity-linking", model_ready_s=None)]
    for total, first in ((3.3, 0.5), (3.1, 0.7)):  # entity-linking: engine 3.0 s, overheads 10 % and 3.3 %
        if browser:
            r.runs.append(RunSample("entity-linking", "browser", total, 3.0, first, 0.05))
        r.runs.append(RunSample("entity-linking", "api", total - 0.1, 3.0))
        r.runs.append(RunSample("entity-linking", "direct", 3.0, 3.0, 0.3))
    for total in (1.2, 1.3):  # single-hop: engine 1.0 s, overheads 20 % and 30 %; first token 1.5 s
        if browser:
            r.runs.append(RunSample("single-hop", "browser", total, 1.0, 1.5, 0.05))
        r.runs.append(RunSample("single-hop", "api", total, 1.0))
    return r


def test_overhead_is_relative_to_the_engine():
    assert overhead_pct(1.1, 1.0) == pytest.approx(10.0)
    assert overhead_pct(0.9, 1.0) == pytest.approx(-10.0)
    assert RunSample("multi-hop", "api", 6.0, 5.0).overhead_pct == pytest.approx(20.0)
    with pytest.raises(ValueError):
        overhead_pct(1.0, 0.0)


def test_summary_takes_medians_per_task_and_path():
    s = summarize(fabricated(), "entity-linking", "browser")
    assert s["runs"] == 2
    assert s["total_s"] == pytest.approx(3.2) and s["engine_s"] == 3.0
    assert s["overhead_pct"] == pytest.approx((10.0 + 100 * 0.1 / 3) / 2)  # median of per-run overheads
    assert s["first_token_s"] == pytest.approx(0.6)
    assert summarize(fabricated(), "multi-hop", "browser") is None
    assert bench_app.vs_direct_pct(fabricated(), "entity-linking", "browser") == pytest.approx(100 * 0.2 / 3.0)
    assert bench_app.vs_direct_pct(fabricated(), "single-hop", "browser") is None  # no in-process runs


def test_goals_judge_the_worst_task():
    ready, loaded, first_run, first_vs_warm, token, ui = goals(fabricated())
    assert ready.passed is True and ready.measured == "10.00 s"
    assert loaded.passed is True and loaded.measured == "17.00 s"  # a start without the log line is left out
    assert first_run.passed is True and first_run.measured == "20.00 s"  # median of 21 and 19
    assert first_vs_warm.passed is True and first_vs_warm.measured == "0.67x"  # 2.0 s against a warm 3.0 s
    slow = fabricated()
    slow.starts[1].first_engine_s = 4.8  # the decode path was not warm: 1.6x
    assert goals(slow)[3].passed is False and goals(slow)[3].measured == "1.60x"
    assert token.passed is False and token.measured == "1.50 s (single-hop)"
    assert ui.passed is False and ui.measured == "+25.0 % (single-hop)"


def test_without_a_browser_the_first_token_is_not_measured():
    ready, loaded, first_run, first_vs_warm, token, ui = goals(fabricated(browser=False))
    assert first_run.passed is None and token.passed is None and token.measured == "not measured"
    assert ui.passed is False and "API call" in ui.name  # overhead over the API path instead
    assert "no browser" in markdown(fabricated(browser=False))


def test_markdown_has_the_goal_table_and_every_path():
    md = markdown(fabricated())
    assert "| goal | target | measured | result |" in md
    assert ("| click on Run -> first streamed token on screen (worst task median) | <= 1 s | 1.50 s (single-hop) "
            "| **FAIL** |") in md
    assert "| process start -> server ready (HTTP 200 on /) | <= 20 s | 10.00 s | **pass** |" in md
    assert "| 2 | 11.00 s | - | 19.00 s | 21.00 s | 2.00 s | 0.67x |" in md  # the second fresh start: 2 s / warm 3 s
    rows = [line for line in md.splitlines() if line.startswith("| entity-linking |")]
    assert len(rows) == 3 and "+6.7 %" in rows[0]  # browser, api, direct; vs in process 3.2 / 3.0
    assert "- Load average 2.00 at the start, on 2 CPUs." in md


def test_json_is_plain_data():
    data = json.loads(json.dumps(bench_app.to_json(fabricated())))
    assert [g["passed"] for g in data["goals"]] == [True, True, True, True, False, False]
    assert data["summary"]["single-hop"]["direct"] is None
    assert data["runs"][0]["path"] == "browser"


def test_notes_stay_out_of_the_reproduce_command():
    argv = ["bench", "app", "--note", "a training run shared the CPU", "--repeats", "3", "--note=x", "--write"]
    assert bench_app.without_notes(argv) == ["bench", "app", "--repeats", "3", "--write"]


def test_registered_and_examples_are_the_pages_defaults():
    assert BENCHMARKS["app"] == "benchmarks.app"
    for task in bench_app.TASKS:
        first = bench_app.EXAMPLES.joinpath(f"{task}.jsonl").read_text().splitlines()[0]
        assert bench_app.example_text(task) == json.loads(first)["text"]


@pytest.mark.slow
def test_the_app_process_becomes_ready(monkeypatch):
    """Spawns `python app.py` as the benchmark does and waits for HTTP 200 (gradio imports; no model)."""
    pytest.importorskip("gradio")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))  # the app inherits it
    server = bench_app.Server("cpu")
    try:
        assert 0 < server.wait_ready() < 60
    finally:
        server.stop()
    assert server.proc.returncode is not None
