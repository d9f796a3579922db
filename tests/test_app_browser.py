"""The page in a real browser: Playwright for Python driving Debian's Chromium.

The app runs in this process on a free port with a tiny random model whose token choices are
scripted (conftest_app.py), so each task makes real retrievals. Screenshots go to test-artifacts/.
Chromium: /usr/bin/chromium; when it is missing the setup installs it with apt-get as root, or skips.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")

from conftest_app import EXAMPLES, HOSTILE, build_world, config_for, scripted_choices, serve  # noqa: E402

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
TIMEOUT = 90_000  # ms; the machine is shared, a run can take a few seconds
sync_api.expect.set_options(timeout=TIMEOUT)  # the machine is shared; the default 5 s is too short

LABELS = {"entity-linking": "Entity linking", "multi-hop": "Multi-hop QA", "single-hop": "Single-hop QA"}


def _ensure_chromium() -> None:
    if os.path.exists(CHROMIUM):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip(f"{CHROMIUM} is missing and installing it needs root and apt-get")
    cmd = "apt-get update && apt-get install -y --no-install-recommends chromium chromium-driver"
    done = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=600)
    if done.returncode != 0 or not os.path.exists(CHROMIUM):
        pytest.skip(f"could not install chromium: {done.stderr[-500:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    world = build_world(tmp_path_factory.mktemp("app-browser"))
    with serve(config_for(world), chooser_for=scripted_choices) as (url, _):
        yield url


@pytest.fixture(scope="module")
def browser():
    _ensure_chromium()
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    pg = ctx.new_page()
    pg.set_default_timeout(TIMEOUT)
    pg.goto(server)
    pg.wait_for_selector("text=OneGen Explorer")
    pg.wait_for_function("document.querySelector('#input textarea') && document.querySelector('#input textarea').value.length > 0")
    yield pg
    ctx.close()


def shot(pg, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def run_task(pg, task: str) -> None:
    if task != "entity-linking":
        pg.locator("#task label", has_text=LABELS[task]).click()
    box = pg.locator("#input textarea")
    sync_api.expect(box).to_have_value(EXAMPLES[task])  # picking the task filled its example
    pg.locator("#run-btn").click()
    pg.wait_for_selector("#run-status .og-ok")


@pytest.mark.parametrize("task", ["entity-linking", "multi-hop", "single-hop"])
def test_run_each_task(page, task):
    run_task(page, task)
    chips = page.locator("#run-timeline .og-chip")
    steps = page.locator("#run-steps label")
    expected = {"entity-linking": 2, "multi-hop": 2, "single-hop": 1}[task]
    sync_api.expect(chips).to_have_count(expected)
    sync_api.expect(steps).to_have_count(expected)
    sync_api.expect(page.locator("#run-cost [data-phase=query_reencoding] b")).to_have_text("0")
    result = page.locator("#run-result")
    if task == "entity-linking":
        sync_api.expect(result.locator("mark.og-ent")).to_have_count(2)
        sync_api.expect(result.locator("a.og-ext").first).to_have_attribute("href", "https://en.wikipedia.org/wiki/Paris")
        # Entities without a URL link to their card in the index browser.
        assert result.locator('a.og-card-link[href^="?browse=entity-linking&doc="]').count() >= 1
    elif task == "multi-hop":
        sync_api.expect(result.locator(".og-final")).to_contain_text("Corvale")
        sync_api.expect(result.locator(".og-card-n", has_text="Hop 2")).to_have_count(1)
        sync_api.expect(page.locator("#run-timeline details.og-ins")).to_have_count(2)
    else:
        sync_api.expect(result.locator(".og-refl")).to_have_count(3)
    # Selecting the first step shows its query and candidates; so does a click on a timeline chip.
    steps.first.click()
    sync_api.expect(page.locator("#run-detail .og-step-head")).to_contain_text("Step 1")
    if expected > 1:
        chips.nth(1).click()
        sync_api.expect(page.locator("#run-detail .og-step-head")).to_contain_text("Step 2")
        sync_api.expect(steps.nth(1).locator("input")).to_be_checked()
    sync_api.expect(page.locator("#run-detail .og-bar-row").first).to_be_visible()
    shot(page, f"run-{task}")
    # The run as OpenInference spans: one LLM span, one RETRIEVER span per step.
    spans = download_spans(page)
    assert sorted(kind for kind, _ in spans) == ["LLM"] + ["RETRIEVER"] * expected


def download_spans(pg) -> list[tuple[str, dict]]:
    """The run tab's OpenInference download, parsed back: (span kind, attributes) per span."""
    from onegen.export_openinference import parse_otlp_json

    with pg.expect_download() as info:
        pg.locator("#download-spans").click()
    request = parse_otlp_json(Path(info.value.path()).read_text(encoding="utf-8"))
    out = []
    for span in (s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans):
        attrs = {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in span.attributes}
        out.append((attrs["openinference.span.kind"], attrs))
    return out


