"""Confidence calibration of an index: the score below which a retrieval has no confident match.

A OneGen model always retrieves something: asked about a name its index does not hold, the top hit
is simply the least bad document, and the answer reads as confidently as any other. What tells
the two apart is the score. On the held-out world, the top hits that are the gold document score
in a range this model and index share; a question about something else scores below it. The
calibration measures that range from result files (`onegen evaluate --out`, the traces keep
every hit's cosine) and stores one threshold per index in `calibration.json` beside its manifest:

    cal = calibrate(index, in_world=[load_results("mh.jsonl")], out_of_world=[load_results("oow-mh.jsonl")])
    write_calibration(index.path, cal)      # VectorIndex.load reads it back: index.calibration
    cal.confident(retrieval.hits)           # False: "no confident match in this index"

The file records the content fingerprint of the index it was measured on (protocol, model and
file checksums, `index.content_fingerprint`); the manifest itself is left as built, so shipped
indexes verify as before, and a rebuilt index never inherits a calibration of other vectors.

Signals: "top1" (the top hit's cosine) or "margin" (top hit minus the second). A run is flagged
when any retrieval its result rests on falls below the threshold (`result_retrievals`): one hop
about an unknown name is enough for the answer to stand on a document that does not support it.
An entity-linking result rests on the retrievals of the links it kept: a mention whose link the
name check refused is listed as unlinked, and its own step keeps its flag, but the result does
not stand on it. A result that kept no link rests on every retrieval.

Rule: with out-of-world result files (questions whose answers are not in the index), the
threshold is the one that flags the most out-of-world runs beyond in-world runs (the largest
out-of-world rate minus in-world rate, all in-world files pooled) among those that flag at most
`max_in_world_flagged` of the runs of every in-world file, set half-way between the two run
signals it falls between. Every run counts, not only those that retrieved their gold documents:
the tolerance is what a visitor asking about the index's own world meets, each kind of input
(each in-world file, e.g. template and paraphrased wording) on its own. Without out-of-world files,
it is the `gold_quantile` quantile of the signal of the retrievals whose top hit is the gold
document. Each result file's rates are recorded: all its runs flagged, and its "gold runs" (every
retrieval chose its gold document) flagged.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Sequence, get_args

from .errors import OneGenError
from .fsutil import atomic_write
from .trace import Hit, LinkedEntity, Retrieval, Trace

if TYPE_CHECKING:
    from .index import VectorIndex
    from .results import ResultSet

CALIBRATION = "calibration.json"
CALIBRATION_SCHEMA = "onegen-calibration/1"
Signal = Literal["top1", "margin"]
SIGNALS: tuple[Signal, ...] = get_args(Signal)
MAX_IN_WORLD_FLAGGED = 0.05
GOLD_QUANTILE = 0.01


class CalibrationError(OneGenError, ValueError):
    """A calibration that cannot be made or read; the message says why and what to do."""


def signal_value(hits: Sequence[Hit], signal: Signal) -> float | None:
    """The retrieval's confidence signal; None when it cannot be measured (no hits, or a margin of
    a single hit)."""
    if not hits:
        return None
    if signal == "top1":
        return float(hits[0].score)
    if len(hits) < 2:
        return None
    return float(hits[0].score) - float(hits[1].score)


@dataclass
class ScoreRange:
    """Where a list of scores lies: count, extremes and a few quantiles."""

    n: int
    min: float | None = None
    p01: float | None = None
    p05: float | None = None
    median: float | None = None
    max: float | None = None

    @classmethod
    def of(cls, values: Sequence[float]) -> "ScoreRange":
        v = sorted(values)
        if not v:
            return cls(0)
        return cls(len(v), round(v[0], 6), round(quantile(v, 0.01), 6), round(quantile(v, 0.05), 6),
                   round(quantile(v, 0.5), 6), round(v[-1], 6))


@dataclass
class SetRate:
    """How many runs of one result file the threshold flags: of all its runs that retrieved, and
    of its gold runs (every retrieval chose its gold document; in-world files only)."""

    file: str
    data: str | None  # the dataset the result file ran
    runs: int
    flagged: int
    gold_runs: int = 0
    gold_flagged: int = 0

    @property
    def rate(self) -> float:
        return self.flagged / self.runs if self.runs else 0.0

    @property
    def gold_rate(self) -> float:
        return self.gold_flagged / self.gold_runs if self.gold_runs else 0.0


@dataclass
class Calibration:
    protocol: str
    mode: str  # the query encoder the result files ran with; other modes' scores are not comparable
    model_fingerprint: str
    index_fingerprint: str
    signal: Signal
    threshold: float
    rule: str
    gold: ScoreRange  # the signal of in-world retrievals whose top hit is the gold document
    in_world: list[SetRate] = field(default_factory=list)
    out_of_world: list[SetRate] = field(default_factory=list)
    # The other signal under the same rule, for comparison: {"signal", "threshold", "in_world_rate", ...}.
    alternatives: list[dict[str, Any]] = field(default_factory=list)
    created: str = ""
    schema: str = CALIBRATION_SCHEMA

    def confident(self, hits: Sequence[Hit]) -> bool:
        """False when the retrieval's signal is below the threshold or cannot be measured."""
        value = signal_value(hits, self.signal)
        return value is not None and value >= self.threshold

    @property
    def in_world_rate(self) -> float:
        return _rate(self.in_world)

    @property
    def gold_run_rate(self) -> float:
        runs = sum(r.gold_runs for r in self.in_world)
        return sum(r.gold_flagged for r in self.in_world) / runs if runs else 0.0

    @property
    def out_of_world_rate(self) -> float | None:
        return _rate(self.out_of_world) if self.out_of_world else None

    def describe(self) -> dict[str, Any]:
        """What a trace records of the calibration its retrievals were judged by."""
        return {"signal": self.signal, "threshold": self.threshold, "index_fingerprint": self.index_fingerprint}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for part in ("in_world", "out_of_world"):
            for row, rate in zip(d[part], getattr(self, part)):
                row["rate"] = round(rate.rate, 4)
                if part == "in_world":
                    row["gold_rate"] = round(rate.gold_rate, 4)
        return {"schema": d.pop("schema"), **d}

    @classmethod
    def from_dict(cls, d: Any) -> "Calibration":
        if not isinstance(d, dict):
            raise CalibrationError("a calibration must be a JSON object")
        if d.get("schema") != CALIBRATION_SCHEMA:
            raise CalibrationError(f"unsupported calibration schema {d.get('schema')!r}; this version reads "
                                   f"{CALIBRATION_SCHEMA!r}")
        try:
            rows = lambda key: [SetRate(**{k: v for k, v in r.items() if k not in ("rate", "gold_rate")})
                                for r in d.get(key, [])]
            cal = cls(**{**{k: v for k, v in d.items() if k not in ("gold", "in_world", "out_of_world")},
                         "gold": ScoreRange(**d["gold"]), "in_world": rows("in_world"),
                         "out_of_world": rows("out_of_world")})
        except (KeyError, TypeError, AttributeError) as e:
            raise CalibrationError(f"malformed calibration: {e}") from e
        if cal.signal not in SIGNALS or not isinstance(cal.threshold, (int, float)) or math.isnan(cal.threshold):
            raise CalibrationError(f"malformed calibration: signal {cal.signal!r}, threshold {cal.threshold!r}")
        cal.threshold = float(cal.threshold)
        return cal


