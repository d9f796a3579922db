"""The Compare tab: one input through OneGen and a baseline that encodes each query in a second
pass, their costs side by side, and the run placed on the single-pass sweep."""
from __future__ import annotations

import gradio as gr

from .. import render_compare as RC
from .. import render_html as R
from ..app_state import MAX_TOP_K, AppState
from ..baselines import Comparison
from ..jobs import CompareProgress, CompareRun
from ..modes import BASELINE_NAMES, DEFAULT_MODE, MODE_LABELS, get_mode
from ..tasks import TASK_NAMES
from .shared import (PRIVATE, TASK_CHOICES, TracePanel, error_message, example_inputs, loading_message, on_gpu,
                     visitor, wire_examples)


def build(app: AppState, demo: gr.Blocks) -> None:
    gr.Markdown("The same input through OneGen and through a baseline that encodes each query in a second pass. "
                "Both search the same documents; the difference is what the query costs. Both decode one token "
                "per forward call (no prompt-lookup drafts), as the sweep did.")
    with gr.Row():
        task = gr.Radio(TASK_CHOICES, value=TASK_NAMES[0], label="Task", scale=3, elem_id="cmp-task")
        baseline = gr.Radio([(MODE_LABELS[b], b) for b in BASELINE_NAMES], value=BASELINE_NAMES[0], label="Baseline",
                            scale=3, elem_id="cmp-baseline")
        top_k = gr.Slider(1, MAX_TOP_K, value=5, step=1, label="Top-k", scale=1)
    example = gr.Dropdown(label="Examples", choices=[], value=None, interactive=True)
    text = gr.Textbox(label="Input", lines=2, elem_id="cmp-input")
    with gr.Row():
        run_btn = gr.Button("Run both", variant="primary", scale=3, elem_id="cmp-run")
        stop_btn = gr.Button("Stop", variant="stop", scale=1, elem_id="cmp-stop")
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
    def compare_runs(task_name: str, text_in: str, k: int, baseline_name: str, on_token=None) -> Comparison:
        return app.compare(task_name, text_in, k, baseline_name, on_token=on_token)

    def run_compare(task_name, text_in, k, baseline_name, request: gr.Request = None):
        """Both runs in a worker; a status line per mode as they go; the costs at the end."""
        cleared = {costs: "", **onegen_panel.empty(), **baseline_panel.empty()}
        running = f"Running {MODE_LABELS[DEFAULT_MODE]}, then {MODE_LABELS.get(baseline_name, baseline_name)}..."
        try:
            with app.runs.start(visitor(request)) as stop:
                yield {status: R.message_html(starting_message(app, running, baseline_name)), **cleared}
                job = CompareRun(compare_runs, (task_name, text_in, k, baseline_name), stop).start()
                for p in job.progress():
                    yield {status: R.message_html(progress_line(p))}
                result = job.outcome()
        except Exception as e:  # noqa: BLE001 - a message, never a traceback
            yield {status: R.message_html(error_message(e), "error"), **cleared}
            return
        if result is None:
            yield {status: R.message_html("Stopped before both runs ended: nothing was compared.", "warn"), **cleared}
            return
        point = RC.run_point(result, baseline_name)
        yield {status: R.message_html(headline(result, baseline_name), "ok"), costs: RC.costs_html(result),
               **onegen_panel.show(result.traces[result.base]), **baseline_panel.show(result.traces[baseline_name]),
               sweep: RC.sweep_svg(app.sweep_report(), baseline_name, point, "this run")}

    gr.on([run_btn.click, text.submit], run_compare, [task, text, top_k, baseline],
          [status, costs, *onegen_panel.outputs, *baseline_panel.outputs, sweep], concurrency_id="model",
          concurrency_limit=1, **PRIVATE)

    def stop_compare(request: gr.Request):
        app.runs.stop(visitor(request))

    stop_btn.click(stop_compare, None, None, queue=False, **PRIVATE)
    wire_examples(app, task, example, text)
    baseline.input(lambda b: RC.sweep_svg(app.sweep_report(), b), baseline, sweep, queue=False, **PRIVATE)
    demo.load(lambda: {**example_inputs(app, TASK_NAMES[0], example, text),
                       sweep: RC.sweep_svg(app.sweep_report(), BASELINE_NAMES[0])}, None, [example, text, sweep], **PRIVATE)


def starting_message(app: AppState, running: str, baseline: str) -> str:
    message = loading_message(app, running)
    if get_mode(baseline).document_encoder.separate:
        message += f" The first {MODE_LABELS[baseline]} run also encodes the index with its retriever."
    return message


def progress_line(p: CompareProgress) -> str:
    ended = "; ".join(f"{MODE_LABELS.get(m, m)} done: {n} tokens in {secs:.1f} s" for m, n, secs in p.finished)
    now = f"{MODE_LABELS.get(p.mode, p.mode)}: {p.tokens} tokens so far..."
    return f"{ended}. {now}" if ended else now


def headline(result: Comparison, baseline: str) -> str:
    """What was measured and how, never a verdict the measured numbers contradict."""
    point = RC.run_point(result, baseline)
    label = MODE_LABELS.get(baseline, baseline)
    og_s, base_s = result.seconds[result.base].get("total", 0.0), result.seconds[baseline].get("total", 0.0)
    og_t, base_t = result.forward_tokens[result.base]["total"], result.forward_tokens[baseline]["total"]
    saved = result.forward_tokens[baseline].get("query_reencoding", 0)
    n = point.retrievals
    measured = (f"Measured, one run each: OneGen {og_s:.2f} s and {og_t:,} forward tokens; {label} {base_s:.2f} s "
                f"and {base_t:,} forward tokens; OneGen's total time was the "
                f"{'shorter' if og_s < base_s else 'longer' if og_s > base_s else 'same'} here.")
    estimate = (f"Re-encoding estimate: OneGen does not re-encode its {n} retrieval quer{'ies' if n != 1 else 'y'}, "
                f"the {saved:,} forward tokens the baseline spent on them")
    if point.reencoding_speedup:
        estimate += f" ({point.reencoding_speedup:.2f}x by the re-encoding time alone; the point on the sweep)"
    return f"{measured} {estimate}."
