"""OneGen Explorer: watch one model write and retrieve in a single pass.

    python app.py                                   # embedded default model on the CPU
    python app.py --model zjunlp/OneGen-EntityLinking-Llama2-7B --index-entity-linking DIR
    ONEGEN_MODEL=... ONEGEN_INDEX_MULTI_HOP=DIR python app.py --port 7861

Tabs: Run (live timeline, retrieval steps, result, cost strip, trace download), Trace viewer
(upload a trace JSON), Index browser, Compare (OneGen against a two-pass or pipeline baseline, on
the single-pass sweep), Error browser (run or open result files, filter, inspect, compare two),
About. API endpoints: /link_entities, /answer_multi_hop, /answer_single_hop, each (text, top_k=5)
-> Trace JSON. Layout and callbacks only: the HTML comes from onegen/render_html.py,
render_results.py and render_compare.py, the shared model and indexes from onegen/app_state.py.
"""
from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from an offline demo

import argparse
import logging
import queue
import tempfile
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from onegen import render_compare as RC
from onegen import render_html as R
from onegen import render_results as RR
from onegen.app_state import (BASELINES, EXAMPLES_DIR, MAX_DATASET_EXAMPLES, MAX_INPUT_CHARS, MAX_TOP_K, AppConfig, AppError,
                              AppState)
from onegen.results import (OUTCOMES, ResultFileError, ResultSet, category_choices, compare_results, export_lines,
                            load_results, select)
from onegen.engine import DoneEvent, RetrievalEvent, TokenEvent
from onegen.protocols import TASKS
from onegen.trace import Trace, TraceFormatError

log = logging.getLogger("onegen.app")

TASK_CHOICES = [(R.TASK_LABELS[t], t) for t in TASKS]
STREAM_EVERY_S = 0.15  # at most ~7 page updates a second while tokens stream
MAX_TRACE_UPLOAD = 10 * 1024 * 1024
MAX_UPLOAD = "100mb"  # dataset and result files; a trace is refused past MAX_TRACE_UPLOAD
_TRACE_DIR = Path(tempfile.mkdtemp(prefix="onegen-traces-"))
_RESULT_DIR = Path(tempfile.mkdtemp(prefix="onegen-results-"))  # the error browser's runs (resumable)
_EXPORT_DIR = Path(tempfile.mkdtemp(prefix="onegen-exports-"))


def on_zero_gpu() -> bool:
    """True where the `spaces` package exists (Hugging Face ZeroGPU)."""
    try:
        import spaces  # noqa: F401
    except ImportError:
        return False
    return True


def on_gpu(fn):
    """Decorate with spaces.GPU on Hugging Face ZeroGPU; a no-op elsewhere. CUDA is touched only
    inside the call (there the model loads on the first run), never at import."""
    if not on_zero_gpu():
        return fn
    import spaces

    return spaces.GPU(duration=120)(fn)


class _Stopped(Exception):
    """Raised in an evaluation's progress callback to end it after the current example."""


def _readable(e: Exception) -> str:
    if isinstance(e, AppError):
        return str(e)
    log.exception("unexpected error")
    return f"Something went wrong ({type(e).__name__}). The model and indexes stay loaded; try again."


def _download_path(folder: Path, stem: str, suffix: str) -> Path:
    """A fresh file name for a download button; files older than an hour are pruned."""
    now = time.time()
    for old in folder.glob("*" + suffix):
        if now - old.stat().st_mtime > 3600:
            old.unlink(missing_ok=True)
    return folder / f"{stem}-{uuid.uuid4().hex[:8]}{suffix}"


def _write_trace(trace: Trace) -> str:
    path = _download_path(_TRACE_DIR, f"onegen-trace-{trace.task}", ".json")
    path.write_text(trace.to_json(indent=1), encoding="utf-8")
    return str(path)


def _example_choices(examples: list[dict]) -> list[tuple[str, str]]:
    out = []
    for ex in examples:
        text = ex["text"]
        label = text if len(text) <= 90 else text[:87] + "..."
        if ex.get("note"):
            label += f"  ({ex['note']})"
        out.append((label, text))
    return out


def _trace_panel(prefix: str) -> SimpleNamespace:
    """The views of one trace: cost strip, timeline, step selector + detail, task result."""
    p = SimpleNamespace()
    p.cost = gr.HTML(elem_id=f"{prefix}-cost")
    gr.Markdown("#### Token timeline")
    p.timeline = gr.HTML(R.timeline_html([], []), elem_id=f"{prefix}-timeline")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=220):
            p.steps = gr.Radio(label="Retrieval steps", choices=[], interactive=True, elem_id=f"{prefix}-steps")
        with gr.Column(scale=3):
            p.detail = gr.HTML(R.step_html(None, ""), elem_id=f"{prefix}-detail")
    gr.Markdown("#### Result")
    p.result = gr.HTML(elem_id=f"{prefix}-result")
    return p