def _rate(rows: Sequence[SetRate]) -> float:
    runs = sum(r.runs for r in rows)
    return sum(r.flagged for r in rows) / runs if runs else 0.0


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of already sorted values."""
    if not sorted_values:
        raise ValueError("no values")
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


# -- judging runs ------------------------------------------------------------------------------------

def run_signal(retrievals: Sequence[Retrieval], signal: Signal) -> float | None:
    """A run's lowest retrieval signal (a retrieval with no measurable signal counts as -inf);
    None for a run that retrieved nothing."""
    if not retrievals:
        return None
    values = [signal_value(r.hits, signal) for r in retrievals]
    return min(-math.inf if v is None else v for v in values)


def result_retrievals(trace: Trace) -> list[Retrieval]:
    """The retrievals a run's result rests on: those of the entities it linked when it linked any
    (a link the name check refused is not part of the result), every retrieval otherwise."""
    entities = trace.result.entities
    if entities:
        steps = sorted({e.retrieval for e in entities if 0 <= e.retrieval < len(trace.retrievals)})
        if steps:
            return [trace.retrievals[i] for i in steps]
    return list(trace.retrievals)


def unconfident_links(trace: Trace) -> tuple[list[LinkedEntity], list[LinkedEntity]]:
    """An entity-linking result's links whose retrieval had no confident match, and the others."""
    weak: list[LinkedEntity] = []
    sound: list[LinkedEntity] = []
    for e in trace.result.entities or []:
        r = trace.retrievals[e.retrieval] if 0 <= e.retrieval < len(trace.retrievals) else None
        (weak if r is not None and r.confident is False else sound).append(e)
    return weak, sound


