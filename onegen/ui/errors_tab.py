"""The Error browser tab: run a dataset (a job of onegen/jobs.py) or open a result file, filter
its examples, open one in the step view, and compare two result files example by example."""
from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr

from .. import render_html as R
from .. import render_results as RR
from ..app_state import MAX_DATASET_EXAMPLES, MAX_TOP_K, AppError, AppState, EvaluatedFile
from ..jobs import DatasetRequest, DatasetRun
from ..results import (OUTCOMES, ResultFileError, ResultSet, category_choices, compare_results, export_lines,
                       load_results, select)
from .shared import (PRIVATE, STOPPED_WHILE_QUEUED, TASK_CHOICES, TracePanel, download_path, error_message,
                     loading_message, on_gpu, visitor, wire_model_run)
from .whatif import gold_fix_html
from .why_panel import WhyPanel

_RESULT_DIR = Path(tempfile.mkdtemp(prefix="onegen-results-"))  # this tab's dataset runs (resumable)
_EXPORT_DIR = Path(tempfile.mkdtemp(prefix="onegen-exports-"))


def pick_listed(names: dict[str, Path], choice) -> Path:
    # Only names the server listed open: the page cannot ask for any other path.
    if choice not in names:
        raise AppError("Pick one of the listed files.")
    return names[choice]


def open_results(app: AppState, choice, upload) -> ResultSet:
    path = Path(upload) if upload else pick_listed(app.bundled_results(), choice)
    if not is_utf8(path):  # said plainly here rather than as the decoder's own text
        raise AppError(f"{path.name} is not a result file: it is not UTF-8 text.")
    try:
        return load_results(path)
    except ResultFileError as e:
        raise AppError(str(e)) from e


