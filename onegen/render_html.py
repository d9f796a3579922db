"""HTML views of a run: pure functions from a Trace (or its parts) to HTML strings.

Everything that came from a user or a corpus goes through `esc` before it reaches the page, so a
title like `<img src=x onerror=...>` shows as text. No gradio import: the app, notebooks and tests
share these functions. Styles live in APP_CSS (class names start with `og-`).
"""
from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING, Any, Iterable, Sequence
from urllib.parse import quote

from .answer_alignment import answer_note
from .documents import Document
from .name_alignment import alignment_words
from .protocols import SPECS
from .render_text import (DECODER_LABELS, NO_CONFIDENT_MATCH, PHASE_LABELS, copy_note, input_note,
                          low_confidence_words, phase_labels, run_confidence_words, stop_words, task_label)
from .tasks import TASKS
from .trace import Hit, LayerRead, Override, Retrieval, TokenRecord, Trace

if TYPE_CHECKING:
    from .world_overview import MeasuredScore, WorldOverview

# Task name -> label, for menus and messages (each Task's own `label`).
TASK_LABELS = {name: task.label for name, task in TASKS.items()}
# Token strings of every protocol: shown dimmed in the timeline (styling only; retrieval markers
# come from positions, never from text, so a user typing "[LK]" gets no marker).
_PROTOCOL_STRINGS = frozenset(t for s in SPECS.values() for t in s.token_strings) | {"</s>", "<s>"}
_PREVIEW_CHARS = 280


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def safe_href(url: str | None) -> str | None:
    """An escaped href for http(s) URLs and this app's own `?browse=` links; None for anything else
    (javascript:, data:, file paths)."""
    if not url:
        return None
    u = str(url).strip()
    if u.lower().startswith(("http://", "https://")) or u.startswith("?"):
        return esc(u)
    return None


def browse_href(task: str, doc_id: str) -> str:
    """Relative link that opens this app's index browser on one document."""
    return f"?browse={quote(task, safe='')}&doc={quote(str(doc_id), safe='')}"


def _link(text_html: str, href: str | None, title: str = "") -> str:
    h = safe_href(href)
    if h is None:
        return text_html
    external = not h.startswith("?")
    target = ' target="_blank" rel="noopener noreferrer"'
    tip = f' title="{esc(title)}"' if title else ""
    cls = "og-ext" if external else "og-card-link"
    return f'<a class="{cls}" href="{h}"{target}{tip}>{text_html}</a>'


def message_html(text: str, kind: str = "info", *, code: bool = False) -> str:
    """A status line: kind is info, ok, warn or error. `code`: `backticked` spans show as code."""
    kind = kind if kind in ("info", "ok", "warn", "error") else "info"
    body = esc(text)
    if code:
        body = re.sub(r"`([^`]+)`", r"<code>\1</code>", body)
    return f'<div class="og-msg og-{kind}" role="status">{body}</div>'


def progress_html(done: int, total: int, text: str) -> str:
    """A status line with a progress bar (`done` of `total`)."""
    frac = 0.0 if total <= 0 else max(0.0, min(1.0, done / total))
    return (f'<div class="og-msg og-info" role="status">{esc(text)}'
            f'<div class="og-bar-track og-progress"><div class="og-bar" style="width:{frac * 100:.1f}%"></div></div></div>')


def _score(s: float) -> str:
    return f"{s:.3f}"


# -- timeline --------------------------------------------------------------------------------------

def _chip(r: Retrieval) -> str:
    title = r.chosen_hit.title if r.chosen_hit else "no result"
    tip = f"retrieval step {r.step + 1}: query {r.query_text!r} -> {title}"
    low = r.confident is False
    if low:
        tip += f" ({NO_CONFIDENT_MATCH})"
    return (f'<span class="og-chip{" og-chip-low" if low else ""}" data-step="{r.step}" title="{esc(tip)}">'
            f'<b class="og-chip-n">{r.step + 1}</b>{esc(r.token)}</span>')


def _inserted_block(tokens: list[TokenRecord], r: Retrieval | None) -> str:
    title = r.chosen_hit.title if r is not None and r.chosen_hit else "document"
    text = "".join(t.text for t in tokens)
    return (f'<details class="og-ins"><summary>inserted: {esc(title)} &middot; {len(tokens)} tokens</summary>'
            f'<span class="og-ins-text">{esc(text)}</span></details>')


def timeline_html(tokens: Sequence[TokenRecord], retrievals: Sequence[Retrieval], *, running: bool = False,
                  overrides: Sequence[Override] = ()) -> str:
    """The generated text as written, one numbered chip per retrieval at the position of its token,
    inserted documents as collapsed blocks, forced and protocol tokens dimmed, tokens the copy
    constraint chose over the model's own first choice underlined (the choice in the tooltip; in red
    where it closed a mention early).

    Every retrieval gets exactly one chip: at its token when the token was generated, otherwise
    (single-hop reads its query at the end of the prompt) in position order before later tokens.
    """
    by_pos = {t.position for t in tokens if t.kind != "inserted"}
    pending = sorted((r for r in retrievals if r.position not in by_pos), key=lambda r: r.position)
    at_token = {r.position: r for r in retrievals if r.position in by_pos}
    overridden = {o.position: o for o in overrides}
    out: list[str] = []
    last_ret: Retrieval | None = None
    i = 0
    while i < len(tokens):
        t = tokens[i]
        while pending and pending[0].position < t.position:
            last_ret = pending.pop(0)
            out.append(_chip(last_ret))
        if t.kind == "inserted":
            j = i
            while j < len(tokens) and tokens[j].kind == "inserted":
                j += 1
            out.append(_inserted_block(list(tokens[i:j]), last_ret))
            i = j
            continue
        if t.position in at_token:
            last_ret = at_token[t.position]
            out.append(_chip(last_ret))
        elif t.kind == "forced":
            out.append(f'<span class="og-forced" title="forced by the protocol">{esc(t.text)}</span>')
        elif t.text in _PROTOCOL_STRINGS:
            out.append(f'<span class="og-special">{esc(t.text)}</span>')
        elif t.position in overridden:
            o = overridden[t.position]
            wanted = esc(repr(o.preferred_text))
            if o.kind == "early_close":
                out.append(f'<span class="og-override og-early-close" title="copy constraint: the model wanted '
                           f'{wanted}, which leaves the input, so the mention closed here">{esc(t.text)}</span>')
            elif o.kind == "no_open":
                out.append(f'<span class="og-override" title="copy constraint: the model wanted {wanted}; the text '
                           f'was copied rather than open a mention the model did not choose">{esc(t.text)}</span>')
            else:
                out.append(f'<span class="og-override" title="copy constraint: the model wanted {wanted}">'
                           f'{esc(t.text)}</span>')
        else:
            out.append(esc(t.text))
        i += 1
    out.extend(_chip(r) for r in pending)
    if running:
        out.append('<span class="og-cursor">&#9613;</span>')
    if not out:
        return '<div class="og-timeline og-empty">The generated text appears here, token by token.</div>'
    return f'<div class="og-timeline">{"".join(out)}</div>'


