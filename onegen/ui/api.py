"""The public API: one endpoint per task, each (text, top_k=5) -> the run's Trace JSON."""
from __future__ import annotations

import gradio as gr

from ..app_state import AppState
from ..trace import Trace
from .shared import error_message, on_gpu, run_concurrency, visitor


def build(app: AppState) -> None:
    @on_gpu
    def run_to_trace(task: str, text: str, top_k: int) -> Trace:
        return app.run_trace(task, text, top_k)

    # The endpoints return the Trace as a JSON string: as a dict, its `index.path` would look like
    # a file to gradio and its client.
    def api_run(task: str, text: str, top_k: int, request: gr.Request | None) -> str:
        try:
            with app.runs.start(visitor(request)):  # one run at a time per client, as on the page
                return run_to_trace(task, text, top_k).to_json()
        except Exception as e:  # noqa: BLE001
            raise gr.Error(error_message(e)) from None

    def link_entities(text: str, top_k: int = 5, request: gr.Request = None) -> str:
        """Entity linking: mentions in `text` linked to the index's entities. Returns the Trace JSON."""
        return api_run("entity-linking", text, top_k, request)

    def answer_multi_hop(text: str, top_k: int = 5, request: gr.Request = None) -> str:
        """Multi-hop QA: sub-questions, retrieved paragraphs, final answer. Returns the Trace JSON."""
        return api_run("multi-hop", text, top_k, request)

    def answer_single_hop(text: str, top_k: int = 5, request: gr.Request = None) -> str:
        """Single-hop QA (Self-RAG): reranked passages and the answer. Returns the Trace JSON."""
        return api_run("single-hop", text, top_k, request)

    for fn in (link_entities, answer_multi_hop, answer_single_hop):
        gr.api(fn, api_name=fn.__name__, **run_concurrency(app))
