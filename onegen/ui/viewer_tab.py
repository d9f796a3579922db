"""The Trace viewer tab: open a trace JSON saved by the Run tab or `python -m onegen run --json`."""
from __future__ import annotations

import json
import logging
import os

import gradio as gr

from .. import render_html as R
from ..app_state import AppState
from ..render_replay import replay_sentence
from ..tasks import TASK_NAMES, get_task
from ..trace import Trace, TraceFormatError
from .shared import PRIVATE, TracePanel, error_message
from .why_panel import WhyPanel

log = logging.getLogger("onegen.app")

MAX_TRACE_UPLOAD = 10 * 1024 * 1024


def read_trace(path: str) -> Trace:
    """The trace in an uploaded file; TraceFormatError with a reason a user understands when it is
    not one (no Python exception text)."""
    def refused(reason: str) -> TraceFormatError:
        return TraceFormatError(f"This file is not a readable OneGen trace: {reason}.")

    size = os.path.getsize(path)
    if size > MAX_TRACE_UPLOAD:
        raise refused(f"it has {size:,} bytes; traces up to {MAX_TRACE_UPLOAD:,} bytes are read")
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except UnicodeDecodeError:
        raise refused("it is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise refused(f"it is not JSON (line {e.lineno}, column {e.colno})") from None
    except OSError:
        raise refused("it could not be read; upload it again") from None
    try:
        return Trace.from_dict(data)
    except TraceFormatError as e:
        raise refused(str(e)) from None
    except Exception:  # noqa: BLE001 - a hand-edited file can break the reader in many ways
        raise refused("some fields are missing or have the wrong type") from None


def input_html(trace: Trace) -> str:
    """The run's original input, as the model was given it, and as typed where the input
    normalization changed it."""
    text = trace.input if isinstance(trace.input, str) else ""
    typed = f'<span class="og-muted"> (typed: {R.esc(trace.typed_input)})</span>' if text and trace.input_edits else ""
    return (f'<div class="og-kv og-run-input"><span>Input</span><span class="og-input-text">{R.esc(text) or "(empty)"}'
            f"{typed}</span></div>")


def build(app: AppState) -> None:
    gr.Markdown("Open a trace saved with **Download trace JSON** (schema `onegen-trace/1`).")
    upload = gr.File(label="Trace JSON", file_types=[".json"], type="filepath", elem_id="trace-upload")
    status = gr.HTML(elem_id="viewer-status")
    input_view = gr.HTML(elem_id="viewer-input")
    panel = TracePanel(app, "viewer")
    WhyPanel(app, panel, "viewer")

    def view_upload(path):
        if not path:
            return {status: R.message_html("Upload a trace JSON file (written by the Download button or "
                                           "`python -m onegen run`)."), input_view: "", **panel.empty()}
        try:
            trace = read_trace(path)
        except Exception as e:  # noqa: BLE001 - read_trace says why; anything else gets the generic message
            return {status: R.message_html(error_message(e), "error"), input_view: "", **panel.empty()}
        try:
            name = trace.model.get("name", "?") if isinstance(trace.model, dict) else "?"
            label = get_task(trace.task).label if trace.task in TASK_NAMES else trace.task
            info = f"{label} run of {name}: {len(trace.tokens)} tokens, {len(trace.retrievals)} retrievals."
            info = f"{info} {replay_sentence(trace)}".strip()
            return {status: R.message_html(info, "ok"), input_view: input_html(trace), **panel.show(trace)}
        except Exception as e:  # noqa: BLE001 - fields of the wrong type surface only while rendering
            log.warning("uploaded trace could not be rendered: %r", e)
            return {status: R.message_html("This trace could not be shown: some fields have the wrong type.",
                                           "error"), input_view: "", **panel.empty()}

    upload.change(view_upload, upload, [status, input_view, *panel.outputs], concurrency_limit=None, **PRIVATE)
