"""The Run tab's What-if view in a real browser (Playwright + Debian's Chromium, as in
test_app_browser.py): a finished run replayed from its first retrieval with another document, on
all three tasks; a hostile title chosen from the candidates shows as text. Screenshots go to
test-artifacts/."""
from __future__ import annotations

import os
import re

import pytest

pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")

from conftest_app import build_world, config_for, scripted_choices, serve  # noqa: E402
# Shared fixtures: `page` opens this module's `server` in a fresh browser context.
from test_app_browser import browser, docs_page, docs_run, page, run_task, shot  # noqa: E402,F401

pytestmark = pytest.mark.browser
expect = sync_api.expect


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    world = build_world(tmp_path_factory.mktemp("app-whatif"))
    with serve(config_for(world), chooser_for=scripted_choices) as (url, _):
        yield url


@pytest.mark.parametrize("task", ["entity-linking", "multi-hop", "single-hop"])
def test_what_if_replays_a_step_side_by_side(page, task):
    run_task(page, task)
    page.get_by_text("What if (counterfactual replay)").click()
    expect(page.locator("#run-whatif-step input")).to_have_value(re.compile(r"^1\. "))  # the first retrieval
    hostile = task != "multi-hop"  # the entity and passage indexes hold a document titled with markup
    if hostile:
        page.locator("#run-whatif-choice input").click()
        page.get_by_role("option").filter(has_text="<script>").click()
    page.locator("#run-whatif-run").click()
    view = page.locator("#run-whatif-view .og-whatif")
    expect(view).to_be_visible()
    expect(view.locator(".og-whatif-col")).to_have_count(2)
    expect(view.locator(".og-whatif-cost")).to_contain_text("prefilled in one pass")
    replayed = view.locator('.og-whatif-col[data-side="replayed"]')
    if hostile:
        expect(replayed.locator(".og-whatif-head")).to_contain_text("<script>window.__pwned=1</script>")
        assert page.evaluate("window.__pwned") is None
    if task == "entity-linking":  # nothing is inserted: the same tokens, another link
        expect(view).to_have_attribute("data-same", "false")
        expect(view.locator(".og-whatif-diff")).to_have_count(0)
        expect(replayed.locator(".og-whatif-result")).to_contain_text("Paris -> <script>")
    else:  # another paragraph: the first differing token is marked on both sides
        expect(view.locator(".og-whatif-diff")).to_have_count(2)
        expect(view.locator(".og-whatif-where")).to_contain_text("First difference: token ")
    if task == "single-hop":
        expect(replayed.locator(".og-whatif-text")).to_contain_text('<img src=x onerror="window.__pwned=2">')
    assert page.evaluate("window.__pwned") is None
    shot(page, f"whatif-{task}")


@pytest.mark.skipif(not os.environ.get("ONEGEN_SCREENSHOT_URL"),
                    reason="set ONEGEN_SCREENSHOT_URL to a running app to retake docs/screenshots/whatif.png")
def test_docs_screenshot(browser):
    """Retake the README's What-if screenshot from a running app (say, `python app.py` with the
    embedded model): ONEGEN_SCREENSHOT_URL=http://127.0.0.1:7860/ pytest tests/test_app_browser_whatif.py -k docs"""
    out, pg = docs_page(browser)
    docs_run(pg, "Multi-hop QA")
    pg.get_by_text("What if (counterfactual replay)").click()
    pg.locator("#run-whatif-run").click()
    pg.wait_for_selector("#run-whatif-view .og-whatif, #run-whatif-view .og-msg")
    pg.wait_for_timeout(500)
    pg.locator("#run-whatif").screenshot(path=str(out / "whatif.png"))
    pg.context.close()