def step_choices(retrievals: Sequence[Retrieval]) -> list[tuple[str, int]]:
    """(plain-text label, step) pairs for a step selector; gradio shows labels as text."""
    out = []
    for r in retrievals:
        hit = r.chosen_hit
        query = (r.query_text[:40] + "...") if len(r.query_text) > 40 else r.query_text
        low = f" ({NO_CONFIDENT_MATCH})" if r.confident is False else ""
        out.append((f"{r.step + 1}. {query or '(empty query)'} -> {hit.title if hit else 'no result'}{low}", r.step))
    return out


# -- one retrieval step ----------------------------------------------------------------------------

def bars_html(hits, chosen: int | None = None, links: dict[str, str] | None = None, *, low: bool = False) -> str:
    """Top-k candidates as a horizontal bar chart of cosine scores (bar length = max(score, 0)).
    `low`: the index's calibration judged the top hit not a confident match; every bar is dimmed
    and the chosen one's badge says so."""
    if not hits:
        return '<div class="og-empty">No candidates (the index is empty).</div>'
    rows = []
    for i, h in enumerate(hits):
        width = max(0.0, min(1.0, float(h.score))) * 100
        mark = ' og-chosen' if i == chosen else ''
        badge = '<span class="og-badge">chosen</span>' if i == chosen else ''
        if low and i == chosen:
            badge = '<span class="og-badge og-badge-low">chosen, not a confident match</span>'
        title = _link(esc(h.title), (links or {}).get(h.id), "open this document")
        preview = h.text[:_PREVIEW_CHARS] + ("..." if len(h.text) > _PREVIEW_CHARS else "")
        rows.append(
            f'<div class="og-bar-row{mark}">'
            f'<div class="og-bar-label"><span class="og-rank">{h.rank + 1}</span>{title}{badge}</div>'
            f'<div class="og-bar-track"><div class="og-bar" style="width:{width:.1f}%"></div></div>'
            f'<div class="og-bar-score">{_score(h.score)}</div>'
            f'<details class="og-bar-text"><summary>text</summary>{esc(preview)}</details></div>')
    label = "candidates by cosine score" + (f", {NO_CONFIDENT_MATCH}" if low else "")
    return (f'<div class="og-bars{" og-bars-low" if low else ""}" role="list" aria-label="{label}">'
            f'{"".join(rows)}</div>')


def low_confidence_html(text: str) -> str:
    """The mark of a retrieval or a run with no confident match (data-confident for tests and styles)."""
    return f'<div class="og-msg og-warn og-lowconf" role="status" data-confident="false">{esc(text)}</div>'


def step_html(r: Retrieval | None, task: str, links: dict[str, str] | None = None,
              calibration: dict[str, Any] | None = None, mode: str = "") -> str:
    """One retrieval: query, candidates, chosen and inserted document; `calibration` (the trace's,
    `render_text.calibration_of`) words the mark of a retrieval with no confident match. A
    layer-split retrieval (ImpRAG: `r.layer_read`, or `mode` "imprag" while the run still streams)
    shows where its query and passages were read instead of an insertion."""
    if r is None:
        return '<div class="og-step og-empty">Select a retrieval step to see its query and candidates.</div>'
    known = TASKS.get(task)  # None for a task this version does not know
    layered = r.layer_read is not None or mode == "imprag"
    free = r.query_source == "hidden-state"
    source = ("the hidden state of the generation pass (no extra forward tokens)" if free
              else f"{r.query_source}: the input's own forward through the bottom layers (no query text, no "
                   "extra forward tokens)" if layered
              else f"{r.query_source} (a separate encoding pass)")
    query = ('none: the vector is read off the input itself' if layered
             else f'<q class="og-query">{esc(r.query_text) or "(empty)"}</q>')
    parts = [
        f'<div class="og-step-head">Step {r.step + 1} &middot; token <code>{esc(r.token)}</code> at position '
        f'{r.position} &middot; search {r.seconds * 1000:.1f} ms</div>',
        f'<div class="og-kv"><span>Query vector</span>{esc(source)}</div>',
        f'<div class="og-kv"><span>Query text</span>{query}</div>',
    ]
    low = r.confident is False
    if low:
        parts.append(low_confidence_html(low_confidence_words(r, calibration)))
    # ImpRAG reads every hit: no one of them is "chosen"
    parts += ['<div class="og-sub">Top candidates (cosine)</div>',
              bars_html(r.hits, None if layered else r.chosen, links, low=low)]
    hit = r.chosen_hit
    if hit is not None:
        frag = f" &middot; matched sentence {hit.fragment + 1}" if hit.fragment is not None else ""
        parts.append(f'<div class="og-sub">{"Top passage" if layered else "Chosen document"}</div>'
                     f'<div class="og-doc"><div class="og-doc-title">'
                     f'{_link(esc(hit.title), (links or {}).get(hit.id), "open this document")}'
                     f' <span class="og-muted">{esc(hit.id)} &middot; score {_score(hit.score)}{frag}</span></div>'
                     f'<div class="og-doc-text">{esc(hit.text)}</div></div>')
    if layered:
        n = len(r.read_hits)
        which = f"the top {n} of the {len(r.hits)} listed" if n < len(r.hits) else f'{n} passage{"s" if n != 1 else ""}'
        parts.append(f'<div class="og-sub">Read by the middle layers, beside the input: {r.inserted_tokens:,} tokens of '
                     f'{which}</div><div class="og-muted">Nothing enters the sequence: each '
                     'passage runs alone through the bottom and middle layers, the input attends to it in the middle '
                     'layers, and the top layers never see it.</div>')
        if r.layer_read is not None:
            parts += ['<div class="og-sub">Where it read</div>', layer_diagram_html(r.layer_read),
                      '<div class="og-sub">What the reader attended to, per middle layer</div>',
                      reader_heat_html(r.layer_read, r.read_hits)]
    elif r.inserted_tokens:
        parts.append(f'<div class="og-sub">Inserted into the context: {r.inserted_tokens} tokens</div>'
                     f'<pre class="og-pre">{esc(r.inserted_text)}</pre>')
    elif known is not None and known.spec.insertion is None:
        # Its protocol never inserts documents: the retrieval is the vector and its hits.
        forced = known.spec.forced_after.get(r.token)
        then = f'the protocol forces <code>{esc(forced)}</code> and ' if forced else ""
        goes_on = "rewriting the text" if known.copies_input else "writing"
        parts.append('<div class="og-sub">Inserted into the context: nothing</div><div class="og-muted">'
                     f'{esc(known.label)} only reads the query vector; {then}the model goes on {goes_on}.</div>')
    else:
        parts.append('<div class="og-sub">Inserted into the context: nothing yet</div>')
    return f'<div class="og-step">{"".join(parts)}</div>'


