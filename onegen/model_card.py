"""The held-out metrics of an embedded model's card, recomputed from result files its weights wrote.

A result file (`onegen evaluate --out`) records the fingerprint of the weights that produced it, so
the card lists exactly the runs of this model, rescored with the current scoring code, and a
retrained model's card never inherits its predecessor's figures. The section sits between two
markers and is replaced in place; the rest of the card is left as the exporter wrote it.

    sets = matching_results("assets/results", lm.fingerprint)
    write_card_metrics("assets/models/onegen-smol", sets, lm.fingerprint,
                       calibrations=index_calibrations(entry.indexes, lm.fingerprint))

A second section lists the confidence threshold of each of the model's indexes (their
calibration.json, onegen/calibration.py): the score below which a retrieval is marked as "no
confident match in this index", with the flag rates it was measured with.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from .calibration import Calibration, CalibrationError, read_calibration
from .fsutil import atomic_write
from .metrics import ELMetrics, QAMetrics
from .result_checks import CHECKS
from .results import ResultFileError, ResultSet, load_results
from .tasks import get_task

BEGIN = "<!-- heldout-metrics -->"
END = "<!-- /heldout-metrics -->"
CAL_BEGIN = "<!-- calibration -->"
CAL_END = "<!-- /calibration -->"


def matching_results(results_dir: str | Path, fingerprint: str) -> list[ResultSet]:
    """Every readable result file in `results_dir` whose run names `fingerprint`, by file name."""
    out = []
    for path in sorted(Path(results_dir).glob("*.jsonl")):
        try:
            rs = load_results(path)
        except ResultFileError:
            continue  # not a result file: nothing of this model's to report
        if rs.run.get("model_fingerprint") == fingerprint:
            out.append(rs)
    return out


def setting(rs: ResultSet) -> str:
    run = rs.run
    if run.get("candidates") == "index":
        where = f"index `{Path(str(run.get('index') or '?')).name}`"
    elif run.get("candidates") == "context":
        where = "each question's own context paragraphs"
    else:
        where = f"candidates: {run.get('candidates')}"
    data = run.get("data")  # the file name tells a reader which wording was asked (e.g. "-paraphrased")
    parts = [f"{rs.task} on `{Path(str(data)).name}`" if data else rs.task, where]
    if run.get("control"):
        parts.append(f"control: {run['control']}")
    if get_task(rs.task).copies_input:
        parts.append("copy-constrained" if run.get("copy_input") else "free decoding")
    for key in CHECKS:
        if run.get(key, "off") != "off":
            parts.append(f"{key.replace('_', ' ')} {run[key]}")
    return ", ".join(parts)


def figures(rs: ResultSet) -> str:
    m = rs.metrics
    return el_figures(m, rs.run.get("name_alignment", "off")) if isinstance(m, ELMetrics) else qa_figures(m)


def el_figures(m: ELMetrics, name_alignment: str = "off") -> str:
    text = f"micro P {m.precision:.3f}, R {m.recall:.3f}, **F1 {m.f1:.3f}**"
    if m.ambiguous_accuracy is not None:
        text += f"; ambiguous names {m.ambiguous_accuracy:.3f} ({m.ambiguous_mentions} mentions)"
    if name_alignment != "off" and m.authors_scorer is not None:
        # The output text keeps the model's own spans; the authors' scorer reads those.
        text += f"; spans as the model marked them (the authors' scorer on the output) F1 {m.authors_scorer['f1']:.3f}"
    return text


def qa_figures(m: QAMetrics) -> str:
    text = f"**EM {m.em:.2f}**, F1 {m.f1:.2f}"
    by_type = m.by_type or {}
    if len(by_type) > 1:
        text += "; " + ", ".join(f"{t.replace('_', '-')} {v['em']:.2f}" for t, v in sorted(by_type.items()))
    hops = m.retrieval or {}
    if hops:
        names = sorted(hops, key=lambda h: int(h.split("_")[-1]))
        text += "; recall@1 by hop " + " / ".join(f"{hops[h]['recall@1']:.2f}" for h in names)
    if m.answers_as_written is not None:
        text += (f"; answers as the model wrote them EM {m.answers_as_written['em']:.2f} "
                 f"({m.answers_as_written['changed']} changed by the result checks)")
    return text


def metrics_section(sets: list[ResultSet], fingerprint: str, source: str = "assets/results") -> str:
    lines = [BEGIN, "## Held-out metrics", "",
             f"Recomputed by `python -m onegen card` from the result files in `{source}/` written by these weights "
             f"(fingerprint `{fingerprint}`); the commands that made them are in docs/embedded-models.md.", ""]
    if not sets:
        lines.append("No result file of these weights was found.")
    else:
        lines += ["| result file | task, setting | examples | figures |", "|---|---|---|---|"]
        lines += [f"| `{rs.path.name}` | {setting(rs)} | {len(rs.records)} | {figures(rs)} |" for rs in sets]
    lines.append(END)
    return "\n".join(lines) + "\n"


def index_calibrations(indexes: Mapping[str, str | Path], fingerprint: str) -> list[tuple[str, Calibration]]:
    """(index folder name, calibration) of each index folder built with these weights that has a
    usable calibration, in the order given."""
    from .index import IndexLoadError, content_fingerprint, read_manifest

    out = []
    for folder in indexes.values():
        try:
            manifest = read_manifest(folder)
            if manifest.model_fingerprint != fingerprint:
                continue
            cal = read_calibration(folder, content_fingerprint(manifest))
        except (IndexLoadError, CalibrationError):
            continue  # not this model's, or not calibrated on these contents: nothing to report
        if cal is not None:
            out.append((Path(folder).name, cal))
    return out


def calibration_section(calibrations: list[tuple[str, Calibration]]) -> str:
    lines = [CAL_BEGIN, "## Confidence thresholds", "",
             "Written by `python -m onegen card` from each index's `calibration.json` (made by "
             "`python -m onegen calibrate`; the commands are in docs/embedded-models.md). A retrieval whose "
             "signal falls below its index's threshold is marked \"no confident match in this index\", and so is "
             "every run whose result rests on one (an entity-linking result rests on the links it kept).", ""]
    if not calibrations:
        lines.append("No index of these weights is calibrated.")
    else:
        lines += ["| index | signal | threshold | gold top hits (min / 5% / median) | in-world runs flagged, per "
                  "dataset (of them, runs that found every gold document) | out-of-world runs flagged |",
                  "|---|---|---|---|---|---|"]
        for name, cal in calibrations:
            g = cal.gold
            in_world = "; ".join(f"`{_data_name(r)}` {r.flagged}/{r.runs} ({r.rate:.1%}; {r.gold_flagged}/{r.gold_runs})"
                                 for r in cal.in_world)
            oow = "; ".join(f"`{_data_name(r)}` {r.flagged}/{r.runs} ({r.rate:.1%})" for r in cal.out_of_world)
            lines.append(f"| `{name}` | {cal.signal} | {cal.threshold:.4f} | {g.min} / {g.p05} / {g.median} | "
                         f"{in_world} | {oow or '-'} |")
    lines.append(CAL_END)
    return "\n".join(lines) + "\n"


def _data_name(row) -> str:
    return Path(row.data).name if row.data else row.file


def with_section(card: str, section: str, begin: str = BEGIN, end: str = END) -> str:
    """`card` with the section between `begin` and `end` replaced, or the section added before
    "## Limits"."""
    if begin in card and end in card:
        head, rest = card.split(begin, 1)
        tail = rest.split(end, 1)[1]
        return head + section.rstrip("\n") + tail
    marker = "## Limits"
    if marker in card:
        head, tail = card.split(marker, 1)
        return head + section + "\n" + marker + tail
    return card.rstrip("\n") + "\n\n" + section


def write_card_metrics(model_dir: str | Path, sets: list[ResultSet], fingerprint: str,
                       source: str = "assets/results",
                       calibrations: list[tuple[str, Calibration]] | None = None) -> Path:
    """Rewrite `model_dir/README.md` with the metrics section (and, when given, the confidence
    thresholds section), atomically (a crash leaves the old card)."""
    card = Path(model_dir) / "README.md"
    if not card.exists():
        raise FileNotFoundError(f"{card} does not exist; export the model first")
    text = with_section(card.read_text(encoding="utf-8"), metrics_section(sets, fingerprint, source))
    if calibrations is not None:
        text = with_section(text, calibration_section(calibrations), CAL_BEGIN, CAL_END)
    atomic_write(card, text)
    return card
