"""Batched single-pass decoding (onegen/batch.py) against batch 1 on tiny random checkpoints.

Scripted runs choose by script, so any difference is a bug; runs that take the random model's own
greedy choice may differ only at a near tie (top-two margin below the tolerance), which is counted.
Batches are smaller than the job lists, so runs finish while others continue and waiting ones join.
"""
from __future__ import annotations

import json
import re
import threading

import pytest

import onegen.batch as batch_mod
from onegen.batch import BatchEngine, BatchJob, BatchMemoryError, check_memory, compare, default_batch_size, \
    kv_bytes_per_sequence, memory_estimate, run_positions, trace_signature
from onegen.engine import Engine, InputError, RunSettings
from scripted import chooser, el_script, multi_hop_answering, multi_hop_script, text_ids, tid
from onegen.protocols import QR
from tiny import ENTITIES, PARAGRAPHS, PASSAGES

pytestmark = pytest.mark.usefixtures("one_thread")
FREE = RunSettings(copy_input=False)


def multi_hop_scripts(lm) -> list[list[int]]:
    """Different lengths, retrievals at different steps, one, two or no hops."""
    qr = tid(lm, QR)
    t = lambda s: text_ids(lm, "multi-hop", s)  # noqa: E731
    return [multi_hop_script(lm),
            multi_hop_answering(lm, "Lisbon"),
            t("Who?") + [qr] + t(" <FINAL-ANSWER>Corvale</FINAL-ANSWER>"),
            t("A much longer first thought before any retrieval happens at all, then") + [qr] + t(" done."),
            t("No retrieval at all, just an answer."),
            multi_hop_answering(lm, "a city whose name is rather long")]


def scripted_jobs(models):
    jobs = []
    lm = models["multi-hop"]
    for i, ids in enumerate(multi_hop_scripts(lm)):
        jobs.append(BatchJob("multi-hop", f"Where was the director of Film {'ABCDEF'[i]} born?" + " really" * i,
                             candidates=PARAGRAPHS, chooser=chooser(lm, ids)))
    lm = models["entity-linking"]
    t = lambda s: text_ids(lm, "entity-linking", s)  # noqa: E731
    for text, ids in [("Paris and Rome.", el_script(lm)), ("Paris.", t("<MENTION>Paris</MENTION>") + [tid(lm, "[LK]")]),
                      ("Nothing here to link at all.", t("Nothing here to link at all."))]:
        jobs.append(BatchJob("entity-linking", text, candidates=ENTITIES, settings=FREE, chooser=chooser(lm, ids)))
    lm = models["single-hop"]
    for text, answer in [("Where was Ivo Brandel born?", "[Relevant] Corvale."), ("Who?", "[Irrelevant] No idea at all, sorry."),
                         ("Which film?", "Film A.")]:
        jobs.append(BatchJob("single-hop", text, candidates=PASSAGES,
                             chooser=chooser(lm, text_ids(lm, "single-hop", answer))))
    return jobs


def single(models, job: BatchJob):
    return Engine(models[job.task], chooser=job.chooser).run_trace(
        job.task, job.text, candidates=job.candidates, settings=job.settings)


@pytest.mark.parametrize("task", ["multi-hop", "entity-linking", "single-hop"])
def test_scripted_batches_equal_batch_one(models, task):
    jobs = [j for j in scripted_jobs(models) if j.task == task]
    results = BatchEngine(models[task], batch_size=2).run_all(jobs)
    for job, r in zip(jobs, results):
        assert r.error is None, r.error
        one = single(models, job)
        assert trace_signature(r.trace) == trace_signature(one), job.text
        assert r.trace.result.output_text == one.result.output_text
        assert r.trace.settings["decoder"] == "batched-fused-llama"
    for r in results:  # a prompt position is either forwarded or copied from another run's same prefix
        ft = r.trace.cost.forward_tokens
        assert ft["prompt"] + ft.get("prefix_shared", 0) == len(r.trace.prompt_ids)
    if task != "single-hop":  # these prompts open with the task's instruction: later runs copy it
        assert any(r.trace.cost.forward_tokens.get("prefix_shared", 0) >= 8 for r in results)
    if task != "entity-linking":  # these scripts all retrieve
        assert all(r.trace.retrievals for r in results[:2])
    assert len({len(r.trace.tokens) for r in results}) > 1  # ragged: different lengths in one batch


