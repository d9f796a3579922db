"""What several tabs share: the trace panel (cost strip, timeline, steps, result), download files,
example menus, the ZeroGPU decorator, and the one function that turns an exception into a message."""
from __future__ import annotations

import logging
import tempfile
import time
import uuid
from pathlib import Path

import gradio as gr

from .. import render_html as R
from ..app_state import IMPRAG_NOT_CONFIGURED, AppState
from ..errors import OneGenError
from ..render_text import calibration_of
from ..tasks import TASK_NAMES, get_task
from ..trace import Trace

log = logging.getLogger("onegen.app")

TASK_CHOICES = [(get_task(t).label, t) for t in TASK_NAMES]
PRIVATE = dict(api_visibility="private")  # page callbacks: not part of the public API
_TRACE_DIR = Path(tempfile.mkdtemp(prefix="onegen-traces-"))


def error_message(e: Exception) -> str:
    """The page's text for any failure: a OneGenError's own message; anything else is logged and
    gets a generic message (no tracebacks on the page)."""
    if isinstance(e, OneGenError):
        return str(e)
    log.error("unexpected error", exc_info=e)
    return f"Something went wrong ({type(e).__name__}). The model and indexes stay loaded; try again."


def visitor(request: gr.Request | None) -> str:
    """Whose run this is: the browser tab's (or API client's) session hash."""
    return (getattr(request, "session_hash", None) or "") if request is not None else ""


STOPPED_WHILE_QUEUED = "Stopped while it waited for the model: nothing ran."


def run_concurrency(app: AppState, batched: bool = True) -> dict:
    """Gradio's concurrency for a model call. A call that holds the model goes one at a time with
    every other ("model", limit 1). A single run (the Run tab, the API) with a shared batch
    (`AppConfig.batch_runs`) goes in its own group, that many at once, since the batch decodes them
    together (gradio limits a group by its lowest limit, so the groups must differ)."""
    if batched and app.config.batch_runs > 1:
        return {"concurrency_id": "batch", "concurrency_limit": app.config.batch_runs}
    return {"concurrency_id": "model", "concurrency_limit": 1}


def wire_model_run(app: AppState, triggers: list, stop_btn: gr.Button, fn, inputs: list, outputs: list,
                   status: gr.HTML, batched: bool = False):
    """A run that holds the model, one at a time across visitors (`batched`: a single run, several at
    once where the app has a shared batch; see `run_concurrency`), and its Stop button. The click
    reserves a ticket at once (unqueued), so Stop reaches the run even while it still waits behind
    other visitors' runs; `fn` gets the ticket after `inputs`, passes it to `app.runs.start` and,
    when the flag is already set there, says STOPPED_WHILE_QUEUED and runs nothing. The queue's
    position shows on `status` alone: on every output, the waiting overlays covered the Stop button.
    Returns the run's event, for steps that follow it (`.then`)."""
    ticket = gr.State()

    def reserve(request: gr.Request):
        return app.runs.reserve(visitor(request))

    def stop(request: gr.Request):
        app.runs.stop(visitor(request))

    run = gr.on(triggers, reserve, None, ticket, queue=False, **PRIVATE).then(
        fn, [*inputs, ticket], outputs, show_progress_on=[status], **run_concurrency(app, batched), **PRIVATE)
    # Not `cancels=`: a cancelled stream leaves the page as it was ("Running..."); the run itself
    # sees the flag between tokens (or examples), stops and shows what it made.
    stop_btn.click(stop, None, None, queue=False, **PRIVATE)
    return run


def imprag_note_html(app: AppState) -> str:
    """Where ImpRAG is offered: how to get an ImpRAG model when none is configured, else nothing."""
    return "" if app.imprag_configured else R.message_html(IMPRAG_NOT_CONFIGURED, "info", code=True)


def loading_message(app: AppState, running: str, modes: tuple[str, ...] = ()) -> str:
    """`running`, or that a model loads first: the OneGen model's, or that of one of `modes` (ImpRAG's)."""
    loaded = app.model_loaded and all(app.loaded_model(m) is not None for m in modes)
    return "Loading the model (first run only)..." if not loaded else running


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


def download_path(folder: Path, stem: str, suffix: str) -> Path:
    """A fresh file name for a download button; files older than an hour are pruned."""
    now = time.time()
    for old in folder.glob("*" + suffix):
        if now - old.stat().st_mtime > 3600:
            old.unlink(missing_ok=True)
    return folder / f"{stem}-{uuid.uuid4().hex[:8]}{suffix}"


def write_trace(trace: Trace) -> str:
    path = download_path(_TRACE_DIR, f"onegen-trace-{trace.task}", ".json")
    path.write_text(trace.to_json(indent=1), encoding="utf-8")
    return str(path)


