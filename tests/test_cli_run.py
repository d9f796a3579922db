"""`python -m onegen run` on a tiny model folder and a tiny index built here; its text renderer."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from onegen import loading, registry
from onegen.__main__ import main as cli
from onegen.encode import build_index
from onegen.engine import DoneEvent, Engine
from onegen.render_text import render_events, render_trace
from onegen.trace import Trace
from scripted import LongestSecondChooser, el_script, multi_hop_script, script, text_ids
from tiny import ENTITIES as ALL_ENTITIES, PARAGRAPHS, build_tiny_model, load_tiny

ENTITIES = ALL_ENTITIES[:2]



pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tiny model folders and their indexes."""
    root = tmp_path_factory.mktemp("cli")
    out = {}
    for task, docs in (("multi-hop", PARAGRAPHS), ("entity-linking", ENTITIES)):
        folder = build_tiny_model(task, root)
        build_index(load_tiny(task, root), task, docs).save(root / f"index-{task}")
        out[task] = (folder, root / f"index-{task}")
    out["other-model"] = build_tiny_model("multi-hop", root, seed=1)
    out["root"] = root
    return out


_LOADED: dict = {}
REAL_LOAD_MODEL = loading.load_model


@pytest.fixture(autouse=True)
def reuse_loaded_models(monkeypatch):
    """Each folder is loaded once per module (the CLI loads per call); the task check still runs."""
    real = loading.load_model

    def load(name=None, *, task=None, device=None, **kw):
        key = (str(name), device)
        if key not in _LOADED:
            _LOADED[key] = real(name, device=device, **kw)
        lm = _LOADED[key]
        if task and task not in lm.tasks:
            lm.protocol(task)  # raises MissingTokenError as load_model does
        return lm

    monkeypatch.setattr(loading, "load_model", load)