# -- results: by what the trace's result holds -----------------------------------------------------

def entities_html(trace: Trace, links: dict[str, str] | None = None) -> str:
    """The input with linked mentions highlighted (title and score), then a table of mentions with
    their top-k alternatives."""
    links = links or {}
    ents = trace.result.entities or []
    text = trace.input
    spans = sorted((e for e in ents if e.start is not None and e.end is not None), key=lambda e: e.start)
    out, cursor = [], 0
    for e in spans:
        if e.start < cursor:  # overlapping spans: the table still lists it
            continue
        out.append(esc(text[cursor:e.start]))
        low = _low(trace, e.retrieval)
        label = (f'<span class="og-ent-label">{esc(e.title)} &middot; {_score(e.score)}'
                 f'{" &middot; " + NO_CONFIDENT_MATCH if low else ""}</span>')
        mark = f'<mark class="og-ent{" og-ent-low" if low else ""}">{esc(text[e.start:e.end])}{label}</mark>'
        out.append(_link(mark, links.get(e.entity_id), f"{e.title} ({e.entity_id})"))
        cursor = e.end
    out.append(esc(text[cursor:]))
    parts = [f'<div class="og-sub">Linked mentions ({len(ents)})</div><div class="og-ent-text">{"".join(out)}</div>']
    note = copy_note(trace)
    if note:
        parts.append(f'<div class="og-muted">{esc(note)}</div>')
    if not ents:
        parts.append('<div class="og-muted">No mention was linked. The model&#39;s output is in the timeline.</div>')
    else:
        rows = []
        for n, e in enumerate(ents, 1):
            r = trace.retrievals[e.retrieval] if 0 <= e.retrieval < len(trace.retrievals) else None
            alts = [h for h in (r.hits if r else []) if h.id != e.entity_id]
            alt_html = ", ".join(f'{_link(esc(h.title), links.get(h.id))} <span class="og-muted">{_score(h.score)}</span>'
                                 for h in alts) or '<span class="og-muted">none</span>'
            where = "" if e.start is not None else ' <span class="og-muted">(not found in the input)</span>'
            if e.alignment:
                where += f'<div class="og-muted og-aligned">{esc(alignment_words(e, text))}</div>'
            low = (f'<div class="og-lowconf-note" data-confident="false">{NO_CONFIDENT_MATCH}</div>'
                   if _low(trace, e.retrieval) else "")
            rows.append(f'<tr><td>{n}</td><td>{esc(e.mention)}{where}</td>'
                        f'<td>{_link(esc(e.title), links.get(e.entity_id))} <span class="og-muted">{esc(e.entity_id)}'
                        f'</span>{low}</td><td>{_score(e.score)}</td><td>{alt_html}</td></tr>')
        parts.append('<table class="og-table"><thead><tr><th>#</th><th>Mention</th><th>Entity</th><th>Score</th>'
                     f'<th>Alternatives (top-k)</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')
    if trace.result.unlinked:
        rows = [f'<tr><td>{esc(e.mention)}</td><td>{_link(esc(e.title), links.get(e.entity_id))} '
                f'<span class="og-muted">{_score(e.score)}</span></td><td>{esc(alignment_words(e, text))}</td></tr>'
                for e in trace.result.unlinked]
        parts.append(f'<div class="og-sub og-unlinked">Marked but not linked: the name check '
                     f'({esc(trace.settings.get("name_alignment", ""))}) refused {len(rows)}</div>'
                     '<table class="og-table og-unlinked"><thead><tr><th>Mention the model marked</th>'
                     f'<th>Its query&#39;s top hit</th><th>Why</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')
    return "".join(parts)


def _low(trace: Trace, retrieval: int | None) -> bool:
    """Did retrieval number `retrieval` of the trace have no confident match?"""
    return retrieval is not None and 0 <= retrieval < len(trace.retrievals) and \
        trace.retrievals[retrieval].confident is False


def _final_label(trace: Trace, label: str) -> str:
    return f"{label} ({NO_CONFIDENT_MATCH})" if trace.result.confident is False else label


def _strip_paragraph(text: str) -> str:
    return text.replace("<paragraph>", "").replace("</paragraph>", "").strip()