def test_download_then_view_the_trace(page, tmp_path):
    run_task(page, "multi-hop")
    saved = download_trace(page, tmp_path)
    assert '"schema": "onegen-trace/1"' in saved.read_text()
    page.get_by_role("tab", name="Trace viewer").click()
    page.set_input_files("#trace-upload input[type=file]", str(saved))
    page.wait_for_selector("#viewer-status .og-ok")
    sync_api.expect(page.locator("#viewer-timeline .og-chip")).to_have_count(2)
    sync_api.expect(page.locator("#viewer-result .og-final")).to_contain_text("Corvale")
    shot(page, "trace-viewer")


def test_sessions_do_not_share_runs(page, browser, server):
    run_task(page, "single-hop")
    other = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = other.new_page()
    pg.set_default_timeout(TIMEOUT)
    pg.goto(server)
    pg.wait_for_function("document.querySelector('#input textarea') && document.querySelector('#input textarea').value.length > 0")
    sync_api.expect(pg.locator("#run-timeline .og-empty")).to_have_count(1)
    sync_api.expect(pg.locator("#run-steps label")).to_have_count(0)
    sync_api.expect(pg.locator("#download")).to_be_hidden()
    other.close()


def test_invalid_trace_upload_is_a_readable_message(page, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "something-else"}')
    page.get_by_role("tab", name="Trace viewer").click()
    page.set_input_files("#trace-upload input[type=file]", str(bad))
    sync_api.expect(page.locator("#viewer-status .og-error")).to_contain_text("unsupported trace schema")
    for i, text in enumerate(['{"schema": "onegen-trace/1", "result": [], "cost": {}}', "not json", "\udcff"]):
        bad = tmp_path / f"bad{i}.json"
        bad.write_bytes(text.encode("utf-8", "surrogateescape"))
        page.locator("#trace-upload button[aria-label=Clear]").click()
        sync_api.expect(page.locator("#viewer-status .og-error")).to_have_count(0)
        page.set_input_files("#trace-upload input[type=file]", str(bad))
        sync_api.expect(page.locator("#viewer-status .og-error")).to_contain_text("not a readable OneGen trace")


def test_hostile_titles_render_as_text(page):
    page.locator("#top-k input[type=number]").fill("5")
    run_task(page, "single-hop")  # all three passages are candidates, one titled with markup
    sync_api.expect(page.locator("#run-result")).to_contain_text("<script>window.__pwned=1</script>")
    # The spans keep the markup as data: the document's title is in its metadata, unchanged.
    (retriever,) = [attrs for kind, attrs in download_spans(page) if kind == "RETRIEVER"]
    titles = [json.loads(v)["title"] for k, v in retriever.items() if k.endswith(".document.metadata")]
    assert "<script>window.__pwned=1</script>" in " ".join(titles)
    page.get_by_role("tab", name="Index browser").click()
    page.locator("#browse-task label", has_text="Entity linking").click()
    page.locator("#browse-query textarea, #browse-query input").first.fill("script")
    page.locator("#browse-btn").click()
    page.locator("#browse-matches label").first.click()
    sync_api.expect(page.locator("#browse-doc .og-doc-title")).to_contain_text(HOSTILE)
    shot(page, "injection")
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("#browse-doc img, #run-result img, #run-detail img").count() == 0


