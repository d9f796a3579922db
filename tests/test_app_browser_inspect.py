"""The Error browser and Compare tabs in a real browser (Playwright + Debian's Chromium, as in
test_app_browser.py), against an in-process server with a tiny scripted model (conftest_app.py).

Two result files of the same four questions are made with the real evaluator: run A answers
"Corvale" (q1, q2, q4 right; q3 wrong), run B answers "Velor" (only q3 right). One question is
hostile markup, which must show as text. Screenshots go to test-artifacts/.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")

from conftest_app import HOSTILE, build_world, config_for, scripted_choices, serve  # noqa: E402
from scripted import multi_hop_answering, scripted_evaluation  # noqa: E402
# Shared fixtures: `page` opens this module's `server` in a fresh browser context.
from test_app_browser import browser, page, shot  # noqa: E402,F401
from tiny import hotpot_item  # noqa: E402
from el_results import el_result_file  # noqa: E402

pytestmark = pytest.mark.browser
expect = sync_api.expect

ITEMS = [hotpot_item("q1", "Corvale"), hotpot_item("q2", "Corvale", question="Who was born in Corvale?"),
         hotpot_item("q3", "Velor"), hotpot_item("q4", "Corvale", question=HOSTILE)]
SWEEP = {"schema": "test", "config": {"clock": "cpu"}, "models": {"5M": {"name": "random-llama-5M"}},
         "cells": [{"scenario": "generated", "model": "5M", "query_tokens": L, "retrievals": r,
                    "speedup": {"two-pass": 1.0 + L * r / 2000, "pipeline": 1.0 + L * r / 3000}}
                   for L in (16, 256, 1024) for r in (1, 4)]}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from onegen.datasets import load_dataset
    from onegen.evaluation import EvaluationSettings
    from tiny import _loaded

    root = tmp_path_factory.mktemp("app-inspect")
    world = build_world(root)
    datasets, results = root / "datasets", root / "results"
    datasets.mkdir()
    results.mkdir()
    data = datasets / "tiny-multihop.json"
    data.write_text(json.dumps(ITEMS))
    sweep = root / "single-pass.json"
    sweep.write_text(json.dumps(SWEEP))
    lm = _loaded(str(world.model))
    examples = list(load_dataset(data, "multi-hop").examples)
    for name, answer in (("a-corvale", "Corvale"), ("b-velor", "Velor")):
        scripted_evaluation(lm, "multi-hop", examples, multi_hop_answering(lm, answer),
                            EvaluationSettings(candidates="context"), results / f"{name}.jsonl")
    el_result_file(results)  # an entity-linking file with hostile text, written as `evaluate` writes them
    config = config_for(world, results_dir=results, datasets_dir=datasets, sweep_report=sweep)
    with serve(config, chooser_for=scripted_choices) as (url, _):
        yield url


def pick(pg, dropdown: str, option: str) -> None:
    pg.locator(f"{dropdown} input").click()
    pg.get_by_role("option", name=option, exact=True).click()


def open_errors(pg, file: str = "a-corvale.jsonl") -> None:
    pg.get_by_role("tab", name="Error browser").click()
    pick(pg, "#errors-bundled", file)
    pg.wait_for_selector("#errors-metrics .og-headline")


def rows(pg, table: str) -> int:
    return pg.locator(f"{table} div[role=row]").count()


def test_open_filter_inspect_and_export(page, tmp_path):
    open_errors(page)
    expect(page.locator("#errors-metrics .og-headline")).to_contain_text("75.0")
    expect(page.locator("#errors-metrics .og-headline")).to_contain_text("4 examples, 3 right")
    expect(page.locator("#errors-table [data-testid=cell-3-0]")).to_have_text("q4")
    page.locator("#errors-outcome label", has_text="wrong").click()
    expect(page.locator("#errors-table [data-testid=cell-0-0]")).to_have_text("q3")
    assert rows(page, "#errors-table") == 1
    page.locator("#errors-table [data-testid=cell-0-2]").click()
    expect(page.locator("#errors-example")).to_contain_text("q3: wrong")
    expect(page.locator("#errors-example")).to_contain_text("Velor")
    assert page.locator("#errors-timeline .og-chip").count() == 2  # the same step view as a live run
    page.locator("#errors-timeline .og-chip").nth(0).click()
    expect(page.locator("#errors-detail")).to_contain_text("Top candidates")
    with page.expect_download() as dl:
        page.locator("#errors-export").click()
    lines = Path(dl.value.path()).read_text().splitlines()
    assert [json.loads(x)["_id"] for x in lines] == ["q3"]
    # The hostile question renders as text in the table and in the example view.
    page.locator("#errors-outcome label", has_text="all").click()
    page.locator("#errors-contains input, #errors-contains textarea").fill("script")
    page.locator("#errors-contains input, #errors-contains textarea").press("Enter")
    expect(page.locator("#errors-table [data-testid=cell-0-0]")).to_have_text("q4")
    page.locator("#errors-table [data-testid=cell-0-2]").click()
    expect(page.locator("#errors-example")).to_contain_text("<script>")
    assert page.evaluate("window.__pwned") is None
    shot(page, "error-browser")


def test_entity_linking_errors_carry_elevant_labels(page):
    open_errors(page, "el-result.jsonl")
    metrics = page.locator("#errors-metrics")
    expect(metrics).to_contain_text("wrong entity: wrong candidate")
    expect(metrics).to_contain_text("spurious mention: wrong span")
    pick(page, "#errors-category", "wrong entity: partial name (1)")
    expect(page.locator("#errors-table [data-testid=cell-0-0]")).to_have_text("d<1>")
    # The table redraws after its first cell changes: wait for the filtered count, not just a cell.
    expect(page.locator("#errors-table div[role=row]")).to_have_count(1)
    page.locator("#errors-table [data-testid=cell-0-2]").click()
    example = page.locator("#errors-example")
    expect(example).to_contain_text("ELEVANT: wrong candidate, partial name")
    expect(example).to_contain_text('"<b>Zürich</b>" & 東京')  # the markup in the text shows as text
    assert example.locator("b", has_text="Zürich").count() == 0
    shot(page, "error-browser-elevant")


def test_compare_two_result_files(page):
    open_errors(page)
    pick(page, "#compare-b", "b-velor.jsonl")
    page.locator("#compare-files").click()
    summary = page.locator("#compare-summary")
    expect(summary).to_contain_text("fixed (wrong in A, right in B)")
    text = summary.inner_text()
    assert "4 shared examples" in text and "-50.0" in text  # EM 75 -> 25
    assert rows(page, "#compare-flips") == 4  # q3 fixed; q1, q2, q4 broken
    expect(page.locator("#compare-flips [data-testid=cell-0-0]")).to_have_text("q3")
    page.locator("#compare-flips").evaluate("e => e.scrollIntoView({block: 'center'})")  # clear of the sticky header
    page.locator("#compare-flips [data-testid=cell-0-3]").click()
    expect(page.locator("#flip-a-timeline .og-chip").first).to_be_visible()
    expect(page.locator("#flip-b-timeline .og-chip").first).to_be_visible()
    shot(page, "error-browser-compare")


def test_run_a_dataset_then_resume(page):
    page.get_by_role("tab", name="Error browser").click()
    pick(page, "#errors-data", "tiny-multihop.json")
    page.locator("#errors-run").click()
    expect(page.locator("#errors-status .og-ok")).to_contain_text("Ran 4 examples")
    expect(page.locator("#errors-metrics .og-headline")).to_contain_text("Multi-hop QA, 4 examples")
    page.locator("#errors-run").click()  # the same request again: every example comes from the file
    expect(page.locator("#errors-status .og-ok")).to_contain_text("4 resumed")


def test_bad_uploads_are_messages(page, tmp_path):
    page.get_by_role("tab", name="Error browser").click()
    not_results = tmp_path / "plain.jsonl"
    not_results.write_text(json.dumps({"text": "a sentence"}) + "\n")
    page.locator("#errors-upload input[type=file]").set_input_files(str(not_results))
    expect(page.locator("#errors-status .og-error")).to_contain_text("no result lines")


def test_compare_tab_runs_onegen_and_two_pass(page):
    page.get_by_role("tab", name="Compare").click()
    expect(page.locator("#cmp-sweep svg")).to_be_visible()  # the sweep before any run
    page.locator("#cmp-task label", has_text="Multi-hop QA").click()
    expect(page.locator("#cmp-input textarea")).to_have_value("Where was the director of Film A born?")
    page.locator("#cmp-run").click()
    expect(page.locator("#cmp-status .og-ok")).to_contain_text("2 retrieval queries")
    expect(page.locator("#cmp-status")).to_contain_text("Measured, one run each (a single run is noisy on a busy machine: ask for more runs): OneGen")
    costs = page.locator("#cmp-costs")
    # A random model's query read alone is not its query in context: the documents may differ.
    expect(costs).to_contain_text(re.compile(r"same top document at [0-2] of 2 retrievals"))
    og = page.locator("#cmp-onegen-cost [data-phase=query_reencoding] b")
    two = page.locator("#cmp-baseline-cost [data-phase=query_reencoding] b")
    assert og.inner_text() == "0" and int(two.inner_text()) > 0
    assert page.locator("#cmp-onegen-timeline .og-chip").count() == 2
    assert page.locator("#cmp-baseline-timeline .og-chip").count() == 2
    expect(page.locator("#cmp-sweep svg polygon").first).to_be_visible()  # this run, placed on the sweep
    expect(page.locator("#cmp-sweep")).to_contain_text("this run")
    shot(page, "compare")


def test_would_the_right_document_have_fixed_it(page):
    open_errors(page)
    page.locator("#errors-outcome label", has_text="wrong").click()
    expect(page.locator("#errors-table [data-testid=cell-0-0]")).to_have_text("q3")
    page.locator("#errors-table [data-testid=cell-0-2]").click()
    expect(page.locator("#errors-example")).to_contain_text("q3: wrong")
    page.locator("#errors-goldfix").click()
    # Both hops read a supporting paragraph (the only gold HotpotQA names): the documents were not
    # what went wrong, and the page says so rather than replay (tests/test_app_whatif.py: a replay).
    expect(page.locator("#errors-goldfix-view .og-msg")).to_have_text(
        "Every retrieval of this run whose gold is known chose its gold document already.")
