"""The Run tab: one input streamed through the model, its retrieval steps, result, cost strip and
the trace as a download."""
from __future__ import annotations

import time
from typing import Iterator

import gradio as gr

from .. import render_html as R
from ..app_state import IMPRAG, IMPRAG_TASK, MAX_TOP_K, AppState
from ..calibration import unconfident_links
from ..engine import DoneEvent, Event, TokenEvent
from ..modes import DEFAULT_MODE, MODE_LABELS
from ..tasks import TASK_NAMES, get_task
from ..trace import Trace
from ..world_overview import chain_type
from ..render_text import stop_words
from .shared import (PRIVATE, STOPPED_WHILE_QUEUED, TASK_CHOICES, TracePanel, error_message, example_inputs,
                     imprag_note_html, loading_message, on_gpu, span_download, visitor, wire_examples, wire_model_run,
                     write_trace)
from .whatif import WhatIf
from .why_panel import WhyPanel

STREAM_EVERY_S = 0.15  # at most ~7 page updates a second while tokens stream
MODE_CHOICES = [(MODE_LABELS[DEFAULT_MODE], DEFAULT_MODE), ("ImpRAG (single-hop questions)", IMPRAG)]


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
            # ImpRAG (a second model, single-hop only) when one is configured; shown off otherwise.
            mode = gr.Radio(MODE_CHOICES, value=DEFAULT_MODE, label="Mode", interactive=app.imprag_configured,
                            info="ImpRAG reads its query off the input's own bottom layers and its passages in the "
                                 "middle layers: single-hop questions only.", elem_id="run-mode")
            gr.HTML(imprag_note_html(app), visible=not app.imprag_configured, elem_id="run-imprag-note")
            copy_input = gr.Checkbox(value=True, label="Entity linking: output must copy the input",
                                     info="Masks tokens that would misspell or drop the text; untick to see what "
                                          "the model writes on its own. Steps where the mask overrode the model "
                                          "are underlined.", elem_id="copy-input")
            checks = gr.Checkbox(value=True, label="Tidy the input; check the result against what the run read",
                                 info="Before the run, gives a typed name the index's case and ends an unfinished "
                                      "input with ? or . (the result says what the model read). After it, "
                                      "respells an answer misspelt while copying as the documents spell it, "
                                      "recomputes a comparison the chain states from the values it wrote, and "
                                      "moves a linked mention onto its entity's name or refuses a link whose "
                                      "mention shares no word with it; the result says what it changed. Untick "
                                      "to run on the text as typed and see the result as the model wrote it. "
                                      "Only models that declare them (the embedded default) run them.",
                                 elem_id="result-checks")
            example = gr.Dropdown(label="Examples (pick one to fill the input)", choices=[], value=None,
                                  interactive=True, elem_id="examples")
            text = gr.Textbox(label="Input", lines=3, placeholder="Type a sentence or a question",
                              info=f"Up to {app.config.max_input_chars:,} characters; Shift+Enter runs.",
                              elem_id="input")
            expected = gr.HTML(elem_id="run-expected")
            with gr.Row():
                run_btn = gr.Button("Run", variant="primary", scale=3, elem_id="run-btn")
                stop_btn = gr.Button("Stop", variant="stop", scale=1, elem_id="stop-btn")
            status = gr.HTML(elem_id="run-status")
            # What an invented world's index holds, until the first run (empty for other indexes).
            world = gr.HTML(elem_id="run-world")
            panel = TracePanel(app, "run")
            whatif = WhatIf(app, panel.trace, "run")
            WhyPanel(app, panel, "run")
            with gr.Row():
                download = gr.DownloadButton("Download trace JSON", visible=False, elem_id="download")
                # The same run as OpenInference spans, for Phoenix and other OpenTelemetry tools.
                spans = gr.DownloadButton("Download OpenInference spans (OTLP JSON)", visible=False,
                                          elem_id="download-spans")
        with gr.Column(scale=1, min_width=260):
            with gr.Accordion("How single-pass retrieval works", open=True):
                gr.HTML(R.EXPLAINER_HTML)

    runs = RunView(app, status, panel, download, expected, world, spans)
    ran = wire_model_run(app, [run_btn.click, text.submit], stop_btn, runs.run,
                         [task, text, top_k, copy_input, mode, checks], runs.outputs, status, batched=True)
    ran.then(whatif.refresh, panel.trace, whatif.outputs, queue=False, **PRIVATE)
    wire_examples(app, task, example, text)
    # An example shows what it should give; the tick or cross comes after its run.
    gr.on([text.change, task.change], lambda t, x: expectation_html(app, t, app.example(t, x)), [task, text],
          expected, queue=False, **PRIVATE)
    task.input(lambda t: gr.Checkbox(visible=get_task(t).copies_input), task, copy_input, queue=False, **PRIVATE)

    def on_mode(chosen, current):
        """ImpRAG answers single-hop questions: choosing it moves the task there."""
        if chosen != IMPRAG:
            return gr.skip()
        return {task: IMPRAG_TASK, copy_input: gr.Checkbox(visible=False),
                **example_inputs(app, IMPRAG_TASK, example, text, current)}

    mode.input(on_mode, [mode, text], [task, copy_input, example, text], queue=False, **PRIVATE)
    # Another task goes back to OneGen, the one mode that runs every task.
    task.input(lambda t, m: DEFAULT_MODE if m == IMPRAG and t != IMPRAG_TASK else gr.skip(), [task, mode], mode,
               queue=False, **PRIVATE)

    def on_load():
        """The first task's examples, configuration problems shown at once, and what an invented
        world's index holds."""
        problems = "".join(R.message_html(m, k) for k, m in app.overview() if k in ("error", "warn"))
        invented = app.world()
        described = R.world_html(invented.overview, invented.names_task) if invented else ""
        return {**example_inputs(app, TASK_NAMES[0], example, text), status: problems, world: described}

    demo.load(on_load, None, [example, text, status, world], **PRIVATE)


