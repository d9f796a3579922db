"""The Compare view: one input through OneGen and a baseline, costs side by side, and the
single-pass sweep (`python -m onegen bench single-pass --write`) as an SVG with this run placed on it.

Pure functions of `onegen.baselines.compare()` results and the sweep's JSON report; text from
users or files is escaped (`render_html.esc`), numbers are formatted here.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from .modes import MODE_LABELS, MODES
from .render_html import answer_note_html, esc, layer_group_counts
from .render_text import PHASE_LABELS, phase_labels
from .trace import PHASES, Trace

if TYPE_CHECKING:  # the renderers read a comparison; they need not load the baselines' models
    from .baselines import Comparison

_R_COLORS = {1: "#1f77b4", 2: "#ff7f0e", 4: "#2ca02c", 8: "#d62728"}


@dataclass(frozen=True)
class RunPoint:
    """Where one compared run sits on the sweep: query tokens per retrieval, retrievals, and the
    speedup of OneGen over the baseline.

    `speedup` is the ratio of the two runs' total seconds: one run each, so machine noise is in
    it. `reencoding_speedup` is (OneGen seconds + the baseline's re-encoding seconds) / OneGen
    seconds: every other piece of work is the same in both modes, so this is the steadier figure
    (the sweep reports the same estimate) and the one placed on the plot."""

    query_tokens: float
    retrievals: int
    speedup: float | None
    reencoding_speedup: float | None
    token_ratio: float | None  # baseline forward tokens / OneGen forward tokens


def run_point(result: Comparison, baseline: str) -> RunPoint:
    """The point of a `compare()` result: the query length is what the baseline re-encoded per
    retrieval (two-pass: the generator's own tokens; pipeline: its retriever's tokens). The
    comparison's base mode (OneGen) is the reference."""
    traces, base = result.traces, result.base
    n = len(traces[base].retrievals)
    reencoded = traces[baseline].cost.forward_tokens.get("query_reencoding", 0)
    tokens = result.forward_tokens
    ratio = (tokens[baseline]["total"] / tokens[base]["total"]) if tokens[base]["total"] else None
    og_seconds = result.seconds[base].get("total", 0.0)
    reencoding = result.seconds[baseline].get("query_reencoding", 0.0)
    estimate = (og_seconds + reencoding) / og_seconds if og_seconds > 0 else None
    difference = result.differences.get(baseline)
    return RunPoint(query_tokens=(reencoded / n) if n else 0.0, retrievals=n,
                    speedup=difference.speedup if difference else None, reencoding_speedup=estimate,
                    token_ratio=ratio)


def costs_html(result: Comparison) -> str:
    """Forward tokens and seconds per phase for each mode, the baseline's extra, and the speedup."""
    base, modes = result.base, result.modes
    tokens, seconds = result.forward_tokens, result.seconds
    head = "".join(f"<th>{esc(MODE_LABELS.get(m, m))}</th>" for m in modes)
    extra_head = "".join(f"<th>{esc(m)} &minus; {esc(base)}</th>" for m in modes[1:])
    rows = []
    for p in (*PHASES, "total"):
        vals = "".join(f"<td>{tokens[m].get(p, 0):,}</td>" for m in modes)
        diffs = "".join(f"<td>{_signed(tokens[m].get(p, 0) - tokens[base].get(p, 0))}</td>" for m in modes[1:])
        cls = ' class="og-total-row"' if p == "total" else ""
        rows.append(f"<tr{cls}><td>{esc(PHASE_LABELS.get(p, p))}</td>{vals}{diffs}</tr>")
    phases = [p for p in dict.fromkeys(k for m in modes for k in seconds[m]) if p != "total"] + ["total"]
    srows = []
    for p in phases:
        vals = "".join(f"<td>{seconds[m].get(p, 0.0):.3f}</td>" for m in modes)
        diffs = "".join(f"<td>{seconds[m].get(p, 0.0) - seconds[base].get(p, 0.0):+.3f}</td>" for m in modes[1:])
        cls = ' class="og-total-row"' if p == "total" else ""
        srows.append(f"<tr{cls}><td>{esc(PHASE_LABELS.get(p, p))}</td>{vals}{diffs}</tr>")
    verdicts = []
    for m in modes[1:]:
        d = result.differences[m]
        same = result.same_documents.get(m) or []
        agree = (f"same top document at {sum(same)} of {len(same)} retrievals" if same else "no retrievals")
        point = run_point(result, m)
        extra = d.forward_tokens.get("total", 0)
        est = f"{point.reencoding_speedup:.2f}x" if point.reencoding_speedup else "n/a"
        total = f"{point.speedup:.2f}x" if point.speedup else "n/a"
        verdicts.append(f"<li><b>{esc(m)}</b>: {_signed(extra)} forward tokens "
                        f"({point.token_ratio or 0:.2f}x OneGen&#39;s); {esc(agree)}. Speedup of OneGen: "
                        f"<b>{est}</b> from the re-encoding time (the steady estimate), {total} from the two "
                        "totals (one run each, machine noise included).</li>")
    return (f'<div class="og-compare-costs"><ul class="og-verdicts">{"".join(verdicts)}</ul>'
            f'<div class="og-metric-grid"><table class="og-table"><thead><tr><th>forward tokens</th>{head}{extra_head}'
            f'</tr></thead><tbody>{"".join(rows)}</tbody></table>'
            f'<table class="og-table"><thead><tr><th>seconds</th>{head}{extra_head}</tr></thead>'
            f'<tbody>{"".join(srows)}</tbody></table></div>'
            '<div class="og-muted">Search time includes encoding the query (for a baseline, its re-encoding).'
            "</div></div>")


def _signed(n: int) -> str:
    return f"{n:+,}" if n else "0"


# -- several designs on one question (OneGen, ImpRAG, the pipeline) ------------------------------------

DESIGN_TOP_K = 5  # hits listed per design
_QUERY_WORDS = {"hidden-state": "the retrieval token's hidden state, read off the generation pass"}


def designs_html(result: Comparison) -> str:
    """One question through several designs, one column each: how the query was made, the passages
    ranked first with their scores, whether the top one is OneGen's, the answer, and the cost
    (forward tokens by phase, tokens per layer group, seconds)."""
    modes, traces = result.modes, result.traces

    def row(label: str, cell) -> str:
        cells = "".join(f'<td data-mode="{esc(m)}">{cell(m, traces[m])}</td>' for m in modes)
        return f'<tr><th scope="row">{esc(label)}</th>{cells}</tr>'

    def same(m: str, _t: Trace) -> str:
        if m == result.base:
            return '<span class="og-muted">(the reference)</span>'
        agree = result.same_documents.get(m) or []
        return "no retrieval" if not agree else "yes" if all(agree) else "no"

    head = "".join(f'<th scope="col" data-mode="{esc(m)}">{esc(MODE_LABELS.get(m, m))}</th>' for m in modes)
    body = [row("query", _query), row("top passage", _top), row("top scores", _scores),
            row(f"same top passage as {MODE_LABELS.get(result.base, result.base)}", same), row("answer", _answer),
            row("forward tokens", lambda m, t: _tokens(result, m, t)), row("tokens per layer group", _groups),
            row("seconds", lambda m, t: f"{result.seconds[m].get('total', 0.0):.2f}")]
    return (f'<div class="og-designs"><table class="og-table og-designs-table"><thead><tr><th></th>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table><div class="og-muted">Each design scores passages with vectors of '
            f'its own{" (ImpRAG searches its own index)" if "imprag" in modes else ""}, so scores compare within a '
            'column, not across columns.</div></div>')


def _first(t: Trace):
    return t.retrievals[0] if t.retrievals else None


def _query(m: str, t: Trace) -> str:
    r = _first(t)
    return "no retrieval" if r is None else esc(_QUERY_WORDS.get(r.query_source, r.query_source))


def _top(m: str, t: Trace) -> str:
    r = _first(t)
    h = r.chosen_hit if r is not None else None
    return "nothing" if h is None else f'<b>{esc(h.title)}</b> <span class="og-muted">{h.score:.3f}</span>'


def _scores(m: str, t: Trace) -> str:
    r = _first(t)
    if r is None or not r.hits:
        return "no hits"
    items = "".join(f'<li>{esc(h.title)} <span class="og-muted">{h.score:.3f}</span></li>' for h in r.hits[:DESIGN_TOP_K])
    return f'<ol class="og-design-hits">{items}</ol>'


def _answer(m: str, t: Trace) -> str:
    if not t.result.answer:
        return '<span class="og-muted">(none)</span>'
    return esc(t.result.answer) + answer_note_html(t)  # what the model wrote, if a check changed it


def _tokens(result: Comparison, m: str, t: Trace) -> str:
    tokens, labels = result.forward_tokens[m], phase_labels(t)
    parts = [f"{labels[p]} {tokens.get(p, 0):,}"
             for p in ("prompt", "generated", "inserted", "query_reencoding") if tokens.get(p, 0) or p == "prompt"]
    return f'<b>{tokens["total"]:,}</b><br><span class="og-muted">{esc(", ".join(parts))}</span>'


def _groups(m: str, t: Trace) -> str:
    counts = layer_group_counts(t)
    if counts:
        return "<br>".join(f'{esc(g)} <b data-group="{esc(g)}">{n:,}</b>'
                           + (f' <span class="og-muted">({esc(span)})</span>' if span else "")
                           for g, n, span in counts)
    ft = t.cost.forward_tokens
    separate = m in MODES and MODES[m].document_encoder.separate  # its queries go through another encoder
    generator = t.cost.total_forward_tokens - (ft.get("query_reencoding", 0) if separate else 0)
    return f'every layer <b data-group="all">{generator:,}</b>'


# -- the sweep plot ----------------------------------------------------------------------------------

def sweep_series(report: Mapping[str, Any], baseline: str) -> dict[tuple[str, int], list[tuple[int, float]]]:
    """(model, retrievals) -> [(query tokens, speedup)] over the sweep's written-query cells."""
    out: dict[tuple[str, int], list[tuple[int, float]]] = {}
    for c in report.get("cells", []):
        if c.get("scenario") != "generated":
            continue
        s = (c.get("speedup") or {}).get(baseline)
        if s is None:
            continue
        out.setdefault((str(c["model"]), int(c["retrievals"])), []).append((int(c["query_tokens"]), float(s)))
    # By model size, not by name: "33M" sorts before "5M" as a string.
    models = report.get("models") if isinstance(report.get("models"), dict) else {}
    return {k: sorted(v) for k, v in sorted(out.items(), key=lambda kv: (model_size(kv[0][0], models), kv[0]))}


def model_size(name: str, models: Mapping[str, Any] | None = None) -> float:
    """Parameters of a sweep model: the report's count, else read off its name ("5M", "1.3B")."""
    info = (models or {}).get(name)
    if isinstance(info, Mapping) and isinstance(info.get("parameters"), (int, float)):
        return float(info["parameters"])
    m = re.search(r"(\d+(?:\.\d+)?)\s*([KMBT])\b", name, re.IGNORECASE)
    if not m:
        return math.inf
    return float(m.group(1)) * {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}[m.group(2).upper()]


def sweep_svg(report: Mapping[str, Any] | None, baseline: str, point: RunPoint | None = None,
              point_label: str = "this run") -> str:
    """Speedup of OneGen over `baseline` against query length, one line per (model, retrievals),
    with `point` marked. An empty-state message when the report has no cells for the baseline."""
    series = sweep_series(report or {}, baseline)
    if not series:
        return ('<div class="og-msg og-info">No single-pass sweep for this baseline yet: run '
                '<code>python -m onegen bench single-pass --write</code> (it writes assets/bench/single-pass.json).'
                '</div>')
    W, H, ml, mr, mt, mb = 760, 380, 64, 190, 34, 48
    w, h = W - ml - mr, H - mt - mb
    xs = [x for pts in series.values() for x, _ in pts]
    ys = [y for pts in series.values() for _, y in pts]
    if point is not None and point.query_tokens > 0:
        xs.append(max(1.0, point.query_tokens))
    if point is not None and point.reencoding_speedup:
        ys.append(point.reencoding_speedup)
    lx0, lx1 = math.log2(min(xs)), math.log2(max(xs))
    lo, hi = min(1.0, min(ys)) * 0.95, max(1.0, max(ys)) * 1.05

    def px(x: float, y: float) -> tuple[float, float]:
        fx = 0.5 if lx1 == lx0 else (math.log2(max(x, 1e-9)) - lx0) / (lx1 - lx0)
        return ml + fx * w, mt + h - (y - lo) / (hi - lo) * h

    parts = [f'<svg class="og-sweep" viewBox="0 0 {W} {H}" width="100%" role="img" '
             f'aria-label="OneGen speedup over {esc(baseline)} against query length">',
             f'<rect x="{ml}" y="{mt}" width="{w}" height="{h}" fill="none" stroke="#999"/>']
    for t in axis_ticks(lo, hi):
        _, y = px(2 ** lx0, t)
        parts.append(f'<line x1="{ml - 4}" y1="{y:.1f}" x2="{ml + w}" y2="{y:.1f}" stroke="#ddd"/>'
                     f'<text x="{ml - 8}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{t:g}x</text>')
    _, y1 = px(2 ** lx0, 1.0)
    parts.append(f'<line x1="{ml}" y1="{y1:.1f}" x2="{ml + w}" y2="{y1:.1f}" stroke="#888" stroke-dasharray="4 3"/>')
    for L in sorted({x for pts in series.values() for x, _ in pts}):
        x, _ = px(L, lo)
        parts.append(f'<text x="{x:.1f}" y="{mt + h + 16}" text-anchor="middle" font-size="11">{L}</text>')
    parts.append(f'<text x="{ml + w / 2}" y="{H - 10}" text-anchor="middle" font-size="12">'
                 "query length (tokens per retrieval, log scale)</text>")
    parts.append(f'<text x="14" y="{mt + h / 2}" font-size="12" transform="rotate(-90 14 {mt + h / 2})" '
                 'text-anchor="middle">speedup (baseline time / OneGen time)</text>')
    models = list(dict.fromkeys(m for m, _ in series))
    legend_y = mt + 4
    for (model, r), pts in series.items():
        color = _R_COLORS.get(r, "#666")
        dash = "" if model == models[-1] else ' stroke-dasharray="6 4"'  # all but the largest
        path = " ".join(f"{'M' if i == 0 else 'L'}{px(x, y)[0]:.1f},{px(x, y)[1]:.1f}" for i, (x, y) in enumerate(pts))
        parts.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
        parts += [f'<circle cx="{px(x, y)[0]:.1f}" cy="{px(x, y)[1]:.1f}" r="2.5" fill="{color}"/>' for x, y in pts]
        parts.append(f'<line x1="{ml + w + 12}" y1="{legend_y}" x2="{ml + w + 36}" y2="{legend_y}" stroke="{color}" '
                     f'stroke-width="2"{dash}/><text x="{ml + w + 42}" y="{legend_y + 4}" font-size="11">'
                     f"{esc(model)} model, R={r}</text>")
        legend_y += 17
    if point is not None and point.reencoding_speedup and point.query_tokens > 0:
        cx, cy = px(point.query_tokens, point.reencoding_speedup)
        star = _star(cx, cy, 9)
        parts.append(f'<polygon points="{star}" fill="#111" stroke="#fff" stroke-width="1"/>')
        anchor = "end" if cx > ml + w * 0.7 else "start"
        dx = -12 if anchor == "end" else 12
        parts.append(f'<text x="{cx + dx:.1f}" y="{cy - 10:.1f}" font-size="12" font-weight="600" '
                     f'text-anchor="{anchor}">{esc(point_label)}: {point.reencoding_speedup:.2f}x, R={point.retrievals}, '
                     f"L={point.query_tokens:.0f}</text>")
        parts.append(f'<polygon points="{_star(ml + w + 24, legend_y + 4, 6)}" fill="#111"/>'
                     f'<text x="{ml + w + 42}" y="{legend_y + 8}" font-size="11">{esc(point_label)}</text>')
    parts.append("</svg>")
    clock = "CPU" if (report or {}).get("config", {}).get("clock", "cpu") == "cpu" else "wall"
    models_txt = ", ".join(f"{esc(k)}: {esc(v.get('name', k))}" for k, v in (report or {}).get("models", {}).items())
    when = esc((report or {}).get("date", ""))
    smaller = ", ".join(esc(m) for m in models[:-1])
    dashed = f"; dashed lines are the smaller model{'s' if len(models) > 2 else ''} ({smaller})" if smaller else ""
    return (f'<div class="og-sweep-box">{"".join(parts)}<div class="og-muted">Lines: the sweep of '
            f"<code>python -m onegen bench single-pass</code> ({clock} time, medians; models {models_txt}"
            f"{'; ' + when if when else ''}){dashed}. The star is the run above "
            "(the loaded model; speedup estimated from its re-encoding time), placed at its query length per "
            "retrieval.</div></div>")


def axis_ticks(lo: float, hi: float, most: int = 8) -> list[float]:
    """Round values from `lo` to `hi` (both included) to label an axis: multiples of the finest
    step of 1, 2, 2.5 or 5 times a power of ten that gives at most `most` of them."""
    span = hi - lo
    if span <= 0:
        return [round(float(lo), 6)]
    power = 10.0 ** math.floor(math.log10(span / most))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if span / (m * power) <= most)
    # The small tolerances keep a bound that is itself a multiple (1.0, 1.5) among the ticks.
    first = math.ceil(lo / step - 1e-9)
    last = math.floor(hi / step + 1e-9)
    return [round(k * step, 6) for k in range(first, last + 1)]


def _star(cx: float, cy: float, r: float) -> str:
    pts = []
    for i in range(10):
        rad = r if i % 2 == 0 else r * 0.45
        a = -math.pi / 2 + i * math.pi / 5
        pts.append(f"{cx + rad * math.cos(a):.1f},{cy + rad * math.sin(a):.1f}")
    return " ".join(pts)


COMPARE_CSS = """
.og-verdicts{margin:0 0 8px 18px}
.og-total-row td{font-weight:700}
.og-sweep{max-width:900px;background:#fff;border-radius:8px}
.og-sweep text{fill:#222}
.og-designs-table td,.og-designs-table th{min-width:140px}
.og-design-hits{margin:0 0 0 16px;padding:0}
"""
