"""HTML and table rows for the error browser: a result file's metrics, one example's verdict, and
two runs compared. Pure functions of `onegen.results` objects; every value from a file is escaped
(`render_html.esc`), table cells stay plain text."""
from __future__ import annotations

from typing import Any, Sequence

from .evaluation import ExampleRecord
from .modes import DEFAULT_MODE
from .render_html import esc
from .render_text import stop_reason_words, task_label
from .results import Comparison, Flip, ResultSet, category_choices, headline, outcome_of, summarize

ROW_HEADERS = ["key", "outcome", "input", "prediction", "gold", "why"]
FLIP_HEADERS = ["key", "A", "B", "input", "lost", "gained", "first different retrieval"]
# Fixed widths: a column sized to short or empty cells would wrap its header over the first row.
ROW_WIDTHS = ["110px", "80px", "34%", "16%", "16%", "22%"]
FLIP_WIDTHS = ["110px", "70px", "70px", "28%", "16%", "16%", "24%"]
MAX_ROWS = 1000  # shown in a table; the export takes the whole selection
_OUTCOME_CLASS = {"right": "og-ok", "wrong": "og-warn", "error": "og-error"}


def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{float(x) * 100:.1f}"


def _kv(name: str, value: str) -> str:
    return f'<div class="og-kv"><span>{esc(name)}</span>{value}</div>'


def _run_line(results: ResultSet) -> str:
    r = results.run
    # Files from before the baselines name no mode: they are OneGen runs.
    parts = [f"mode {r.get('mode') or DEFAULT_MODE}", f"model {r.get('model', '?')}",
             f"candidates {r.get('candidates', '?')}", f"top-k {r.get('top_k', '?')}"]
    if r.get("index") and r.get("candidates") == "index":
        parts.append(f"index {r['index']}")
    if r.get("control"):
        parts.append(f"control {r['control']} (seed {r.get('seed', 0)})")
    return " &middot; ".join(esc(p) for p in parts)


def metrics_html(results: ResultSet) -> str:
    """The file's headline figure, its metrics, and its error categories."""
    m = results.metrics
    name, value = headline(results)
    n = m["examples"]
    right = sum(1 for r in results.records if outcome_of(r) == "right")
    rows = []
    if "gold_mentions" in m:  # scored mention by mention (entity linking), else answer by answer
        rows += [("precision", _pct(m["precision"])), ("recall", _pct(m["recall"])), ("micro F1", _pct(m["f1"])),
                 ("mentions", f"{m['gold_mentions']:,} gold, {m['predicted_mentions']:,} predicted")]
        if "authors_scorer" in m:
            rows.append(("authors' scorer F1", _pct(m["authors_scorer"]["f1"])))
        if "span_f1" in m:  # mention boundaries apart from linking
            rows += [("span P / R / F1", f"{_pct(m['span_precision'])} / {_pct(m['span_recall'])} / "
                                         f"{_pct(m['span_f1'])}"),
                     ("linking accuracy on right spans", f"{_pct(m['linking_accuracy'])} of {m['span_tp']:,}")]
        if m.get("ambiguous_mentions"):
            rows.append(("ambiguous mentions", f"{_pct(m['ambiguous_accuracy'])} right of {m['ambiguous_mentions']}"))
    else:
        rows += [("EM", _pct(m["em"])), ("F1", _pct(m["f1"])), ("match", _pct(m["match"]))]
        for hop, h in (m.get("retrieval") or {}).items():
            rows.append((f"recall@1 {hop.replace('_', ' ')}", f"{_pct(h['recall@1'])} (n={h['n']})"))
        for t, s in (m.get("by_type") or {}).items():
            rows.append((f"EM, {t}", f"{_pct(s['em'])} (n={s['n']})"))
    if m["errors"]:
        rows.append(("engine errors", str(m["errors"])))
    table = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in rows)
    cats = "".join(f"<tr><td>{esc(c)}</td><td>{k}</td></tr>" for c, k in category_choices(results)) or \
        '<tr><td colspan="2" class="og-muted">no errors</td></tr>'
    skipped = ""
    if results.skipped:
        shown = "".join(f"<li>{esc(s)}</li>" for s in results.skipped[:5])
        more = f"<li>... and {len(results.skipped) - 5} more</li>" if len(results.skipped) > 5 else ""
        skipped = (f'<div class="og-msg og-warn">{len(results.skipped)} line(s) could not be read and are left out:'
                   f"<ul>{shown}{more}</ul></div>")
    return (f'<div class="og-metrics"><div class="og-headline"><b>{_pct(value)}</b> {esc(name)} '
            f'<span class="og-muted">{esc(task_label(results.task))}, {n} example{"s" if n != 1 else ""}, '
            f"{right} right</span></div>"
            f'<div class="og-muted">{esc(results.path.name)}: {_run_line(results)}</div>{skipped}'
            f'<div class="og-metric-grid"><table class="og-table"><tbody>{table}</tbody></table>'
            f'<table class="og-table"><thead><tr><th>error category</th><th>examples</th></tr></thead>'
            f"<tbody>{cats}</tbody></table></div></div>")


