"""`python -m onegen replay` on a tiny model folder and index: both continuations side by side, the
first difference marked, the results compared; one clear error line for a bad request."""
from __future__ import annotations

import json

import pytest

from onegen.__main__ import main as cli
from onegen.encode import build_index
from onegen.render_replay import MARK_CLOSE, MARK_OPEN
from onegen.trace import Trace
from scripted import multi_hop_script, script
from tiny import PARAGRAPHS, build_tiny_model, load_tiny

pytestmark = pytest.mark.usefixtures("one_thread")
QUESTION = "Where was the director of Film A born?"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-replay")
    folder = build_tiny_model("multi-hop", root)
    build_index(load_tiny("multi-hop", root), "multi-hop", PARAGRAPHS).save(root / "index")
    return {"root": root, "model": folder, "index": root / "index",
            "other-model": build_tiny_model("multi-hop", root, seed=1)}


def call(argv, capsys) -> tuple[int, str, str]:
    rc = cli([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.fixture
def trace_file(world, capsys, monkeypatch, tmp_path):
    lm = load_tiny("multi-hop", world["root"])
    script(monkeypatch, lm, multi_hop_script(lm))
    rc, out, err = call(["run", "--task", "multi-hop", "--model", world["model"], "--index", world["index"],
                         "--text", QUESTION, "--top-k", "3", "--json"], capsys)
    assert rc == 0, err
    path = tmp_path / "trace.json"
    path.write_text(out)
    return path


def test_replay_prints_both_continuations_and_the_results(world, capsys, trace_file, tmp_path):
    original = Trace.from_json(trace_file.read_text())
    out_file = tmp_path / "replayed.json"
    rc, out, err = call(["replay", trace_file, "--step", "0", "--choose", "2", "--out", out_file], capsys)
    assert rc == 0, err
    lines = out.splitlines()
    other = original.retrievals[0].hits[2]
    assert lines[0].startswith("Retrieval 0 ([Question Representation] at position ")
    assert f"the rank-2 candidate, {other.title!r} ({other.id}), instead of " in lines[0]
    assert "prefilled in one pass" in lines[1]
    header = next(ln for ln in lines if ln.startswith("original "))
    assert header.split("|")[1].strip() == "replayed"
    rows = [ln for ln in lines if " | " in ln and not ln.startswith("Result")]
    assert sum(ln.count(MARK_OPEN) for ln in rows) == 2 and sum(ln.count(MARK_CLOSE) for ln in rows) == 2  # both sides
    assert any(ln.startswith("First difference: token ") for ln in lines)
    assert lines[-1].startswith("Result: original 'Corvale' | replayed ")
    replayed = Trace.from_json(out_file.read_text())
    assert replayed.replay.step == 0 and replayed.replay.document == other.id
    assert replayed.replay.original == original.digest()
    assert "replayed trace written to" in err


def test_replay_json_is_one_object_comparing_both_runs(world, capsys, trace_file):
    original = Trace.from_json(trace_file.read_text())
    rc, out, err = call(["replay", trace_file, "--step", "0", "--choose", "2", "--json"], capsys)
    assert rc == 0, err
    d = json.loads(out)  # the whole of stdout is one object
    other, first = original.retrievals[0].hits[2], original.retrievals[0].chosen_hit
    assert d["step"] == 0 and d["task"] == "multi-hop" and d["choice"].startswith("the rank-2 candidate")
    assert d["original"]["digest"] == original.digest() and d["original"]["result"] == "Corvale"
    assert d["original"]["document"]["id"] == first.id and d["replayed"]["document"]["id"] == other.id
    assert d["replayed"]["document"]["title"] == other.title
    diff = d["first_difference"]
    start = original.retrievals[0].position + 1 - len(original.prompt_ids)
    assert diff["token"] - diff["after_step"] == start
    assert diff["original"]["text"] == original.tokens[diff["token"]].text
    assert diff["original"]["id"] != diff["replayed"]["id"]
    assert d["original"]["continuation"] == "".join(t.text for t in original.tokens[start:])
    assert d["same_result"] == (d["original"]["result"] == d["replayed"]["result"])
    # Only what follows the changed step was forwarded again: the prefix plus the rest is the total.
    assert d["prefix_tokens"] == original.retrievals[0].position + 1
    assert d["prefix_tokens"] + d["recomputed_forward_tokens"] == d["replayed"]["total_forward_tokens"]
    assert 0 < d["recomputed_forward_tokens"] < d["original"]["total_forward_tokens"]


def test_replay_json_without_a_difference(world, capsys, trace_file):
    rc, out, err = call(["replay", trace_file, "--step", "1", "--choose", "0", "--json"], capsys)
    assert rc == 0, err
    d = json.loads(out)
    assert d["first_difference"] is None and d["same_result"] is True
    assert d["original"]["continuation"] == d["replayed"]["continuation"]


def test_rank_zero_reports_no_difference(world, capsys, trace_file):
    rc, out, err = call(["replay", trace_file, "--step", "1", "--choose", "0"], capsys)
    assert rc == 0, err
    assert "The two runs wrote the same tokens after the changed retrieval." in out
    assert "(the same result)" in out and MARK_OPEN not in out


@pytest.mark.parametrize("case,expect", [
    ("bad-step", "step 5 is not a retrieval step of this trace: it has 2 retrievals (steps 0 to 1)"),
    ("rank-beyond", "rank 3 is beyond the 3 candidates recorded at step 0"),
    ("bad-choice", "--choose takes a rank (0 is the top hit), 'random' or 'none', not 'best'"),
    ("other-model", "this trace was written by another model"),
    ("no-trace", "does not exist"),
    ("not-a-trace", "malformed trace"),
    ("candidates-run", "pass them again with --candidates FILE"),
])
def test_bad_replays_are_one_clear_line(world, capsys, trace_file, tmp_path, case, expect):
    not_a_trace = tmp_path / "x.json"
    not_a_trace.write_text(json.dumps({"schema": "onegen-trace/1", "task": "multi-hop"}))
    candidates_run = tmp_path / "c.json"
    d = json.loads(trace_file.read_text())
    d["index"]["path"] = "candidates"
    candidates_run.write_text(json.dumps(d))
    argv = {
        "bad-step": [trace_file, "--step", "5", "--choose", "0"],
        "rank-beyond": [trace_file, "--step", "0", "--choose", "3"],
        "bad-choice": [trace_file, "--step", "0", "--choose", "best"],
        "other-model": [trace_file, "--step", "0", "--choose", "1", "--model", world["other-model"],
                        "--index", world["index"]],
        "no-trace": [tmp_path / "missing.json", "--step", "0", "--choose", "0"],
        "not-a-trace": [not_a_trace, "--step", "0", "--choose", "0"],
        "candidates-run": [candidates_run, "--step", "0", "--choose", "0"],
    }[case]
    rc, out, err = call(["replay", *argv], capsys)
    assert rc == 2 and out == ""
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]  # after any loading progress bar
    assert len(errors) == 1 and "Traceback" not in err and expect in errors[0], err
