"""The page tells the truth in every state, in a real browser: a stopped run says so and keeps its
partial trace, a runaway answer is not shown as success, long unbroken text stays inside its box,
characters split across tokens show whole. The app runs in this process with a tiny random model
whose writing each test scripts (conftest_app.ChangeableScript); every forward pass is real.
"""
from __future__ import annotations

import json
import random
import string

import pytest

pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")

from conftest_app import EXAMPLES, ChangeableScript, build_world, config_for, serve  # noqa: E402
from onegen.protocols import QR  # noqa: E402
# Shared fixtures: `page` opens this module's `server` in a fresh browser context.
from test_app_browser import browser, download_trace, open_in_viewer, page, run_task, shot  # noqa: E402,F401
from test_app_browser_inspect import pick  # noqa: E402

pytestmark = pytest.mark.browser
expect = sync_api.expect

SCRIPT = ChangeableScript()
FAMILY = 69
# The bundled examples' labels, on the app tests' example texts (the first of each is the default).
LABELLED_EXAMPLES = {
    "entity-linking": [{"text": EXAMPLES["entity-linking"], "ambiguous": "Paris",
                        "links": [{"mention": "Paris", "entity": "Q90", "title": "Paris"},
                                  {"mention": "Rome", "entity": "Q220", "title": "Rome"}]},
                       {"text": "Ivo Brandel went to Rome.", "known_failure": "one mention spans the sentence",
                        "links": [{"mention": "Ivo Brandel", "entity": "Q1", "title": "Ivo Brandel"}]}],
    "multi-hop": [{"text": EXAMPLES["multi-hop"], "answer": "corvale"}],  # normalised: case does not count
    "single-hop": [{"text": EXAMPLES["single-hop"], "answer": "120000"}],  # the script writes a sentence
}
WORDS = "north river stone bridge garden window valley harbour silver meadow".split()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The app tests' world, its entity index grown by 69 "Brandel" family members (more than
    the index browser lists at once)."""
    from conftest_app import ENTITIES, _load
    from onegen.documents import Document
    from onegen.encode import build_index

    world = build_world(tmp_path_factory.mktemp("app-truth"))
    family = [Document(f"F{i}", f"Brandel family member {i}", f"Member {i} of the Brandel family.")
              for i in range(FAMILY)] + [Document("Q16555", "Paris (Texas)", "Paris is a city in Texas.")]
    folder = world.indexes["entity-linking"].parent / "index-entity-linking-family"
    build_index(_load(world.model), "entity-linking", ENTITIES + family).save(folder)
    world.indexes["entity-linking"] = folder
    for task, rows in LABELLED_EXAMPLES.items():
        (world.examples / f"{task}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return world


@pytest.fixture(scope="module")
def server(world):
    with serve(config_for(world), chooser_for=SCRIPT) as (url, _):
        yield url


@pytest.fixture(autouse=True)
def fresh_script():
    SCRIPT.pieces.clear()
    SCRIPT.pause_s = 0.0
    yield
    SCRIPT.pieces.clear()
    SCRIPT.pause_s = 0.0


def pick_task(pg, label: str) -> None:
    pg.locator("#task label", has_text=label).click()


def fits(pg, selector: str) -> bool:
    """True when the element shows its content without a horizontal scrollbar."""
    return pg.evaluate("(sel) => { const el = document.querySelector(sel); "
                       "return el.scrollWidth <= el.clientWidth + 1; }", selector)


def test_stop_keeps_the_partial_trace(page):
    rng = random.Random(0)
    SCRIPT.pieces["multi-hop"] = ["First, who directed Film A?", QR,
                                  " " + " ".join(rng.choice(WORDS) for _ in range(300))]
    SCRIPT.pause_s = 0.03
    pick_task(page, "Multi-hop QA")
    page.locator("#run-btn").click()
    expect(page.locator("#run-timeline .og-chip")).to_have_count(1)  # the retrieval was made
    page.locator("#stop-btn").click()
    status = page.locator("#run-status .og-warn")
    expect(status).to_contain_text("Stopped after")
    expect(status).to_contain_text("1 retrieval")
    assert page.locator("#run-status").inner_text().count("Running") == 0
    expect(page.locator("#run-timeline .og-cursor")).to_have_count(0)  # no blinking cursor left
    expect(page.locator("#run-timeline .og-chip")).to_have_count(1)
    expect(page.locator("#run-steps label")).to_have_count(1)
    assert int(page.locator("#run-cost [data-phase=total] b").inner_text().replace(",", "")) > 0
    expect(page.locator("#run-result")).to_contain_text("before the run ended")
    expect(page.locator("#download")).to_be_visible()
    page.locator("#run-steps label").first.click()
    expect(page.locator("#run-detail .og-step-head")).to_contain_text("Step 1")
    shot(page, "run-stopped")
    # The model is free again: the next run goes through to its end.
    SCRIPT.pieces.clear()
    SCRIPT.pause_s = 0.0
    page.locator("#run-btn").click()
    expect(page.locator("#run-status .og-ok")).to_contain_text("Done")


def test_runaway_answer_is_a_warning_and_long_text_wraps(page):
    rng = random.Random(1)
    unbroken = "".join(rng.choice(string.ascii_lowercase) for _ in range(250))
    SCRIPT.pieces["single-hop"] = ["[Relevant]", unbroken + unbroken]  # past the 200-token limit
    pick_task(page, "Single-hop QA")
    page.locator("#run-btn").click()
    status = page.locator("#run-status .og-warn")
    expect(status).to_contain_text("hit the 200-token limit")
    assert "Done" not in status.inner_text()
    expect(page.locator("#run-status .og-ok")).to_have_count(0)
    expect(page.locator("#run-result .og-unfinished")).to_have_count(1)  # the answer card is not green
    expect(page.locator("#run-result [data-stop=max_new_tokens]")).to_contain_text("stopped: hit the 200-token limit")
    for box in ("#run-timeline .og-timeline", "#run-result .og-result", "#run-result .og-final"):
        assert fits(page, box), box
    shot(page, "run-runaway")


def test_a_run_that_ends_as_intended_is_green(page):
    run_task(page, "single-hop")
    expect(page.locator("#run-status .og-ok")).to_contain_text("Done")
    expect(page.locator("#run-result .og-unfinished")).to_have_count(0)
    expect(page.locator("#run-result [data-stop=eos]")).to_contain_text("finished")


def test_compare_shows_each_mode_as_it_goes_and_can_stop(page):
    page.get_by_role("tab", name="Compare").click()
    page.locator("#cmp-task label", has_text="Multi-hop QA").click()
    SCRIPT.pause_s = 0.04
    page.locator("#cmp-run").click()
    status = page.locator("#cmp-status")
    expect(status).to_contain_text("OneGen: ")
    expect(status).to_contain_text("tokens so far")
    expect(status).to_contain_text("OneGen done: ")  # the first mode ended while the baseline runs
    expect(status.locator(".og-ok")).to_contain_text("Measured, one run each")
    # A long, slow comparison stops at once and says so.
    rng = random.Random(2)
    SCRIPT.pieces["multi-hop"] = ["First, who directed Film A?", QR,
                                  " " + " ".join(rng.choice(WORDS) for _ in range(300))]
    page.locator("#cmp-run").click()
    expect(status).to_contain_text("tokens so far")
    page.locator("#cmp-stop").click()
    expect(status.locator(".og-warn")).to_contain_text("Stopped before both runs ended")


def test_compare_streams_both_traces_and_times_interleaved_runs(page):
    page.get_by_role("tab", name="Compare").click()
    page.locator("#cmp-task label", has_text="Multi-hop QA").click()
    SCRIPT.pause_s = 0.05
    page.locator("#cmp-repeats input[type=number]").fill("3")
    page.locator("#cmp-repeats input[type=number]").press("Enter")
    page.locator("#cmp-run").click()
    status = page.locator("#cmp-status")
    # Each mode's trace grows in its own panel while it runs: the retrieval shows before the end.
    expect(page.locator("#cmp-onegen-timeline .og-chip")).to_have_count(1)
    expect(page.locator("#cmp-onegen-timeline .og-cursor")).to_have_count(1)
    expect(page.locator("#cmp-baseline-timeline .og-chip")).to_have_count(1)
    assert "Measured" not in status.inner_text()
    expect(status).to_contain_text("Timing round 2 of 3")
    expect(status.locator(".og-ok")).to_contain_text("the median of 3 runs each, taking turns")
    expect(page.locator("#cmp-onegen-timeline .og-cursor")).to_have_count(0)


def test_stop_reaches_a_run_still_waiting_for_the_model(browser, server):
    """Visitor B's run waits behind visitor A's; B's Stop ends it before it starts, and A's run
    is not touched."""
    rng = random.Random(3)
    SCRIPT.pieces["multi-hop"] = ["First, who directed Film A?", QR,
                                  " " + " ".join(rng.choice(WORDS) for _ in range(60)) + "."]
    SCRIPT.pause_s = 0.05
    pages = []
    for _ in range(2):
        ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
        pg = ctx.new_page()
        pg.set_default_timeout(60_000)
        pg.goto(server)
        pg.wait_for_selector("#run-btn")
        pick_task(pg, "Multi-hop QA")
        pages.append(pg)
    a, b = pages
    try:
        a.locator("#run-btn").click()
        expect(a.locator("#run-timeline .og-chip")).to_have_count(1)  # A holds the model
        b.locator("#run-btn").click()
        b.wait_for_timeout(300)
        b.locator("#stop-btn").click(timeout=2_000)  # nothing covers it while the run waits
        expect(a.locator("#run-status")).to_contain_text("Done", timeout=60_000)  # A ran to its end
        expect(b.locator("#run-status .og-warn")).to_contain_text("Stopped while it waited for the model: nothing ran.")
        expect(b.locator("#run-timeline .og-chip")).to_have_count(0)
        # B's next run is not stopped by the old request.
        SCRIPT.pause_s = 0.0
        b.locator("#run-btn").click()
        expect(b.locator("#run-status")).to_contain_text("Done")
    finally:
        for pg in pages:
            pg.context.close()


def test_characters_split_across_tokens_show_whole(page, world):
    from transformers import AutoTokenizer

    words = ["\U0001F600", "\u6771\u4eac", "\u0645\u0631\u062d\u0628\u0627"]  # emoji, Tokyo, marhaba
    tok = AutoTokenizer.from_pretrained(str(world.model))
    for w in words:  # each is written in several byte tokens, some holding part of one character
        pieces = [tok.convert_tokens_to_string([t]) for t in tok.tokenize(w)]
        assert any("\ufffd" in piece for piece in pieces), w
    SCRIPT.pieces["single-hop"] = ["[Relevant]", "Say " + " and ".join(words) + "."]
    pick_task(page, "Single-hop QA")
    page.locator("#run-btn").click()
    expect(page.locator("#run-status .og-ok")).to_contain_text("Done")
    shown = page.locator("#run-timeline .og-timeline").inner_text()
    assert "\ufffd" not in shown
    for w in words:
        assert w in shown, w
    expect(page.locator("#run-result .og-final")).to_contain_text(words[0])


def test_counts_inputs_and_refusals_tell_the_truth(page, tmp_path):
    # The index browser says how many match, not how many it lists.
    page.get_by_role("tab", name="Index browser").click()
    page.locator("#browse-task label", has_text="Entity linking").click()
    page.locator("#browse-query textarea, #browse-query input").first.fill("brandel family")
    page.locator("#browse-btn").click()
    expect(page.locator("#browse-status")).to_contain_text(f"20 of {FAMILY} documents matching")
    expect(page.locator("#browse-matches label")).to_have_count(20)
    # The trace viewer shows the run's original input.
    page.get_by_role("tab", name="Run", exact=True).click()
    run_task(page, "multi-hop")
    open_in_viewer(page, download_trace(page, tmp_path))
    expect(page.locator("#viewer-input")).to_contain_text("Where was the director of Film A born?")
    # A refused trace says why in words, without Python's exception text.
    for name, data in (("binary.json", b"\xff\xfe\x00junk"), ("broken.json", b'{"schema": ')):
        page.locator("#trace-upload button[aria-label=Clear]").click()
        (tmp_path / name).write_bytes(data)
        page.set_input_files("#trace-upload input[type=file]", str(tmp_path / name))
        error = page.locator("#viewer-status .og-error")
        expect(error).to_contain_text("not a readable OneGen trace")
        assert "codec" not in error.inner_text() and "Expecting" not in error.inner_text()
        expect(page.locator("#viewer-input")).to_have_text("")
    # After a refused upload the error browser shows nothing of the file opened before.
    page.get_by_role("tab", name="Error browser").click()
    pick(page, "#errors-bundled", "heldout-single-hop.jsonl")
    expect(page.locator("#errors-status .og-ok")).to_contain_text("heldout-single-hop.jsonl")
    bad = tmp_path / "binary.jsonl"
    bad.write_bytes(b"\xff\xfe\x00junk\n")
    page.locator("#errors-upload input[type=file]").set_input_files(str(bad))
    status = page.locator("#errors-status .og-error")
    expect(status).to_contain_text("not UTF-8 text")
    assert "heldout-single-hop" not in page.locator("#errors-status").inner_text()
    assert "codec" not in status.inner_text()
    expect(page.locator("#errors-metrics")).to_have_text("")


def test_examples_show_what_they_should_give_and_a_tick_or_cross(page):
    expected = page.locator("#run-expected")
    # The ambiguous name's candidates, with their descriptions from the entity index, and the gold links.
    expect(expected).to_contain_text("can mean 2 entities")
    expect(expected).to_contain_text("Paris is a city in Texas.")
    expect(expected).to_contain_text("capital of France")
    expect(expected).to_contain_text("Rome")
    page.locator("#run-btn").click()
    expect(expected.locator("[data-verdict]")).to_have_count(1)  # right or wrong: the random model decides
    # A known failure says so in the menu and beside the example.
    page.locator("#examples input").click()
    option = page.get_by_role("option", name="Ivo Brandel went to Rome.  [known failure]")
    option.click()
    expect(expected.locator(".og-warn")).to_contain_text("Known failure: one mention spans the sentence")
    # QA: the expected answer, then a tick (normalised exact match) or a cross.
    pick_task(page, "Multi-hop QA")
    expect(expected).to_contain_text("Expected answer")
    page.locator("#run-btn").click()
    expect(expected.locator("[data-verdict=right]")).to_contain_text("matches the expected result")
    pick_task(page, "Single-hop QA")
    expect(expected).to_contain_text("120000")
    page.locator("#run-btn").click()
    expect(expected.locator("[data-verdict=wrong]")).to_contain_text("does not match")
    # Text a user typed is no example: nothing expected.
    page.locator("#input textarea").fill("How many people live in Velor?")
    expect(expected.locator(".og-expected")).to_have_count(0)


def test_stopping_a_dataset_run_says_where_it_stopped(page):
    SCRIPT.pause_s = 0.1
    page.get_by_role("tab", name="Error browser").click()
    pick(page, "#errors-data", "singlehop.json")
    page.locator("#errors-run").click()
    status = page.locator("#errors-status")
    expect(status).to_contain_text("of 10 examples")
    page.locator("#errors-stop").click()
    expect(status.locator(".og-warn")).to_contain_text("Stopped after")
    expect(status.locator(".og-warn")).to_contain_text("run the same request again to resume")
