"""The error browser's dataset runs as a job of the service layer (onegen/jobs.py): progress,
stop after the current example, resume, errors; and the app's one error-to-message function.
A tiny random model whose token choices are scripted through the app's chooser (conftest_app.py)."""
from __future__ import annotations

import json
import logging

import pytest

from conftest_app import build_world, config_for, scripted_choices  # noqa: E402
from tiny import hotpot_item  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

ITEMS = [hotpot_item(f"q{i}", "Corvale") for i in range(4)]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("app-jobs"))


@pytest.fixture()
def app(world):
    from onegen.app_state import AppState

    return AppState(config_for(world), chooser_for=scripted_choices)


@pytest.fixture()
def request_for(tmp_path):
    from onegen.jobs import DatasetRequest

    data = tmp_path / "tiny-multihop.json"
    data.write_text(json.dumps(ITEMS))
    return lambda **kw: DatasetRequest(**{"data": data, "task": None, "candidates": "context", "limit": 4,
                                          "top_k": 2, **kw})


def test_a_run_reports_progress_then_resumes(app, request_for, tmp_path):
    from onegen.jobs import DatasetRun

    job = DatasetRun(app, request_for(), tmp_path / "out").start()
    seen = [(p.done, p.total) for p in job.progress()]
    assert seen == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
    evaluated = job.outcome()
    assert evaluated.examples == 4 and evaluated.resumed == 0 and evaluated.results.task == "multi-hop"
    assert not job.stopped
    (out,) = (tmp_path / "out").glob("*.jsonl")  # the examples decoded as one batch (onegen/batch.py)
    assert {json.loads(x)["trace"]["settings"]["decoder"] for x in out.read_text().splitlines()} == {"batched-fused-llama"}
    again = DatasetRun(app, request_for(), tmp_path / "out").start()
    assert [p.done for p in again.progress()] == [4]
    assert again.outcome().resumed == 4


def test_stop_ends_the_run_after_the_current_example(app, request_for, tmp_path):
    from onegen.jobs import DatasetRun

    job = DatasetRun(app, request_for(), tmp_path / "out").start()
    done = []
    for p in job.progress():
        done.append(p.done)
        job.stop()
    assert job.stopped and job.outcome() is None and done[-1] < 4
    resumed = DatasetRun(app, request_for(), tmp_path / "out").start()
    assert [p.done for p in resumed.progress()][0] == done[-1]  # the finished examples stay in the file
    assert resumed.outcome().examples == 4


def test_leaving_the_progress_stops_the_run(app, request_for, tmp_path):
    from onegen.jobs import DatasetRun

    job = DatasetRun(app, request_for(), tmp_path / "out").start()
    progress = job.progress()
    next(progress)
    progress.close()  # what a cancelled page does to its generator
    assert job.stopped and job.outcome() is None


def test_a_dataset_whose_documents_the_index_lacks_is_warned_about(app, world, tmp_path):
    """Index candidates on questions about other documents: the page's message names the index
    and says how to search the dataset's own documents instead."""
    pytest.importorskip("gradio")
    from onegen.jobs import DatasetRequest, DatasetRun
    from onegen.ui.errors_tab import ran_message

    context = [[title, [f"{title} is a city."]] for title in ("Köln", "Москва", "大阪")]
    items = [{**hotpot_item(f"r{i}", "Köln"), "context": context, "supporting_facts": [["Köln", 0]]}
             for i in range(2)]
    data = tmp_path / "real.json"
    data.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    job = DatasetRun(app, DatasetRequest(data, None, "index", 2, 2), tmp_path / "out").start()
    list(job.progress())
    evaluated = job.outcome()
    assert evaluated.index_warning and str(world.indexes["multi-hop"]) in evaluated.index_note
    message = ran_message(evaluated, "real.json")
    assert message.startswith("Ran 2 examples of real.json. Warning: index: ")
    assert "Only 0 of the 3 document titles" in message and "each question's context" in message
    ok = DatasetRun(app, DatasetRequest(data, None, "context", 2, 2), tmp_path / "out").start()
    list(ok.progress())
    assert ok.outcome().index_note is None and not ok.outcome().index_warning


