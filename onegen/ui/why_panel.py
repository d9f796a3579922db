"""The "Why this token / What it read" views under a trace panel: the query lens strip and the
attention strip of the shown run (one button, recomputed from the finished trace), and the layer
view of the selected retrieval step (its own button: it may re-encode the index at every layer)."""
from __future__ import annotations

import gradio as gr

from .. import render_html as R
from .. import render_why as W
from ..app_state import IMPRAG, AppState
from ..attention_read import AttentionRead, explain
from ..lens import layer_limit_problem, layer_readings, layer_vectors_kept, layer_view
from ..modes import MODES
from ..trace import Trace
from .shared import PRIVATE, TracePanel, error_message

# An ImpRAG run's own views are in its retrieval step; these explain a retrieval token's hidden state.
IMPRAG_NOTE = ("An ImpRAG run is explained by its own views, in the retrieval step above: where its query and its "
               "passages were read, and the reader's attention to each passage per middle layer. The views here "
               "explain a retrieval token's hidden state, which ImpRAG does not have.")
GROUP_CHOICES = [("all layers", "all"), ("bottom layers", "bottom"), ("middle layers", "middle"), ("top layers", "top")]


class WhyPanel:
    def __init__(self, app: AppState, panel: TracePanel, prefix: str):
        self.app, self.panel = app, panel
        with gr.Accordion("Why this token, and what it read", open=True, elem_id=f"{prefix}-why"):
            gr.Markdown("Recomputed from the finished run: every written token's hidden state searched as if it "
                        "were the query (the query lens), and the attention each written token puts on each "
                        "inserted paragraph: one extra forward of the run's sequence, no decoding. The layer view "
                        "re-encodes the index at every layer the first time (minutes for a few hundred documents on "
                        "a CPU), then reuses it, also after a restart (it is kept in the user cache).")
            with gr.Row():
                self.explain = gr.Button("Explain this run", elem_id=f"{prefix}-why-btn", scale=2)
                self.layers_btn = gr.Button("Layer view of the selected step", elem_id=f"{prefix}-layers-btn",
                                            scale=2)
            self.status = gr.HTML(elem_id=f"{prefix}-why-status")
            gr.Markdown("##### Why this token: the query lens")
            self.lens = gr.HTML(W.lens_html(None), elem_id=f"{prefix}-lens")
            gr.Markdown("##### Layer view")
            self.layers = gr.HTML(W.layers_html(None), elem_id=f"{prefix}-layers")
            gr.Markdown("##### What it read")
            self.group = gr.Radio(GROUP_CHOICES, value="all", label="Attention averaged over", elem_id=f"{prefix}-group")
            self.read_html = gr.HTML(W.attention_html(None), elem_id=f"{prefix}-read")
            self.read = gr.State(None)
        self.explain.click(self.on_explain, [panel.trace, self.group], [self.status, self.lens, self.read_html, self.read],
                           concurrency_id="model", concurrency_limit=1, **PRIVATE)
        self.layers_btn.click(self.on_layers, [panel.trace, panel.steps], [self.status, self.layers],
                              concurrency_id="model", concurrency_limit=1, **PRIVATE)
        self.group.input(self.on_group, [self.read, self.group], [self.read_html], queue=False, **PRIVATE)
        # A new trace in the panel makes the old views stale.
        panel.trace.change(self.clear, panel.trace, [self.status, self.lens, self.layers, self.read_html, self.read],
                           queue=False, **PRIVATE)

    def clear(self, trace: Trace | None = None):
        note = query_state_note(trace)
        return (R.message_html(note, "warn") if note else "", W.lens_html(None), W.layers_html(None),
                W.attention_html(None), None)

    def _ready(self, trace: Trace | None):
        if trace is None or not trace.stop_reason:
            raise gr.Error("Run to the end first: the views explain a finished run.", print_exception=False)
        if trace.mode == IMPRAG:
            raise gr.Error(IMPRAG_NOTE, print_exception=False)
        if (trace.index or {}).get("path") == "candidates":
            raise gr.Error("This run searched its own candidate documents, which the trace does not keep; explain it "
                           "with `python -m onegen why TRACE.json --candidates FILE`.", print_exception=False)
        lm = self.app.model()
        index = self.app.retriever(trace.task, lm).index  # refuses an index of another model
        return lm, index

    def on_explain(self, trace: Trace | None, group):
        try:
            lm, index = self._ready(trace)
            with self.app.run_lock:
                both = explain(lm, trace, index)
        except gr.Error as e:
            return R.message_html(str(e.message), "warn"), gr.skip(), gr.skip(), gr.skip()
        except Exception as e:  # noqa: BLE001 - every failure becomes a message
            return R.message_html(error_message(e), "error"), gr.skip(), gr.skip(), gr.skip()
        note = R.message_html(f"Explained in {both.seconds:.2f} s: one forward of {both.forward_tokens} tokens (no "
                              f"decoding), {both.lens.searches} extra searches.", "ok")
        return note, W.lens_html(both.lens), W.attention_html(both.read, _group(group)), both.read

    def on_layers(self, trace: Trace | None, step):
        try:
            lm, index = self._ready(trace)
            if step is None:
                raise gr.Error("Pick a retrieval step first.", print_exception=False)
            if not layer_limit_problem(lm, index) and not layer_vectors_kept(lm, index):
                # Said before the long part starts, so a visitor knows what the wait is.
                yield R.message_html(f"First layer view of this index: re-encoding its {len(index):,} documents at "
                                     f"each of {layer_readings(lm)} layer readings: several minutes on a quiet CPU, "
                                     "far longer on a busy one. Later requests, also after a restart, read them "
                                     "from the cache..."), gr.skip()
            # The lock per forward: a first request re-encodes the whole index (minutes for 600 paragraphs
            # on a small CPU), and other visitors' runs step in between its batches.
            view = layer_view(lm, trace, index, int(step), lock=self.app.run_lock)
        except gr.Error as e:
            yield R.message_html(str(e.message), "warn"), gr.skip()
            return
        except Exception as e:  # noqa: BLE001 - every failure (an index too big) becomes a message
            msg = error_message(e)
            yield R.message_html(msg, "warn"), W.layers_html(None, msg)
            return
        kept = " (the documents' vectors from the cache)" if view.cached else ""
        yield (R.message_html(f"Layer view of step {view.step + 1} in {view.seconds:.2f} s{kept}.", "ok"),
               W.layers_html(view))

    def on_group(self, read: AttentionRead | None, group):
        return W.attention_html(read, _group(group))


def query_state_note(trace: Trace | None) -> str:
    """What to say before explaining a run whose mode did not query with the retrieval token's hidden
    state ("" for one that did, or whose mode this version does not know)."""
    mode = MODES.get(getattr(trace, "mode", None) or "")
    if mode is None or mode.reads_query_state:
        return ""
    if mode.name == IMPRAG:
        return IMPRAG_NOTE
    return (f"This {mode.short_label} run has no retrieval-token query state: {mode.description} The views "
            "below read the model's own hidden states of the same sequence, so they show what the retrieval "
            "token's state would have found, not how this run chose its documents.")


def _group(value) -> str | None:
    return None if value in (None, "all") else str(value)