def run_confidence(retrievals: Sequence[Retrieval]) -> bool | None:
    """A run's summary of its retrievals' `confident` fields: False when any is False, True when
    all judged ones are True, None when none was judged (no calibration)."""
    judged = [r.confident for r in retrievals if r.confident is not None]
    if not judged:
        return None
    return all(judged)


def flagged_share(signals: Sequence[float], threshold: float) -> float:
    """The share of runs a threshold flags (signal below it); 0 for no runs."""
    return sum(v < threshold for v in signals) / len(signals) if signals else 0.0


def choose_threshold(in_world: Sequence[Sequence[float]], out_of_world: Sequence[float], gold: Sequence[float], *,
                     max_in_world_flagged: float = MAX_IN_WORLD_FLAGGED,
                     gold_quantile: float = GOLD_QUANTILE) -> tuple[float, str]:
    """(threshold, the rule in words) from per-run signals (a run is flagged when its signal is
    below the threshold): `in_world`, one list per in-world result file, of all its runs;
    `out_of_world` of the out-of-world runs; and `gold`, the gold retrievals' own signals. See the
    module docstring."""
    files = [list(f) for f in in_world if f]
    if not out_of_world:
        if not gold:
            raise CalibrationError("no in-world retrieval chose its gold document: nothing to calibrate on")
        t = quantile(sorted(gold), gold_quantile)
        return t, f"the {gold_quantile:g} quantile of the signal of in-world retrievals whose top hit is gold"
    if not files:
        raise CalibrationError("no in-world run retrieved anything: nothing to calibrate on")
    pooled = [v for f in files for v in f]
    values = sorted(set(pooled) | set(out_of_world))
    finite = [v for v in values if math.isfinite(v)]
    # Candidate thresholds: below everything, half-way between neighbours, above everything.
    cands = [(finite[0] - 1e-3) if finite else 0.0]
    cands += [(a + b) / 2 for a, b in zip(values, values[1:]) if math.isfinite(a) and math.isfinite(b)]
    cands.append((finite[-1] + 1e-3) if finite else 0.0)
    best: tuple[float, float] | None = None  # (objective, threshold)
    for t in cands:
        if any(flagged_share(f, t) > max_in_world_flagged for f in files):
            continue
        objective = flagged_share(out_of_world, t) - flagged_share(pooled, t)
        if best is None or objective > best[0]:
            best = (objective, t)
    if best is None:  # only runs without a measurable signal are flagged by every threshold
        raise CalibrationError(f"more than {max_in_world_flagged:.0%} of an in-world file's runs have a retrieval "
                               "without a measurable signal (no hits, or a margin of one hit); raise --top-k")
    return best[1], (f"the threshold that flags the most out-of-world runs beyond in-world runs while flagging at "
                     f"most {max_in_world_flagged:.0%} of the runs of each in-world file, half-way between the two "
                     "run signals it separates")


# -- measuring --------------------------------------------------------------------------------------

