"""Honest out-of-world answers in a real browser: before the first run the Run tab describes the
invented world its indexes hold; a run on a calibrated index whose retrieval scored below the
threshold is marked in the step, the candidates, the timeline and the result, and one line offers
questions the index answers. The single-hop index here carries a calibration.json whose threshold
no cosine reaches (every run on it is flagged); the multi-hop index has none (nothing is flagged).
"""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")

from conftest_app import ENTITIES, build_world, config_for, scripted_choices, serve  # noqa: E402
# Shared fixtures: `page` opens this module's `server` in a fresh browser context.
from test_app_browser import TIMEOUT, browser, page, run_task, shot  # noqa: E402,F401

pytestmark = pytest.mark.browser
expect = sync_api.expect

TYPES = {"Q90": "city", "Q220": "city", "Q1": "person", "Q666": "person"}
QUESTION = "How many inhabitants does Velor's capital have?"
REWORDED = "velor's capital: how many people live there"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The app tests' world with typed entity documents, a single-hop index calibrated so that
    every retrieval falls below, and held-out question files for the world's description."""
    from conftest_app import _load
    from onegen.calibration import Calibration, ScoreRange, write_calibration
    from onegen.encode import build_index
    from onegen.index import content_fingerprint, read_manifest

    root = tmp_path_factory.mktemp("app-calibration")
    world = build_world(root)
    typed = [replace(d, extra={**d.extra, "type": TYPES[d.id]}) for d in ENTITIES]
    folder = root / "index-entity-linking-typed"
    build_index(_load(world.model), "entity-linking", typed).save(folder)
    world.indexes["entity-linking"] = folder
    passages = world.indexes["single-hop"]
    manifest = read_manifest(passages)
    write_calibration(passages, Calibration(
        protocol="single-hop", mode="onegen", model_fingerprint=manifest.model_fingerprint,
        index_fingerprint=content_fingerprint(manifest), signal="top1", threshold=2.0, rule="test: flag every run",
        gold=ScoreRange.of([0.9])))
    heldout = root / "heldout"
    heldout.mkdir()
    item = {"answers": ["120000"], "ctxs": []}
    (heldout / "singlehop.json").write_text(json.dumps([{"id": "h1", "question": QUESTION, **item}]))
    (heldout / "singlehop-paraphrased.json").write_text(json.dumps([{"id": "h1-p", "question": REWORDED, **item}]))
    world.heldout = heldout
    return world


@pytest.fixture(scope="module")
def server(world):
    with serve(config_for(world, world_dir=world.heldout), chooser_for=scripted_choices) as (url, _):
        yield url


def test_the_run_tab_describes_the_invented_world_before_the_first_run(page, server):
    described = page.locator("#run-world [data-world=invented]")
    expect(described).to_contain_text("invented world")
    expect(described.locator("li", has_text="city")).to_contain_text("Paris")
    expect(described.locator('a[href="?browse=entity-linking&doc=Q1"]')).to_have_text("Ivo Brandel")
    expect(described).to_contain_text(QUESTION)
    expect(described.locator("li", has_text=REWORDED)).to_contain_text("paraphrased")
    expect(described.locator('a[href="?browse=entity-linking"]')).to_contain_text("Index browser")
    shot(page, "run-invented-world")
    # That link opens the index browser on the index's first documents.
    page.goto(server + "?browse=entity-linking")
    expect(page.locator("#browse-matches label")).to_have_count(len(ENTITIES))


def test_a_flagged_run_is_marked_everywhere_and_offers_questions(page):
    run_task(page, "single-hop")
    result = page.locator("#run-result")
    expect(result.locator(".og-lowconf[data-confident=false]")).to_contain_text("No confident match in this index")
    expect(result.locator(".og-result.og-unconfident .og-card-n").first).to_have_text(
        "Answer (no confident match in this index)")
    expect(result.locator(".og-bars-low")).to_have_count(1)
    detail = page.locator("#run-detail")
    expect(detail.locator(".og-lowconf")).to_contain_text("top score")
    expect(detail.locator(".og-badge-low")).to_have_text("chosen, not a confident match")
    expect(page.locator("#run-timeline .og-chip-low")).to_have_count(1)
    expect(page.locator("#run-steps label").first).to_contain_text("no confident match")
    offer = page.locator("#run-status .og-invented")
    expect(offer).to_contain_text("This index holds an invented world")
    expect(offer).to_contain_text(QUESTION)
    expect(page.locator("#run-world [data-world]")).to_have_count(0)  # the description gave way to the run
    shot(page, "run-no-confident-match")


def test_a_run_on_an_uncalibrated_index_is_not_flagged(page):
    run_task(page, "multi-hop")
    expect(page.locator("#run-result .og-final")).to_contain_text("Corvale")
    expect(page.locator("#run-result .og-lowconf, #run-detail .og-lowconf")).to_have_count(0)
    expect(page.locator("#run-status .og-invented")).to_have_count(0)
    assert "og-unconfident" not in page.locator("#run-result").inner_html()


def test_a_typed_name_is_read_as_the_index_spells_it(page, monkeypatch):
    """A model that declares the input normalization: the result says what the model read."""
    import onegen.result_checks as checks

    declared = checks.model_check
    monkeypatch.setattr(checks, "model_check", lambda lm, key: "normalize" if key == "input_normalization"
                        else declared(lm, key))
    page.locator("#task label", has_text="Multi-hop").click()
    page.locator("#input textarea").fill("where was the director of film a born")
    page.locator("#run-btn").click()
    page.wait_for_selector("#run-status .og-ok")
    read_as = page.locator("#run-result .og-msg", has_text="Read as")
    expect(read_as).to_contain_text("where was the director of Film A born?")
    expect(read_as).to_contain_text("'film a' as 'Film A'")
    shot(page, "run-read-as")