def hops_html(trace: Trace) -> str:
    """The reasoning chain as cards: sub-question, retrieved paragraph, sub-answer; then the answer."""
    cards = []
    for n, hop in enumerate(trace.result.hops or [], 1):
        r = trace.retrievals[hop.retrieval] if hop.retrieval is not None and hop.retrieval < len(trace.retrievals) else None
        para = _strip_paragraph(r.inserted_text) if r and r.inserted_text else (r.chosen_hit.text if r and r.chosen_hit else "")
        cards.append(
            f'<div class="og-card"><div class="og-card-n">Hop {n}</div>'
            f'<div class="og-kv"><span>Sub-question</span>{esc(hop.question) or "(empty)"}</div>'
            f'<div class="og-kv"><span>Retrieved</span><b>{esc(hop.title or "nothing")}</b>'
            f'{" <span class=og-lowconf-note data-confident=false>" + NO_CONFIDENT_MATCH + "</span>" if _low(trace, hop.retrieval) else ""}</div>'
            f'<details class="og-para"><summary>paragraph</summary>{esc(para)}</details>'
            f'<div class="og-kv"><span>Sub-answer</span>{esc(hop.answer) or "(none)"}</div></div>')
    if not cards:
        cards.append('<div class="og-card og-muted">No retrieval was made: the model answered without evidence.</div>')
    res = trace.result
    if res.final_answer_found:
        final = (f'<div class="og-card og-final"><div class="og-card-n">{_final_label(trace, "Final answer")}</div>'
                 f'{esc(res.answer)}{answer_note_html(trace)}</div>')
    else:
        why = " (the retrieval limit was reached)" if res.retrieval_limit_reached else ""
        final = (f'<div class="og-card og-final og-muted"><div class="og-card-n">Final answer</div>'
                 f'No &lt;FINAL-ANSWER&gt; was written{why}; run stopped: {esc(stop_words(trace)[0])}.</div>')
    return f'<div class="og-chain">{"<div class=og-arrow>&rarr;</div>".join(cards)}{final}</div>'


def answer_note_html(trace: Trace) -> str:
    """What the model answered, where a result check changed the answer; "" otherwise."""
    note = answer_note(trace.result.model_answer, trace.result.answer_check)
    return f'<div class="og-muted og-aligned">{esc(note)}</div>' if note else ""


def single_hop_html(trace: Trace, links: dict[str, str] | None = None) -> str:
    """Reranked passages, the chosen one, the answer and the Self-RAG reflection tokens."""
    r = trace.retrievals[0] if trace.retrievals else None
    parts = [f'<div class="og-card og-final"><div class="og-card-n">{_final_label(trace, "Answer")}</div>'
             f'{esc(trace.result.answer) or "(empty)"}{answer_note_html(trace)}</div>']
    refl = trace.result.reflection_tokens or []
    chips = "".join(f'<span class="og-refl">{esc(t)}</span>' for t in refl) or '<span class="og-muted">none</span>'
    parts.append(f'<div class="og-kv"><span>Reflection tokens</span>{chips}</div>')
    if r is not None:
        layered = r.layer_read is not None
        read = len(r.read_hits)
        parts.append(('<div class="og-sub">Passages ranked by the input&#39;s attention query; the middle layers read '
                      + ('every one of them' if read >= len(r.hits) else f'the top {read}') + '</div>') if layered else
                     '<div class="og-sub">Passages reranked by the question vector</div>')
        parts.append(bars_html(r.hits, None if layered else r.chosen, links, low=r.confident is False))
        if r.chosen_hit is not None:
            h = r.chosen_hit
            parts.append(f'<div class="og-sub">{"Top passage" if layered else "Chosen passage"}</div>'
                         f'<div class="og-doc"><div class="og-doc-title">'
                         f'{esc(h.title)} <span class="og-muted">score {_score(h.score)}</span></div>'
                         f'<div class="og-doc-text">{esc(h.text)}</div></div>')
    return "".join(parts)


def result_html(trace: Trace, links: dict[str, str] | None = None) -> str:
    """The run's heading, then its result as the result's fields call for: linked entities, a
    reasoning chain (hops), or a Self-RAG answer (reflection tokens)."""
    words, kind = stop_words(trace)
    head = (f'<div class="og-result-head">{esc(task_label(trace.task))} &middot; '
            f'{len(trace.retrievals)} retrieval{"s" if len(trace.retrievals) != 1 else ""} &middot; '
            f'<span class="og-stop-{kind}" data-stop="{esc(trace.stop_reason)}">'
            f'{"finished" if kind == "ok" else "stopped"}: {esc(words)}</span></div>')
    if trace.error:
        head += message_html(trace.error, "error")
    read_as = input_note(trace)
    if read_as:  # the model read other text than was typed: say which, before what it made of it
        head += message_html(read_as, "info")
    warning = run_confidence_words(trace)
    if warning:  # before the result, so the answer below is never read as a confident one
        head += low_confidence_html(warning)
    res = trace.result
    if res.entities is not None:
        body = entities_html(trace, links)
    elif res.hops is not None:
        body = hops_html(trace)
    elif res.reflection_tokens is not None or res.answer is not None:
        body = single_hop_html(trace, links)
    else:
        body = message_html("No result: the run did not finish.", "warn")
    # The answer card is green only for a run that ended as the protocol intends and read only
    # confident matches.
    cls = ("" if kind == "ok" else " og-unfinished") + (" og-unconfident" if warning else "")
    return f'<div class="og-result{cls}">{head}{body}</div>'


# -- cost strip ------------------------------------------------------------------------------------

_PHASE_NOTES = {
    "query_reencoding": ' title="OneGen reads each query vector off the generation pass"',
    "draft_rejected": ' title="prompt-lookup guesses that greedy decoding did not keep: forwarded in the same call '
                      'as a kept token, then dropped; they change the speed, never the output"',
    "replay_prefix": ' title="a replay prefilled the original run up to its changed retrieval in one pass; '
                     'only what follows was computed again"',
    "prefix_shared": ' title="a batched run took these prompt positions from another run with the same prefix: '
                     'keys and values copied, not forwarded (not in the total)"',
}

