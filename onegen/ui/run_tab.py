"""The Run tab: one input streamed through the model, its retrieval steps, result, cost strip and
the trace as a download."""
from __future__ import annotations

import time
from typing import Iterator

import gradio as gr

from .. import render_html as R
from ..app_state import MAX_TOP_K, AppState
from ..engine import DoneEvent, Event, TokenEvent
from ..tasks import TASK_NAMES, get_task
from ..trace import Trace
from .shared import (PRIVATE, TASK_CHOICES, TracePanel, error_message, example_inputs, loading_message, on_gpu,
                     wire_examples, write_trace)

STREAM_EVERY_S = 0.15  # at most ~7 page updates a second while tokens stream


def worth_showing(events: Iterator[Event], live: Trace) -> Iterator[Event]:
    """The events of a run after which the page updates; every token and retrieval is added to the
    `live` trace. Retrievals show at once, and so does the first generated token after the start or
    a retrieval (the one a user waits for); the throttle only batches the tokens that follow it."""
    last = 0.0
    fresh = True
    for ev in events:
        if isinstance(ev, TokenEvent):
            live.tokens.append(ev.token)
            first = fresh and ev.token.kind == "generated"
            fresh = fresh and not first
            if not first and time.monotonic() - last < STREAM_EVERY_S:
                continue
        elif not isinstance(ev, DoneEvent):  # a RetrievalEvent
            live.retrievals.append(ev.retrieval)
            fresh = True
        last = time.monotonic()
        yield ev


def build(app: AppState, demo: gr.Blocks) -> None:
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            with gr.Row():
                task = gr.Radio(TASK_CHOICES, value=TASK_NAMES[0], label="Task", scale=3, elem_id="task")
                top_k = gr.Slider(1, MAX_TOP_K, value=5, step=1, label="Top-k candidates", scale=1, elem_id="top-k")
            copy_input = gr.Checkbox(value=True, label="Entity linking: output must copy the input",
                                     info="Masks tokens that would misspell or drop the text; untick to see what "
                                          "the model writes on its own. Steps where the mask overrode the model "
                                          "are underlined.", elem_id="copy-input")
            example = gr.Dropdown(label="Examples (pick one to fill the input)", choices=[], value=None,
                                  interactive=True, elem_id="examples")
            text = gr.Textbox(label="Input", lines=3, placeholder="Type a sentence or a question",
                              info=f"Up to {app.config.max_input_chars:,} characters; Shift+Enter runs.",
                              elem_id="input")
            with gr.Row():
                run_btn = gr.Button("Run", variant="primary", scale=3, elem_id="run-btn")
                stop_btn = gr.Button("Stop", variant="stop", scale=1, elem_id="stop-btn")
            status = gr.HTML(elem_id="run-status")
            panel = TracePanel(app, "run")
            download = gr.DownloadButton("Download trace JSON", visible=False, elem_id="download")
        with gr.Column(scale=1, min_width=260):
            with gr.Accordion("How single-pass retrieval works", open=True):
                gr.HTML(R.EXPLAINER_HTML)

    @on_gpu
    def events(task: str, text: str, top_k: int, copy_input: bool):
        yield from app.stream(task, text, top_k, copy_input)

    def run(task, text, top_k, copy_input=True):
        """Stream a run: the timeline grows as tokens come; the result and download come at the end."""
        live = Trace(task=task, mode="onegen", model={}, input=text or "", prompt_text="", prompt_ids=[])
        yield {status: R.message_html(loading_message(app, "Running...")), **panel.live(live), panel.result: "",
               download: gr.DownloadButton(visible=False)}
        try:
            for ev in worth_showing(events(task, text, top_k, copy_input), live):
                if isinstance(ev, DoneEvent):
                    yield finished(ev.trace)
                    return
                yield {status: R.message_html("Running..."), **panel.live(live)}
        except Exception as e:  # noqa: BLE001 - every failure becomes a message, never a traceback
            msg = error_message(e)
            gr.Warning(msg)
            yield {status: R.message_html(msg, "error"), **panel.views(live, {}), panel.result: "",
                   panel.trace: None, download: gr.DownloadButton(visible=False)}

    def finished(trace: Trace) -> dict:
        n = len(trace.retrievals)
        done = (f"Done: {len(trace.tokens)} tokens, {n} retrieval{'s' if n != 1 else ''}, "
                f"{trace.cost.seconds.get('total', 0):.1f} s.")
        return {status: R.message_html(done, "ok"), **panel.show(trace),
                download: gr.DownloadButton(value=write_trace(trace), visible=True)}

    run_event = gr.on([run_btn.click, text.submit], run, inputs=[task, text, top_k, copy_input],
                      outputs=[status, *panel.outputs, download], concurrency_id="model", concurrency_limit=1,
                      **PRIVATE)
    stop_btn.click(None, cancels=[run_event])
    wire_examples(app, task, example, text)
    task.input(lambda t: gr.Checkbox(visible=get_task(t).copies_input), task, copy_input, queue=False, **PRIVATE)

    def on_load():
        """The first task's examples, and configuration problems shown at once."""
        problems = "".join(R.message_html(m, k) for k, m in app.overview() if k in ("error", "warn"))
        return {**example_inputs(app, TASK_NAMES[0], example, text), status: problems}

    demo.load(on_load, None, [example, text, status], **PRIVATE)
