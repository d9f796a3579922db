"""Text and HTML of the "why" views of a run: the query lens strip, the layer view of one retrieval,
and the attention strip of what the answer read (onegen/lens.py, onegen/attention_read.py).

Pure functions, no gradio. Everything from a user or a corpus goes through `esc`; a token's top-3
sits in a tooltip element shown on hover or keyboard focus, so the strip needs no script.
"""
from __future__ import annotations

from typing import Sequence

from .attention_read import AttentionRead
from .lens import LayerView, QueryLens
from .render_html import esc

# Distinct hues for inserted paragraphs (the nth paragraph's colour in strip and legend).
PARAGRAPH_COLOURS = ("#6366f1", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#0ea5e9")
_SHADES = " .:-=+*#%@"  # text heat, lowest to highest score


def _visible(text: str) -> str:
    """A token's text with its whitespace shown (a newline token would otherwise vanish)."""
    return text.replace("\n", "\u21b5").replace("\t", "\u21e5") or "\u2205"


def _range(values: Sequence[float]) -> tuple[float, float]:
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    return lo, (hi if hi > lo else lo + 1e-9)


# -- text (the CLI) -----------------------------------------------------------------------------------

def lens_text(lens: QueryLens, *, width: int = 24) -> str:
    """One line per token: heat bar, score, top-1 title; retrieval tokens marked `>>`, and whether
    the top hit is the document that token's retrieval chose."""
    lo, hi = _range([t.score for t in lens.tokens])
    lines = [f"query lens: every written token's state searched as the query in {lens.index}",
             f"cost: 1 forward of {lens.forward_tokens} tokens ({lens.forward_seconds:.2f} s, no decoding), "
             f"{lens.searches} searches ({lens.search_seconds:.3f} s)"]
    if lens.note:
        lines.append(f"note: {lens.note}")
    lines.append("")
    for t in lens.tokens:
        n = round((t.score - lo) / (hi - lo) * width)
        mark = ">>" if t.query else "  "
        agree = "" if t.agrees is None else (" =" if t.agrees else " x")
        top = t.top[0].title if t.top else "-"
        lines.append(f"{mark} {_visible(t.text)[:18]:<18} {t.score:7.3f} {'#' * n:<{width}}{agree} {top}")
    q = lens.queries
    hits = sum(bool(t.agrees) for t in q)
    others = [t for t in lens.tokens if not t.query and t.agrees is not None]
    lines += ["", f"legend: >> retrieval token; = its top hit is the document the run's retrieval chose, x another one",
              f"retrieval tokens finding the chosen document: {hits} of {len(q)}; other tokens: "
              f"{sum(bool(t.agrees) for t in others)} of {len(others)}"]
    return "\n".join(lines) + "\n"


def layers_text(view: LayerView) -> str:
    head = (f"layer view of retrieval step {view.step + 1}: chosen {view.chosen_title or '-'!s} "
            f"({view.documents} documents re-encoded at every layer{', cached' if view.cached else ''}; "
            f"{view.forward_tokens} forward tokens, {view.seconds:.2f} s)")
    lines = [head, f"{'layer':>5}  {'rank of chosen':>14}  {'its score':>9}  top-1 (score)"]
    for row in view.layers:
        rank = "-" if row.rank is None else str(row.rank)
        score = "-" if row.chosen_score is None else f"{row.chosen_score:.3f}"
        label = "emb" if row.layer == 0 else str(row.layer)
        lines.append(f"{label:>5}  {rank:>14}  {score:>9}  {row.top_title} ({row.top_score:.3f})")
    return "\n".join(lines) + "\n"


def attention_text(read: AttentionRead, *, width: int = 20) -> str:
    if not read.tokens:
        return f"what it read: {read.note}\n"
    lines = [f"what it read: attention of each written token on each inserted paragraph, mean over heads and "
             f"{read.groups[-1].last + 1} layers (1 forward of {read.forward_tokens} tokens, {read.seconds:.2f} s)"]
    for j, p in enumerate(read.paragraphs):
        lines.append(f"  [{j + 1}] step {p.step + 1}: {p.title}")
    lines.append("")
    for t in read.tokens:
        main = t.main
        cells = " ".join(f"{s:5.2f}" for s in t.shares)
        bar = "#" * round(sum(t.shares) * width)
        tag = "" if main is None else f" <- [{main + 1}]"
        lines.append(f"  {_visible(t.text)[:18]:<18} {cells}  rest {t.rest:4.2f} {bar:<{width}}{tag}")
    return "\n".join(lines) + "\n"


# -- HTML (the app) -----------------------------------------------------------------------------------

def _heat(frac: float) -> str:
    """Pale to deep indigo for 0..1."""
    frac = max(0.0, min(1.0, frac))
    return f"rgba(79,70,229,{0.08 + 0.85 * frac:.2f})"


def lens_html(lens: QueryLens | None, message: str = "") -> str:
    """The heat strip: one cell per written token, coloured by its lens score (scaled to this run's
    range), retrieval tokens outlined; hovering or focusing a cell shows its top-3."""
    if lens is None:
        return f'<div class="og-why og-empty">{esc(message or "Explain a finished run to see its query lens.")}</div>'
    lo, hi = _range([t.score for t in lens.tokens])
    cells = []
    for t in lens.tokens:
        frac = (t.score - lo) / (hi - lo)
        cls = "og-lens-cell" + (" og-lens-query" if t.query else "") + (" og-lens-agree" if t.agrees else "")
        rows = "".join(f'<li><span class="og-mono">{h.score:.3f}</span> {esc(h.title)}</li>' for h in t.top)
        what = "retrieval token (the run's real query)" if t.query else "written token"
        verdict = ("" if t.agrees is None else
                   f'<div>{"finds" if t.agrees else "misses"} the document retrieval {t.retrieval + 1} chose</div>')
        tip = (f'<span class="og-lens-tip" role="tooltip"><b>{esc(_visible(t.text))}</b> &middot; {what}'
               f'<ol>{rows}</ol>{verdict}</span>')
        cells.append(f'<span class="{cls}" tabindex="0" data-score="{t.score:.4f}" style="background:{_heat(frac)}">'
                     f'{esc(_visible(t.text))}{tip}</span>')
    q = lens.queries
    found = sum(bool(t.agrees) for t in q)
    summary = (f"Each written token's hidden state used as the query and searched in {esc(lens.index)}. Darker: a "
               f"higher top score (this run's range {lo:.3f} to {hi:.3f}); outlined: the retrieval tokens, "
               f"{found} of {len(q)} finding the document the run chose. Hover or focus a token for its top-3.")
    cost = (f"Cost: 1 forward of {lens.forward_tokens} tokens ({lens.forward_seconds:.2f} s, no decoding), "
            f"{lens.searches} extra searches ({lens.search_seconds:.3f} s).")
    note = f'<div class="og-muted">{esc(lens.note)}</div>' if lens.note else ""
    return (f'<div class="og-why" id="og-lens"><div class="og-muted">{summary}</div>'
            f'<div class="og-lens-strip">{"".join(cells)}</div><div class="og-muted og-why-cost">{esc(cost)}</div>'
            f'{note}</div>')


def layers_html(view: LayerView | None, message: str = "") -> str:
    """A small table: per layer reading, the chosen document's rank (with a bar) and the top-1."""
    if view is None:
        return f'<div class="og-why og-empty">{esc(message or "Pick a retrieval step for its layer view.")}</div>'
    worst = max((r.rank or 1) for r in view.layers)
    rows = []
    for r in view.layers:
        label = "embeddings" if r.layer == 0 else f"layer {r.layer}"
        if r.rank is None:
            rank_cell = "-"
        else:
            frac = 1.0 if worst == 1 else 1 - (r.rank - 1) / (worst - 1)
            rank_cell = (f'<div class="og-bar-track"><div class="og-bar" style="width:{max(frac, .03) * 100:.0f}%">'
                         f'</div></div><span class="og-mono">#{r.rank}</span>')
        score = "-" if r.chosen_score is None else f"{r.chosen_score:.3f}"
        rows.append(f'<tr data-layer="{r.layer}"><td>{label}</td><td class="og-layer-rank">{rank_cell}</td>'
                    f'<td class="og-mono">{score}</td><td>{esc(r.top_title)} '
                    f'<span class="og-mono og-muted">{r.top_score:.3f}</span></td></tr>')
    head = (f"Retrieval {view.step + 1}: where <b>{esc(view.chosen_title or 'no document')}</b> ranks among "
            f"{view.documents:,} documents when the query and the documents are read at each layer "
            f"(through the final norm, as the real query is; the last row is the run's own search).")
    cost = (f"{view.forward_tokens:,} forward tokens, {view.seconds:.2f} s"
            + (" (documents' per-layer vectors from the cache)" if view.cached else ""))
    return (f'<div class="og-why" id="og-layers"><div class="og-muted">{head}</div>'
            f'<table class="og-table og-layer-table"><tr><th>read at</th><th>rank of the chosen document</th>'
            f'<th>its score</th><th>top-1 there</th></tr>{"".join(rows)}</table>'
            f'<div class="og-muted og-why-cost">{esc(cost)}</div></div>')


def attention_html(read: AttentionRead | None, group: str | None = None, message: str = "") -> str:
    """The strip over the answer: each written token after the first insertion coloured by the
    paragraph it reads most, its depth the share of attention on paragraphs; `group` names one
    layer group ("bottom", "middle", "top"; None or a name the model lacks: all layers)."""
    if read is None:
        return f'<div class="og-why og-empty">{esc(message or "Explain a finished run to see what it read.")}</div>'
    if not read.tokens:
        return f'<div class="og-why og-msg og-info" id="og-read">{esc(read.note)}</div>'
    names = [p.title for p in read.paragraphs]
    legend = "".join(f'<span class="og-read-key" style="border-color:{PARAGRAPH_COLOURS[j % len(PARAGRAPH_COLOURS)]}">'
                     f'[{j + 1}] step {p.step + 1}: {esc(p.title)}</span>' for j, p in enumerate(read.paragraphs))
    g = next((i for i, lg in enumerate(read.groups) if lg.name == group), None)
    where = ("all layers" if g is None else
             f"the {read.groups[g].name} layers ({read.groups[g].first + 1} to {read.groups[g].last + 1})")
    cells = []
    for t in read.tokens:
        shares = t.shares if g is None else t.groups[g]
        on = sum(shares)
        main = max(range(len(shares)), key=shares.__getitem__) if shares and max(shares) > 0 else None
        colour = PARAGRAPH_COLOURS[main % len(PARAGRAPH_COLOURS)] if main is not None else "transparent"
        alpha = min(1.0, on * 1.5)
        tip = "".join(f"<li>[{j + 1}] {esc(names[j])}: {s * 100:.1f}%</li>" for j, s in enumerate(shares))
        cells.append(f'<span class="og-read-cell" tabindex="0" data-main="{"" if main is None else main}" '
                     f'style="box-shadow:inset 0 -{2 + round(alpha * 10)}px 0 {colour}">{esc(_visible(t.text))}'
                     f'<span class="og-lens-tip" role="tooltip"><b>{esc(_visible(t.text))}</b><ul>{tip}'
                     f'<li>rest (prompt and written text): {(1 - on) * 100:.1f}%</li></ul></span></span>')
    head = (f"Attention of each written token on each inserted paragraph, mean over heads and {where}: the "
            "underline's colour is the paragraph read most, its thickness the share on paragraphs. Hover or focus a "
            "token for its shares.")
    cost = f"1 forward of {read.forward_tokens} tokens with eager attention, {read.seconds:.2f} s"
    return (f'<div class="og-why" id="og-read"><div class="og-muted">{head}</div><div class="og-read-keys">{legend}'
            f'</div><div class="og-lens-strip">{"".join(cells)}</div><div class="og-muted og-why-cost">{esc(cost)}'
            f'</div></div>')


WHY_CSS = """
.og-why{margin:6px 0}
.og-lens-strip{white-space:pre-wrap;font-family:var(--font-mono);font-size:.85em;line-height:2.1;padding:8px;
  border:1px solid var(--border-color-primary);border-radius:8px;overflow-wrap:anywhere}
.og-lens-cell,.og-read-cell{position:relative;border-radius:3px;padding:1px 0;cursor:help}
.og-lens-query{outline:2px solid #f59e0b;outline-offset:1px}
.og-lens-tip{display:none;position:absolute;left:0;top:1.8em;z-index:20;min-width:220px;max-width:360px;
  white-space:normal;font-family:var(--font-sans);font-size:.9em;line-height:1.4;padding:6px 8px;border-radius:6px;
  background:var(--background-fill-primary);border:1px solid var(--border-color-primary);box-shadow:0 2px 8px rgba(0,0,0,.2)}
.og-lens-tip ol,.og-lens-tip ul{margin:4px 0 2px 18px;padding:0}
.og-lens-cell:hover .og-lens-tip,.og-lens-cell:focus .og-lens-tip,
.og-read-cell:hover .og-lens-tip,.og-read-cell:focus .og-lens-tip{display:block}
.og-read-keys{display:flex;flex-wrap:wrap;gap:6px;margin:4px 0}
.og-read-key{border-left:6px solid;padding:0 6px;font-size:.85em}
.og-mono{font-family:var(--font-mono)}
.og-layer-table td.og-layer-rank{display:flex;gap:6px;align-items:center;min-width:160px}
.og-why-cost{margin-top:4px}
"""
