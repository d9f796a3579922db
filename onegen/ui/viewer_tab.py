"""The Trace viewer tab: open a trace JSON saved by the Run tab or `python -m onegen run --json`."""
from __future__ import annotations

import logging
import os

import gradio as gr

from .. import render_html as R
from ..app_state import AppState
from ..tasks import TASK_NAMES, get_task
from ..trace import Trace, TraceFormatError
from .shared import PRIVATE, TracePanel

log = logging.getLogger("onegen.app")

MAX_TRACE_UPLOAD = 10 * 1024 * 1024


def read_trace(path: str) -> Trace:
    """The trace in an uploaded file; TraceFormatError (with the reason) when it is not one."""
    size = os.path.getsize(path)
    if size > MAX_TRACE_UPLOAD:
        raise TraceFormatError(f"the file has {size:,} bytes; traces up to {MAX_TRACE_UPLOAD:,} bytes are read")
    with open(path, encoding="utf-8") as f:
        return Trace.from_json(f.read())


def build(app: AppState) -> None:
    gr.Markdown("Open a trace saved with **Download trace JSON** (schema `onegen-trace/1`).")
    upload = gr.File(label="Trace JSON", file_types=[".json"], type="filepath", elem_id="trace-upload")
    status = gr.HTML(elem_id="viewer-status")
    panel = TracePanel(app, "viewer")

    def view_upload(path):
        if not path:
            return {status: R.message_html("Upload a trace JSON file (written by the Download button or "
                                           "`python -m onegen run`)."), **panel.empty()}
        try:
            trace = read_trace(path)
        except (TraceFormatError, UnicodeDecodeError, OSError) as e:
            return {status: R.message_html(f"This file is not a readable OneGen trace: {e}", "error"), **panel.empty()}
        except Exception as e:  # noqa: BLE001 - a hand-edited file can break the reader in many ways
            return {status: R.message_html(f"This file is not a readable OneGen trace: malformed "
                                           f"({type(e).__name__}).", "error"), **panel.empty()}
        try:
            name = trace.model.get("name", "?") if isinstance(trace.model, dict) else "?"
            label = get_task(trace.task).label if trace.task in TASK_NAMES else trace.task
            info = f"{label} run of {name}: {len(trace.tokens)} tokens, {len(trace.retrievals)} retrievals."
            return {status: R.message_html(info, "ok"), **panel.show(trace)}
        except Exception as e:  # noqa: BLE001 - fields of the wrong type surface only while rendering
            log.warning("uploaded trace could not be rendered: %r", e)
            return {status: R.message_html(f"This trace could not be shown: some fields have the wrong type "
                                           f"({type(e).__name__}).", "error"), **panel.empty()}

    upload.change(view_upload, upload, [status, *panel.outputs], concurrency_limit=None, **PRIVATE)
