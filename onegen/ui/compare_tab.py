"""The Compare tab: one input through OneGen and a baseline that encodes each query in a second
pass, their costs side by side, and the run placed on the single-pass sweep; then one single-hop
question through OneGen, ImpRAG (when configured) and the pipeline, side by side."""
from __future__ import annotations

from typing import Iterator

import gradio as gr

from .. import render_compare as RC
from .. import render_html as R
from ..app_state import IMPRAG, IMPRAG_TASK, MAX_TOP_K, AppState
from ..baselines import Comparison
from ..jobs import CompareProgress, CompareRun
from ..modes import BASELINE_NAMES, DEFAULT_MODE, MODE_LABELS, get_mode
from ..tasks import TASK_NAMES
from .shared import (PRIVATE, STOPPED_WHILE_QUEUED, TASK_CHOICES, TracePanel, error_message, example_inputs,
                     imprag_note_html, loading_message, on_gpu, visitor, wire_examples, wire_model_run)
from .why_panel import WhyPanel

PIPELINE = "pipeline"

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
    def compare_runs(task_name: str, text_in: str, k: int, baseline_name: str | tuple[str, ...], repeats: int = 1,
                     on_event=None) -> Comparison:
        return app.compare(task_name, text_in, k, baseline_name, repeats=repeats, on_event=on_event)

    def run_compare(task_name, text_in, k, baseline_name, n_runs, ticket=None, request: gr.Request = None):
        """Both runs in a worker, each streamed into its panel as it goes (the first round; later
        rounds repeat the same tokens for the timing); the costs at the end."""
        cleared = {costs: "", **onegen_panel.empty(), **baseline_panel.empty()}
        running = f"Running {MODE_LABELS[DEFAULT_MODE]}, then {MODE_LABELS.get(baseline_name, baseline_name)}..."
        result = yield from follow_comparison(
            app, compare_runs, (task_name, text_in, k, baseline_name, int(n_runs)), ticket, request, status, cleared,
            starting_message(app, running, baseline_name), {DEFAULT_MODE: onegen_panel, baseline_name: baseline_panel})
        if result is None:
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
    build_designs(app, demo, compare_runs)


def design_baselines(app: AppState) -> tuple[str, ...]:
    """The designs set beside OneGen on one single-hop question: ImpRAG when configured, the pipeline."""
    return (IMPRAG, PIPELINE) if app.imprag_configured else (PIPELINE,)


def build_designs(app: AppState, demo: gr.Blocks, compare_runs) -> None:
    """One single-hop question through OneGen, ImpRAG and the pipeline: one column each."""
    gr.Markdown("### Three designs, one single-hop question\nOneGen reads its query off a retrieval token it "
                "writes and inserts the passage it found; ImpRAG reads its query off the input's own bottom layers "
                "and lets only the middle layers read the passages; the pipeline encodes the question again with a "
                "separate retriever. Each runs once, one token per forward call.")
    gr.HTML(imprag_note_html(app), visible=not app.imprag_configured, elem_id="designs-imprag-note")
    with gr.Row():
        text = gr.Textbox(label="Single-hop question", lines=2, scale=4, elem_id="designs-input")
        top_k = gr.Slider(1, MAX_TOP_K, value=5, step=1, label="Top-k", scale=1, elem_id="designs-top-k")
    example = gr.Dropdown(label="Examples", choices=[], value=None, interactive=True, elem_id="designs-examples")
    with gr.Row():
        names = [get_mode(m).short_label for m in (DEFAULT_MODE, *design_baselines(app))]
        run_btn = gr.Button(f"Run {', '.join(names[:-1])} and {names[-1]}", variant="primary", scale=3,
                            elem_id="designs-run")
        stop_btn = gr.Button("Stop", variant="stop", scale=1, elem_id="designs-stop")
    status = gr.HTML(elem_id="designs-status")
    table = gr.HTML(elem_id="designs-table")

    def run_designs(text_in, k, ticket=None, request: gr.Request = None):
        """OneGen, then each other design, in a worker; the table at the end."""
        baselines = design_baselines(app)
        running = "Running " + ", then ".join(MODE_LABELS[m] for m in (DEFAULT_MODE, *baselines)) + "..."
        result = yield from follow_comparison(app, compare_runs, (IMPRAG_TASK, text_in, k, baselines, 1), ticket,
                                              request, status, {table: ""}, starting_message(app, running, baselines))
        if result is not None:
            done = "; ".join(f"{MODE_LABELS[m]} {result.seconds[m].get('total', 0.0):.2f} s" for m in result.modes)
            yield {status: R.message_html(f"Measured, one run each: {done}.", "ok"), table: RC.designs_html(result)}

    wire_model_run(app, [run_btn.click, text.submit], stop_btn, run_designs, [text, top_k], [status, table], status)
    example.input(lambda choice: choice or gr.skip(), example, text, queue=False, **PRIVATE)
    demo.load(lambda: example_inputs(app, IMPRAG_TASK, example, text), None, [example, text], **PRIVATE)


def follow_comparison(app: AppState, compare_runs, args: tuple, ticket, request, status: gr.HTML, cleared: dict,
                      running: str, panels: dict | None = None) -> Iterator[dict]:
    """`compare_runs(*args)` as a comparison job (CompareRun) and one visitor's run: yields the page's
    updates (the status line, and the running mode's trace in `panels[mode]` when given) and returns
    the Comparison, or None when it was stopped or failed (the status then says so)."""
    try:
        with app.runs.start(visitor(request), ticket) as stop:
            if stop.is_set():
                yield {status: R.message_html(STOPPED_WHILE_QUEUED, "warn")}
                return None
            yield {status: R.message_html(running), **cleared}
            job = CompareRun(compare_runs, *args, stop_flag=stop).start()
            for p in job.progress():
                update = {status: R.message_html(progress_line(p))}
                if panels and p.live is not None and p.mode in panels:
                    update.update(panels[p.mode].live(p.live))
                yield update
            result = job.outcome()
    except Exception as e:  # noqa: BLE001 - a message, never a traceback
        yield {status: R.message_html(error_message(e), "error"), **cleared}
        return None
    if result is None:
        runs = "both runs" if job.per_round == 2 else "every run"
        yield {status: R.message_html(f"Stopped before {runs} ended: nothing was compared.", "warn"), **cleared}
    return result


def starting_message(app: AppState, running: str, baseline: str | tuple[str, ...]) -> str:
    baselines = (baseline,) if isinstance(baseline, str) else baseline
    message = loading_message(app, running, baselines)
    for b in baselines:
        if get_mode(b).document_encoder.separate:
            message += f" The first {MODE_LABELS[b]} run also encodes the index with its retriever."
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
