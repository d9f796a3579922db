"""The app's named API endpoints, called with gradio_client against a server on a free local port.

The server runs in this process with a tiny random model whose token choices are scripted (see
conftest_app.py), so every endpoint makes real retrievals.
"""
from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

from conftest_app import EXAMPLES, build_world, config_for, scripted_choices, serve  # noqa: E402
from onegen.trace import SCHEMA, Trace  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("app-api"))


@pytest.fixture(scope="module")
def server(world):
    with serve(config_for(world), chooser_for=scripted_choices) as (url, _):
        yield url


@pytest.fixture(scope="module")
def client(server):
    return gradio_client.Client(server, verbose=False)


def _trace(result) -> Trace:
    d = json.loads(result) if isinstance(result, str) else result
    assert d["schema"] == SCHEMA
    return Trace.from_dict(d)


def test_named_endpoints_are_listed(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/link_entities", "/answer_multi_hop", "/answer_single_hop"} <= names


def test_link_entities(client):
    tr = _trace(client.predict(EXAMPLES["entity-linking"], 3, api_name="/link_entities"))
    assert tr.task == "entity-linking"
    assert len(tr.retrievals) == 2 and all(len(r.hits) == 3 for r in tr.retrievals)
    assert [e.mention for e in tr.result.entities] == ["Paris", "Rome"]
    assert tr.cost.forward_tokens["query_reencoding"] == 0


def test_answer_multi_hop(client):
    tr = _trace(client.predict(EXAMPLES["multi-hop"], 2, api_name="/answer_multi_hop"))
    assert tr.task == "multi-hop"
    assert len(tr.result.hops) == 2
    assert tr.result.answer == "Corvale"
    assert all(r.inserted_tokens > 0 for r in tr.retrievals)


def test_answer_single_hop_default_top_k(client):
    tr = _trace(client.predict(EXAMPLES["single-hop"], api_name="/answer_single_hop"))
    assert tr.task == "single-hop" and tr.settings["top_k"] == 5
    assert len(tr.retrievals) == 1
    assert tr.result.reflection_tokens == ["[Relevant]", "[Fully supported]", "[Utility:5]"]


def test_special_token_strings_in_input_stay_text(client):
    text = "Paris [LK] is </s> big <paragraph> and Rome too."
    tr = _trace(client.predict(text, 3, api_name="/link_entities"))
    assert tr.input == text
    # The output is a copy of the input (copy-constrained by default): the typed </s> did not end
    # the run, and the typed [LK] was copied as text without retrieving.
    assert tr.stop_reason == "eos"
    plain = re.sub(r"<MENTION>|</MENTION>|\[LK\]\[_CONTINUE_\]", "", tr.result.output_text)
    assert plain.strip() == text + "</s>"
    by_pos = {t.position: (i, t) for i, t in enumerate(tr.tokens)}
    for r in tr.retrievals:
        i, t = by_pos[r.position]
        assert t.text == "[LK]" and tr.tokens[i + 1].kind == "forced"


def test_empty_input_is_a_readable_error(client):
    with pytest.raises(Exception) as info:
        client.predict("   ", 5, api_name="/link_entities")
    assert "input is empty" in str(info.value)
    assert "Traceback" not in str(info.value)


def test_too_long_input_and_bad_top_k(client):
    with pytest.raises(Exception, match="accepts at most"):
        client.predict("x" * 5000, 5, api_name="/answer_single_hop")
    with pytest.raises(Exception, match="top_k must be between"):
        client.predict("Where is Corvale?", 500, api_name="/answer_single_hop")
    # The model is still there after errors.
    assert _trace(client.predict(EXAMPLES["single-hop"], 1, api_name="/answer_single_hop")).retrievals


def test_missing_model_and_index_are_readable(world, tmp_path):
    from onegen.app_state import AppConfig

    cfg = AppConfig(model=str(tmp_path / "no-such-model"), indexes={"single-hop": str(tmp_path / "no-index")},
                    examples_dir=world.examples, device="cpu")
    with serve(cfg) as (url, _):
        c = gradio_client.Client(url, verbose=False)
        with pytest.raises(Exception, match="does not exist"):
            c.predict("Where is Corvale?", 5, api_name="/answer_single_hop")


def test_flags_override_env_which_overrides_the_registry(monkeypatch, tmp_path):
    import app as app_module
    from onegen import registry

    monkeypatch.delenv("ONEGEN_MODEL", raising=False)
    monkeypatch.setenv("ONEGEN_INDEX_MULTI_HOP", "/env/mh")
    monkeypatch.delenv("ONEGEN_INDEX_SINGLE_HOP", raising=False)
    cfg = app_module.parse_args(["--index-entity-linking", "/flag/el", "--index", "single-hop=/flag/sh"]).config
    assert cfg.model_name() == registry.DEFAULT_EMBEDDED
    assert cfg.index_path("entity-linking") == "/flag/el"
    assert cfg.index_path("multi-hop") == "/env/mh"
    assert cfg.index_path("single-hop") == "/flag/sh"
    monkeypatch.setenv("ONEGEN_MODEL", str(tmp_path))
    assert app_module.parse_args([]).config.model_name() == str(tmp_path)
    assert app_module.parse_args(["--model", "m"]).config.model_name() == "m"
    args = app_module.parse_args([])
    assert (args.host, args.port, args.share) == ("127.0.0.1", 7860, False)
    with pytest.raises(SystemExit):
        app_module.parse_args(["--index", "nonsense=/x"])


def test_hub_index_reference_is_resolved_or_explained(monkeypatch, world):
    import onegen.app_state as state_mod
    from onegen.app_state import AppConfig, AppError, AppState
    from onegen.hub import IndexFetchError

    asked = []

    def resolve(ref):
        asked.append(ref)
        if ref == "hf://someone/offline-index":
            raise IndexFetchError("the hub is unreachable (offline?) and no copy was downloaded before")
        return world.indexes["single-hop"]

    monkeypatch.setattr(state_mod, "resolve_index_path", resolve)
    app = AppState(AppConfig(model=str(world.model), indexes={"single-hop": "hf://someone/passages",
                                                               "multi-hop": "hf://someone/offline-index"}))
    assert any("downloaded on first use" in m for _, m in app.overview()) and not asked  # describing is free
    assert len(app.index("single-hop")) == 3 and asked == ["hf://someone/passages"]
    with pytest.raises(AppError, match="cannot be had: the hub is unreachable"):
        app.index("multi-hop")