def cost_html(trace: Trace) -> str:
    """Forward tokens and seconds by phase, and the number of retrievals."""
    c = trace.cost
    cells = []
    labels = phase_labels(trace)
    for p in c.phases():
        n = int(c.forward_tokens.get(p, 0))
        note = _PHASE_NOTES.get(p, "")
        cells.append(f'<div class="og-cost-cell" data-phase="{p}"{note}><b>{n:,}</b><span>{labels[p]}</span></div>')
    cells.append(f'<div class="og-cost-cell og-cost-total" data-phase="total"><b>{c.total_forward_tokens:,}</b>'
                 '<span>forward tokens</span></div>')
    cells.append(f'<div class="og-cost-cell" data-phase="retrievals"><b>{len(trace.retrievals)}</b>'
                 '<span>retrievals</span></div>')
    secs = " &middot; ".join(f'{esc(labels.get(k, k))} <b data-seconds="{esc(k)}">{v:.2f}</b> s'
                             for k, v in c.seconds.items() if v or k == "total")
    extra = (f' &middot; {c.document_tokens:,} tokens spent encoding this run&#39;s candidate documents'
             if c.document_tokens else "")
    decoder = DECODER_LABELS.get(trace.settings.get("decoder"))
    if decoder:
        extra += (f' &middot; <span class="og-muted" data-decoder="{esc(trace.settings["decoder"])}" title="which '
                  f'forward computed this run; both give the same hidden states">{esc(decoder)}</span>')
    groups = layer_groups_html(layer_group_counts(trace)) if c.layer_groups else ""
    return (f'<div class="og-cost"><div class="og-cost-cells">{"".join(cells)}</div>{groups}'
            f'<div class="og-cost-secs">{secs or "no timings yet"}{extra}</div></div>')


# -- layer groups (ImpRAG, onegen/imprag.py) ---------------------------------------------------------

GROUP_WORDS = {
    "bottom": "the input alone; the query is read at its last layer",
    "middle": "reads the retrieved passages beside the input",
    "top": "the input and the answer only, never the passages",
}


def layer_read_of(trace: Trace) -> LayerRead | None:
    """The layer record of a layer-split run (its retrieval's), None for any other run."""
    return next((r.layer_read for r in trace.retrievals if r.layer_read is not None), None)


def group_layers(lr: LayerRead) -> dict[str, range]:
    """Group name -> its layers, from a layer record's boundaries."""
    return {"bottom": range(0, lr.bottom), "middle": range(lr.bottom, lr.top), "top": range(lr.top, lr.n_layers)}


def layer_group_counts(trace: Trace) -> list[tuple[str, int, str | None]]:
    """(group, tokens forwarded through it, its layers in words or None) for each of a layer-split
    run's `cost.layer_groups`; empty for any other run."""
    lr = layer_read_of(trace)
    spans = group_layers(lr) if lr is not None else {}
    return [(g, int(n), layer_span(spans[g]) if g in spans else None)
            for g, n in (trace.cost.layer_groups or {}).items()]


def layer_span(layers: range) -> str:
    """A group's layers in words: "layers 18-22", "layer 0", "no layers"."""
    if not layers:
        return "no layers"
    return f"layer {layers[0]}" if len(layers) == 1 else f"layers {layers[0]}-{layers[-1]}"


def layer_diagram_html(lr: LayerRead) -> str:
    """The decoder's layers as a row of cells in their three groups: the layer whose attention query
    is the query vector marked Q, the middle group marked as where the passages are read, the top
    group as the input's and the answer's alone. A sentence under it says the same in words."""
    groups = group_layers(lr)
    blocks = []
    for name, layers in groups.items():
        cells = []
        for i in layers:
            query = i == lr.layer
            tip = f"layer {i}, {name} group: {GROUP_WORDS[name]}"
            if query:
                tip += f". The query vector is read here ({lr.dimension} values, {lr.pooling})"
            cells.append(f'<span class="og-layer og-layer-{name}{" og-layer-query" if query else ""}" data-layer="{i}"'
                         f' title="{esc(tip)}">{"Q" if query else ""}</span>')
        mark = '<span class="og-layer-reads">passages read here</span>' if name == "middle" and layers else ""
        blocks.append(f'<div class="og-layer-group" data-group="{name}" data-layers="{len(layers)}" '
                      f'style="flex:{max(len(layers), 1)} 1 0"><div class="og-layer-cells">{"".join(cells)}</div>'
                      f'<div class="og-layer-label"><b>{name}</b> {layer_span(layers)}{mark}<br>'
                      f'<span class="og-muted">{esc(GROUP_WORDS[name])}</span></div></div>')
    words = (f"{lr.n_layers} layers. The query is read at layer {lr.layer}, the last of the bottom group "
             f"({layer_span(groups['bottom'])}); the retrieved passages are read by the middle group "
             f"({layer_span(groups['middle'])}); the top group ({layer_span(groups['top'])}) sees the input and the answer only.")
    return (f'<div class="og-layers" role="group" aria-label="layer groups" data-query-layer="{lr.layer}">'
            f'<div class="og-layer-row">{"".join(blocks)}</div><div class="og-muted og-layer-words">{esc(words)}</div></div>')


