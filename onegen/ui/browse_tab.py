"""The Index browser tab: find a document by title and see its nearest neighbours. A link
`?browse=TASK&doc=ID` (entity cards, step details) opens this tab on that document, and
`?browse=TASK` on that index's first documents."""
from __future__ import annotations

import gradio as gr

from .. import render_html as R
from ..app_state import MAX_TOP_K, AppError, AppState
from ..tasks import TASK_NAMES, get_task
from .shared import PRIVATE, TASK_CHOICES, error_message

MAX_MATCHES = 20  # titles listed per search


def build(app: AppState, demo: gr.Blocks, tabs: gr.Tabs) -> None:
    with gr.Row():
        task = gr.Radio(TASK_CHOICES, value=TASK_NAMES[0], label="Index", scale=2, elem_id="browse-task")
        query = gr.Textbox(label="Find by title", placeholder="a title or part of one", scale=2,
                           elem_id="browse-query")
        k = gr.Slider(1, MAX_TOP_K, value=5, step=1, label="Neighbours", scale=1)
    search_btn = gr.Button("Search", variant="primary", elem_id="browse-btn")
    status = gr.HTML(elem_id="browse-status")
    matches = gr.Radio(label="Matches", choices=[], interactive=True, elem_id="browse-matches")
    document = gr.HTML(elem_id="browse-doc")

    def search_titles(task_name, text):
        try:
            idx = app.index(task_name)
        except AppError as e:
            return {status: R.message_html(error_message(e), "error"), matches: gr.Radio(choices=[], value=None), document: ""}
        text = (text or "").strip()
        found = idx.find_titles(text, limit=len(idx)) if text else list(range(len(idx)))
        rows = found[:MAX_MATCHES]
        choices = [(f"{idx.documents[i].title}  [{idx.documents[i].id}]", i) for i in rows]
        if text and not rows:
            msg = R.message_html(f"No title contains {text!r}.", "warn")
        elif text:
            shown = f"{len(rows)} of {len(found):,}" if len(found) > len(rows) else f"{len(found):,}"
            msg = R.message_html(f"{shown} document{'s' if len(found) != 1 else ''} matching {text!r} "
                                 f"(the index has {len(idx):,}).")
        else:
            msg = R.message_html(f"The first {len(rows)} of {len(idx):,} documents; type a title to find others.")
        return {status: msg, matches: gr.Radio(choices=choices, value=None), document: ""}

    def show_document(task_name, row, n):
        if row is None:
            return ""
        try:
            idx = app.index(task_name)
            row = int(row)
            doc = idx.documents[row]
            near = app.neighbours(task_name, row, int(n))
        except AppError as e:
            return R.message_html(error_message(e), "error")
        except (ValueError, IndexError):  # a stale or forged selection
            return R.message_html("That document is not in the index.", "error")
        return R.document_html(doc, near, links=app.links(task_name, [d.id for d, _ in near]))

    gr.on([search_btn.click, query.submit, task.input], search_titles, [task, query], [status, matches, document],
          concurrency_limit=4, **PRIVATE)
    gr.on([matches.input, k.release], show_document, [task, matches, k], document, concurrency_limit=4, **PRIVATE)

    def open_link(request: gr.Request):
        """`?browse=TASK&doc=ID`: this tab, on that document."""
        params = dict(request.query_params) if request is not None else {}
        task_name, doc_id = params.get("browse"), params.get("doc")
        if task_name not in TASK_NAMES:
            return gr.skip()
        shown = {tabs: gr.Tabs(selected="browse"), task: task_name}
        if not doc_id:  # `?browse=TASK`: the tab on that index's first documents
            listed = search_titles(task_name, "")
            return {**shown, **listed, query: ""}
        try:
            found = app.document(task_name, doc_id)
        except AppError as e:
            return {**shown, document: R.message_html(error_message(e), "error")}
        if found is None:
            label = get_task(task_name).label
            return {**shown, document: R.message_html(f"No document with id {doc_id!r} in the {label} index.", "warn")}
        row, doc = found
        return {**shown, query: doc.title, matches: gr.Radio(choices=[(f"{doc.title}  [{doc.id}]", row)], value=row),
                document: show_document(task_name, row, 5)}

    demo.load(open_link, None, [tabs, task, query, status, matches, document], **PRIVATE)