@dataclass
class _Runs:
    """One result file's runs that retrieved: each run's signal, and whether it is a gold run."""

    results: "ResultSet"
    signals: list[float] = field(default_factory=list)
    gold: list[bool] = field(default_factory=list)

    @property
    def gold_signals(self) -> list[float]:
        return [v for v, g in zip(self.signals, self.gold) if g]

    def rate(self, threshold: float) -> SetRate:
        gold = self.gold_signals
        return SetRate(file=self.results.path.name, data=self.results.run.get("data"), runs=len(self.signals),
                       flagged=sum(v < threshold for v in self.signals), gold_runs=len(gold),
                       gold_flagged=sum(v < threshold for v in gold))


@dataclass
class _Measured:
    gold: list[float]  # the signal of every in-world retrieval whose top hit is its gold document
    in_world: list[_Runs]
    out_of_world: list[_Runs]


def _runs(rs: "ResultSet", signal: Signal, gold: list[float] | None) -> _Runs:
    """The runs of `rs`; with `gold`, also judge each retrieval against its gold document and
    collect the signals of those that chose it."""
    from .tasks import get_task

    task = get_task(rs.task)
    out = _Runs(rs)
    for rec in rs.records:
        if rec.trace is None or not rec.trace.retrievals:
            continue
        out.signals.append(run_signal(result_retrievals(rec.trace), signal))
        if gold is None:
            out.gold.append(False)
            continue
        correct = task.retrieval_correct(rec.example, rec.trace)
        out.gold.append(len(correct) == len(rec.trace.retrievals) and all(ok is True for ok in correct))
        for r, ok in zip(rec.trace.retrievals, correct):
            value = signal_value(r.hits, signal)
            if ok and r.chosen == 0 and value is not None:
                gold.append(value)
    return out


def _measure(in_world: Sequence["ResultSet"], out_of_world: Sequence["ResultSet"], signal: Signal) -> _Measured:
    gold: list[float] = []
    ins = [_runs(rs, signal, gold) for rs in in_world]
    return _Measured(gold, ins, [_runs(rs, signal, None) for rs in out_of_world])


def _check_sets(index: "VectorIndex", sets: Sequence["ResultSet"]) -> str:
    """The mode the result files share; refuses files of another index, model, task or setting."""
    m = index.manifest
    modes = set()
    for rs in sets:
        run = rs.run
        where = rs.path.name
        if rs.task != m.protocol:
            raise CalibrationError(f"{where} is a {rs.task} result file; the index is for {m.protocol}")
        if run.get("model_fingerprint") != m.model_fingerprint:
            raise CalibrationError(f"{where} was written by model fingerprint {run.get('model_fingerprint')}, "
                                   f"the index was built with {m.model_fingerprint}")
        if run.get("candidates") != "index" or run.get("control"):
            raise CalibrationError(f"{where} did not search an index with the model's own queries "
                                   "(candidates 'index', no control); run `onegen evaluate --candidates index`")
        ran_on = Path(str(run.get("index") or "")).name
        if index.path is not None and ran_on != index.path.name:
            raise CalibrationError(f"{where} searched the index {run.get('index')!r}, not {index.path.name!r}")
        modes.add(run.get("mode") or "onegen")
    if len(modes) > 1:
        raise CalibrationError(f"the result files ran different modes ({', '.join(sorted(modes))}); calibrate one mode")
    return modes.pop() if modes else "onegen"