def test_a_failed_run_raises_its_readable_error(app, request_for, tmp_path):
    from onegen.app_state import AppError
    from onegen.jobs import DatasetRun

    job = DatasetRun(app, request_for(limit=10_000), tmp_path / "out").start()
    assert list(job.progress()) == []
    with pytest.raises(AppError, match="Run between 1 and"):
        job.outcome()


def test_a_run_counts_skipped_items_and_says_when_ids_come_from_positions(app, request_for, tmp_path):
    from onegen.jobs import DatasetRun

    data = tmp_path / "no-ids.json"
    no_id = {k: v for k, v in ITEMS[0].items() if k != "_id"}
    data.write_text(json.dumps([no_id, {"question": "broken"}, no_id]))
    job = DatasetRun(app, request_for(data=data), tmp_path / "out").start()
    list(job.progress())
    evaluated = job.outcome()
    assert evaluated.examples == 2 and evaluated.skipped == 1
    assert [r.key for r in evaluated.results.records] == ["0", "2"]
    assert evaluated.results.run["skipped_items"] == 1 and evaluated.results.metrics.skipped == 1
    pytest.importorskip("gradio")
    from onegen.ui.errors_tab import ran_message

    text = ran_message(evaluated, None)
    assert "1 item of the file could not be read" in text and "position in the file as its id" in text


def test_error_message_shows_onegen_errors_and_hides_the_rest(caplog):
    pytest.importorskip("gradio")
    from onegen.app_state import AppError
    from onegen.ui.shared import error_message
    from onegen.trace import TraceFormatError

    assert error_message(AppError("The input is empty.")) == "The input is empty."
    assert error_message(TraceFormatError("bad schema")) == "bad schema"  # any OneGenError, not only AppError
    with caplog.at_level(logging.ERROR, logger="onegen.app"):
        msg = error_message(KeyError("secret/path"))
    assert msg.startswith("Something went wrong (KeyError)") and "secret" not in msg
    assert "unexpected error" in caplog.text


def test_preload_warms_up_every_task_unseen(world):
    from onegen.app_state import AppState
    from onegen.tasks import TASK_NAMES

    warmed = []

    def counting(lm, task):
        warmed.append(task)
        return scripted_choices(lm, task)

    app = AppState(config_for(world), chooser_for=counting)
    app.preload()
    assert app.model_loaded and sorted(warmed) == sorted(TASK_NAMES)  # one throw-away run per task
    assert app.runs.going("") == 0 and not app.run_lock.locked()
    # A visitor's run going at preload time: the warm-ups give way to it.
    warmed.clear()
    busy = AppState(config_for(world), chooser_for=counting)
    with busy.runs.start("tab-a"):
        busy.preload()
    assert busy.model_loaded and warmed == [] and not busy.run_lock.locked()


def test_one_run_per_visitor_and_a_bounded_queue(world):
    from onegen.app_state import AppError, AppState, RunGuard
    from onegen.ui import MAX_QUEUED, build_demo

    guard = RunGuard()
    with guard.start("tab-a") as stop:
        with pytest.raises(AppError, match="You already have 1 run going; wait for it to finish or press Stop"):
            with guard.start("tab-a"):
                pass
        with guard.start("tab-b"):  # another visitor is not held up
            assert guard.going("tab-b") == 1
        assert guard.stop("tab-a") and stop.is_set()
    assert guard.going("tab-a") == 0 and not guard.stop("tab-a")
    with guard.start("tab-a"):  # free again once the run ended
        pass
    demo = build_demo(AppState(config_for(world)))
    assert demo._queue.max_size == MAX_QUEUED