class RunView:
    """One run on the page: streamed into the trace panel, ended by its stop reason or by Stop,
    with its status line, its download and, for a bundled example, the tick or cross."""

    def __init__(self, app: AppState, status: gr.HTML, panel: TracePanel, download: gr.DownloadButton,
                 expected: gr.HTML, world: gr.HTML, spans: gr.DownloadButton):
        self.app, self.status, self.panel, self.download, self.expected = app, status, panel, download, expected
        self.world, self.spans = world, spans
        self.events = on_gpu(self.app.stream)

    @property
    def outputs(self) -> list:
        return [self.status, *self.panel.outputs, self.download, self.expected, self.world, self.spans]

    def run(self, task, text, top_k, copy_input=True, mode=DEFAULT_MODE, checks=True, ticket=None,
            request: gr.Request = None):
        """Stream a run: the timeline grows as tokens come; the result and download come at the end.
        Stop ends it between tokens and keeps what it made. `mode`: OneGen, or ImpRAG's model."""
        app, status, panel, download = self.app, self.status, self.panel, self.download
        mode = mode or DEFAULT_MODE
        live = Trace(task=task, mode=mode, model={}, input=text or "", prompt_text="", prompt_ids=[])
        started = time.monotonic()
        try:
            with app.runs.start(visitor(request), ticket) as stop:
                if stop.is_set():
                    yield {status: R.message_html(STOPPED_WHILE_QUEUED, "warn")}
                    return
                # The world's description gives way to the run; a run with no confident match offers
                # its questions again.
                yield {status: R.message_html(loading_message(app, "Running...", (mode,))), **panel.live(live),
                       panel.result: "", download: gr.DownloadButton(visible=False), self.world: "",
                       self.spans: gr.DownloadButton(visible=False)}
                stream = self.events(task, text, top_k, copy_input, mode, checks)
                try:
                    for ev in worth_showing(stream, live):
                        if isinstance(ev, DoneEvent):
                            yield self.finished(ev.trace)
                            return
                        if stop.is_set():
                            yield self.stopped(app.stopped_trace(live, time.monotonic() - started))
                            return
                        yield {status: R.message_html("Running..."), **panel.live(live)}
                finally:
                    stream.close()  # a stopped run frees the model at once
        except Exception as e:  # noqa: BLE001 - every failure becomes a message, never a traceback
            msg = error_message(e)
            gr.Warning(msg)
            yield {status: R.message_html(msg, "error"), **panel.views(live, {}), panel.result: "",
                   panel.trace: None, download: gr.DownloadButton(visible=False),
                   self.spans: gr.DownloadButton(visible=False)}

    def finished(self, trace: Trace) -> dict:
        words, kind = stop_words(trace)
        n = len(trace.retrievals)
        counts = (f"{len(trace.tokens)} tokens, {n} retrieval{'s' if n != 1 else ''}, "
                  f"{trace.cost.seconds.get('total', 0):.1f} s.")
        done = f"Done: {counts}" if kind == "ok" else f"Stopped early: {words}. {counts}"
        line = R.message_html(done, kind) + (self.unconfident_line(trace) or self.measured_line(trace))
        out = {self.status: line, **self.panel.show(trace),
               self.download: gr.DownloadButton(value=write_trace(trace), visible=True),
               self.spans: span_download(trace)}
        example = self.app.example(trace.task, trace.typed_input)
        if example:
            out[self.expected] = expectation_html(self.app, trace.task, example,
                                                  self.app.example_verdict(example, trace))
        return out

    def unconfident_line(self, trace: Trace) -> str:
        """Under a run with no confident match on an invented world's index: one line saying so,
        with inputs of the same task that index serves."""
        invented = self.app.world() if trace.result.confident is False else None
        if not invented:
            return ""
        weak, sound = unconfident_links(trace)
        task = get_task(trace.task)
        return R.invented_world_line(invented.overview.questions(trace.task), task.asked, task.answerable,
                                     weak_links=len(weak), links=len(weak) + len(sound))

    def measured_line(self, trace: Trace) -> str:
        """Under a confident finished run on an invented world: how the model did on held-out inputs
        like this one (for multi-hop, of the question type its sub-questions make)."""
        invented = self.app.world() if trace.result.confident is not False and trace.error is None else None
        if not invented:
            return ""
        kind = ""
        if trace.task == "multi-hop":
            kind = chain_type([h.question for h in trace.result.hops or []])
            if kind is None:
                return ""
        return R.measured_line(invented.overview.measured_like(trace.task, kind), kind)

    def stopped(self, trace: Trace) -> dict:
        written = sum(t.kind != "inserted" for t in trace.tokens)
        n = len(trace.retrievals)
        note = (f"Stopped after {written} tokens, {n} retrieval{'s' if n != 1 else ''} "
                f"({trace.cost.seconds['total']:.1f} s). The partial trace is below.")
        return {self.status: R.message_html(note, "warn"), **self.panel.views(trace, self.panel.links(trace)),
                self.panel.result: R.message_html(trace.error, "warn"), self.panel.trace: trace,
                self.download: gr.DownloadButton(value=write_trace(trace), visible=True),
                self.spans: span_download(trace)}


