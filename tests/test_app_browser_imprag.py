"""ImpRAG on the Run tab in a real browser: choosing the mode moves the task to single-hop, and a run
shows its layer groups, the reader's attention per middle layer and the tokens per layer group. A
tiny 4-layer single-hop model and its ImpRAG index (tests/tiny.py) beside the app tests' world."""
from __future__ import annotations

import os

import pytest

pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")

from conftest_app import EXAMPLES, build_world, config_for, scripted_choices, serve  # noqa: E402
# Shared fixtures: `page` opens this module's `server` in a fresh browser context.
from test_app_browser import browser, docs_page, page, shot  # noqa: E402,F401

pytestmark = pytest.mark.browser
expect = sync_api.expect


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tiny import build_imprag_index, build_tiny_model

    root = tmp_path_factory.mktemp("app-browser-imprag")
    world = build_world(root)
    model = build_tiny_model("single-hop", root, layers=4)
    config = config_for(world, imprag_model=str(model), imprag_index=str(build_imprag_index(model, root / "idx")))
    with serve(config, chooser_for=scripted_choices) as (url, _):
        yield url


def test_an_imprag_run_shows_where_it_read_and_what_each_layer_group_cost(page):
    expect(page.locator("#run-imprag-note .og-msg")).to_have_count(0)  # configured: no how-to line
    page.locator("#run-mode label", has_text="ImpRAG").click()
    expect(page.locator("#task input[value=single-hop]")).to_be_checked()
    expect(page.locator("#input textarea")).to_have_value(EXAMPLES["single-hop"])
    page.locator("#run-btn").click()
    page.wait_for_selector("#run-status .og-ok")
    detail = page.locator("#run-detail")
    expect(detail.locator(".og-layers[data-query-layer='1'] .og-layer-query")).to_have_text("Q")
    expect(detail.locator(".og-layer-group[data-group=middle]")).to_contain_text("passages read here")
    expect(detail.locator(".og-heat-table tbody tr")).to_have_count(1)  # one middle layer
    expect(detail.locator(".og-heat-cell")).to_have_count(4)  # every passage found (the index holds 4) is read
    expect(page.locator("#run-cost [data-group=top]")).to_contain_text("layer 3")
    expect(page.locator("#run-result .og-final")).to_contain_text("120000")
    shot(page, "run-imprag")


@pytest.mark.skipif(not os.environ.get("ONEGEN_SCREENSHOT_URL"),
                    reason="set ONEGEN_SCREENSHOT_URL to a running app to retake docs/screenshots/run-imprag.png")
def test_docs_screenshot_of_an_imprag_run(browser):
    """Retake the ImpRAG step's screenshot from a running app (`python app.py`: the embedded default
    with imprag-smol beside it): ONEGEN_SCREENSHOT_URL=http://127.0.0.1:7860/ pytest
    tests/test_app_browser_imprag.py -k docs"""
    out, pg = docs_page(browser)
    pg.locator("#run-mode label", has_text="ImpRAG").click()
    pg.wait_for_timeout(500)
    pg.locator("#input textarea").fill("Who founded Brelten Textiles?")  # one it answers (the first example it misses)
    pg.locator("#run-btn").click()
    pg.wait_for_selector("#run-status .og-ok, #run-status .og-error")
    expect(pg.locator("#run-detail .og-layers")).to_have_count(1)
    pg.locator("#run-detail").screenshot(path=str(out / "run-imprag.png"))
    pg.context.close()