def reader_heat_html(lr: LayerRead, hits: Sequence[Hit]) -> str:
    """The reader's attention as a heat strip: one row per middle layer, one column per passage read
    (in hit order); a cell's shade is that layer's share of attention on that passage, scaled to the
    largest share of the strip. The numbers are in each cell's tooltip and its screen-reader text, and
    the mean over the middle layers closes the table."""
    rows = lr.reader_attention
    if not rows or not any(rows):
        return '<div class="og-empty">No reader attention was recorded: the run read no passage.</div>'
    n = max(len(row) for row in rows)
    names = [hits[j].title if j < len(hits) else f"passage {j + 1}" for j in range(n)]
    top = max((v for row in rows for v in row), default=0.0)

    def cell(v: float, where: str, j: int) -> str:
        alpha = v / top if top > 0 else 0.0
        tip = f"{where}, passage {j + 1} ({names[j]}): {v:.3f} of the attention"
        return (f'<td class="og-heat-cell" data-passage="{j}" data-share="{v:.6f}" title="{esc(tip)}" '
                f'style="background:rgba(99,102,241,{alpha:.3f})"><span class="og-sr">{v:.3f}</span></td>')

    head = "".join(f'<th scope="col" title="{esc(t)}">{j + 1}</th>' for j, t in enumerate(names))
    body = []
    for offset, row in enumerate(rows):
        layer = lr.bottom + offset
        cells = "".join(cell(v, f"layer {layer}", j) for j, v in enumerate(row))
        body.append(f'<tr data-layer="{layer}"><th scope="row">layer {layer}</th>{cells}</tr>')
    means = [sum(row[j] for row in rows if j < len(row)) / len(rows) for j in range(n)]
    foot = "".join(f'<td class="og-heat-mean" data-passage="{j}">{m:.3f}</td>' for j, m in enumerate(means))
    legend = "".join(f"<li>{esc(t)}</li>" for t in names)
    return (f'<div class="og-heat"><table class="og-heat-table"><caption class="og-sr">Share of the reader&#39;s '
            f'attention per middle layer (rows) and passage (columns)</caption><thead><tr><th scope="col">layer</th>'
            f'{head}</tr></thead><tbody>{"".join(body)}</tbody><tfoot><tr><th scope="row">mean</th>{foot}</tr>'
            f'</tfoot></table><ol class="og-heat-legend">{legend}</ol><div class="og-muted">Share of the attention '
            f'that the input&#39;s and the answer&#39;s tokens put on each passage, averaged over heads and tokens; '
            f'the rest went to the input and the answer themselves. Darkest: {top:.3f}, the largest share here.'
            '</div></div>')


def layer_groups_html(counts: list[tuple[str, int, str | None]]) -> str:
    """Tokens forwarded through each layer group (`layer_group_counts`), with each group's layers
    when the run's layer record gives them."""
    cells = "".join(f'<div class="og-cost-cell" data-group="{esc(g)}"><b>{n:,}</b><span>{esc(g)} '
                    f'{esc(span or "group")}</span></div>' for g, n, span in counts)
    tip = ("bottom and middle groups: the input, the passages read and the generated tokens; top group: the input "
           "and the generated tokens (passages never reach it)")
    return (f'<div class="og-cost-groups" title="{tip}"><span class="og-muted">tokens per layer group</span>'
            f'<div class="og-cost-cells">{cells}</div></div>')


# -- the embedded world ------------------------------------------------------------------------------

def browse_tab_href(task: str) -> str:
    """Relative link that opens this app's index browser on a task's index."""
    return f"?browse={quote(task, safe='')}"


def world_html(overview: WorldOverview, names_task: str | None) -> str:
    """What an invented world's index holds, before the first run: entity types with a few names
    (each opening its document in the index browser), and questions of every task and wording."""
    parts = ['<div class="og-sub">This index holds an invented world</div>'
             '<div class="og-muted">The embedded model was trained on a generated encyclopedia and searches '
             'another one it never saw: made-up people, places, films and organisations. It knows nothing '
             'else, so ask about these.</div>']
    if overview.types:
        rows = []
        for kind, count in overview.types:
            names = ", ".join(_link(esc(n.name), browse_href(names_task, n.id) if names_task else None,
                                    "open this document") for n in overview.names.get(kind, []))
            rows.append(f"<li><b>{esc(kind)}</b> ({count:,}): {names}, ...</li>")
        parts.append(f'<ul class="og-world-types">{"".join(rows)}</ul>')
    for task, questions in overview.by_task().items():
        items = "".join(
            f'<li><q>{esc(q.text)}</q> <span class="og-muted">'
            f'{esc(", ".join(x for x in (q.kind.replace("_", " "), q.wording) if x))}</span>'
            f'{measured_html(overview.score(q), q.wording)}</li>'
            for q in questions)
        parts.append(f'<div class="og-kv"><span>{esc(task_label(task))}</span></div>'
                     f'<ul class="og-world-questions">{items}</ul>')
    if names_task:
        parts.append(f'<div>{_link("Browse every document in the Index browser", browse_tab_href(names_task))}'
                     '</div>')
    return f'<div class="og-world" data-world="invented">{"".join(parts)}</div>'


WORDED = {"template": "in its training wording", "paraphrased": "in wordings it never trained on"}


def measured_html(score: MeasuredScore | None, wording: str) -> str:
    """How the model scored on held-out items like an example (its task, type and wording)."""
    if score is None:
        return ""
    items = "texts" if score.metric == "F1" else "questions"
    worded = WORDED.get(wording, wording)
    said = (f"F1 {score.value:.2f} on {score.examples} held-out {items} {worded}" if score.metric == "F1" else
            f"right in {round(score.value * score.examples)} of {score.examples} held-out {items} like it, {worded}")
    return f' <span class="og-measured" title="measured: {esc(score.file)}">{esc(said)}</span>'


def measured_line(pairs: Sequence[tuple[str, MeasuredScore]], kind: str = "") -> str:
    """One line under a confident run on the embedded default's world: how the model did on held-out
    items like this one (`WorldOverview.measured_like`: same task and, for multi-hop, the question
    type its sub-questions make), per wording, so an answer is read against its measured rate."""
    if not pairs:
        return ""
    kind_words = kind.replace("_", " ")
    lead = f"Its sub-questions make this {'an' if kind_words[:1] in 'aeiou' else 'a'} {kind_words} question. " if kind else ""
    if pairs[0][1].metric == "F1":
        said = " and ".join(f"F1 {s.value:.2f} {WORDED.get(w, w)}" for w, s in pairs)
        text = f"On held-out texts its links scored {said}."
    else:
        said = " and ".join(f"{round(s.value * s.examples)} of {s.examples} {WORDED.get(w, w)}" for w, s in pairs)
        text = f"On held-out {kind_words + ' ' if kind else ''}questions the model was right in {said}."
    files = ", ".join(s.file for _, s in pairs)
    return f'<div class="og-msg og-info og-measured-line" role="note" title="measured: {esc(files)}">{esc(lead + text)}</div>'


