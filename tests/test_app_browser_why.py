"""The Run tab's "why" views in a real browser (as test_app_browser.py): the query lens strip, the
layer view and the attention strip of a finished run, for all three tasks, with the hostile titles
of the tiny indexes (conftest_app.py) shown as text. Screenshots go to test-artifacts/."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")

from conftest_app import HOSTILE  # noqa: E402
from test_app_browser import (browser, docs_page, docs_run, download_trace, open_in_viewer, page,  # noqa: E402,F401
                              run_task, server, shot)

pytestmark = pytest.mark.browser
expect = sync_api.expect

RETRIEVALS = {"entity-linking": 2, "multi-hop": 2, "single-hop": 1}


@pytest.mark.parametrize("task", ["entity-linking", "multi-hop", "single-hop"])
def test_lens_layers_and_attention_for_each_task(page, task):
    run_task(page, task)
    page.locator("#run-why-btn").click()
    expect(page.locator("#run-why-status .og-ok")).to_contain_text("Explained in")
    cells = page.locator("#run-lens .og-lens-cell")
    assert cells.count() > RETRIEVALS[task]
    expect(page.locator("#run-lens .og-lens-query")).to_have_count(RETRIEVALS[task])
    expect(page.locator("#run-lens .og-why-cost")).to_contain_text("1 forward of")
    # Focusing a token shows its top-3 (hover works the same way; focus is what a keyboard does).
    query = page.locator("#run-lens .og-lens-query").first
    tip = query.locator(".og-lens-tip")
    expect(tip).to_be_hidden()
    query.focus()
    expect(tip).to_be_visible()
    expect(tip.locator("li")).to_have_count(3)
    expect(tip).to_contain_text("the run's real query")

    read = page.locator("#run-read")
    if task == "entity-linking":
        expect(read).to_contain_text("inserts no paragraph")
        expect(read.locator(".og-read-cell")).to_have_count(0)
    else:
        assert read.locator(".og-read-cell").count() > 0
        expect(read.locator(".og-read-key")).to_have_count(RETRIEVALS[task])
        page.locator("#run-group label", has_text="top layers").click()
        expect(read).to_contain_text("the top layers (2 to 2)")

    page.locator("#run-layers-btn").click()  # the latest step is selected after a run
    expect(page.locator("#run-layers .og-layer-table tr[data-layer]")).to_have_count(3)  # embeddings + 2 layers
    expect(page.locator("#run-layers")).to_contain_text("ranks among")

    # Hostile titles (entity-linking and single-hop indexes) show as text in the tooltips, never as markup.
    if task != "multi-hop":
        assert HOSTILE in page.locator("#run-lens").text_content()  # tooltips are hidden: text_content, not inner_text
    assert page.evaluate("window.__pwned") is None
    shot(page, f"why-{task}")


def test_layer_view_refuses_an_index_too_big(page, monkeypatch):
    run_task(page, "multi-hop")
    monkeypatch.setattr("onegen.lens.MAX_LAYER_CELLS", 1)  # the server runs in this process
    page.locator("#run-layers-btn").click()
    expect(page.locator("#run-layers")).to_contain_text("over the limit of 1")
    expect(page.locator("#run-why-status .og-warn")).to_contain_text("re-encodes every document")


def test_the_views_wait_for_a_finished_run(page):
    page.locator("#run-why-btn").click()
    expect(page.locator("#run-why-status .og-warn")).to_contain_text("Run to the end first")


def test_a_saved_trace_is_explained_in_the_trace_viewer(page, tmp_path):
    run_task(page, "single-hop")
    open_in_viewer(page, download_trace(page, tmp_path))
    expect(page.locator("#viewer-steps label")).to_have_count(1)
    page.locator("#viewer-why-btn").click()
    expect(page.locator("#viewer-why-status .og-ok")).to_contain_text("Explained in")
    expect(page.locator("#viewer-lens .og-lens-query")).to_have_count(1)
    assert page.locator("#viewer-read .og-read-cell").count() > 0
    assert page.evaluate("window.__pwned") is None


@pytest.mark.skipif(not os.environ.get("ONEGEN_SCREENSHOT_URL"),
                    reason="set ONEGEN_SCREENSHOT_URL to a running app to retake docs/screenshots/why-*.png")
def test_docs_screenshots_of_the_why_views(browser):
    """Retake the why views' screenshots from a running app (`python app.py` with the embedded model):
    ONEGEN_SCREENSHOT_URL=http://127.0.0.1:7860/ pytest tests/test_app_browser_why.py -k docs"""
    out, pg = docs_page(browser)
    docs_run(pg, "Multi-hop QA")
    pg.locator("#run-why-btn").click()
    pg.wait_for_selector("#run-why-status .og-ok")
    pg.locator("#run-read .og-read-cell").nth(3).hover()
    pg.locator("#run-why").screenshot(path=str(out / "why-multi-hop.png"))
    pg.locator("#run-lens .og-lens-query").first.focus()
    box = pg.locator("#run-lens").bounding_box()  # with room below for the focused token's top-3
    pg.screenshot(path=str(out / "why-lens.png"),
                  clip={"x": box["x"], "y": box["y"], "width": box["width"], "height": box["height"] + 80})
    pg.context.close()