def build_demo(app: AppState) -> gr.Blocks:
    cfg = app.config

    @on_gpu
    def events(task: str, text: str, top_k: int, copy_input: bool = True):
        yield from app.stream(task, text, top_k, copy_input)

    @on_gpu
    def run_to_trace(task: str, text: str, top_k: int) -> Trace:
        return app.run_trace(task, text, top_k)

    def links_for(trace: Trace) -> dict[str, str]:
        ids = [h.id for r in trace.retrievals for h in r.hits]
        return app.links(trace.task, ids) if ids else {}

    def views(trace: Trace, step: int | None, links: dict[str, str], running: bool = False):
        """(cost, timeline, steps, detail) for a trace; the selected step, else the latest."""
        if step is None and trace.retrievals:
            step = len(trace.retrievals) - 1
        r = trace.retrievals[step] if step is not None and 0 <= step < len(trace.retrievals) else None
        return (R.cost_html(trace), R.timeline_html(trace.tokens, trace.retrievals, running=running,
                                                          overrides=trace.overrides),
                gr.Radio(choices=R.step_choices(trace.retrievals), value=r.step if r else None),
                R.step_html(r, trace.task, links))

    def empty_trace_views():
        """(cost, timeline, steps, detail, result, trace) of a panel with nothing in it."""
        return (*views(Trace("", "", {}, "", "", []), None, {}), "", None)

    def trace_views(trace: Trace | None):
        """The same for a finished trace; None (the engine raised) says so in the result."""
        if trace is None:
            return (*empty_trace_views()[:4], R.message_html("This example has no trace (the engine raised).", "warn"),
                    None)
        links = links_for(trace)
        return (*views(trace, None, links), R.result_html(trace, links), trace)

    # -- Run tab callbacks ------------------------------------------------------------------------
    def run(task, text, top_k, copy_input=True):
        """Stream a run: status, cost, timeline, steps, detail, result, download, session trace."""
        loading = "Loading the model (first run only)..." if not app.model_loaded else "Running..."
        empty = Trace(task=task, mode="onegen", model={}, input=text or "", prompt_text="", prompt_ids=[])
        yield (R.message_html(loading), *views(empty, None, {}, running=True), "",
               gr.DownloadButton(visible=False), None)
        live = empty
        last = 0.0
        # The first generated token after the start or a retrieval is shown at once; the throttle
        # only batches the tokens that follow it (the first one is what a user waits for).
        fresh = True
        try:
            for ev in events(task, text, top_k, copy_input):
                if isinstance(ev, DoneEvent):
                    trace = ev.trace
                    links = links_for(trace)
                    n = len(trace.retrievals)
                    done = (f"Done: {len(trace.tokens)} tokens, {n} retrieval{'s' if n != 1 else ''}, "
                            f"{trace.cost.seconds.get('total', 0):.1f} s.")
                    yield (R.message_html(done, "ok"), *views(trace, None, links), R.result_html(trace, links),
                           gr.DownloadButton(value=_write_trace(trace), visible=True), trace)
                    return
                if isinstance(ev, TokenEvent):
                    live.tokens.append(ev.token)
                    first = fresh and ev.token.kind == "generated"
                    fresh = fresh and not first
                    if not first and time.monotonic() - last < STREAM_EVERY_S:
                        continue
                else:  # RetrievalEvent: always shown at once
                    live.retrievals.append(ev.retrieval)
                    fresh = True
                last = time.monotonic()
                yield (R.message_html("Running..."), *views(live, None, {}, running=True), gr.skip(),
                       gr.skip(), live)
        except Exception as e:  # noqa: BLE001 - every failure becomes a message, never a traceback
            msg = _readable(e)
            gr.Warning(msg)
            yield (R.message_html(msg, "error"), *views(live, None, {}), "", gr.DownloadButton(visible=False), None)

    def show_step(trace: Trace | None, step):
        if trace is None or step is None:
            return R.step_html(None, "")
        try:
            return R.step_html(trace.retrievals[int(step)], trace.task, links_for(trace))
        except Exception:  # noqa: BLE001 - a stale or malformed selection shows the empty view
            return R.step_html(None, "")

    def pick_example(text):
        return text or gr.skip()

    def change_task(task, current):
        examples = app.examples(task)
        all_examples = {ex["text"] for t in TASKS for ex in app.examples(t)}
        # Replace the input only when it is empty or an example of another task.
        text = examples[0]["text"] if examples and (not (current or "").strip() or current in all_examples) else gr.skip()
        return gr.Dropdown(choices=_example_choices(examples), value=None), text

    # -- Trace viewer -----------------------------------------------------------------------------
    def view_upload(path):
        blank = empty_trace_views()
        if not path:
            return (R.message_html("Upload a trace JSON file (written by the Download button or `python -m onegen run`)."),
                    *blank)
        try:
            size = os.path.getsize(path)
            if size > MAX_TRACE_UPLOAD:
                raise TraceFormatError(f"the file has {size:,} bytes; traces up to {MAX_TRACE_UPLOAD:,} bytes are read")
            with open(path, encoding="utf-8") as f:
                trace = Trace.from_json(f.read())
        except (TraceFormatError, UnicodeDecodeError, OSError) as e:
            return R.message_html(f"This file is not a readable OneGen trace: {e}", "error"), *blank
        except Exception as e:  # noqa: BLE001 - a hand-edited file can break the reader in many ways
            return R.message_html(f"This file is not a readable OneGen trace: malformed ({type(e).__name__}).",
                                  "error"), *blank
        try:
            links = links_for(trace)
            name = trace.model.get("name", "?") if isinstance(trace.model, dict) else "?"
            info = (f"{R.TASK_LABELS.get(trace.task, trace.task)} run of {name}: "
                    f"{len(trace.tokens)} tokens, {len(trace.retrievals)} retrievals.")
            return (R.message_html(info, "ok"), *views(trace, None, links), R.result_html(trace, links), trace)
        except Exception as e:  # noqa: BLE001
            log.warning("uploaded trace could not be rendered: %r", e)
            return R.message_html(f"This trace could not be shown: some fields have the wrong type "
                                  f"({type(e).__name__}).", "error"), *blank

    # -- Index browser ----------------------------------------------------------------------------
    def search_titles(task, query):
        try:
            idx = app.index(task)
        except AppError as e:
            return R.message_html(str(e), "error"), gr.Radio(choices=[], value=None), ""
        query = (query or "").strip()
        rows = idx.find_titles(query, limit=20) if query else list(range(min(20, len(idx))))
        choices = [(f"{idx.documents[i].title}  [{idx.documents[i].id}]", i) for i in rows]
        if query and not rows:
            msg = R.message_html(f"No title contains {query!r}.", "warn")
        else:
            what = f"matching {query!r}" if query else "(the first ones)"
            msg = R.message_html(f"{len(rows)} document{'s' if len(rows) != 1 else ''} {what} of {len(idx):,}.")
        return msg, gr.Radio(choices=choices, value=None), ""

    def show_document(task, row, k):
        if row is None:
            return ""
        try:
            idx = app.index(task)
            row = int(row)
            doc = idx.documents[row]
            near = app.neighbours(task, row, int(k))
        except (AppError, ValueError, IndexError) as e:
            return R.message_html(str(e) or "That document is not in the index.", "error")
        return R.document_html(doc, near, links=app.links(task, [d.id for d, _ in near]))

    def on_load(request: gr.Request):
        """Fill the examples and the About overview; configuration problems show on the Run tab at
        once. A `?browse=TASK&doc=ID` link opens the index browser on that document."""
        examples = app.examples(TASKS[0])
        lines = app.overview()
        head = (gr.Dropdown(choices=_example_choices(examples), value=None),
                examples[0]["text"] if examples else "",
                "".join(R.message_html(m, k) for k, m in lines if k in ("error", "warn")),
                "".join(R.message_html(m, k) for k, m in lines))
        params = dict(request.query_params) if request is not None else {}
        b_task, doc_id = params.get("browse"), params.get("doc")
        if b_task not in TASKS or not doc_id:
            return (*head, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip())
        browse = (*head, gr.Tabs(selected="browse"), b_task)
        try:
            found = app.document(b_task, doc_id)
        except AppError as e:
            return (*browse, gr.skip(), gr.skip(), R.message_html(str(e), "error"))
        if found is None:
            return (*browse, gr.skip(), gr.skip(),
                    R.message_html(f"No document with id {doc_id!r} in the {R.TASK_LABELS[b_task]} index.", "warn"))
        row, doc = found
        return (*browse, doc.title, gr.Radio(choices=[(f"{doc.title}  [{doc.id}]", row)], value=row),
                show_document(b_task, row, 5))

    # -- Error browser ----------------------------------------------------------------------------
    def pick_bundled(names: dict[str, Path], choice) -> Path:
        # Only names the server listed open: the page cannot ask for any other path.
        if choice not in names:
            raise AppError("Pick one of the listed files.")
        return names[choice]

    def open_results(choice, upload) -> ResultSet:
        path = Path(upload) if upload else pick_bundled(app.bundled_results(), choice)
        try:
            return load_results(path)
        except ResultFileError as e:
            raise AppError(str(e)) from e

    def show_results(results: ResultSet, note: str = ""):
        """Status, metrics, filters reset, table, export hidden, example view cleared, states."""
        cats = [(f"{c} ({n})", c) for c, n in category_choices(results)]
        rows = select(results)
        status = note or f"Opened {results.path.name}: {len(results.records)} examples."
        return (R.message_html(status, "ok"), RR.metrics_html(results), gr.Radio(value="all"),
                gr.Dropdown(choices=[("any category", "")] + cats, value=""), "",
                *table_update(results, rows), "", *empty_trace_views(), results)

    def table_update(results: ResultSet, rows):
        shown = RR.table_rows(results.task, rows)
        more = (f"Showing the first {len(shown):,} of {len(rows):,}; the export takes all of them."
                if len(rows) > len(shown) else f"{len(rows):,} example{'s' if len(rows) != 1 else ''}.")
        export = None
        if rows:  # written now, so the button downloads on its first click
            export = _download_path(_EXPORT_DIR, f"{results.path.stem}-selection", ".jsonl")
            export_lines(rows, export)
        return (gr.Dataframe(value=shown or [[""] * len(RR.ROW_HEADERS)], headers=RR.ROW_HEADERS,
                             column_widths=RR.ROW_WIDTHS),
                [r.key for r in rows[: len(shown)]], R.message_html(more),
                gr.DownloadButton(f"Export these {len(rows):,} examples (jsonl)", value=str(export) if export else None,
                                  visible=bool(rows)))

    def load_results_file(choice, upload):
        try:
            return show_results(open_results(choice, upload))
        except AppError as e:
            return (R.message_html(str(e), "error"), *[gr.skip()] * (results_outputs_n - 1))

    # A file comes either from the list or from an upload: choosing one clears the other, so what
    # runs or opens is always what the page shows.
    def open_bundled(choice):
        return (*load_results_file(choice, None), None)

    def open_upload(upload):
        return (*load_results_file(None, upload), None)

    def run_dataset(choice, upload, task, candidates, limit, top_k):
        """Stream progress while a dataset runs in a worker; Stop (or leaving) ends it after the
        current example, and the same request again resumes from the result file."""
        skip = [gr.skip()] * (results_outputs_n - 1)
        try:
            data = Path(upload) if upload else pick_bundled(app.bundled_datasets(), choice)
        except AppError as e:
            yield (R.message_html(str(e), "error"), *skip)
            return
        updates: queue.Queue = queue.Queue()
        stop = threading.Event()
        outcome: dict = {}

        def progress(done: int, total: int) -> None:
            updates.put((done, total))
            if stop.is_set():
                raise _Stopped()

        def work():
            try:
                outcome["report"], outcome["out"] = app.evaluate_file(
                    data, None if task == "auto" else task, candidates=candidates, limit=int(limit),
                    top_k=int(top_k), out_dir=_RESULT_DIR, on_progress=progress)
            except _Stopped:
                outcome["stopped"] = True
            except Exception as e:  # noqa: BLE001 - shown as a message; the app stays up
                outcome["error"] = e
            finally:
                updates.put(None)

        loading = "Loading the model (first run only)..." if not app.model_loaded else "Starting..."
        yield (R.message_html(loading), *skip)
        worker = threading.Thread(target=work, name="onegen-evaluate", daemon=True)
        worker.start()
        try:
            t0 = time.monotonic()
            while (item := updates.get()) is not None:
                done, total = item
                eta = ""
                if done and done < total:
                    eta = f", about {(time.monotonic() - t0) / done * (total - done):.0f} s left"
                yield (R.progress_html(done, total, f"{done} of {total} examples{eta}"), *skip)
        finally:
            stop.set()  # a cancelled page stops the worker after its current example
        if "error" in outcome:
            yield (R.message_html(_readable(outcome["error"]), "error"), *skip)
            return
        report, out = outcome["report"], outcome["out"]
        results = ResultSet(path=out, task=report.task, run=report.records[0].line["onegen"]["run"],
                            records=report.records, metrics=report.metrics)
        resumed = report.metrics.get("resumed", 0)
        note = (f"Ran {len(report.records)} examples of {data.name if not upload else 'the uploaded file'}"
                + (f" ({resumed} resumed from an earlier run)" if resumed else "") + ".")
        yield show_results(results, note)

    def filter_rows(results: ResultSet | None, outcome, category, contains):
        if results is None:
            return gr.skip(), [], R.message_html("Open a result file or run a dataset first.", "warn"), gr.skip()
        return table_update(results, select(results, outcome=outcome or "all", category=category or None,
                                            contains=contains))

    def open_example(results: ResultSet | None, keys, evt: gr.SelectData):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        if results is None or not isinstance(row, int) or not 0 <= row < len(keys or []):
            return ("", *empty_trace_views())
        rec = results.by_key().get(keys[row])
        if rec is None:
            return ("", *empty_trace_views())
        return (RR.example_html(results.task, rec), *trace_views(rec.trace))

    def compare_with(results: ResultSet | None, choice, upload):
        none = (gr.Dataframe(value=[[""] * len(RR.FLIP_HEADERS)]), [], None)
        if results is None:
            return (R.message_html("Open a result file (A) first.", "warn"), *none)
        try:
            other = open_results(choice, upload)
            cmp = compare_results(results, other)
        except (AppError, ResultFileError) as e:
            return (R.message_html(str(e), "error"), *none)
        flips = cmp.flips
        rows = RR.flip_rows(flips) or [[""] * len(RR.FLIP_HEADERS)]
        return (RR.comparison_html(cmp), gr.Dataframe(value=rows, headers=RR.FLIP_HEADERS, column_widths=RR.FLIP_WIDTHS),
                [f.key for f in flips[: RR.MAX_ROWS]], other)

    def open_flip(results: ResultSet | None, other: ResultSet | None, keys, evt: gr.SelectData):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        if results is None or other is None or not isinstance(row, int) or not 0 <= row < len(keys or []):
            return (*["", *empty_trace_views()] * 2,)
        key = keys[row]
        a, b = results.by_key().get(key), other.by_key().get(key)
        out = []
        for rs, rec in ((results, a), (other, b)):
            out += ([RR.example_html(rs.task, rec), *trace_views(rec.trace)] if rec is not None
                    else ["", *empty_trace_views()])
        return tuple(out)

    # -- Compare view -----------------------------------------------------------------------------
    @on_gpu
    def compare_runs(task: str, text: str, top_k: int, baseline: str) -> dict:
        return app.compare(task, text, top_k, baseline)

    def run_compare(task, text, top_k, baseline):
        """Status, costs, OneGen panel (6), baseline panel (6), sweep plot."""
        blank = [*empty_trace_views()] * 2
        label = RC.MODE_LABELS.get(baseline, baseline)
        loading = "Loading the model (first run only)..." if not app.model_loaded else f"Running OneGen, then {label}..."
        if baseline == "pipeline":
            loading += " The first pipeline run also encodes the index with its retriever."
        yield (R.message_html(loading), "", *blank, gr.skip())
        try:
            result = compare_runs(task, text, top_k, baseline)
        except Exception as e:  # noqa: BLE001 - a message, never a traceback
            msg = _readable(e)
            yield (R.message_html(msg, "error"), "", *blank, gr.skip())
            return
        point = RC.run_point(result, baseline)
        speed = f"{point.reencoding_speedup:.2f}x" if point.reencoding_speedup else "n/a"
        done = (f"Done: {point.retrievals} retrieval{'s' if point.retrievals != 1 else ''}; OneGen saved the "
                f"baseline's query re-encoding: {speed} by its time.")
        traces = result["traces"]
        yield (R.message_html(done, "ok"), RC.costs_html(result), *trace_views(traces["onegen"]),
               *trace_views(traces[baseline]), RC.sweep_svg(app.sweep_report(), baseline, point, "this run"))

    def compare_baseline(baseline):
        return RC.sweep_svg(app.sweep_report(), baseline)

    def compare_load():
        examples = app.examples(TASKS[0])
        return (gr.Dropdown(choices=_example_choices(examples), value=None),
                examples[0]["text"] if examples else "", RC.sweep_svg(app.sweep_report(), BASELINES[0]))

    # -- API --------------------------------------------------------------------------------------
    # The endpoints return the Trace as a JSON string: as a dict, its `index.path` would look like
    # a file to gradio and its client.
    def api_run(task: str, text: str, top_k: int) -> str:
        try:
            return run_to_trace(task, text, top_k).to_json()
        except Exception as e:  # noqa: BLE001
            raise gr.Error(_readable(e)) from None

    def link_entities(text: str, top_k: int = 5) -> str:
        """Entity linking: mentions in `text` linked to the index's entities. Returns the Trace JSON."""
        return api_run("entity-linking", text, top_k)

    def answer_multi_hop(text: str, top_k: int = 5) -> str:
        """Multi-hop QA: sub-questions, retrieved paragraphs, final answer. Returns the Trace JSON."""
        return api_run("multi-hop", text, top_k)

    def answer_single_hop(text: str, top_k: int = 5) -> str:
        """Single-hop QA (Self-RAG): reranked passages and the answer. Returns the Trace JSON."""
        return api_run("single-hop", text, top_k)

    # -- layout -----------------------------------------------------------------------------------
    with gr.Blocks(title="OneGen Explorer", delete_cache=(3600, 3600)) as demo:
        gr.Markdown("# OneGen Explorer\nOne model writes and retrieves in a single forward pass. "
                    "Run it, watch every retrieval token fire, and see what it found and what it cost.")
        with gr.Tabs() as tabs:
            with gr.Tab("Run", id="run"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=3):
                        with gr.Row():
                            task = gr.Radio(TASK_CHOICES, value=TASKS[0], label="Task", scale=3, elem_id="task")
                            top_k = gr.Slider(1, MAX_TOP_K, value=5, step=1, label="Top-k candidates", scale=1,
                                              elem_id="top-k")
                        copy_input = gr.Checkbox(value=True, label="Entity linking: output must copy the input",
                                                 info="Masks tokens that would misspell or drop the text; untick "
                                                      "to see what the model writes on its own. Steps where the "
                                                      "mask overrode the model are underlined.",
                                                 elem_id="copy-input")
                        example = gr.Dropdown(label="Examples (pick one to fill the input)", choices=[], value=None,
                                              interactive=True, elem_id="examples")
                        text = gr.Textbox(label="Input", lines=3, placeholder="Type a sentence or a question",
                                          info=f"Up to {cfg.max_input_chars:,} characters; Shift+Enter runs.", elem_id="input")
                        with gr.Row():
                            run_btn = gr.Button("Run", variant="primary", scale=3, elem_id="run-btn")
                            stop_btn = gr.Button("Stop", variant="stop", scale=1, elem_id="stop-btn")
                        status = gr.HTML(elem_id="run-status")
                        panel = _trace_panel("run")
                        download = gr.DownloadButton("Download trace JSON", visible=False, elem_id="download")
                    with gr.Column(scale=1, min_width=260):
                        with gr.Accordion("How single-pass retrieval works", open=True):
                            gr.HTML(R.EXPLAINER_HTML)
                run_trace = gr.State(None)

            with gr.Tab("Trace viewer", id="viewer"):
                gr.Markdown("Open a trace saved with **Download trace JSON** (schema `onegen-trace/1`).")
                upload = gr.File(label="Trace JSON", file_types=[".json"], type="filepath", elem_id="trace-upload")
                v_status = gr.HTML(elem_id="viewer-status")
                viewer = _trace_panel("viewer")
                viewer_trace = gr.State(None)

            with gr.Tab("Index browser", id="browse"):
                with gr.Row():
                    b_task = gr.Radio(TASK_CHOICES, value=TASKS[0], label="Index", scale=2, elem_id="browse-task")
                    b_query = gr.Textbox(label="Find by title", placeholder="a title or part of one", scale=2,
                                         elem_id="browse-query")
                    b_k = gr.Slider(1, MAX_TOP_K, value=5, step=1, label="Neighbours", scale=1)
                b_btn = gr.Button("Search", variant="primary", elem_id="browse-btn")
                b_status = gr.HTML(elem_id="browse-status")
                b_matches = gr.Radio(label="Matches", choices=[], interactive=True, elem_id="browse-matches")
                b_doc = gr.HTML(elem_id="browse-doc")

            with gr.Tab("Compare", id="compare"):
                gr.Markdown("The same input through OneGen and through a baseline that encodes each query in a "
                            "second pass. Both search the same documents; the difference is what the query costs. "
                            "Both decode one token per forward call (no prompt-lookup drafts), as the sweep did.")
                with gr.Row():
                    x_task = gr.Radio(TASK_CHOICES, value=TASKS[0], label="Task", scale=3, elem_id="cmp-task")
                    x_baseline = gr.Radio([(RC.MODE_LABELS[b], b) for b in BASELINES], value=BASELINES[0],
                                          label="Baseline", scale=3, elem_id="cmp-baseline")
                    x_k = gr.Slider(1, MAX_TOP_K, value=5, step=1, label="Top-k", scale=1)
                x_example = gr.Dropdown(label="Examples", choices=[], value=None, interactive=True)
                x_text = gr.Textbox(label="Input", lines=2, elem_id="cmp-input")
                x_run = gr.Button("Run both", variant="primary", elem_id="cmp-run")
                x_status = gr.HTML(elem_id="cmp-status")
                x_costs = gr.HTML(elem_id="cmp-costs")
                with gr.Row(equal_height=False):
                    with gr.Column():
                        gr.Markdown("#### OneGen")
                        xa = _trace_panel("cmp-onegen")
                    with gr.Column():
                        gr.Markdown("#### Baseline")
                        xb = _trace_panel("cmp-baseline")
                gr.Markdown("#### Where this run sits on the single-pass sweep")
                x_sweep = gr.HTML(elem_id="cmp-sweep")
                xa_trace, xb_trace = gr.State(None), gr.State(None)

            with gr.Tab("Error browser", id="errors"):
                gr.Markdown("Score a dataset with the loaded model, or open a finished result file "
                            "(`python -m onegen evaluate --out FILE`), then filter the examples and open any "
                            "one in the step-by-step view. Compare two result files to see which examples flipped.")
                with gr.Row(equal_height=False):
                    with gr.Column():
                        gr.Markdown("#### Open a result file")
                        e_bundled = gr.Dropdown(label="Bundled results (held-out world, embedded model)",
                                                choices=list(app.bundled_results()),
                                                value=None, elem_id="errors-bundled")
                        e_upload = gr.File(label="or upload a result .jsonl", file_types=[".jsonl"], type="filepath",
                                           elem_id="errors-upload")
                    with gr.Column():
                        gr.Markdown("#### Or run a dataset")
                        e_data = gr.Dropdown(label="Bundled datasets (held-out world)",
                                             choices=list(app.bundled_datasets()), value=None,
                                             elem_id="errors-data")
                        e_data_upload = gr.File(label="or upload EL jsonl / HotpotQA / 2Wiki / Self-RAG file",
                                                file_types=[".json", ".jsonl"], type="filepath")
                        with gr.Row():
                            e_task = gr.Dropdown([("detect from the file", "auto")] + TASK_CHOICES, value="auto",
                                                 label="Task")
                            e_cands = gr.Radio([("the task's index", "index"), ("each question's context", "context")],
                                               value="index", label="QA candidates")
                        with gr.Row():
                            e_limit = gr.Slider(1, MAX_DATASET_EXAMPLES, value=10, step=1, label="First N examples")
                            e_k = gr.Slider(1, MAX_TOP_K, value=5, step=1, label="Top-k")
                        with gr.Row():
                            e_run = gr.Button("Run dataset", variant="primary", scale=3, elem_id="errors-run")
                            e_stop = gr.Button("Stop", variant="stop", scale=1)
                e_status = gr.HTML(elem_id="errors-status")
                e_metrics = gr.HTML(elem_id="errors-metrics")
                with gr.Row():
                    e_outcome = gr.Radio(list(OUTCOMES), value="all", label="Outcome", elem_id="errors-outcome")
                    e_category = gr.Dropdown(choices=[("any category", "")], value="", label="Error category",
                                             elem_id="errors-category")
                    e_contains = gr.Textbox(label="Input or key contains", elem_id="errors-contains")
                e_note = gr.HTML()
                e_table = gr.Dataframe(headers=RR.ROW_HEADERS, interactive=False, wrap=True, max_height=420,
                                       column_widths=RR.ROW_WIDTHS, elem_id="errors-table")
                e_export = gr.DownloadButton("Export these examples (jsonl)", visible=False, elem_id="errors-export")
                gr.Markdown("#### The selected example")
                e_example = gr.HTML(elem_id="errors-example")
                e_panel = _trace_panel("errors")
                gr.Markdown("### Compare with another result file (B)")
                with gr.Row():
                    c_bundled = gr.Dropdown(label="Bundled results", choices=list(app.bundled_results()),
                                            value=None, elem_id="compare-b")
                    c_upload = gr.File(label="or upload a result .jsonl", file_types=[".jsonl"], type="filepath")
                c_btn = gr.Button("Compare A with B", elem_id="compare-files")
                c_summary = gr.HTML(elem_id="compare-summary")
                c_flips = gr.Dataframe(headers=RR.FLIP_HEADERS, interactive=False, wrap=True, max_height=320,
                                       column_widths=RR.FLIP_WIDTHS, elem_id="compare-flips")
                with gr.Row(equal_height=False):
                    with gr.Column():
                        gr.Markdown("**A**")
                        fa_example = gr.HTML()
                        fa = _trace_panel("flip-a")
                    with gr.Column():
                        gr.Markdown("**B**")
                        fb_example = gr.HTML()
                        fb = _trace_panel("flip-b")
                e_results, e_keys, c_other, c_keys = gr.State(None), gr.State([]), gr.State(None), gr.State([])
                fa_trace, fb_trace = gr.State(None), gr.State(None)

            with gr.Tab("About", id="about"):
                gr.Markdown(ABOUT_MD)
                overview = gr.HTML(elem_id="overview")

        # -- events ---------------------------------------------------------------------------------
        run_outputs = [status, panel.cost, panel.timeline, panel.steps, panel.detail, panel.result, download, run_trace]
        run_event = gr.on([run_btn.click, text.submit], run, inputs=[task, text, top_k, copy_input], outputs=run_outputs,
                          concurrency_id="model", concurrency_limit=1, api_visibility="private")
        stop_btn.click(None, cancels=[run_event])
        panel.steps.input(show_step, [run_trace, panel.steps], panel.detail, api_visibility="private",
                          concurrency_limit=None)
        example.input(pick_example, example, text, api_visibility="private", queue=False)
        task.input(change_task, [task, text], [example, text], api_visibility="private", queue=False)
        task.input(lambda t: gr.Checkbox(visible=t == "entity-linking"), task, copy_input,
                   api_visibility="private", queue=False)

        upload.change(view_upload, upload, [v_status, viewer.cost, viewer.timeline, viewer.steps, viewer.detail,
                                             viewer.result, viewer_trace], api_visibility="private",
                      concurrency_limit=None)
        viewer.steps.input(show_step, [viewer_trace, viewer.steps], viewer.detail, api_visibility="private",
                           concurrency_limit=None)

        gr.on([b_btn.click, b_query.submit, b_task.input], search_titles, [b_task, b_query],
              [b_status, b_matches, b_doc], api_visibility="private", concurrency_limit=4)
        gr.on([b_matches.input, b_k.release], show_document, [b_task, b_matches, b_k], b_doc,
              api_visibility="private", concurrency_limit=4)

        def panel_outputs(p, trace_state):
            return [p.cost, p.timeline, p.steps, p.detail, p.result, trace_state]

        e_trace = gr.State(None)
        shown = [e_status, e_metrics, e_outcome, e_category, e_contains, e_table, e_keys, e_note, e_export,
                 e_example, *panel_outputs(e_panel, e_trace), e_results]
        results_outputs_n = len(shown)  # what show_results returns; the callbacks skip the rest
        private = dict(api_visibility="private")
        e_bundled.input(open_bundled, e_bundled, [*shown, e_upload], concurrency_limit=4, **private)
        e_upload.upload(open_upload, e_upload, [*shown, e_bundled], concurrency_limit=4, **private)
        e_data.input(lambda _: None, e_data, e_data_upload, queue=False, **private)
        e_data_upload.upload(lambda _: None, e_data_upload, e_data, queue=False, **private)
        c_bundled.input(lambda _: None, c_bundled, c_upload, queue=False, **private)
        c_upload.upload(lambda _: None, c_upload, c_bundled, queue=False, **private)
        e_event = e_run.click(run_dataset, [e_data, e_data_upload, e_task, e_cands, e_limit, e_k], shown,
                              concurrency_id="model", concurrency_limit=1, **private)
        e_stop.click(None, cancels=[e_event])
        filters = [e_results, e_outcome, e_category, e_contains]
        gr.on([e_outcome.input, e_category.input, e_contains.submit], filter_rows, filters,
              [e_table, e_keys, e_note, e_export], concurrency_limit=None, **private)
        e_table.select(open_example, [e_results, e_keys], [e_example, *panel_outputs(e_panel, e_trace)],
                       concurrency_limit=None, **private)
        c_btn.click(compare_with, [e_results, c_bundled, c_upload], [c_summary, c_flips, c_keys, c_other],
                    concurrency_limit=4, **private)
        c_flips.select(open_flip, [e_results, c_other, c_keys],
                       [fa_example, *panel_outputs(fa, fa_trace), fb_example, *panel_outputs(fb, fb_trace)],
                       concurrency_limit=None, **private)
        x_outputs = [x_status, x_costs, *panel_outputs(xa, xa_trace), *panel_outputs(xb, xb_trace), x_sweep]
        gr.on([x_run.click, x_text.submit], run_compare, [x_task, x_text, x_k, x_baseline], x_outputs,
                        concurrency_id="model", concurrency_limit=1, **private)
        x_task.input(change_task, [x_task, x_text], [x_example, x_text], queue=False, **private)
        x_example.input(pick_example, x_example, x_text, queue=False, **private)
        x_baseline.input(compare_baseline, x_baseline, x_sweep, queue=False, **private)
        for p, st in ((e_panel, e_trace), (fa, fa_trace), (fb, fb_trace), (xa, xa_trace), (xb, xb_trace)):
            p.steps.input(show_step, [st, p.steps], p.detail, concurrency_limit=None, **private)

        demo.load(on_load, None, [example, text, status, overview, tabs, b_task, b_query, b_matches, b_doc],
                  api_visibility="private")
        demo.load(compare_load, None, [x_example, x_text, x_sweep], **private)

        for fn in (link_entities, answer_multi_hop, answer_single_hop):
            gr.api(fn, api_name=fn.__name__, concurrency_id="model", concurrency_limit=1)
    demo.queue(default_concurrency_limit=1)
    return demo