def test_entity_card_link_opens_the_index_browser(browser, server):
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = ctx.new_page()
    pg.set_default_timeout(TIMEOUT)
    pg.goto(server + "?browse=entity-linking&doc=Q220")
    sync_api.expect(pg.locator("#browse-doc .og-doc-title")).to_contain_text("Rome")
    sync_api.expect(pg.locator("#browse-doc table tr")).to_have_count(3)  # neighbours: the other documents
    shot(pg, "index-browser")
    ctx.close()


def test_empty_input_shows_a_message(page):
    page.locator("#input textarea").fill("")
    page.locator("#run-btn").click()
    sync_api.expect(page.locator("#run-status .og-error")).to_contain_text("The input is empty")


def download_trace(pg, tmp_path) -> Path:
    """Save the Run tab's trace download; returns its path."""
    with pg.expect_download() as info:
        pg.locator("#download").click()
    saved = tmp_path / "trace.json"
    info.value.save_as(saved)
    return saved


def open_in_viewer(pg, path: Path) -> None:
    pg.get_by_role("tab", name="Trace viewer").click()
    pg.set_input_files("#trace-upload input[type=file]", str(path))


def docs_run(pg, label: str) -> None:
    """On the running app of `docs_page`: pick a task and run its example to the end."""
    pg.locator("#task label", has_text=label).click()
    pg.wait_for_timeout(500)
    pg.locator("#run-btn").click()
    pg.wait_for_selector("#run-status .og-info")
    pg.wait_for_selector("#run-status .og-ok, #run-status .og-error")


def docs_page(browser):
    """The docs/screenshots folder and a page of the running app at $ONEGEN_SCREENSHOT_URL, its
    first example filled in."""
    out = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.set_default_timeout(600_000)  # a real model on the CPU
    pg.goto(os.environ["ONEGEN_SCREENSHOT_URL"])
    pg.wait_for_function("document.querySelector('#input textarea') && document.querySelector('#input textarea').value.length > 0")
    return out, pg


@pytest.mark.skipif(not os.environ.get("ONEGEN_SCREENSHOT_URL"),
                    reason="set ONEGEN_SCREENSHOT_URL to a running app to retake docs/screenshots")
def test_docs_screenshots(browser):
    """Retake docs/screenshots from a running app (say, `python app.py` with the embedded model):
    ONEGEN_SCREENSHOT_URL=http://127.0.0.1:7860/ pytest tests/test_app_browser.py -k docs"""
    out, pg = docs_page(browser)
    for task in LABELS:
        if task != "entity-linking":
            pg.locator("#task label", has_text=LABELS[task]).click()
            pg.wait_for_timeout(500)
        pg.locator("#run-btn").click()
        pg.wait_for_selector("#run-status .og-info")  # this run started (the last one's status is gone)
        pg.wait_for_selector("#run-status .og-ok, #run-status .og-error")
        pg.wait_for_timeout(500)  # let the page settle after the last update
        pg.screenshot(path=str(out / f"run-{task}.png"), full_page=True)
    pg.get_by_role("tab", name="Index browser").click()
    pg.locator("#browse-btn").click()
    pg.locator("#browse-matches label").first.click()
    pg.wait_for_selector("#browse-doc .og-doc-title")
    pg.screenshot(path=str(out / "index-browser.png"), full_page=True)
    pg.get_by_role("tab", name="Compare").click()
    pg.locator("#cmp-task label", has_text=LABELS["multi-hop"]).click()
    pg.wait_for_timeout(500)
    pg.locator("#cmp-run").click()
    pg.wait_for_selector("#cmp-status .og-ok, #cmp-status .og-error")
    pg.screenshot(path=str(out / "compare.png"), full_page=True)
    pg.get_by_role("tab", name="Error browser").click()
    pg.locator("#errors-bundled input").click()
    pg.get_by_role("option", name="heldout-multi-hop.jsonl", exact=True).click()
    pg.wait_for_selector("#errors-metrics .og-headline")
    pg.locator("#errors-outcome label", has_text="wrong").click()
    pg.locator("#errors-table [data-testid=cell-0-2]").click()
    pg.wait_for_selector("#errors-timeline .og-chip")
    pg.screenshot(path=str(out / "error-browser.png"), full_page=True)
    pg.context.close()