def test_one_forward_call_a_step_for_the_whole_batch(models, monkeypatch):
    jobs = [j for j in scripted_jobs(models) if j.task == "multi-hop"]
    sizes: list[int] = []
    real = batch_mod.forward_packed

    def recording(decoders, ids):
        sizes.append(len(decoders))
        return real(decoders, ids)

    monkeypatch.setattr(batch_mod, "forward_packed", recording)
    results = BatchEngine(models["multi-hop"], batch_size=4).run_all(jobs)
    assert all(r.error is None for r in results)
    assert max(sizes) == 4  # four runs shared a forward call
    # The waiting runs joined when others finished: every job ran, never more than four at a time.
    assert sum(sizes) > len(sizes) and max(sizes) <= 4
    many = len(sizes)
    sizes.clear()
    BatchEngine(models["multi-hop"], batch_size=1).run_all(jobs)
    assert max(sizes) == 1
    assert many < len(sizes) / 2  # batching removes most forward calls


def test_the_lm_head_runs_once_a_step_for_every_run(models, monkeypatch):
    """The head reads the vocabulary's weights once per step for all runs' rows, not once per row."""
    jobs = [j for j in scripted_jobs(models) if j.task == "multi-hop"]
    lm = models["multi-hop"]
    steps: list[int] = []
    real = batch_mod.forward_packed
    monkeypatch.setattr(batch_mod, "forward_packed", lambda decs, ids: steps.append(len(decs)) or real(decs, ids))
    heads: list[int] = []
    hook = lm.lm_head.register_forward_hook(lambda mod, args, out: heads.append(args[0].shape[0]))
    try:
        results = BatchEngine(lm, batch_size=4).run_all(jobs)
    finally:
        hook.remove()
    assert all(r.error is None for r in results)
    assert len(heads) == len(steps)  # one head call a step, however many runs and draft rows it serves
    assert max(heads) > 4  # several runs' rows (drafts included) in one call
    for job, r in zip(jobs, results):
        assert trace_signature(r.trace) == trace_signature(single(models, job))


def test_a_refused_run_does_not_stop_the_batch(models):
    """Bad input is that run's error; the runs beside it finish as at batch 1."""
    lm = models["multi-hop"]
    jobs = [BatchJob("multi-hop", "Where?", candidates=PARAGRAPHS, chooser=chooser(lm, ids))
            for ids in multi_hop_scripts(lm)[:3]]
    jobs.insert(1, BatchJob("multi-hop", "", candidates=PARAGRAPHS))  # refused: its error, not the batch's
    results = BatchEngine(lm, batch_size=3).run_all(jobs)
    assert isinstance(results[1].error, InputError) and results[1].trace is None
    for job, r in zip(jobs[:1] + jobs[2:], results[:1] + results[2:]):
        assert trace_signature(r.trace) == trace_signature(single({"multi-hop": lm}, job))


@pytest.mark.parametrize("task,docs,settings", [
    ("multi-hop", PARAGRAPHS, [RunSettings(max_new_tokens=n) for n in (5, 17, 9, 30, 12)]),
    ("entity-linking", ENTITIES, [RunSettings(max_new_tokens=n) for n in (40, 12, 25, 60, 8)]),  # copy-constrained
    ("single-hop", PASSAGES, [RunSettings(max_new_tokens=n, draft_tokens=d) for n, d in ((6, 0), (20, 2), (11, 2), (3, 0), (25, 2))]),
])
def test_greedy_runs_equal_batch_one_up_to_near_ties(models, task, docs, settings):
    """The random model's own greedy choices: identical, or first different at a counted near tie."""
    lm = models[task]
    texts = ["Paris and Rome.", "Where was the director of Film A born?", "Ivo Brandel", "Rome, Paris, and Corvale too.",
             "Which city?"]
    jobs = [BatchJob(task, t, candidates=docs, settings=s) for t, s in zip(texts, settings)]
    results = BatchEngine(lm, batch_size=3).run_all(jobs)
    agreements = [compare(lm, single({task: lm}, j), r.trace) for j, r in zip(jobs, results)]
    assert all(a.identical or a.near_tie for a in agreements), agreements
    assert sum(a.identical for a in agreements) >= len(jobs) - 1  # near ties are rare, not the rule


def test_compare_reports_the_first_difference_and_its_margin(models):
    lm = models["multi-hop"]
    job = BatchJob("multi-hop", "Where?", candidates=PARAGRAPHS, settings=RunSettings(max_new_tokens=8))
    one = single(models, job)
    other = single(models, job)
    assert compare(lm, one, other).identical
    other.tokens[3].id = (other.tokens[3].id + 1) % len(lm.tokenizer)
    a = compare(lm, one, other, tolerance=0.0)
    assert not a.identical and a.first_difference == 3 and a.margin is not None and a.margin >= 0 and not a.near_tie
    assert compare(lm, one, other, tolerance=a.margin + 1).near_tie