def expectation_html(app: AppState, task: str, example: dict | None, verdict: bool | None = None) -> str:
    """What a bundled example should give (answer or gold links), why it is interesting (the
    candidates an ambiguous name could mean), a known failure's reason, and after a run a tick or
    a cross."""
    if not example:
        return ""
    parts = []
    if isinstance(example.get("answer"), str):
        parts.append(f'<div class="og-kv"><span>Expected answer</span><b>{R.esc(example["answer"])}</b></div>')
    links = [link for link in example.get("links") or [] if isinstance(link, dict)]
    if links:
        shown = ", ".join(f'{R.esc(link.get("mention", ""))} &rarr; <b>{R.esc(link.get("title", ""))}</b>'
                          for link in dict((link.get("mention"), link) for link in links).values())
        parts.append(f'<div class="og-kv"><span>Gold links</span>{shown}</div>')
    if example.get("ambiguous"):
        docs = app.candidates_named(task, example["ambiguous"])
        if len(docs) > 1:
            items = "".join(f"<li><b>{R.esc(d.title)}</b>: {R.esc(d.text[:160])}</li>" for d in docs)
            parts.append(f'<div class="og-sub">&ldquo;{R.esc(example["ambiguous"])}&rdquo; can mean '
                         f'{len(docs)} entities: the model must tell them apart from the sentence</div>'
                         f'<ul class="og-candidates">{items}</ul>')
    if example.get("known_failure"):
        parts.append(R.message_html(f"Known failure: {example['known_failure']}.", "warn"))
    if verdict is not None:
        mark = ('<span class="og-verdict og-right">&#10004; matches the expected result</span>' if verdict
                else '<span class="og-verdict og-wrong">&#10008; does not match the expected result</span>')
        parts.append(f'<div class="og-kv" data-verdict="{"right" if verdict else "wrong"}"><span>This run</span>'
                     f"{mark}</div>")
    return f'<div class="og-expected">{"".join(parts)}</div>' if parts else ""