def is_utf8(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.read().decode("utf-8")
    except UnicodeDecodeError:
        return False
    except OSError:  # load_results says so
        return True
    return True


def selected_row(evt: gr.SelectData, keys) -> int | None:
    row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    return row if isinstance(row, int) and 0 <= row < len(keys or []) else None


def build(app: AppState) -> None:
    gr.Markdown("Score a dataset with the loaded model, or open a finished result file "
                "(`python -m onegen evaluate --out FILE`), then filter the examples and open any "
                "one in the step-by-step view. Compare two result files to see which examples flipped.")
    results = gr.State(None)  # the ResultSet shown (A)
    ResultInspector(app, results)
    gr.Markdown("### Compare with another result file (B)")
    build_comparison(app, results)


class ResultInspector:
    """Open or run a result file: its metrics, the filtered table, the export and one example."""

    def __init__(self, app: AppState, results: gr.State):
        self.app, self.results = app, results
        self.layout_sources()
        self.layout_examples()
        self.wire()

    def layout_sources(self) -> None:
        with gr.Row(equal_height=False):
            with gr.Column():
                gr.Markdown("#### Open a result file")
                self.bundled = gr.Dropdown(label="Bundled results (held-out world, embedded model)",
                                           choices=list(self.app.bundled_results()), value=None,
                                           elem_id="errors-bundled")
                self.upload = gr.File(label="or upload a result .jsonl", file_types=[".jsonl"], type="filepath",
                                      elem_id="errors-upload")
            with gr.Column():
                gr.Markdown("#### Or run a dataset")
                self.data = gr.Dropdown(label="Bundled datasets (held-out world)",
                                        choices=list(self.app.bundled_datasets()), value=None, elem_id="errors-data")
                self.data_upload = gr.File(label="or upload EL jsonl / HotpotQA / 2Wiki / Self-RAG file",
                                           file_types=[".json", ".jsonl"], type="filepath")
                with gr.Row():
                    self.task = gr.Dropdown([("detect from the file", "auto")] + TASK_CHOICES, value="auto",
                                            label="Task")
                    self.candidates = gr.Radio([("the task's index", "index"), ("each question's context", "context")],
                                               value="index", label="QA candidates")
                with gr.Row():
                    self.limit = gr.Slider(1, MAX_DATASET_EXAMPLES, value=10, step=1, label="First N examples")
                    self.top_k = gr.Slider(1, MAX_TOP_K, value=5, step=1, label="Top-k")
                with gr.Row():
                    self.run_btn = gr.Button("Run dataset", variant="primary", scale=3, elem_id="errors-run")
                    self.stop_btn = gr.Button("Stop", variant="stop", scale=1, elem_id="errors-stop")

    def layout_examples(self) -> None:
        self.status = gr.HTML(elem_id="errors-status")
        self.metrics = gr.HTML(elem_id="errors-metrics")
        with gr.Row():
            self.outcome = gr.Radio(list(OUTCOMES), value="all", label="Outcome", elem_id="errors-outcome")
            self.category = gr.Dropdown(choices=[("any category", "")], value="", label="Error category",
                                        elem_id="errors-category")
            self.contains = gr.Textbox(label="Input or key contains", elem_id="errors-contains")
        self.note = gr.HTML()
        self.table = gr.Dataframe(headers=RR.ROW_HEADERS, interactive=False, wrap=True, max_height=420,
                                  column_widths=RR.ROW_WIDTHS, elem_id="errors-table")
        self.export = gr.DownloadButton("Export these examples (jsonl)", visible=False, elem_id="errors-export")
        gr.Markdown("#### The selected example")
        self.example = gr.HTML(elem_id="errors-example")
        self.panel = TracePanel(self.app, "errors")
        WhyPanel(self.app, self.panel, "errors")
        self.keys = gr.State([])  # the result keys of the table's rows, in order
        self.selected = gr.State(None)  # the result key of the example shown
        with gr.Row():
            self.gold_fix = gr.Button("Would the right document have fixed it?", elem_id="errors-goldfix")
        self.gold_view = gr.HTML(elem_id="errors-goldfix-view")

    @property
    def shown(self) -> list:
        """Everything `show_results` sets."""
        return [self.status, self.metrics, self.outcome, self.category, self.contains, self.table, self.keys,
                self.note, self.export, self.example, *self.panel.outputs, self.results]

    def wire(self) -> None:
        # A file comes either from the list or from an upload: choosing one clears the other, so what
        # runs or opens is always what the page shows.
        self.bundled.input(lambda choice: self.open_file(choice, None, self.upload), self.bundled,
                           [*self.shown, self.upload], concurrency_limit=4, **PRIVATE)
        self.upload.upload(lambda path: self.open_file(None, path, self.bundled), self.upload,
                           [*self.shown, self.bundled], concurrency_limit=4, **PRIVATE)
        self.data.input(lambda _: None, self.data, self.data_upload, queue=False, **PRIVATE)
        self.data_upload.upload(lambda _: None, self.data_upload, self.data, queue=False, **PRIVATE)
        wire_model_run(self.app, [self.run_btn.click], self.stop_btn, self.run_dataset,
                       [self.data, self.data_upload, self.task, self.candidates, self.limit, self.top_k], self.shown,
                       self.status)
        # One filter at a time, in the order asked: two running together could finish out of order,
        # and a table filtered by an older choice would overwrite the newer one. Filtering takes
        # milliseconds, so the queue costs nothing.
        gr.on([self.outcome.input, self.category.input, self.contains.submit], self.filter_rows,
              [self.results, self.outcome, self.category, self.contains],
              [self.table, self.keys, self.note, self.export], concurrency_limit=1, **PRIVATE)
        self.table.select(self.open_example, [self.results, self.keys],
                          [self.example, *self.panel.outputs, self.selected, self.gold_view],
                          concurrency_limit=None, **PRIVATE)
        self.gold_fix.click(on_gpu(lambda opened, key: gold_fix_html(self.app, opened, key)),
                            [self.results, self.selected], self.gold_view, concurrency_id="model",
                            concurrency_limit=1, **PRIVATE)

    def table_update(self, opened: ResultSet, rows) -> dict:
        shown = RR.table_rows(opened.task, rows)
        more = (f"Showing the first {len(shown):,} of {len(rows):,}; the export takes all of them."
                if len(rows) > len(shown) else f"{len(rows):,} example{'s' if len(rows) != 1 else ''}.")
        path = None
        if rows:  # written now, so the button downloads on its first click
            path = download_path(_EXPORT_DIR, f"{opened.path.stem}-selection", ".jsonl")
            export_lines(rows, path)
        return {self.table: gr.Dataframe(value=shown or [[""] * len(RR.ROW_HEADERS)], headers=RR.ROW_HEADERS,
                                         column_widths=RR.ROW_WIDTHS),
                self.keys: [r.key for r in rows[: len(shown)]], self.note: R.message_html(more),
                self.export: gr.DownloadButton(f"Export these {len(rows):,} examples (jsonl)",
                                               value=str(path) if path else None, visible=bool(rows))}

    def show_results(self, opened: ResultSet, message: str = "", kind: str = "ok") -> dict:
        """A result set with its filters reset and no example open."""
        cats = [(f"{c} ({n})", c) for c, n in category_choices(opened)]
        message = message or f"Opened {opened.path.name}: {len(opened.records)} examples."
        return {self.status: R.message_html(message, kind), self.metrics: RR.metrics_html(opened),
                self.outcome: gr.Radio(value="all"),
                self.category: gr.Dropdown(choices=[("any category", "")] + cats, value=""), self.contains: "",
                **self.table_update(opened, select(opened)), self.example: "", **self.panel.empty(),
                self.results: opened}

    def open_file(self, choice, uploaded, cleared) -> dict:
        try:
            return {**self.show_results(open_results(self.app, choice, uploaded)), cleared: None}
        except Exception as e:  # noqa: BLE001 - a message, never a traceback
            return {**self.nothing_open(R.message_html(error_message(e), "error")), cleared: None}

    def nothing_open(self, message: str) -> dict:
        """No result set: a refused file leaves nothing of the one opened before on the page."""
        return {self.status: message, self.metrics: "", self.outcome: gr.Radio(value="all"),
                self.category: gr.Dropdown(choices=[], value=None), self.contains: "",
                self.table: gr.Dataframe(value=[[""] * len(RR.ROW_HEADERS)], headers=RR.ROW_HEADERS,
                                         column_widths=RR.ROW_WIDTHS),
                self.keys: [], self.note: "", self.export: gr.DownloadButton(visible=False), self.example: "",
                **self.panel.empty(), self.results: None}

    def run_dataset(self, choice, uploaded, task_name, candidates_from, n, k, ticket=None, request: gr.Request = None):
        """Follow a dataset run; Stop (or leaving) ends it after the current example, and the same
        request again resumes from the result file."""
        status = self.status
        done = 0
        try:
            path = Path(uploaded) if uploaded else pick_listed(self.app.bundled_datasets(), choice)
            with self.app.runs.start(visitor(request), ticket) as stop:
                if stop.is_set():
                    yield {status: R.message_html(STOPPED_WHILE_QUEUED, "warn")}
                    return
                yield {status: R.message_html(loading_message(self.app, "Starting..."))}
                asked = DatasetRequest(path, None if task_name == "auto" else task_name, candidates_from, int(n),
                                       int(k))
                job = DatasetRun(self.app, asked, _RESULT_DIR, stop).start()
                for p in job.progress():
                    done = p.done
                    eta = f", about {p.seconds_left:.0f} s left" if p.seconds_left is not None else ""
                    yield {status: R.progress_html(p.done, p.total, f"{p.done} of {p.total} examples{eta}")}
                evaluated = job.outcome()
        except Exception as e:  # noqa: BLE001 - a message, never a traceback
            yield {status: R.message_html(error_message(e), "error")}
            return
        if evaluated is None:
            yield {status: R.message_html(f"Stopped after {done} example{'s' if done != 1 else ''}; run the same "
                                          "request again to resume from there.", "warn")}
            return
        yield self.show_results(evaluated.results, ran_message(evaluated, path.name if not uploaded else None),
                                "warn" if evaluated.index_warning else "ok")

    def filter_rows(self, opened: ResultSet | None, outcome, category, contains):
        if opened is None:
            return {self.keys: [], self.note: R.message_html("Open a result file or run a dataset first.", "warn")}
        return self.table_update(opened, select(opened, outcome=outcome or "all", category=category or None,
                                                contains=contains))

    def open_example(self, opened: ResultSet | None, row_keys, evt: gr.SelectData):
        row = selected_row(evt, row_keys)
        rec = opened.by_key().get(row_keys[row]) if opened is not None and row is not None else None
        if rec is None:
            return {self.example: "", **self.panel.empty(), self.selected: None, self.gold_view: ""}
        return {self.example: RR.example_html(opened.task, rec), **self.panel.show(rec.trace),
                self.selected: rec.key, self.gold_view: ""}


def ran_message(evaluated: EvaluatedFile, name: str | None) -> str:
    resumed = f" ({evaluated.resumed} resumed from an earlier run)" if evaluated.resumed else ""
    n = evaluated.skipped
    skipped = (f" {n} item{'s' if n != 1 else ''} of the file could not be read and "
               f"{'were' if n != 1 else 'was'} skipped." if n else "")
    notes = "".join(f" Note: {w}." for w in evaluated.warnings)
    ran = f"Ran {evaluated.examples} examples of {name or 'the uploaded file'}{resumed}.{skipped}{notes}"
    # The index searched, and whether it holds the dataset's documents.
    return f"{ran} {evaluated.index_note[0].upper()}{evaluated.index_note[1:]}" if evaluated.index_note else ran


def build_comparison(app: AppState, results: gr.State) -> None:
    """A second result file (B) against the open one (A): the examples that flipped, each side by side."""
    with gr.Row():
        bundled = gr.Dropdown(label="Bundled results", choices=list(app.bundled_results()), value=None,
                              elem_id="compare-b")
        upload = gr.File(label="or upload a result .jsonl", file_types=[".jsonl"], type="filepath")
    compare_btn = gr.Button("Compare A with B", elem_id="compare-files")
    summary = gr.HTML(elem_id="compare-summary")
    flips = gr.Dataframe(headers=RR.FLIP_HEADERS, interactive=False, wrap=True, max_height=320,
                         column_widths=RR.FLIP_WIDTHS, elem_id="compare-flips")
    with gr.Row(equal_height=False):
        with gr.Column():
            gr.Markdown("**A**")
            example_a = gr.HTML()
            panel_a = TracePanel(app, "flip-a")
        with gr.Column():
            gr.Markdown("**B**")
            example_b = gr.HTML()
            panel_b = TracePanel(app, "flip-b")
    other, keys = gr.State(None), gr.State([])  # B, and the result keys of the flip rows

    bundled.input(lambda _: None, bundled, upload, queue=False, **PRIVATE)
    upload.upload(lambda _: None, upload, bundled, queue=False, **PRIVATE)

    def compare_with(opened: ResultSet | None, choice, uploaded):
        nothing = {flips: gr.Dataframe(value=[[""] * len(RR.FLIP_HEADERS)]), keys: [], other: None}
        if opened is None:
            return {summary: R.message_html("Open a result file (A) first.", "warn"), **nothing}
        try:
            b = open_results(app, choice, uploaded)
            cmp = compare_results(opened, b)
        except (AppError, ResultFileError) as e:
            return {summary: R.message_html(error_message(e), "error"), **nothing}
        rows = RR.flip_rows(cmp.flips) or [[""] * len(RR.FLIP_HEADERS)]
        return {summary: RR.comparison_html(cmp),
                flips: gr.Dataframe(value=rows, headers=RR.FLIP_HEADERS, column_widths=RR.FLIP_WIDTHS),
                keys: [f.key for f in cmp.flips[: RR.MAX_ROWS]], other: b}

    compare_btn.click(compare_with, [results, bundled, upload], [summary, flips, keys, other], concurrency_limit=4,
                      **PRIVATE)

    def open_flip(a: ResultSet | None, b: ResultSet | None, row_keys, evt: gr.SelectData):
        row = selected_row(evt, row_keys)
        out = {}
        for side, view, panel in ((a, example_a, panel_a), (b, example_b, panel_b)):
            rec = side.by_key().get(row_keys[row]) if a is not None and b is not None and row is not None else None
            out |= ({view: RR.example_html(side.task, rec), **panel.show(rec.trace)} if rec is not None
                    else {view: "", **panel.empty()})
        return out

    flips.select(open_flip, [results, other, keys], [example_a, *panel_a.outputs, example_b, *panel_b.outputs],
                 concurrency_limit=None, **PRIVATE)