def test_memory_estimate_and_refusal(models):
    lm = models["multi-hop"]
    per = kv_bytes_per_sequence(lm)
    cfg = lm.model.config
    assert per == 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) \
        * 4 * lm.context_length
    free = per * 10  # half of it for caches: five sequences fit
    assert memory_estimate(lm, 5, free).fits and not memory_estimate(lm, 6, free).fits
    assert check_memory(lm, 5, free).total == 5 * per
    with pytest.raises(BatchMemoryError, match=r"a batch of 6 needs .* try --batch-size 5"):
        check_memory(lm, 6, free)
    with pytest.raises(BatchMemoryError, match="at least 1"):
        check_memory(lm, 0, free)
    assert default_batch_size(lm, free) == 5 and default_batch_size(lm, per * 1000) == batch_mod.DEFAULT_MAX_BATCH
    assert default_batch_size(lm, 0) == 1


def test_a_run_never_outgrows_its_planned_positions(models):
    """The plan's bound per run holds for every scripted run of every task (the positions its trace
    reached), and sits far below the context where the run's limits are short."""
    for job in scripted_jobs(models):
        lm = models[job.task]
        trace = single(models, job)
        bound = run_positions(BatchEngine(lm), job)
        assert len(trace.prompt_ids) + len(trace.tokens) <= bound <= lm.context_length, job.text


def test_run_positions_follow_the_run_limits(models):
    lm = models["multi-hop"]
    engine = BatchEngine(lm)
    spec = lm.protocol("multi-hop").spec
    settings = RunSettings(max_new_tokens=10, max_retrievals=2, draft_tokens=0)
    job = BatchJob("multi-hop", "Where?", candidates=PARAGRAPHS, settings=settings)
    prompt = len(engine.prompt_ids("multi-hop", "Where?")[1])
    longest = max(len(d.title.encode()) + len(d.text.encode()) for d in PARAGRAPHS)
    template = sum(len(p.encode()) for p in spec.insertion) + 2
    # Three segments of 10 tokens (one before each of two insertions, one after), two documents.
    assert run_positions(engine, job) == prompt + 1 + 3 * 10 + 2 * (longest + template)

    class Opaque:  # a retriever whose documents are unknown: the whole context
        def search(self, vector, k):
            return []

    assert run_positions(engine, BatchJob("multi-hop", "Where?", retriever=Opaque())) == lm.context_length


def test_a_batch_is_planned_by_its_runs_not_the_context(models, monkeypatch):
    """A batch whose runs are short fits where the whole context per run would not; the refusal
    names the runs' own positions."""
    lm = models["multi-hop"]
    short = RunSettings(max_new_tokens=40, max_retrievals=2)
    jobs = [BatchJob("multi-hop", "Where?", candidates=PARAGRAPHS, chooser=chooser(lm, ids), settings=short)
            for ids in multi_hop_scripts(lm)[:4]]
    engine = BatchEngine(lm, batch_size=4)
    positions = max(run_positions(engine, job) for job in jobs)
    assert positions < lm.context_length / 2
    monkeypatch.setattr(batch_mod, "free_memory", lambda device: 2 * 4 * kv_bytes_per_sequence(lm, positions))
    with pytest.raises(BatchMemoryError):
        check_memory(lm, 4)  # at the whole context
    assert all(r.error is None for r in engine.run_many(jobs))
    monkeypatch.setattr(batch_mod, "free_memory", lambda device: 2 * kv_bytes_per_sequence(lm, positions))
    with pytest.raises(BatchMemoryError, match=f"at {positions:,} positions.*try --batch-size 1"):
        list(engine.run_many(jobs))


def test_document_store_longest_bytes(tmp_path):
    from onegen.documents import Document
    from onegen.index import DocumentStore

    docs = [Document(id="a", title="Ivo", text="short"), Document(id="b", title="Zoë", text="naïve café")]
    assert DocumentStore(docs).longest_bytes() == len("Zoë".encode()) + len("naïve café".encode())
    assert DocumentStore([]).longest_bytes() == 0