def test_stop_reaches_a_run_still_waiting_in_the_queue():
    from onegen.app_state import RunGuard

    guard = RunGuard()
    with guard.start("tab-b"):  # another visitor's run holds the model
        ticket = guard.reserve("tab-a")  # tab-a clicked Run: its run waits in the queue
        assert guard.stop("tab-a")  # ... and clicked Stop before it started
    with guard.start("tab-a", ticket) as stop:
        assert stop.is_set()  # the run sees it at once and does nothing
    # A reservation whose run never started (a full queue) does not stop the visitor's next run.
    guard.reserve("tab-a")
    guard.stop("tab-a")
    fresh = guard.reserve("tab-a")
    with guard.start("tab-a", fresh) as stop:
        assert not stop.is_set()
    # A ticket is claimed only by the visitor that reserved it, and only once.
    other = guard.reserve("tab-c")
    guard.stop("tab-c")
    with guard.start("tab-a", other) as stop:
        assert not stop.is_set()
    with guard.start("tab-c", other) as stop:
        assert stop.is_set()
    with guard.start("tab-c", other) as stop:
        assert not stop.is_set()


def test_reservations_expire(monkeypatch):
    from onegen import app_state
    from onegen.app_state import RunGuard

    guard = RunGuard()
    now = [1000.0]
    monkeypatch.setattr(app_state.time, "monotonic", lambda: now[0])
    old = guard.reserve("tab-a")
    now[0] += RunGuard.RESERVATION_TTL_S + 1
    guard.reserve("tab-b")  # a reservation prunes the expired ones
    assert old not in guard._owner and len(guard._waiting) == 1


def test_concurrent_runs_share_a_batch_and_each_gets_its_own_trace(world):
    """With the batch worker on, visitors' runs decode together; each gets the trace it would get
    alone (no cross-talk)."""
    import threading

    from onegen.app_state import AppError, AppState
    from onegen.batch import trace_signature

    batched = AppState(config_for(world, batch_runs=4), chooser_for=scripted_choices)
    alone = AppState(config_for(world), chooser_for=scripted_choices)
    asks = [("multi-hop", f"Where was the director of Film {c} born?") for c in "ABC"] + \
           [("entity-linking", "Paris and Rome."), ("entity-linking", "Rome, then Paris."), ("single-hop", "Who?")]
    traces: dict[int, object] = {}

    def visitor(i):
        traces[i] = batched.run_trace(*asks[i])

    threads = [threading.Thread(target=visitor, args=(i,)) for i in range(len(asks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    for i, (task, text) in enumerate(asks):
        trace = traces[i]
        assert trace.task == task and trace.input == text
        assert trace.settings["decoder"] == "batched-fused-llama"
        assert trace_signature(trace) == trace_signature(alone.run_trace(task, text))
    with pytest.raises(AppError, match="The input is empty"):  # the app's own input checks still come first
        next(batched.stream("multi-hop", "  "))


def test_a_shared_batch_lets_that_many_single_runs_in_at_once(world):
    """Gradio limits a concurrency group by its lowest limit: with a shared batch, the Run tab's
    run and the API's runs need their own group, as wide as the batch, or they would still reach
    the batch one at a time. Every other model call stays one at a time."""
    from onegen.app_state import AppState
    from onegen.ui import build_demo

    def groups(demo):
        return {f.fn.__qualname__.replace("build.<locals>.", ""): (f.concurrency_id, f.concurrency_limit)
                for f in demo.fns.values() if f.fn is not None}

    alone = groups(build_demo(AppState(config_for(world))))
    shared = groups(build_demo(AppState(config_for(world, batch_runs=4))))
    single = ["link_entities", "answer_multi_hop", "answer_single_hop", "RunView.run"]
    for name in single:
        assert alone[name] == ("model", 1), name
        assert shared[name] == ("batch", 4), name
    others = [n for n, (cid, _) in alone.items() if cid == "model" and n not in single]
    assert others  # compare, replay, the why views, the dataset run ...
    assert all(shared[n] == ("model", 1) for n in others)