def table_rows(task: str, records: Sequence[ExampleRecord]) -> list[list[str]]:
    """Rows of the examples table (plain strings; the table shows them as text)."""
    out = []
    for rec in records[:MAX_ROWS]:
        s = summarize(task, rec)
        out.append([s.key, s.outcome, _clip(s.input), _clip(s.prediction), _clip(s.gold), _clip(s.categories)])
    return out


def _clip(text: str, n: int = 160) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _detail(c) -> str:
    """The useful part of a category's detail, in words (keys as error_analysis writes them)."""
    d = c.detail
    bits = []
    if "surface" in d or "mention" in d:
        bits.append(f"mention {d.get('surface', d.get('mention'))!r}")
    if isinstance(d.get("retrieved"), dict):
        bits.append(f"retrieved {d['retrieved'].get('title') or d['retrieved'].get('id')!r}")
    gold = d.get("gold", d.get("gold_id"))
    if isinstance(gold, dict):  # a hop's gold: the paragraph titles that count as right
        gold = list(gold.get("titles") or gold.get("ids") or [])
    if gold is not None:
        bits.append(f"gold {gold!r}" if not isinstance(gold, list) else f"gold {' | '.join(map(str, gold))!r}")
    if "predicted" in d:
        bits.append(f"predicted {d.get('predicted_title') or d['predicted']!r}")
    if "answer" in d:
        bits.append(f"answered {d['answer']!r}")
    if "gold_rank" in d:
        bits.append("gold not in the top-k" if d["gold_rank"] is None else f"gold ranked {d['gold_rank']}")
    if d.get("bridge_in_query") is False:
        bits.append(f"the query does not name the previous hop's answer {d['bridge']!r}: "
                    "the model misread the previous paragraph")
    if c.kinds:
        bits.append(f"ELEVANT: {', '.join(c.kinds)}")
    if "stop_reason" in d:
        bits.append(f"stopped: {stop_reason_words(str(d['stop_reason']))}")
    if "message" in d:
        bits.append(str(d["message"]))
    return "; ".join(bits)


def example_html(task: str, record: ExampleRecord) -> str:
    """One example's verdict above its step-by-step view: input, gold, prediction, why."""
    s = summarize(task, record)
    cls = _OUTCOME_CLASS[s.outcome]
    why = "".join(f"<li><b>{esc(c.name)}</b> {esc(_detail(c))}</li>" for c in record.categories)
    why = f'<ul class="og-why">{why}</ul>' if why else ""
    error = _kv("engine error", esc(record.error)) if record.error else ""
    return (f'<div class="og-example"><div class="og-msg {cls}">{esc(s.key)}: {esc(s.outcome)}</div>'
            f'{_kv("input", esc(s.input))}{_kv("gold", esc(s.gold) or "<i>none</i>")}'
            f'{_kv("prediction", esc(s.prediction) or "<i>none</i>")}{error}{why}</div>')


def comparison_html(cmp: Comparison) -> str:
    """Metrics of A and B over their shared examples, and how many examples flipped each way."""
    rows = []
    for key, (a, b) in cmp.metrics.items():
        delta = "" if a is None or b is None else f"{(b - a) * 100:+.1f}"
        rows.append(f"<tr><td>{esc(key)}</td><td>{_pct(a)}</td><td>{_pct(b)}</td><td>{esc(delta)}</td></tr>")
    counts = [("fixed (wrong in A, right in B)", len(cmp.fixed)), ("broken (right in A, not in B)", len(cmp.broken)),
              ("right in both", cmp.both_right), ("wrong in both", cmp.both_wrong),
              ("same tokens in both (e.g. two decoding settings)", cmp.same_tokens)]
    if cmp.only_a:
        counts.append(("only in A (not compared)", len(cmp.only_a)))
    if cmp.only_b:
        counts.append(("only in B (not compared)", len(cmp.only_b)))
    count_rows = "".join(f"<tr><td>{esc(k)}</td><td>{v}</td></tr>" for k, v in counts)
    return (f'<div class="og-compare"><div class="og-kv"><span>A</span>{esc(cmp.a.label)}</div>'
            f'<div class="og-kv"><span>B</span>{esc(cmp.b.label)}</div>'
            f'<div class="og-muted">{len(cmp.shared)} shared example{"s" if len(cmp.shared) != 1 else ""}; '
            "metrics over those only.</div>"
            f'<div class="og-metric-grid"><table class="og-table"><thead><tr><th>metric</th><th>A</th><th>B</th>'
            f"<th>B - A</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
            f'<table class="og-table"><tbody>{count_rows}</tbody></table></div></div>')


def flip_rows(flips: Sequence[Flip]) -> list[list[str]]:
    return [[f.key, f.a, f.b, _clip(f.input), ", ".join(f.lost), ", ".join(f.gained), f.retrieval]
            for f in flips[:MAX_ROWS]]


RESULTS_CSS = """
.og-headline{font-size:1.05em;margin-bottom:2px}.og-headline b{font-size:1.6em;font-family:var(--font-mono)}
.og-metric-grid{align-items:start;display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:16px}
.og-why{margin:4px 0 0 18px}
.og-kv>span:first-child{vertical-align:top}
"""