def test_closing_early_unwinds_the_runs(models):
    lm = models["multi-hop"]
    jobs = [BatchJob("multi-hop", "Where?", candidates=PARAGRAPHS, chooser=chooser(lm, ids))
            for ids in multi_hop_scripts(lm)]
    before = set(threading.enumerate())  # other tests' threads (an app's batch service) are not this run's
    it = BatchEngine(lm, batch_size=3).run_many(jobs)
    first = next(it)
    assert first.trace is not None
    mine = [t for t in threading.enumerate() if t not in before and t.name.startswith("onegen-batch-")]
    assert mine
    it.close()  # the other runs were waiting on the scheduler: each is unwound, none left blocked
    for t in mine:
        t.join(timeout=5)
        assert not t.is_alive()


# -- the evaluation ---------------------------------------------------------------------------------

def _without_timing(value):
    """A result line without its clock readings (every "seconds") and the decoder's name, and
    prompt positions shared between batched runs counted as prompt tokens, as batch 1 does."""
    if isinstance(value, dict):
        if "prefix_shared" in value:
            value = {**value, "prompt": value["prompt"] + value["prefix_shared"]}
            del value["prefix_shared"]
        return {k: _without_timing(v) for k, v in value.items() if k not in ("seconds", "decoder")}
    if isinstance(value, list):
        return [_without_timing(v) for v in value]
    return value