def run(argv, capsys) -> tuple[int, str, str]:
    rc = cli(["run", *map(str, argv)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def mh_args(world, *extra):
    model, index = world["multi-hop"]
    return ["--task", "multi-hop", "--model", model, "--index", index, *extra]


# -- output -------------------------------------------------------------------------------------------

def test_json_prints_the_trace_only(world, capsys):
    rc, out, err = run(mh_args(world, "--text", "Where was Ivo born?", "--max-new-tokens", "6", "--top-k", "2",
                               "--json"), capsys)
    assert rc == 0, err
    assert out.count("\n") == 1  # one JSON document on one line, nothing else
    trace = Trace.from_json(out)
    assert trace.task == "multi-hop" and trace.input == "Where was Ivo born?"
    assert trace.settings["top_k"] == 2 and trace.settings["max_new_tokens"] == 6
    assert trace.stop_reason == "max_new_tokens" and len(trace.tokens) == 6
    assert trace.index["path"] == str(world["multi-hop"][1]) and trace.index["documents"] == 3
    assert trace.settings["decoder"] == "fused-llama"


def test_transformers_forward_flag_writes_the_same_tokens(world, capsys):
    args = mh_args(world, "--text", "Where was Ivo born?", "--max-new-tokens", "8", "--json")
    traces = {}
    for extra in ((), ("--transformers-forward",)):
        rc, out, err = run([*args, *extra], capsys)
        assert rc == 0, err
        traces[extra] = Trace.from_json(out)
    fused, plain = traces[()], traces[("--transformers-forward",)]
    assert (fused.settings["decoder"], plain.settings["decoder"]) == ("fused-llama", "transformers")
    assert [t.id for t in fused.tokens] == [t.id for t in plain.tokens]


def test_text_output_streams_steps_result_and_cost(world, capsys, monkeypatch):
    lm = load_tiny("multi-hop", world["root"])
    script(monkeypatch, lm, multi_hop_script(lm))
    rc, out, err = run(mh_args(world, "--text", "Where was the director of Film A born?", "--top-k", "3"), capsys)
    assert rc == 0, err
    assert out.startswith("== multi-hop | model ")
    assert "First, who directed Film A?[Question Representation]" in out
    assert "[retrieval 1] [Question Representation] at position" in out
    assert "query: 'First, who directed Film A?'" in out
    assert "query: 'Second, where was Ivo Brandel born?'" in out
    assert out.count("    * 1. ") == 2 and "      3. " in out  # top-3, the chosen one starred
    assert "inserted " in out and " tokens: <paragraph>wiki title: " in out
    assert "Answer: Corvale" in out and "hop 1: 'First, who directed Film A?' -> " in out
    assert "Stopped: complete </FINAL-ANSWER>." in out
    cost = [ln for ln in out.splitlines() if ln.startswith("Cost: ")]
    assert len(cost) == 1 and "forward tokens prompt " in cost[0] and "inserted " in cost[0] and "seconds " in cost[0]
    assert cost[0].endswith("| fused Llama decoder")  # the tiny checkpoints are Llamas on the CPU


def test_entity_linking_lists_linked_entities_with_spans(world, capsys, monkeypatch):
    model, index = world["entity-linking"]
    lm = load_tiny("entity-linking", world["root"])
    script(monkeypatch, lm, el_script(lm))
    # The script writes a malformed [LK]; only the free loop lets it through.
    rc, out, err = run(["--task", "entity-linking", "--model", model, "--index", index, "--text", "Paris and Rome.",
                        "--free-copy"], capsys)
    assert rc == 0, err
    assert "Linked entities (2):" in out
    assert "'Paris' (chars 0-5) -> " in out and "'Rome' (chars 10-14) -> " in out
    assert "1 retrieval token(s) without a mention" in out
    assert "nothing inserted" in out
    assert "Free decoding: the model could rewrite the text" in out

    script(monkeypatch, lm, el_script(lm))
    rc, out, err = run(["--task", "entity-linking", "--model", model, "--index", index, "--text", "Paris and Rome."],
                       capsys)
    assert rc == 0, err
    assert "Copy constraint on" in out and "without a mention" not in out


def test_no_early_close_flag_is_recorded_and_lets_the_mask_fill_the_mention(world, capsys, monkeypatch):
    model, index = world["entity-linking"]
    lm = load_tiny("entity-linking", world["root"])
    # The model tags Paris, then wants " and" where the input goes on ", where it rains".
    ids = text_ids(lm, "entity-linking", "<MENTION>Paris") + text_ids(lm, "entity-linking", " and")
    monkeypatch.setattr(Engine, "default_chooser", LongestSecondChooser(lm, ids))
    mentions = {}
    for extra in ((), ("--no-early-close",)):
        rc, out, err = run(["--task", "entity-linking", "--model", model, "--index", index, "--text",
                            "Paris, where it rains, and Rome.", "--json", *extra], capsys)
        assert rc == 0, err
        trace = Trace.from_json(out)
        mentions[extra] = (trace.settings["early_close"], trace.result.entities[0].mention)
    assert mentions[()] == (True, "Paris")
    early, mention = mentions[("--no-early-close",)]
    assert early is False and mention.startswith("Paris, where it rains")


@pytest.mark.parametrize("layout", ["jsonl-text", "json-sentences", "json-pairs"])
def test_candidates_file_instead_of_an_index(world, capsys, tmp_path, layout):
    docs = [{"title": d.title, "text": d.text} for d in PARAGRAPHS]
    if layout == "jsonl-text":
        path = tmp_path / "c.jsonl"
        path.write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    elif layout == "json-sentences":
        path = tmp_path / "c.json"
        path.write_text(json.dumps([{"id": d.id, "title": d.title, "sentences": d.sentences} for d in PARAGRAPHS]))
    else:
        path = tmp_path / "c.json"
        path.write_text(json.dumps([[d.title, d.sentences] for d in PARAGRAPHS]))
    model, _ = world["multi-hop"]
    rc, out, err = run(["--task", "multi-hop", "--model", model, "--candidates", path, "--text", "Where?",
                        "--max-new-tokens", "3", "--json"], capsys)
    assert rc == 0, err
    trace = Trace.from_json(out)
    assert trace.index["documents"] == 3 and trace.index["vectors"] == 6  # one vector per sentence
    assert trace.cost.document_tokens > 0


def test_example_reads_a_line_of_the_task_file(world, capsys, monkeypatch, tmp_path):
    (tmp_path / "examples").mkdir()
    lines = [{"text": "Who directed Film A?"}, {"text": "Where was Ivo Brandel born?", "answer": "Corvale"}]
    (tmp_path / "examples" / "multi-hop.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    monkeypatch.setattr(registry, "ASSETS", tmp_path)
    rc, out, err = run(mh_args(world, "--example", "1", "--max-new-tokens", "2", "--json"), capsys)
    assert rc == 0, err
    assert Trace.from_json(out).input == "Where was Ivo Brandel born?"
    rc, out, err = run(mh_args(world, "--example", "2"), capsys)
    assert rc == 2 and out == ""
    assert "example 2 is out of range" in err and "has 2 examples (0 to 1)" in err


def test_default_index_comes_from_the_registry(world, capsys, monkeypatch):
    model, index = world["multi-hop"]
    monkeypatch.setenv("ONEGEN_INDEX_MULTI_HOP", str(index))
    rc, out, err = run(["--task", "multi-hop", "--model", model, "--text", "Where?", "--max-new-tokens", "2",
                        "--json"], capsys)
    assert rc == 0, err
    assert Trace.from_json(out).index["path"] == str(index)
    # The index a run searches is always named on stderr, --json too (stdout stays one document).
    assert f"index: {index} (3 documents, multi-hop protocol" in err
    monkeypatch.delenv("ONEGEN_INDEX_MULTI_HOP")
    rc, out, err = run(["--task", "multi-hop", "--model", model, "--text", "Where?"], capsys)
    assert rc == 2 and "no default multi-hop index" in err and "--candidates" in err


def test_model_from_the_environment(world, capsys, monkeypatch):
    model, index = world["multi-hop"]
    monkeypatch.setenv("ONEGEN_MODEL", str(model))
    assert REAL_LOAD_MODEL(None, device="cpu").name == str(model)  # not "None"
    rc, out, err = run(["--task", "multi-hop", "--index", index, "--text", "x", "--max-new-tokens", "1", "--json"],
                       capsys)
    assert rc == 0, err
    assert Trace.from_json(out).model["name"] == str(model)


def test_hub_index_reference_is_resolved(world, capsys, monkeypatch):
    from onegen import hub

    model, index = world["multi-hop"]
    asked = []

    def resolve(ref, **kw):
        asked.append(ref)
        if ref == "hf://acme/missing":
            raise hub.IndexFetchError("hf://acme/missing is not on the hub and no copy was downloaded before")
        return index

    monkeypatch.setattr(hub, "resolve_index_path", resolve)
    rc, out, err = run(["--task", "multi-hop", "--model", model, "--index", "hf://acme/paragraphs", "--text", "x",
                        "--max-new-tokens", "1", "--json"], capsys)
    assert rc == 0, err
    assert asked == ["hf://acme/paragraphs"] and Trace.from_json(out).index["path"] == str(index)
    rc, out, err = run(["--task", "multi-hop", "--model", model, "--index", "hf://acme/missing", "--text", "x"], capsys)
    assert rc == 2 and "error: hf://acme/missing is not on the hub" in err


# -- errors: one line on stderr, exit 2 -------------------------------------------------------------------

def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_missing_default_model_says_which_folder_and_how(world, capsys, monkeypatch, tmp_path):
    missing = tmp_path / "models" / "onegen-smol"
    entry = registry.ModelEntry("onegen-smol", str(missing), ("multi-hop",), "test", embedded=True)
    monkeypatch.setattr(registry, "EMBEDDED", (entry,))
    monkeypatch.delenv("ONEGEN_MODEL", raising=False)
    rc, out, err = run(["--task", "multi-hop", "--text", "Where?"], capsys)
    line = one_error_line(err)
    assert rc == 2 and out == ""
    assert "'onegen-smol' is not installed" in line and str(missing) in line and "python -m onegen train" in line


@pytest.mark.parametrize("case,expect", [
    ("empty", "the input is empty"),
    ("too-long", "the input is too long"),
    ("wrong-protocol", "was built for the 'multi-hop' protocol, not 'entity-linking'"),
    ("other-model", "was built with model"),
    ("missing-token", "cannot run the entity-linking protocol"),
    ("no-model-folder", "no model folder at ./no/such/model"),
    ("missing-index", "the index folder"),
    ("bad-candidates", "needs a non-empty \"text\" or \"sentences\""),
    ("bad-device", "unknown device 'tpu9'"),
])
def test_errors_are_one_clear_line(world, capsys, tmp_path, case, expect):
    model, index = world["multi-hop"]
    el_model, el_index = world["entity-linking"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"title": "No text"}]))
    argv = {
        "empty": mh_args(world, "--text", "   "),
        "too-long": mh_args(world, "--text", "word " * 1500),
        "wrong-protocol": ["--task", "entity-linking", "--model", el_model, "--index", index, "--text", "x"],
        "other-model": ["--task", "multi-hop", "--model", world["other-model"], "--index", index, "--text", "x"],
        "missing-token": ["--task", "entity-linking", "--model", model, "--index", el_index, "--text", "x"],
        "no-model-folder": ["--task", "multi-hop", "--model", "./no/such/model", "--index", index, "--text", "x"],
        "missing-index": ["--task", "multi-hop", "--model", model, "--index", tmp_path / "nope", "--text", "x"],
        "bad-candidates": ["--task", "multi-hop", "--model", model, "--candidates", bad, "--text", "x"],
        "bad-device": mh_args(world, "--text", "x", "--device", "tpu9"),
    }[case]
    rc, out, err = run(argv, capsys)
    assert rc == 2
    assert expect in one_error_line(err)
    assert out == ""  # nothing half-printed before the error