def write_spans(trace: Trace) -> str | None:
    """The trace as OpenInference spans (OTLP/JSON), ending now; None where the span packages are
    not installed (the button stays hidden; the CLI says what to install)."""
    from ..export_openinference import OpenInferenceExportError, Run, build_request, require_packages, to_otlp_json

    try:
        require_packages()
    except OpenInferenceExportError as e:
        log.warning("%s", e)
        return None
    path = download_path(_TRACE_DIR, f"onegen-spans-{trace.task}", ".openinference.json")
    request = build_request([Run(key=trace.task, trace=trace)], end_ns=time.time_ns(), seed=path.name)
    path.write_text(to_otlp_json(request), encoding="utf-8")
    return str(path)


def span_download(trace: Trace) -> gr.DownloadButton:
    path = write_spans(trace)
    return gr.DownloadButton(value=path, visible=path is not None)


def example_choices(examples: list[dict]) -> list[tuple[str, str]]:
    out = []
    for ex in examples:
        text = ex["text"]
        label = text if len(text) <= 90 else text[:87] + "..."
        if ex.get("note"):
            label += f"  ({ex['note']})"
        if ex.get("known_failure"):
            label += "  [known failure]"
        out.append((label, text))
    return out


def example_inputs(app: AppState, task: str, menu: gr.Dropdown, text: gr.Textbox, current: str | None = None) -> dict:
    """A task's example menu; the input takes its first example when it is empty or holds an
    example of another task (text a user typed stays)."""
    examples = app.examples(task)
    out = {menu: gr.Dropdown(choices=example_choices(examples), value=None)}
    all_examples = {ex["text"] for t in TASK_NAMES for ex in app.examples(t)}
    if examples and (not (current or "").strip() or current in all_examples):
        out[text] = examples[0]["text"]
    return out


def changes(updates: dict):
    """A callback's dict of updates; nothing to update is gradio's skip (an empty dict is not)."""
    return updates or gr.skip()


def wire_examples(app: AppState, task: gr.Radio, menu: gr.Dropdown, text: gr.Textbox) -> None:
    """Picking an example fills the input; changing the task offers its examples."""
    menu.input(lambda choice: choice or gr.skip(), menu, text, queue=False, **PRIVATE)
    task.input(lambda t, current: changes(example_inputs(app, t, menu, text, current)), [task, text], [menu, text],
               queue=False, **PRIVATE)


def empty_trace() -> Trace:
    return Trace("", "", {}, "", "", [])


class TracePanel:
    """The views of one trace: cost strip, timeline, step selector + detail, task result, and the
    trace itself in a per-page state. A click on a step shows its detail."""

    def __init__(self, app: AppState, prefix: str):
        self.app = app
        self.cost = gr.HTML(elem_id=f"{prefix}-cost")
        gr.Markdown("#### Token timeline")
        self.timeline = gr.HTML(R.timeline_html([], []), elem_id=f"{prefix}-timeline")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=220):
                self.steps = gr.Radio(label="Retrieval steps", choices=[], interactive=True,
                                      elem_id=f"{prefix}-steps")
            with gr.Column(scale=3):
                self.detail = gr.HTML(R.step_html(None, ""), elem_id=f"{prefix}-detail")
        gr.Markdown("#### Result")
        self.result = gr.HTML(elem_id=f"{prefix}-result")
        self.trace = gr.State(None)
        self.steps.input(self.show_step, [self.trace, self.steps], [self.detail], concurrency_limit=None, **PRIVATE)

    @property
    def outputs(self) -> list:
        return [self.cost, self.timeline, self.steps, self.detail, self.result, self.trace]

    def links(self, trace: Trace) -> dict[str, str]:
        ids = [h.id for r in trace.retrievals for h in r.hits]
        return self.app.links(trace.task, ids) if ids else {}

    def views(self, trace: Trace, links: dict[str, str], running: bool = False) -> dict:
        """Cost, timeline, steps and detail of a trace, the latest step selected."""
        latest = trace.retrievals[-1] if trace.retrievals else None
        return {self.cost: R.cost_html(trace),
                self.timeline: R.timeline_html(trace.tokens, trace.retrievals, running=running,
                                               overrides=trace.overrides),
                self.steps: gr.Radio(choices=R.step_choices(trace.retrievals), value=latest.step if latest else None),
                self.detail: R.step_html(latest, trace.task, links, calibration_of(trace), trace.mode)}

    def live(self, trace: Trace) -> dict:
        """A run still streaming: no result yet, the partial trace kept for step clicks."""
        return {**self.views(trace, {}, running=True), self.trace: trace}

    def empty(self) -> dict:
        return {**self.views(empty_trace(), {}), self.result: "", self.trace: None}

    def show(self, trace: Trace | None) -> dict:
        """A finished trace; None (the engine raised) says so in the result."""
        if trace is None:
            return {**self.empty(), self.result: R.message_html("This example has no trace (the engine raised).",
                                                                "warn")}
        links = self.links(trace)
        return {**self.views(trace, links), self.result: R.result_html(trace, links), self.trace: trace}

    def show_step(self, trace: Trace | None, step) -> str:
        if trace is None or step is None:
            return R.step_html(None, "")
        try:
            return R.step_html(trace.retrievals[int(step)], trace.task, self.links(trace), calibration_of(trace),
                               trace.mode)
        except Exception:  # noqa: BLE001 - a stale or malformed selection shows the empty view
            return R.step_html(None, "")
