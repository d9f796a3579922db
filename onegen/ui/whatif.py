"""What if (counterfactual replay) on the page: under a finished run, pick a retrieval step and
another choice there, and see both continuations side by side (onegen/replay.py,
onegen/render_replay.py); in the Error browser, one click asks whether the gold document would
have fixed a wrong example."""
from __future__ import annotations

import gradio as gr

from .. import render_html as R
from ..app_state import IMPRAG, IMPRAG_NO_REPLAY, AppState
from ..render_replay import comparison_html
from ..trace import Trace
from .shared import PRIVATE, error_message, on_gpu

EXPLAINER = ("Run this trace again from one retrieval with another document there: a lower-ranked "
             "candidate, a random document of the index, or none. Everything before the step is "
             "prefilled from the trace in one pass; only what follows is computed again.")


def choice_options(trace: Trace | None, step) -> list[tuple[str, str]]:
    """(label, value) of what a replay can use at `step`: each recorded candidate by rank, a
    random document, or none. Labels are plain text (gradio shows them as text)."""
    try:
        r = trace.retrievals[int(step)]
    except (AttributeError, IndexError, TypeError, ValueError):
        return []
    ranks = [(f"rank {h.rank}: {h.title}" + (" (what the run used)" if i == r.chosen else ""), str(i))
             for i, h in enumerate(r.hits)]
    return [*ranks, ("a random document of the index", "random"), ("no document", "none")]


def replayable(trace: Trace | None) -> bool:
    return (trace is not None and bool(trace.retrievals) and bool(trace.stop_reason) and not trace.error
            and trace.mode != IMPRAG)


class WhatIf:
    """The What-if control under a run's trace panel (`trace` is the panel's trace state)."""

    def __init__(self, app: AppState, trace: gr.State, prefix: str):
        self.app = app
        with gr.Accordion("What if (counterfactual replay)", open=False, elem_id=f"{prefix}-whatif"):
            gr.Markdown(EXPLAINER)
            with gr.Row():
                self.step = gr.Dropdown(label="Retrieval step", choices=[], value=None, interactive=True,
                                        elem_id=f"{prefix}-whatif-step")
                self.choice = gr.Dropdown(label="Use instead", choices=[], value=None, interactive=True,
                                          elem_id=f"{prefix}-whatif-choice")
                self.seed = gr.Number(0, precision=0, label="Seed (random document)", minimum=0,
                                      elem_id=f"{prefix}-whatif-seed")
            self.button = gr.Button("Replay from this step", elem_id=f"{prefix}-whatif-run")
            self.view = gr.HTML(elem_id=f"{prefix}-whatif-view")
        self.step.input(lambda t, s: gr.Dropdown(choices=choice_options(t, s), value=_second(t, s)),
                        [trace, self.step], self.choice, queue=False, **PRIVATE)
        self.button.click(on_gpu(self.run), [trace, self.step, self.choice, self.seed], self.view,
                          concurrency_id="model", concurrency_limit=1, **PRIVATE)

    @property
    def outputs(self) -> list:
        return [self.step, self.choice, self.view]

    def refresh(self, trace: Trace | None) -> dict:
        """After a run: its retrieval steps, the first selected, its second candidate offered."""
        if not replayable(trace):
            return {self.step: gr.Dropdown(choices=[], value=None), self.choice: gr.Dropdown(choices=[], value=None),
                    self.view: ""}
        return {self.step: gr.Dropdown(choices=R.step_choices(trace.retrievals), value=0),
                self.choice: gr.Dropdown(choices=choice_options(trace, 0), value=_second(trace, 0)),
                self.view: ""}

    def run(self, trace: Trace | None, step, choice, seed) -> str:
        from ..replay import Choice

        if getattr(trace, "mode", None) == IMPRAG:
            return R.message_html(IMPRAG_NO_REPLAY, "warn")
        if not replayable(trace):
            return R.message_html("Run an input to the end first: a replay starts from a finished run's retrieval.",
                                  "warn")
        if step is None or choice is None:
            return R.message_html("Pick a retrieval step and what to use there.", "warn")
        try:
            c = Choice.parse(str(choice), seed=int(seed or 0))
            return comparison_html(self.app.replay(trace, int(step), c))
        except Exception as e:  # noqa: BLE001 - every failure becomes a message, never a traceback
            return R.message_html(error_message(e), "error")


def _second(trace: Trace | None, step) -> str | None:
    """The default choice: the next candidate after the one the run used, else none."""
    options = [v for _, v in choice_options(trace, step)]
    ranks = [v for v in options if v.isdigit()]
    return ranks[1] if len(ranks) > 1 else ("none" if options else None)


def gold_fix_html(app: AppState, opened, key) -> str:
    """The Error browser's one click: the selected wrong example replayed with its gold document."""
    rec = opened.by_key().get(key) if opened is not None and key is not None else None
    if rec is None:
        return R.message_html("Select an example in the table first.", "warn")
    if rec.trace is None:
        return R.message_html("This example has no trace to replay (the engine raised).", "warn")
    if not rec.categories:
        return R.message_html("This example is right already: there is nothing to fix.", "info")
    try:
        c = app.gold_replay(rec.trace, rec.example)
    except Exception as e:  # noqa: BLE001 - a message, never a traceback
        return R.message_html(error_message(e), "warn")
    if c.replayed_correct:
        verdict, kind = f"Yes: with the gold document at step {c.step + 1}, the run gets this example right.", "ok"
    elif c.same_result:
        verdict, kind = (f"No: with the gold document at step {c.step + 1}, the run writes the same result; "
                         "the document was not what went wrong.", "warn")
    else:
        verdict, kind = (f"No: with the gold document at step {c.step + 1}, the result changes but is still "
                         "wrong.", "warn")
    return R.message_html(verdict, kind) + comparison_html(c)
