"""The OneGen Explorer page: one module per tab, each laying out its components and wiring their
events next to them; `shared` holds the trace panel and what the tabs share. The HTML comes from
onegen/render_html.py, render_results.py and render_compare.py; the model, indexes and long jobs
from onegen/app_state.py and onegen/jobs.py. Only this package imports gradio."""
from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from an offline demo

import gradio as gr  # noqa: E402

from .. import render_compare as RC  # noqa: E402
from .. import render_html as R  # noqa: E402
from .. import render_results as RR  # noqa: E402
from ..render_replay import WHATIF_CSS  # noqa: E402
from .. import render_why as RW  # noqa: E402
from ..app_state import AppState  # noqa: E402
from . import about_tab, api, browse_tab, compare_tab, errors_tab, run_tab, viewer_tab  # noqa: E402
from .shared import on_zero_gpu  # noqa: E402

__all__ = ["build_demo", "launch", "on_zero_gpu"]

MAX_QUEUED = 16  # requests waiting at once, all visitors together
MAX_UPLOAD = "100mb"  # dataset and result files; a trace is refused past viewer_tab.MAX_TRACE_UPLOAD

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


def build_demo(app: AppState) -> gr.Blocks:
    with gr.Blocks(title="OneGen Explorer", delete_cache=(3600, 3600)) as demo:
        gr.Markdown("# OneGen Explorer\nOne model writes and retrieves in a single forward pass. "
                    "Run it, watch every retrieval token fire, and see what it found and what it cost.")
        with gr.Tabs() as tabs:
            with gr.Tab("Run", id="run"):
                run_tab.build(app, demo)
            with gr.Tab("Trace viewer", id="viewer"):
                viewer_tab.build(app)
            with gr.Tab("Index browser", id="browse"):
                browse_tab.build(app, demo, tabs)
            with gr.Tab("Compare", id="compare"):
                compare_tab.build(app, demo)
            with gr.Tab("Error browser", id="errors"):
                errors_tab.build(app)
            with gr.Tab("About", id="about"):
                about_tab.build(app, demo)
        api.build(app)
    # Bounded: past MAX_QUEUED waiting requests gradio refuses new ones ("the queue is full")
    # rather than letting the wait grow without end; each visitor also has one run at a time
    # (AppState.runs), refused with a message.
    # With a shared batch (AppConfig.batch_runs), that many runs go at once: the batch decodes them
    # together, and every other model call still takes the app's run lock.
    demo.queue(default_concurrency_limit=max(1, app.config.batch_runs), max_size=MAX_QUEUED)
    return demo


def theme() -> gr.themes.Theme:
    # System fonts: the page loads nothing from the internet.
    return gr.themes.Soft(primary_hue="indigo", font=["ui-sans-serif", "system-ui", "sans-serif"],
                          font_mono=["ui-monospace", "Consolas", "monospace"])


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, share: bool = False, **kw):
    # No allowed_paths: the page can reach only gradio's own cache (uploads and trace downloads).
    css = R.APP_CSS + RR.RESULTS_CSS + RC.COMPARE_CSS + WHATIF_CSS + RW.WHY_CSS
    return demo.launch(server_name=host, server_port=port, share=share, theme=theme(), css=css,
                       js=CHIP_JS, max_file_size=MAX_UPLOAD, ssr_mode=False, show_error=False, **kw)
