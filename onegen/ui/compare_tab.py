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
from .shared import (PRIVATE, STOPPED_WHILE_QUEUED, TASK_CHOICES, TracePanel, error_message, example_inputs,
                     loading_message, on_gpu, visitor, wire_examples, wire_model_run)
from .why_panel import WhyPanel

# The page offers fewer runs than the library allows: each one holds the model for every visitor.
UI_MAX_REPEATS = 5


def build(app: AppState, demo: gr.Blocks) -> None:
    gr.Markdown("The same input through OneGen and through a baseline that encodes each query in a second pass. "
                "Both search the same documents; the difference is what the query costs. Both decode one token "
                "per forward call (no prompt-lookup drafts), as the sweep did.")
    with gr.Row():
        task = gr.Radio(TASK_CHOICES, value=TASK_NAMES[0], label="Task", scale=3, elem_id="cmp-task")
        baseline = gr.Radio([(MODE_LABELS[b], b) for b in BASELINE_NAMES], value=BASELINE_NAMES[0], label="Baseline",
                            scale=3, elem_id="cmp-baseline")
        top_k = gr.Slider(1, MAX_TOP_K, value=5, step=1, label="Top-k", scale=1)
        repeats = gr.Slider(1, UI_MAX_REPEATS, value=1, step=1, label="Runs per mode", scale=2, elem_id="cmp-repeats",
                            info="More than one: the modes take turns (A B, B A, ...) and the timing is "
                                 "each mode's median")
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
            WhyPanel(app, onegen_panel, "cmp-onegen")
        with gr.Column():
            gr.Markdown("#### Baseline")
            baseline_panel = TracePanel(app, "cmp-baseline")
            # Says, once the run is shown, that the baseline's queries were not the retrieval token's state.
            WhyPanel(app, baseline_panel, "cmp-baseline")
    gr.Markdown("#### Where this run sits on the single-pass sweep")
    sweep = gr.HTML(elem_id="cmp-sweep")

    @on_gpu
    def compare_runs(task_name: str, text_in: str, k: int, baseline_name: str, repeats: int = 1,
                     on_event=None) -> Comparison:
        return app.compare(task_name, text_in, k, baseline_name, repeats=repeats, on_event=on_event)

    panels = {DEFAULT_MODE: onegen_panel, "baseline": baseline_panel}

    def run_compare(task_name, text_in, k, baseline_name, n_runs, ticket=None, request: gr.Request = None):
        """Both runs in a worker, each streamed into its panel as it goes (the first round; later
        rounds repeat the same tokens for the timing); the costs at the end."""
        cleared = {costs: "", **onegen_panel.empty(), **baseline_panel.empty()}
        running = f"Running {MODE_LABELS[DEFAULT_MODE]}, then {MODE_LABELS.get(baseline_name, baseline_name)}..."
        try:
            with app.runs.start(visitor(request), ticket) as stop:
                if stop.is_set():
                    yield {status: R.message_html(STOPPED_WHILE_QUEUED, "warn")}
                    return
                yield {status: R.message_html(starting_message(app, running, baseline_name)), **cleared}
                job = CompareRun(compare_runs, task_name, text_in, k, baseline_name, int(n_runs), stop).start()
                for p in job.progress():
                    update = {status: R.message_html(progress_line(p))}
                    if p.live is not None:
                        update.update(panels.get(p.mode, baseline_panel).live(p.live))
                    yield update
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

    wire_model_run(app, [run_btn.click, text.submit], stop_btn, run_compare, [task, text, top_k, baseline, repeats],
                   [status, costs, *onegen_panel.outputs, *baseline_panel.outputs, sweep], status)
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
    if p.repeats > 1:
        now = f"Timing round {p.round} of {p.repeats}. {now}"
    return f"{ended}. {now}" if ended else now


def headline(result: Comparison, baseline: str) -> str:
    """What was measured and how, never a verdict the measured numbers contradict."""
    point = RC.run_point(result, baseline)
    label = MODE_LABELS.get(baseline, baseline)
    og_s, base_s = result.seconds[result.base].get("total", 0.0), result.seconds[baseline].get("total", 0.0)
    og_t, base_t = result.forward_tokens[result.base]["total"], result.forward_tokens[baseline]["total"]
    saved = result.forward_tokens[baseline].get("query_reencoding", 0)
    n = point.retrievals
    if result.repeats > 1:
        how = f"Measured, the median of {result.repeats} runs each, taking turns"
        spread = "; runs: " + "; ".join(
            f"{MODE_LABELS.get(m, m)} " + ", ".join(f"{s:.2f}" for s in result.run_seconds.get(m, [])) + " s"
            for m in (result.base, baseline))
    else:
        how, spread = "Measured, one run each (a single run is noisy on a busy machine: ask for more runs)", ""
    measured = (f"{how}: OneGen {og_s:.2f} s and {og_t:,} forward tokens; {label} {base_s:.2f} s "
                f"and {base_t:,} forward tokens; OneGen's total time was the "
                f"{'shorter' if og_s < base_s else 'longer' if og_s > base_s else 'same'} here{spread}.")
    estimate = (f"Re-encoding estimate: OneGen does not re-encode its {n} retrieval quer{'ies' if n != 1 else 'y'}, "
                f"the {saved:,} forward tokens the baseline spent on them")
    if point.reencoding_speedup:
        estimate += f" ({point.reencoding_speedup:.2f}x by the re-encoding time alone; the point on the sweep)"
    return f"{measured} {estimate}."