def test_cli_process_exits_2_without_traceback_and_starts_light():
    code = "import sys, onegen.commands.run; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    light = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=registry.ASSETS.parent)
    assert light.stdout.strip() == "[]", light.stderr
    p = subprocess.run([sys.executable, "-m", "onegen", "run", "--task", "multi-hop", "--example", "100000"],
                       capture_output=True, text=True, cwd=registry.ASSETS.parent, timeout=60)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.startswith("error: ") and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr


# -- the renderer ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("task", ["multi-hop", "entity-linking"])
def test_render_trace_matches_the_streamed_view(world, monkeypatch, task):
    lm = load_tiny(task, world["root"])
    script(monkeypatch, lm, multi_hop_script(lm) if task == "multi-hop" else el_script(lm))
    docs = PARAGRAPHS if task == "multi-hop" else ENTITIES
    events = list(Engine(lm).run(task, "Paris and Rome, and Film A?", candidates=docs))
    trace = events[-1].trace
    assert isinstance(events[-1], DoneEvent)
    streamed = "".join(render_events(events))
    assert streamed == render_trace(trace, header=False)
    assert render_trace(Trace.from_json(trace.to_json())) == render_trace(trace)
    assert streamed.count("[retrieval ") == len(trace.retrievals)


def test_render_events_rejects_other_objects():
    with pytest.raises(TypeError, match="not an engine event"):
        list(render_events([object()]))
