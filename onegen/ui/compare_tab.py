"""The Compare tab: one input through OneGen and a baseline that encodes each query in a second
pass, their costs side by side, and the run placed on the single-pass sweep."""
from __future__ import annotations

import gradio as gr

from .. import render_compare as RC
from .. import render_html as R
from ..app_state import BASELINES, MAX_TOP_K, AppState
from ..baselines import Comparison
from ..tasks import TASK_NAMES
from .shared import (PRIVATE, TASK_CHOICES, TracePanel, error_message, example_inputs, loading_message, on_gpu,
                     wire_examples)


def build(app: AppState, demo: gr.Blocks) -> None:
    gr.Markdown("The same input through OneGen and through a baseline that encodes each query in a second pass. "
                "Both search the same documents; the difference is what the query costs. Both decode one token "
                "per forward call (no prompt-lookup drafts), as the sweep did.")
    with gr.Row():
        task = gr.Radio(TASK_CHOICES, value=TASK_NAMES[0], label="Task", scale=3, elem_id="cmp-task")
        baseline = gr.Radio([(RC.MODE_LABELS[b], b) for b in BASELINES], value=BASELINES[0], label="Baseline",
                            scale=3, elem_id="cmp-baseline")
        top_k = gr.Slider(1, MAX_TOP_K, value=5, step=1, label="Top-k", scale=1)
    example = gr.Dropdown(label="Examples", choices=[], value=None, interactive=True)
    text = gr.Textbox(label="Input", lines=2, elem_id="cmp-input")
    run_btn = gr.Button("Run both", variant="primary", elem_id="cmp-run")
    status = gr.HTML(elem_id="cmp-status")
    costs = gr.HTML(elem_id="cmp-costs")
    with gr.Row(equal_height=False):
        with gr.Column():
            gr.Markdown("#### OneGen")
            onegen_panel = TracePanel(app, "cmp-onegen")
        with gr.Column():
            gr.Markdown("#### Baseline")
            baseline_panel = TracePanel(app, "cmp-baseline")
    gr.Markdown("#### Where this run sits on the single-pass sweep")
    sweep = gr.HTML(elem_id="cmp-sweep")

    @on_gpu
    def compare_runs(task_name: str, text_in: str, k: int, baseline_name: str) -> Comparison:
        return app.compare(task_name, text_in, k, baseline_name)

    def run_compare(task_name, text_in, k, baseline_name):
        cleared = {costs: "", **onegen_panel.empty(), **baseline_panel.empty()}
        running = f"Running OneGen, then {RC.MODE_LABELS.get(baseline_name, baseline_name)}..."
        yield {status: R.message_html(starting_message(app, running, baseline_name)), **cleared}
        try:
            result = compare_runs(task_name, text_in, k, baseline_name)
        except Exception as e:  # noqa: BLE001 - a message, never a traceback
            yield {status: R.message_html(error_message(e), "error"), **cleared}
            return
        point = RC.run_point(result, baseline_name)
        speed = f"{point.reencoding_speedup:.2f}x" if point.reencoding_speedup else "n/a"
        done = (f"Done: {point.retrievals} retrieval{'s' if point.retrievals != 1 else ''}; OneGen saved the "
                f"baseline's query re-encoding: {speed} by its time.")
        yield {status: R.message_html(done, "ok"), costs: RC.costs_html(result),
               **onegen_panel.show(result.traces["onegen"]), **baseline_panel.show(result.traces[baseline_name]),
               sweep: RC.sweep_svg(app.sweep_report(), baseline_name, point, "this run")}

    gr.on([run_btn.click, text.submit], run_compare, [task, text, top_k, baseline],
          [status, costs, *onegen_panel.outputs, *baseline_panel.outputs, sweep], concurrency_id="model",
          concurrency_limit=1, **PRIVATE)
    wire_examples(app, task, example, text)
    baseline.input(lambda b: RC.sweep_svg(app.sweep_report(), b), baseline, sweep, queue=False, **PRIVATE)
    demo.load(lambda: {**example_inputs(app, TASK_NAMES[0], example, text),
                       sweep: RC.sweep_svg(app.sweep_report(), BASELINES[0])}, None, [example, text, sweep], **PRIVATE)


def starting_message(app: AppState, running: str, baseline: str) -> str:
    message = loading_message(app, running)
    if baseline == "pipeline":
        message += " The first pipeline run also encodes the index with its retriever."
    return message
