"""The "why" views (query lens, layer view, attention strip) in the Error browser and the Compare
tab, in a real browser (as test_app_browser.py): for the selected example's trace of each task, and
for each side of a comparison, with the hostile titles of the tiny indexes (conftest_app.py) shown
as text. The result files are made by the real evaluator over the app's own indexes, so the views
can recompute them. Screenshots go to test-artifacts/."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")

from conftest_app import EXAMPLES, HOSTILE, _script_ids, build_world, config_for, scripted_choices, serve  # noqa: E402
# Shared fixtures: `page` opens this module's `server` in a fresh browser context.
from test_app_browser import browser, page, shot  # noqa: E402,F401
from tiny import hotpot_item  # noqa: E402

pytestmark = pytest.mark.browser
expect = sync_api.expect

RETRIEVALS = {"entity-linking": 2, "multi-hop": 2, "single-hop": 1}
DATA = {
    "multi-hop": ("hotpot.json", json.dumps([hotpot_item("q1", "Corvale", question=HOSTILE)])),
    "single-hop": ("popqa.jsonl", json.dumps({"id": "s1", "question": EXAMPLES["single-hop"],
                                              "answers": ["120000"]}) + "\n"),
    "entity-linking": ("el.jsonl", json.dumps({"id": "d1", "title": "t", "text": EXAMPLES["entity-linking"], "labels": [
        {"id": 0, "span": [0, 5], "entity_id": "Q90", "name": "Paris"},
        {"id": 1, "span": [17, 21], "entity_id": "Q220", "name": "Rome"}]}) + "\n"),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from onegen.datasets import load_dataset
    from onegen.evaluation import EvaluationSettings
    from scripted import scripted_evaluation
    from tiny import _loaded

    root = tmp_path_factory.mktemp("app-why-tabs")
    world = build_world(root)
    data, results = root / "data", root / "results"
    data.mkdir()
    results.mkdir()
    lm = _loaded(str(world.model))
    for task, (name, text) in DATA.items():
        (data / name).write_text(text)
        scripted_evaluation(lm, task, list(load_dataset(data / name, task).examples), _script_ids(lm, task),
                            EvaluationSettings(candidates="index"), results / f"{task}.jsonl",
                            index=str(world.indexes[task]))
    with serve(config_for(world, results_dir=results), chooser_for=scripted_choices) as (url, _):
        yield url


def pick(pg, dropdown: str, option: str) -> None:
    pg.locator(f"{dropdown} input").click()
    pg.get_by_role("option", name=option, exact=True).click()


@pytest.mark.parametrize("task", ["entity-linking", "multi-hop", "single-hop"])
def test_error_browser_explains_the_selected_example(page, task):
    page.get_by_role("tab", name="Error browser").click()
    pick(page, "#errors-bundled", f"{task}.jsonl")
    page.wait_for_selector("#errors-metrics .og-headline")
    page.locator("#errors-table [data-testid=cell-0-2]").click()
    expect(page.locator("#errors-timeline .og-chip")).to_have_count(RETRIEVALS[task])
    page.locator("#errors-why-btn").click()
    expect(page.locator("#errors-why-status .og-ok")).to_contain_text("Explained in")
    expect(page.locator("#errors-lens .og-lens-query")).to_have_count(RETRIEVALS[task])
    read = page.locator("#errors-read")
    if task == "entity-linking":
        expect(read).to_contain_text("inserts no paragraph")
    else:
        assert read.locator(".og-read-cell").count() > 0
    page.locator("#errors-layers-btn").click()  # the example's latest step is selected
    expect(page.locator("#errors-layers .og-layer-table tr[data-layer]")).to_have_count(3)
    if task != "multi-hop":  # the entity and passage indexes hold a hostile title
        assert HOSTILE in page.locator("#errors-lens").text_content()
    else:  # the question is hostile markup: the example view shows it as text
        expect(page.locator("#errors-example")).to_contain_text("<script>")
    # "Would the right document have fixed it?" answers for every task: a replay side by side, or why not.
    page.locator("#errors-goldfix").click()
    view = page.locator("#errors-goldfix-view")
    expect(view.locator(".og-msg")).to_have_count(1)
    assert view.locator(".og-error").count() == 0, view.inner_text()
    assert page.evaluate("window.__pwned") is None
    shot(page, f"errors-why-{task}")


def test_compare_explains_both_sides_and_says_the_baseline_has_no_query_state(page):
    page.get_by_role("tab", name="Compare").click()
    page.locator("#cmp-task label", has_text="Single-hop QA").click()
    expect(page.locator("#cmp-input textarea")).to_have_value(EXAMPLES["single-hop"])
    page.locator("#cmp-run").click()
    expect(page.locator("#cmp-status .og-ok")).to_contain_text("Measured")
    # The baseline re-encoded its query: the page says so before anything is explained; OneGen does not.
    expect(page.locator("#cmp-baseline-why-status .og-warn")).to_contain_text("has no retrieval-token query state")
    expect(page.locator("#cmp-onegen-why-status")).to_have_text("")
    for side in ("onegen", "baseline"):
        page.locator(f"#cmp-{side}-why-btn").click()
        expect(page.locator(f"#cmp-{side}-why-status .og-ok")).to_contain_text("Explained in")
        expect(page.locator(f"#cmp-{side}-lens .og-lens-query")).to_have_count(1)
        assert HOSTILE in page.locator(f"#cmp-{side}-lens").text_content()
        page.locator(f"#cmp-{side}-layers-btn").click()
        expect(page.locator(f"#cmp-{side}-layers .og-layer-table tr[data-layer]")).to_have_count(3)
    # Both sides searched the same index: the second layer view read the vectors the first one kept.
    expect(page.locator("#cmp-baseline-why-status .og-ok")).to_contain_text("from the cache")
    # The baseline's lens says whose states it read.
    expect(page.locator("#cmp-baseline-lens")).to_contain_text("the lens reads the OneGen hidden states")
    assert page.evaluate("window.__pwned") is None
    shot(page, "compare-why")