ABOUT_MD = f"""
### What this is
OneGen (Findings of EMNLP 2024) fine-tunes a causal language model so that a few special tokens double
as retrieval queries: the hidden state of the step that reads a retrieval token is the query vector.
This app runs such a model and shows each run as it happens: the text, every retrieval token, the
candidates it scored, what was inserted back into the context, and the forward tokens each phase cost.

### Tasks
- **Entity linking**: the model rewrites the input as `<MENTION>X</MENTION>[LK]`; every `[LK]` links one mention.
  By default the output is constrained to be the input plus those tags (no misspelt copies); the
  checkbox on the Run tab turns that off, and the timeline underlines where the constraint overrode the model.
- **Multi-hop QA**: sub-questions end in `[Question Representation]`; the best paragraph is inserted and the model goes on.
- **Single-hop QA (Self-RAG)**: the question's vector reranks passages; the best one is read, then the answer
  is written with reflection tokens.

### Tabs
- **Run**: one input, streamed; select any retrieval step to see its query, candidates and insertion.
- **Trace viewer**: open a trace saved with *Download trace JSON* (or by `python -m onegen run --json`).
- **Index browser**: find a document by title and see its nearest neighbours.
- **Compare**: the same input through OneGen and a baseline that encodes each query in a second pass;
  costs per phase, and the run placed on the single-pass sweep.
- **Error browser**: score a dataset or open a result file of `python -m onegen evaluate`, filter its
  examples by outcome and error category, open one in the step view, compare two result files.

### API
`/link_entities`, `/answer_multi_hop`, `/answer_single_hop`: each takes `(text, top_k=5)` and returns
the run's Trace JSON (schema `onegen-trace/1`), e.g.
`Client(url).predict("...", 5, api_name="/link_entities")`.

### Configuration
`python app.py --model NAME_OR_FOLDER --index-entity-linking DIR --index-multi-hop DIR --index-single-hop DIR`
(or `--index TASK=DIR`; an index may also be `hf://owner/name` on the Hugging Face hub), `--host`, `--port`, `--share`; environment: `ONEGEN_MODEL`,
`ONEGEN_INDEX_ENTITY_LINKING`, `ONEGEN_INDEX_MULTI_HOP`, `ONEGEN_INDEX_SINGLE_HOP`.
Inputs are limited to {MAX_INPUT_CHARS:,} characters by default.
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="OneGen Explorer: a web app for single-pass retrieval and generation.")
    p.add_argument("--model", help="registry name, Hugging Face id or model folder (default: $ONEGEN_MODEL, "
                                   "else the embedded onegen-smol)")
    for t in TASKS:
        p.add_argument(f"--index-{t}", dest="index_" + t.replace("-", "_"), metavar="DIR",
                       help=f"index folder or hf://owner/name for {R.TASK_LABELS[t]} (default: ${'ONEGEN_INDEX_' + t.upper().replace('-', '_')}, "
                            "else the model's registry index)")
    p.add_argument("--index", action="append", default=[], metavar="TASK=DIR",
                   help=f"index folder for a task, repeatable; TASK is one of {', '.join(TASKS)}")
    p.add_argument("--examples", default=str(EXAMPLES_DIR), metavar="DIR", help="folder of <task>.jsonl examples")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: a GPU when present)")
    p.add_argument("--max-input-chars", type=int, default=MAX_INPUT_CHARS)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="open a public gradio.live link (off by default)")
    p.add_argument("--no-preload", dest="preload", action="store_false",
                   help="load the model on the first run instead of in the background at start-up")
    args = p.parse_args(argv)
    indexes = {t: getattr(args, "index_" + t.replace("-", "_")) for t in TASKS}
    for item in args.index:
        name, sep, folder = item.partition("=")
        if not sep or name not in TASKS or not folder:
            p.error(f"--index takes TASK=DIR with TASK one of {', '.join(TASKS)}; got {item!r}")
        indexes[name] = folder
    args.config = AppConfig(model=args.model, indexes={t: d for t, d in indexes.items() if d},
                            examples_dir=Path(args.examples), device=args.device,
                            max_input_chars=args.max_input_chars)
    return args


# A click on a timeline chip selects that step in the step list next to it (same event as a click there).
CHIP_JS = """
() => {
  document.addEventListener("click", (e) => {
    const chip = e.target.closest && e.target.closest(".og-chip");
    if (!chip) return;
    const timeline = chip.closest("[id$='-timeline']");
    const prefix = timeline ? timeline.id.slice(0, -"-timeline".length) : "run";
    const option = document.querySelectorAll("#" + prefix + "-steps label")[Number(chip.dataset.step)];
    if (option) option.click();
  });
}
"""


def theme() -> gr.themes.Theme:
    # System fonts: the page loads nothing from the internet.
    return gr.themes.Soft(primary_hue="indigo", font=["ui-sans-serif", "system-ui", "sans-serif"],
                          font_mono=["ui-monospace", "Consolas", "monospace"])


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, share: bool = False, **kw):
    # No allowed_paths: the page can reach only gradio's own cache (uploads and trace downloads).
    css = R.APP_CSS + RR.RESULTS_CSS + RC.COMPARE_CSS
    return demo.launch(server_name=host, server_port=port, share=share, theme=theme(), css=css,
                       js=CHIP_JS, max_file_size=MAX_UPLOAD, ssr_mode=False, show_error=False, **kw)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    state = AppState(args.config)
    # Load while the server starts, so the first click finds the model ready. Not on ZeroGPU, where
    # a GPU exists only inside a decorated call.
    if args.preload and not on_zero_gpu():
        threading.Thread(target=state.preload, name="onegen-preload", daemon=True).start()
    launch(build_demo(state), args.host, args.port, args.share)


if __name__ == "__main__":
    main()