def calibrate(index: "VectorIndex", in_world: Sequence["ResultSet"], out_of_world: Sequence["ResultSet"] = (), *,
              signal: Signal = "top1", max_in_world_flagged: float = MAX_IN_WORLD_FLAGGED,
              gold_quantile: float = GOLD_QUANTILE) -> Calibration:
    """The calibration of `index` from result files of its own model searching it: `in_world`
    (questions the index answers, with gold documents) and optionally `out_of_world` (questions it
    does not). See the module docstring for the rule."""
    from .index import content_fingerprint

    if signal not in SIGNALS:
        raise CalibrationError(f"unknown signal {signal!r}; choose one of {', '.join(SIGNALS)}")
    if not in_world:
        raise CalibrationError("give at least one in-world result file")
    if not 0 <= max_in_world_flagged < 1 or not 0 <= gold_quantile < 1:
        raise CalibrationError("max_in_world_flagged and gold_quantile must lie in [0, 1)")
    mode = _check_sets(index, [*in_world, *out_of_world])
    chosen: Calibration | None = None
    alternatives = []
    for sig in (signal, *(s for s in SIGNALS if s != signal)):
        measured = _measure(in_world, out_of_world, sig)
        try:
            t, rule = choose_threshold([runs.signals for runs in measured.in_world],
                                       [v for runs in measured.out_of_world for v in runs.signals], measured.gold,
                                       max_in_world_flagged=max_in_world_flagged, gold_quantile=gold_quantile)
        except CalibrationError:
            if sig == signal:
                raise
            continue  # e.g. no margin with one hit per retrieval: nothing to compare
        cal = Calibration(protocol=index.manifest.protocol, mode=mode,
                          model_fingerprint=index.manifest.model_fingerprint,
                          index_fingerprint=content_fingerprint(index.manifest), signal=sig,
                          threshold=round(t, 6), rule=rule, gold=ScoreRange.of(measured.gold),
                          in_world=[r.rate(t) for r in measured.in_world],
                          out_of_world=[r.rate(t) for r in measured.out_of_world],
                          created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        if sig == signal:
            chosen = cal
        else:
            alternatives.append({"signal": sig, "threshold": cal.threshold, "gold": asdict(cal.gold),
                                 "in_world_rate": round(cal.in_world_rate, 4),
                                 "gold_run_rate": round(cal.gold_run_rate, 4),
                                 "out_of_world_rate": None if cal.out_of_world_rate is None
                                 else round(cal.out_of_world_rate, 4)})
    assert chosen is not None
    chosen.alternatives = alternatives
    return chosen


@dataclass
class Fold:
    """One half of a two-fold cross-fit: the threshold chosen on the other half's runs, and the
    rates it flags on this half's (in-world files in order, then out-of-world pooled)."""

    threshold: float
    in_world_rates: list[float]
    out_of_world_rate: float


def cross_fit(in_world: Sequence["ResultSet"], out_of_world: Sequence["ResultSet"], *, signal: Signal = "top1",
              max_in_world_flagged: float = MAX_IN_WORLD_FLAGGED) -> list[Fold]:
    """How the rule does on runs it was not chosen on: the threshold chosen on the even-numbered
    runs of every file and measured on the odd ones, and back. Needs out-of-world files."""
    if not out_of_world:
        raise CalibrationError("a cross-fit needs out-of-world result files")
    measured = _measure(in_world, out_of_world, signal)
    ins = [runs.signals for runs in measured.in_world]
    oow = [v for runs in measured.out_of_world for v in runs.signals]
    folds = []
    for fit, held in ((0, 1), (1, 0)):
        t, _ = choose_threshold([f[fit::2] for f in ins], oow[fit::2], measured.gold,
                                max_in_world_flagged=max_in_world_flagged)
        folds.append(Fold(t, [flagged_share(f[held::2], t) for f in ins], flagged_share(oow[held::2], t)))
    return folds


# -- the file beside the manifest ---------------------------------------------------------------------

def write_calibration(index_dir: str | Path, cal: Calibration) -> Path:
    """Write `cal` as `calibration.json` in an index folder, atomically."""
    path = Path(index_dir) / CALIBRATION
    return atomic_write(path, json.dumps(cal.to_dict(), indent=2, ensure_ascii=False) + "\n")


def read_calibration(index_dir: str | Path, index_fingerprint: str) -> Calibration | None:
    """The calibration of an index folder; None when it has none. Raises CalibrationError when the
    file is unreadable or was measured on other contents (`index_fingerprint` is the folder's own)."""
    path = Path(index_dir) / CALIBRATION
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CalibrationError(f"{path} is unreadable ({e}); recalibrate with `python -m onegen calibrate`") from e
    cal = Calibration.from_dict(raw)
    if cal.index_fingerprint != index_fingerprint:
        raise CalibrationError(f"{path} was measured on other contents of this index (fingerprint "
                               f"{cal.index_fingerprint[:12]}, the index is {index_fingerprint[:12]}); "
                               "recalibrate with `python -m onegen calibrate`")
    return cal