def invented_world_line(questions: Sequence[str], asked: str, answerable: str, weak_links: int = 0,
                        links: int = 0) -> str:
    """One line under a run with no confident match on the embedded default's index; `asked` and
    `answerable` are the task's words (Task.asked, Task.answerable). A result with some confident
    links (`weak_links` of `links` are not) says how many, rather than that the index holds
    nothing about the input."""
    asks = "; ".join(f"\u201c{q}\u201d" for q in questions) or "see the examples above"
    found = (f"no confident match for {weak_links} of the {links} linked mentions" if 0 < weak_links < links
             else f"nothing about {asked}")
    text = f"This index holds an invented world and {found}. {answerable}: {asks}."
    return f'<div class="og-msg og-warn og-invented" role="status">{esc(text)}</div>'


# -- index browser ---------------------------------------------------------------------------------

def document_html(doc: Document, neighbours: Iterable[tuple[Document, float]] = (), *,
                  links: dict[str, str] | None = None) -> str:
    links = links or {}
    url = doc.extra.get("url") if isinstance(doc.extra, dict) else None
    ext = _link("source page", url) if safe_href(url) and not str(url).startswith("?") else ""
    sentences = ""
    if doc.sentences:
        sentences = "".join(f"<li>{esc(s)}</li>" for s in doc.sentences)
        sentences = f'<div class="og-sub">Sentences (one vector each)</div><ol class="og-sents">{sentences}</ol>'
    rows = "".join(
        f'<tr><td>{_link(esc(d.title), links.get(d.id), "open in the index browser")}</td>'
        f'<td class="og-muted">{esc(d.id)}</td><td>{_score(s)}</td>'
        f'<td><div class="og-bar-track"><div class="og-bar" style="width:{max(0.0, min(1.0, s)) * 100:.1f}%"></div></div></td></tr>'
        for d, s in neighbours)
    nb = (f'<div class="og-sub">Nearest neighbours (cosine to this document&#39;s vector)</div>'
          f'<table class="og-table"><tbody>{rows}</tbody></table>') if rows else ""
    return (f'<div class="og-doc"><div class="og-doc-title">{esc(doc.title)} <span class="og-muted">{esc(doc.id)}</span>'
            f' {ext}</div><div class="og-doc-text">{esc(doc.text)}</div>{sentences}{nb}</div>')


# -- teaching panel and styles ---------------------------------------------------------------------

EXPLAINER_HTML = """
<div class="og-explain">
<p><b>One pass, two jobs.</b> A OneGen model writes text and retrieves with the same forward pass.
Some of its tokens are <i>retrieval tokens</i> (<code>[LK]</code> for a mention,
<code>[Question Representation]</code> for a question).</p>
<p><b>The query vector is free.</b> When a retrieval token is the model&#39;s input, the last
hidden state of that step is the query vector. It falls out of the pass that generates the text,
so nothing is encoded a second time: the cost strip shows <i>query re-encoding = 0</i>.</p>
<p><b>Search, then go on.</b> The vector is compared (cosine) with document vectors that the same
model made offline. For multi-hop and single-hop QA the best paragraph is fed onto the same
KV cache (the dimmed <i>inserted</i> blocks); for entity linking nothing is inserted.</p>
<p><b>The cost strip</b> counts every token the model forwards: the prompt, what it generated, what
was inserted. A pipeline with a separate retriever would add a second pass over each query.
<i>Rejected drafts</i> are a speed trick, not part of OneGen: tokens guessed by copying earlier
text, checked in the same forward call as the chosen token and dropped where the model disagreed;
the output is the same as decoding one token per call.</p>
<p><b>ImpRAG mode</b> (single-hop, when the app has an ImpRAG model): no retrieval token at all. The
input&#39;s own attention query at a bottom layer searches; the passages found are read only by the
middle layers, beside the input. The step view shows the layer groups and the reader&#39;s attention
per passage; the cost strip counts tokens per layer group.</p>
</div>
"""

