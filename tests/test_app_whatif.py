"""The app's replays without a browser (AppState.replay, the Error browser's gold-document replay,
onegen/ui/whatif.py), on the app tests' tiny scripted model and indexes (conftest_app.py)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("gradio")

from conftest_app import build_world, config_for, scripted_choices  # noqa: E402
from onegen.app_state import AppError, AppState  # noqa: E402
from onegen.error_analysis import ErrorCategory  # noqa: E402
from onegen.replay import Choice  # noqa: E402
from onegen.tasks import get_task  # noqa: E402
from onegen.ui.whatif import choice_options, gold_fix_html  # noqa: E402
from tiny import hotpot_item  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
QUESTION = "Where was the director of Film A born?"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    world = build_world(tmp_path_factory.mktemp("app-whatif"))
    return AppState(config_for(world), chooser_for=scripted_choices)


def opened_with(trace, example, wrong=True):
    rec = SimpleNamespace(key="k", trace=trace, example=example,
                          categories=[ErrorCategory("wrong answer")] if wrong else [])
    return SimpleNamespace(by_key=lambda: {"k": rec})


def test_replay_on_the_apps_index(app):
    trace = app.run_trace("multi-hop", QUESTION)
    options = choice_options(trace, 0)
    assert [v for _, v in options] == [*map(str, range(len(trace.retrievals[0].hits))), "random", "none"]
    assert options[0][0].endswith("(what the run used)")
    c = app.replay(trace, 0, Choice("rank", rank=1))
    assert c.replayed.retrievals[0].chosen_hit.id == trace.retrievals[0].hits[1].id
    assert c.replayed.cost.forward_tokens["prompt"] == 0 and c.replayed.replay.prefix_tokens > 0
    with pytest.raises(AppError, match="Step 7 is not a retrieval step"):
        app.replay(trace, 7, Choice("none"))


def test_the_gold_document_fixes_a_wrong_hop(app):
    trace = app.run_trace("multi-hop", QUESTION)
    gold_title = trace.retrievals[0].hits[1].title  # not what the run read at its first hop
    example = get_task("multi-hop").item_parser()(hotpot_item("q9", "Corvale", decomposition=[
        {"title": gold_title}, {"title": trace.retrievals[1].chosen_hit.title}]), 0)
    html = gold_fix_html(app, opened_with(trace, example), "k")
    assert "with the gold document at step 1" in html and 'class="og-whatif"' in html
    replayed_head = html.split('data-side="replayed"')[1].split("</div>")[0]
    assert gold_title in replayed_head
    # A right example, or no example selected: a message, no replay.
    assert "right already" in gold_fix_html(app, opened_with(trace, example, wrong=False), "k")
    assert "Select an example" in gold_fix_html(app, None, None)