def test_evaluate_in_batches_writes_batch_one_lines_and_resumes(models, tmp_path, monkeypatch, capsys):
    from onegen.__main__ import main as cli
    from tiny import hotpot_item, write_json

    lm = models["multi-hop"]
    scripts = multi_hop_scripts(lm)
    # Each example's own script, chosen by its question: runs of different lengths in one batch.
    by_text = {f"Where was the director of Film {c} born?": ids for c, ids in zip("ABCDEF", scripts)}

    def run_with_script(real_run):
        def run(self, task, text, **kw):
            chooser_of_run = chooser(lm, by_text[text])
            engine = copy.copy(self)
            engine.chooser = chooser_of_run
            return real_run(engine, task, text, **kw)
        return run

    import copy
    monkeypatch.setattr(Engine, "run", run_with_script(Engine.run))
    items = [hotpot_item(k, "Corvale", question=q) for k, q in zip("abcdef", by_text)]
    data = write_json(tmp_path / "dev.json", items)
    common = ["evaluate", "--task", "multi-hop", "--data", str(data), "--model", lm.name, "--device", "cpu",
              "--top-k", "2", "--quiet"]
    one, many = tmp_path / "one.jsonl", tmp_path / "many.jsonl"
    assert cli(common + ["--out", str(one), "--batch-size", "1"]) == 0
    capsys.readouterr()
    # Batched, resumed after its first two lines.
    many.write_text("".join(one.read_text().splitlines(keepends=True)[:2]))
    assert cli(common + ["--out", str(many), "--batch-size", "3"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["resumed"] == 2
    lines_one = [json.loads(x) for x in one.read_text().splitlines()]
    lines_many = [json.loads(x) for x in many.read_text().splitlines()]
    assert [x["_id"] for x in lines_many] == list("abcdef")  # data order, though written as runs ended
    assert [x["trace"]["settings"]["decoder"] for x in lines_many[2:]] == ["batched-fused-llama"] * 4
    assert [_without_timing(x) for x in lines_many] == [_without_timing(x) for x in lines_one]
    # No size given: one chosen from the model and the free memory, and said.
    assert cli(common + ["--out", str(tmp_path / "default.jsonl")]) == 0
    assert re.search(r"batch size \d+ \(from .* free memory", capsys.readouterr().err)


def test_evaluate_refuses_a_batch_that_does_not_fit(models, tmp_path, monkeypatch, capsys):
    from onegen.__main__ import main as cli
    from tiny import hotpot_item, write_json

    lm = models["multi-hop"]
    per = kv_bytes_per_sequence(lm)
    monkeypatch.setattr(batch_mod, "free_memory", lambda device: per * 4)  # two sequences fit
    data = write_json(tmp_path / "dev.json", [hotpot_item(k, "Corvale") for k in "abc"])
    rc = cli(["evaluate", "--task", "multi-hop", "--data", str(data), "--model", lm.name, "--device", "cpu",
              "--batch-size", "3", "--quiet"])
    assert rc == 2
    assert "try --batch-size 2" in capsys.readouterr().err


def test_batch_benchmark_counts_identical_outputs(models, monkeypatch):
    """`bench batch`'s measuring core on a tiny model: every size runs every input, batch 1's outputs
    are the reference, and the report has a row per task and size."""
    from benchmarks.batch import bench_task, report_body
    from onegen.engine import IndexRetriever
    from onegen.encode import build_index

    lm = models["entity-linking"]
    retriever = IndexRetriever(build_index(lm, "entity-linking", ENTITIES))
    texts = ["Paris and Rome.", "Rome.", "Corvale is far from Paris, they say."]
    r = bench_task(lm, "entity-linking", texts, [1, 2], 1, retriever)
    # The largest size runs twice: with runs sharing prompt prefixes, and with every prompt computed.
    assert [(row["batch_size"], row["shared_prefixes"]) for row in r["rows"]] == [(1, True), (2, True), (2, False)]
    assert r["rows"][0]["identical"] == 3 and r["rows"][0]["speedup"] == 1.0
    assert all(row["identical"] + row["near_ties"] == 3 for row in r["rows"][1:])
    assert all(row["examples_per_s"] > 0 for row in r["rows"])
    body = report_body({"rounds": 1, "tasks": {"entity-linking": r}}, lm)
    assert "| entity-linking | 2 |" in body and "| entity-linking | 2, prefixes not shared |" in body
    assert "identical to batch 1" in body


def test_batch_benchmark_reports_a_refused_size_and_goes_on(models, monkeypatch):
    import benchmarks.batch as bench
    from onegen.engine import IndexRetriever
    from onegen.encode import build_index

    real = bench.run_size

    def refusing(lm, task, texts, retriever, size, share=True):
        if size == 4:
            raise BatchMemoryError("a batch of 4 needs more memory")
        return real(lm, task, texts, retriever, size, share)

    monkeypatch.setattr(bench, "run_size", refusing)
    lm = models["entity-linking"]
    retriever = IndexRetriever(build_index(lm, "entity-linking", ENTITIES))
    r = bench.bench_task(lm, "entity-linking", ["Paris and Rome.", "Rome."], [1, 2, 4], 2, retriever)
    assert [row["batch_size"] for row in r["rows"]] == [1, 2, 4, 4]
    assert r["rows"][2] == {"batch_size": 4, "shared_prefixes": True, "refused": "a batch of 4 needs more memory"}
    assert len(r["rows"][1]["seconds"]) == 2  # the other sizes ran every round
    body = bench.report_body({"rounds": 2, "tasks": {"entity-linking": r}}, lm)
    assert "| entity-linking | 4 | refused: a batch of 4 needs more memory |" in body


# -- concurrent callers ------------------------------------------------------------------------------

def test_concurrent_submits_each_stream_their_own_run(models):
    from onegen.batch import BatchService
    from onegen.engine import DoneEvent, RetrievalEvent, TokenEvent

    lm = models["multi-hop"]
    service = BatchService(BatchEngine(lm, batch_size=3), max_waiting=8)
    jobs = [BatchJob("multi-hop", f"Where was director {i} born?", candidates=PARAGRAPHS, chooser=chooser(lm, ids))
            for i, ids in enumerate(multi_hop_scripts(lm))]
    streams: dict[int, list] = {}

    def visitor(i):
        streams[i] = list(service.submit(jobs[i]))

    threads = [threading.Thread(target=visitor, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for i, job in enumerate(jobs):
        events = streams[i]
        assert isinstance(events[-1], DoneEvent) and sum(isinstance(e, DoneEvent) for e in events) == 1
        trace = events[-1].trace
        assert trace.input == job.text  # its own run, no cross-talk
        assert [e.token for e in events if isinstance(e, TokenEvent)] == trace.tokens
        assert [e.retrieval for e in events if isinstance(e, RetrievalEvent)] == trace.retrievals
        assert trace_signature(trace) == trace_signature(single(models, job))


def test_the_service_bounds_waiting_runs_and_ends_a_left_stream(models):
    from onegen.batch import BatchQueueFull, BatchService

    lm = models["multi-hop"]
    service = BatchService(BatchEngine(lm, batch_size=1), max_waiting=1)
    long = multi_hop_answering(lm, "a city whose name is rather long " * 3)
    first = service.submit(BatchJob("multi-hop", "Where?", candidates=PARAGRAPHS, chooser=chooser(lm, long)))
    next(first)  # running: its slot is taken
    second = service.submit(BatchJob("multi-hop", "Who?", candidates=PARAGRAPHS, chooser=chooser(lm, long)))
    with pytest.raises(BatchQueueFull, match="1 run is already waiting for the model"):
        service.submit(BatchJob("multi-hop", "Why?", candidates=PARAGRAPHS))
    first.close()  # the visitor left: the run ends and the waiting one gets the slot
    events = list(second)
    assert events[-1].trace.input == "Who?"
    assert service.waiting() == 0