APP_CSS = """
.og-msg{padding:8px 12px;border-radius:8px;margin:4px 0;font-size:.95em}
.og-info{background:var(--block-background-fill);border:1px solid var(--border-color-primary)}
.og-ok{background:rgba(34,197,94,.12);border:1px solid rgba(34,197,94,.5)}
.og-warn{background:rgba(234,179,8,.14);border:1px solid rgba(234,179,8,.6)}
.og-error{background:rgba(239,68,68,.12);border:1px solid rgba(239,68,68,.6)}
.og-timeline,.og-result{overflow-wrap:anywhere;word-break:break-word}
.og-timeline{white-space:pre-wrap;font-family:var(--font-mono);font-size:.9em;line-height:1.9;
  padding:10px;border:1px solid var(--border-color-primary);border-radius:8px;max-height:420px;overflow:auto}
.og-empty{color:var(--body-text-color-subdued);font-style:italic}
.og-chip{cursor:pointer;display:inline-flex;align-items:center;gap:4px;padding:0 6px;margin:0 2px;border-radius:10px;
  background:#6366f1;color:#fff;font-size:.85em;white-space:nowrap}
.og-chip-n{background:#fff;color:#4338ca;border-radius:8px;padding:0 5px}
.og-forced,.og-special{opacity:.5}
.og-override{text-decoration:underline wavy #f59e0b;text-underline-offset:3px}
.og-early-close{text-decoration-color:#ef4444}
.og-ins{display:inline;opacity:.75}
.og-ins summary{display:inline;cursor:pointer;padding:0 6px;border-radius:6px;border:1px dashed #6366f1;
  font-style:italic;list-style:none}
.og-ins[open] .og-ins-text{display:block;padding:4px 8px;margin:2px 0;border-left:3px solid #6366f1;opacity:.8}
.og-cursor{animation:og-blink 1s steps(1) infinite}
@keyframes og-blink{50%{opacity:0}}
.og-step-head,.og-result-head{font-weight:600;margin-bottom:6px}
.og-kv{margin:4px 0}.og-kv>span:first-child{display:inline-block;min-width:110px;font-weight:600;
  color:var(--body-text-color-subdued)}
.og-sub{font-weight:600;margin:10px 0 4px}
.og-muted{color:var(--body-text-color-subdued);font-size:.9em}
.og-measured{font-size:.9em;margin-left:.4em}
.og-bars{display:flex;flex-direction:column;gap:4px}
.og-bar-row{display:grid;grid-template-columns:minmax(120px,1.3fr) 2fr 56px;gap:8px;align-items:center;
  padding:2px 4px;border-radius:6px}
.og-bar-row.og-chosen{background:rgba(99,102,241,.12)}
.og-bar-track{background:var(--border-color-primary);border-radius:4px;height:12px;min-width:60px}
.og-bar{background:#6366f1;height:12px;border-radius:4px}
.og-bar-score{font-family:var(--font-mono);text-align:right}
.og-bar-text{grid-column:1/-1;font-size:.85em;color:var(--body-text-color-subdued)}
.og-rank{display:inline-block;width:20px;color:var(--body-text-color-subdued)}
.og-badge{margin-left:6px;padding:0 6px;border-radius:6px;background:#16a34a;color:#fff;font-size:.8em}
.og-doc{border:1px solid var(--border-color-primary);border-radius:8px;padding:8px 10px}
.og-doc-title{font-weight:600;margin-bottom:4px}.og-doc-text{white-space:pre-wrap}
.og-pre{white-space:pre-wrap;font-size:.85em;max-height:220px;overflow:auto}
.og-ent-text{line-height:2.2;padding:8px;border:1px solid var(--border-color-primary);border-radius:8px;white-space:pre-wrap}
.og-ent{background:rgba(99,102,241,.18);border-radius:4px;padding:1px 3px;color:inherit}
.og-ent-label{margin-left:4px;font-size:.75em;padding:0 4px;border-radius:4px;background:#6366f1;color:#fff}
a.og-card-link,a.og-ext{text-decoration:none;color:inherit}
a.og-card-link:hover,a.og-ext:hover{text-decoration:underline}
.og-table{border-collapse:collapse;width:100%;font-size:.9em;margin-top:6px}
.og-table td,.og-table th{border:none!important;border-bottom:1px solid var(--border-color-primary)!important;
  padding:4px 6px;text-align:left;vertical-align:top}
.og-chain{display:flex;flex-direction:column;gap:4px}
.og-card{border:1px solid var(--border-color-primary);border-radius:10px;padding:8px 12px}
.og-card-n{font-size:.8em;text-transform:uppercase;letter-spacing:.05em;color:#6366f1;font-weight:700}
.og-final{border-color:#16a34a;background:rgba(34,197,94,.08)}
.og-unfinished .og-final{border-color:#ca8a04;background:rgba(234,179,8,.1)}
.og-unconfident .og-final{border-color:#ca8a04;background:rgba(234,179,8,.1)}
.og-chip.og-chip-low{background:#ca8a04}
.og-bars-low .og-bar{background:#ca8a04}
.og-badge.og-badge-low{background:#ca8a04}
.og-ent.og-ent-low{background:rgba(234,179,8,.25)}.og-ent-low .og-ent-label{background:#ca8a04}
.og-lowconf-note{color:#a16207;font-size:.85em}
.og-world{border:1px solid var(--border-color-primary);border-radius:8px;padding:8px 12px;margin:6px 0}
.og-world ul{margin:2px 0 6px 18px}
.og-world a{text-decoration:underline}
.og-stop-warn{color:#a16207}
.og-arrow{text-align:center;color:var(--body-text-color-subdued)}
.og-refl{display:inline-block;margin:0 4px 2px 0;padding:0 6px;border-radius:6px;background:rgba(234,179,8,.25);
  font-family:var(--font-mono);font-size:.85em}
.og-cost{border:1px solid var(--border-color-primary);border-radius:8px;padding:6px 10px}
.og-cost-cells{display:flex;flex-wrap:wrap;gap:14px}
.og-cost-cell{display:flex;flex-direction:column;min-width:70px}
.og-cost-cell b{font-size:1.2em;font-family:var(--font-mono)}
.og-cost-cell span{font-size:.8em;color:var(--body-text-color-subdued)}
.og-cost-cell[data-phase=query_reencoding] b{color:#16a34a}
.og-cost-secs{font-size:.85em;margin-top:4px;color:var(--body-text-color-subdued)}
.og-explain p{margin:0 0 8px}
.og-sents{margin:4px 0 0 18px}
.og-progress{margin-top:6px}
.og-expected{margin:4px 0;font-size:.92em}.og-candidates{margin:2px 0 4px 18px}
.og-right{color:#15803d;font-weight:600}.og-wrong{color:#b91c1c;font-weight:600}
.og-sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
.og-layer-row{display:flex;gap:6px;align-items:flex-start}
.og-layer-group{min-width:0}.og-layer-cells{display:flex;gap:2px}
.og-layer{flex:1;min-width:8px;height:22px;border-radius:3px;font-size:.75em;font-weight:700;text-align:center;
  line-height:22px;color:#fff}
.og-layer-bottom{background:#94a3b8}.og-layer-middle{background:#6366f1}.og-layer-top{background:#cbd5e1}
.og-layer-query{background:#f59e0b;outline:2px solid #b45309}
.og-layer-label{font-size:.8em;margin-top:2px}
.og-layer-reads{margin-left:4px;padding:0 4px;border-radius:4px;background:#6366f1;color:#fff}
.og-layer-words{margin-top:4px}
.og-heat-table{border-collapse:collapse;font-size:.8em}
.og-heat-table th{font-weight:600;padding:1px 6px;text-align:left;color:var(--body-text-color-subdued)}
.og-heat-cell{width:34px;height:16px;border:1px solid var(--border-color-primary)}
.og-heat-mean{font-family:var(--font-mono);padding:1px 4px}
.og-heat-legend{margin:4px 0 2px 18px;font-size:.85em}
.og-cost-groups{margin-top:6px}
"""
