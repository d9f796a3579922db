"""`python -m onegen bench single-pass`: the efficiency claim, measured.

OneGen, the two-pass baseline (same model, query re-encoded) and the pipeline baseline (a separate
MiniLM retriever) run the same engine loop on the same random Llama-style models, on controlled
inputs. A random model never emits retrieval tokens, so only the *token choice* is scripted: the
model's real head still runs at every step, then the engine's token chooser takes the script's next
id (`onegen.engine.ScriptedChooser`).
Every forward pass (prompt, generated tokens, inserted documents, re-encoding) is real.

Two scenarios:
- ``generated`` (multi-hop protocol): the model writes a sub-question of L tokens, then
  `[Question Representation]`; a fixed-length document is inserted; R times; then a short answer.
- ``read`` (single-hop protocol): the query is L tokens of the user's input, read in the prompt
  (one forward call), then one retrieval, a fixed-length document, a short answer. ImpRAG
  (onegen/imprag.py) runs here too, at the model's default layer groups and reading its top passage:
  its query is ready after the bottom group, so its time to the first search is measured beside
  OneGen's (a full prefill), with its forward tokens per layer group checked exactly.

Per cell the modes run interleaved (the order rotates every repeat); times are medians over
repeats and the speedup of OneGen over a baseline is the median of the per-repeat ratios (runs of
one repeat are adjacent in time, so slow drifts of machine load cancel). Each run is timed twice:
wall time, and the CPU time of this process. On a machine shared with other work the wall time
measures the others as much as the run; with one torch thread the CPU time is the run's own
work, so it is the headline (`--clock wall` on a quiet machine).

    python -m onegen bench single-pass --quick
    python -m onegen bench single-pass --write          # docs/benchmarks.md, docs/single-pass.png and
                                                        # assets/bench/single-pass.json (the app's sweep)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from onegen.assets import assets_dir
from onegen.errors import OneGenError
from onegen.fsutil import atomic_write
from onegen.modes import BASELINE_NAMES, DEFAULT_MODE, EVERY_TASK_MODES, ModeError, get_mode
from onegen.render_compare import axis_ticks

SCHEMA = "onegen-bench-single-pass/1"
ROOT = Path(__file__).resolve().parents[1]
PLOT = ROOT / "docs" / "single-pass.png"
# Data the product reads lives in assets: the Compare tab draws this report with a live run on it.
SWEEP = assets_dir() / "bench" / "single-pass.json"
SECTION = "single-pass"
TITLE = "Single pass vs two-pass and pipeline retrieval"
SCENARIOS = ("generated", "read")
TARGET = {"query_tokens": 1024, "retrievals": 4, "speedup": 1.5}  # the claim's headline cell


class BenchError(OneGenError, RuntimeError):
    """A benchmark run that did not follow its script (context full, missed retrieval...)."""


# -- configuration ----------------------------------------------------------------------------------

def model_sizes() -> dict[str, Any]:
    """The shared benchmark sizes (5M, 33M) and a tiny one for tests (four layers: ImpRAG's default
    groups then hold a layer each, 2 / 1 / 1)."""
    from .models import SIZES, ModelSize

    return {**SIZES, "tiny": ModelSize("tiny", hidden=64, layers=4, vocab=1024)}


@dataclass
class SweepConfig:
    models: tuple[str, ...]
    lengths: tuple[int, ...]  # query tokens L, generated scenario
    retrievals: tuple[int, ...]  # retrievals per answer R, generated scenario
    read_lengths: tuple[int, ...]  # query tokens L, read scenario (R = 1)
    repeats: int = 3
    modes: tuple[str, ...] = EVERY_TASK_MODES
    # Cap on generated query tokens per run (L x R) per model: decoding is one forward call per
    # token, so long cells cost minutes each; cells above the cap are listed as skipped.
    max_generated: dict[str, int] = field(default_factory=dict)
    # Cells measured whatever the budget (model -> (L, R) pairs): the claim's headline cell.
    extra_cells: dict[str, tuple[tuple[int, int], ...]] = field(default_factory=dict)
    doc_tokens: int = 64  # target length of the inserted document (the exact length is reported)
    answer_tokens: int = 8
    context: int = 32768  # max_position_embeddings of the random models
    device: str = "cpu"
    threads: int | None = 1  # CPU threads (1: steadier timings on a shared machine)
    retriever_model: str | None = None
    clock: str = "cpu"  # the headline speedup: "cpu" (process CPU time) or "wall"
    preset: str = "custom"
    imprag: bool = True  # ImpRAG beside the others in the read scenario (single-hop only)


PRESETS: dict[str, SweepConfig] = {
    "full": SweepConfig(models=("5M", "33M"), lengths=(16, 64, 256, 1024, 2048), retrievals=(1, 2, 4, 8),
                        read_lengths=(16, 64, 256, 1024, 2048), repeats=3,
                        max_generated={"5M": 1024, "33M": 256}, extra_cells={"5M": ((1024, 4),)}, preset="full"),
    "quick": SweepConfig(models=("5M",), lengths=(16, 256), retrievals=(1, 2), read_lengths=(16, 256, 1024),
                         repeats=2, max_generated={"5M": 512}, preset="quick"),
    "tiny": SweepConfig(models=("tiny",), lengths=(8, 24), retrievals=(1, 2), read_lengths=(8, 24), repeats=1,
                        doc_tokens=16, answer_tokens=2, context=512, max_generated={"tiny": 32}, preset="tiny"),
}


# -- controlled inputs ------------------------------------------------------------------------------

# No sentence break: the whole segment is the pipeline's query text.
QUERY_PHRASE = ("who directed the film that the painter from the northern city saw in the winter of that year and "
                "where was the director of the film born and which river runs through the city where the painter "
                "studied")
DOC_SENTENCES = ["The archive of {t} holds old maps of the region.", "Its library opened in the spring.",
                 "The river crosses the valley near the old bridge.",
                 "Many painters lived in the district during the last century."]
DOC_TITLES = ["Aldmoor", "Brenna", "Corvale", "Dunmere", "Elsford", "Fenwick", "Garrow", "Holbeck",
              "Ivesby", "Jorvale", "Kelmar", "Lunford"]


def build_model(size, device: str, context: int):
    """The shared random model of `size`. Its tokenizer has the single-hop protocol's tokens, a
    superset of multi-hop's, so one model serves both scenarios. Runs script its token choices
    (`run_once`); its head still runs at every step."""
    from onegen.loading import default_dtype, pick_device
    from .models import random_model

    dev = pick_device(device)
    lm = random_model(size, "single-hop", device=str(dev), dtype=default_dtype(dev), context=context)
    lm.info = {"hidden": size.hidden, "layers": size.layers, "vocab": len(lm.tokenizer)}
    return lm


@dataclass
class Inputs:
    """Everything a scenario's runs share, built once per model and task."""

    task: str
    documents: list  # candidates, all with the same inserted length
    doc_tokens: int
    query_pool: list[int]  # ids the script cycles through to write a query
    answer: list[int]
    retrievers: dict[str, Any]  # mode -> retriever over the candidates (built outside the timing)
    modes: tuple[str, ...]  # the modes that run this task's cells (ImpRAG: single-hop only)


def _inserted_length(lm, task: str, doc) -> int:
    from onegen.protocols import get_spec
    from onegen.tokenization import Token, template_parts

    open_t, body, close_t = get_spec(task).insertion
    return len(lm.ptok(task).encode([Token(open_t), *template_parts(body, title=doc.title, text=doc.text),
                                     Token(close_t)]).ids)


def make_documents(lm, task: str, target_tokens: int) -> tuple[list, int]:
    """Candidates of one fixed inserted length near `target_tokens`, so every mode inserts the same
    number of tokens whichever candidate it retrieves."""
    from onegen.documents import Document

    docs = []
    for i, title in enumerate(DOC_TITLES):
        sentences = [s.format(t=title) for s in DOC_SENTENCES]
        while True:  # grow (or shrink) the text towards the target length
            doc = Document.from_sentences(f"d{i}", title, sentences)
            n = _inserted_length(lm, task, doc)
            if n < target_tokens:
                sentences.append(DOC_SENTENCES[len(sentences) % len(DOC_SENTENCES)].format(t=title))
                continue
            if n > target_tokens and len(sentences) > 1 and _inserted_length(
                    lm, task, Document.from_sentences("x", title, sentences[:-1])) >= target_tokens:
                sentences = sentences[:-1]
                continue
            break
        docs.append((n, doc))
    lengths = [n for n, _ in docs]
    common = max(set(lengths), key=lambda n: (lengths.count(n), -abs(n - target_tokens)))
    same = [d for n, d in docs if n == common]
    if len(same) < 3:
        raise BenchError(f"could not make 3 candidates of one length for {task}: lengths {lengths}")
    return same, common


def make_inputs(lm, task: str, engines: dict[str, Any], cfg: SweepConfig) -> Inputs:
    """The task's candidates and each mode's retriever over them: the generator's index, or the
    separate encoder's own vectors of the same documents."""
    from onegen.baselines import PipelineRetriever, build_pipeline_index
    from onegen.encode import build_index
    from onegen.engine import IndexRetriever

    docs, doc_tokens = make_documents(lm, task, cfg.doc_tokens)
    ptok = lm.ptok(task)
    index = build_index(lm, task, docs)
    retrievers: dict[str, Any] = {}
    modes = tuple(m for m in engines if _runs_task(m, task))
    for mode in modes:
        engine = engines[mode]
        if getattr(engine.query_encoder, "encode_documents", None):  # ImpRAG: bottom-group key vectors
            retrievers[mode] = engine.candidate_retriever(task, docs)
        elif get_mode(mode).document_encoder.separate:
            retrievers[mode] = PipelineRetriever(build_pipeline_index(engine.encoder, docs), engine.encoder.name,
                                                 "bench")
        else:
            retrievers[mode] = IndexRetriever(index, "bench")
    answer = ptok.encode_data(" The answer is the city of Corvale")[: cfg.answer_tokens]
    return Inputs(task, docs, doc_tokens, ptok.encode_data(QUERY_PHRASE), answer, retrievers, modes)


def _runs_task(mode: str, task: str) -> bool:
    try:
        get_mode(mode).check_task(task)
        return True
    except ModeError:
        return False


def query_script(inputs: Inputs, lm, length: int, retrievals: int) -> list[int]:
    """R times: a query of `length` tokens, then the retrieval token; then the answer."""
    qr = lm.protocol(inputs.task).query_id
    pool = inputs.query_pool
    ids: list[int] = []
    for r in range(retrievals):
        ids += [pool[(r * 7 + i) % len(pool)] for i in range(length)] + [qr]
    return ids + inputs.answer


def read_input(lm, task: str, length: int) -> str:
    """User text of `length` tokens (the query read in the prompt): whole words of the phrase, then
    one-token fillers; if no filler fits, a little shorter (the exact count is reported)."""
    ptok = lm.ptok(task)
    words = QUERY_PHRASE.split()

    def count(text: str) -> int:
        return len(ptok.encode_data(text))

    def text_of(n: int) -> str:
        return " ".join(words[i % len(words)] for i in range(n))

    n = max(1, int(length * len(words) / count(QUERY_PHRASE)))  # start near the phrase's tokens per word
    while n > 1 and count(text_of(n)) > length:
        n -= 1
    while count(text_of(n + 1)) <= length:
        n += 1
    text = text_of(n)
    have = count(text)
    while have < length:
        for filler in (" a", " i", " o", ",", " x"):
            if count(text + filler) == have + 1:
                text, have = text + filler, have + 1
                break
        else:
            break
    return text


# -- running ----------------------------------------------------------------------------------------

@dataclass
class RunResult:
    wall: float  # the engine's own total (perf_counter)
    cpu: float  # CPU time of this process during the run
    reencode_cpu: float  # CPU time inside the query encoder (0 for OneGen, up to timer resolution)
    forward_tokens: dict[str, int]
    phase_seconds: dict[str, float]  # the engine's wall time by phase
    # From the run's start to its first query vector, ready to search: CPU time, and wall time by the
    # engine's own phase timers (the prompt's prefill, which precedes the search in the read scenario,
    # plus the query's encoding)
    to_search_cpu: float
    to_search_wall: float
    layer_groups: dict[str, int] | None  # a layer-split mode's forward tokens per group


class CpuTimedQuery:
    """Wraps a mode's query encoder to add up the CPU time it spends (the engine times wall only)."""

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name
        self.cpu = 0.0
        self.first_ready: float | None = None  # process time when the run's first query was ready

    def __call__(self, ctx):
        t0 = time.process_time()
        try:
            return self.inner(ctx)
        finally:
            t1 = time.process_time()
            self.cpu += t1 - t0
            if self.first_ready is None:
                self.first_ready = t1

    def __getattr__(self, name: str):
        # the rest of a mode's encoder (ImpRAG's decoder and document vectors) as it is
        return getattr(self.inner, name)


def run_once(engine, lm, inputs: Inputs, mode: str, *, script: list[int], text: str, retrievals: int,
             max_new: int) -> RunResult:
    from onegen.engine import RunSettings, ScriptedChooser

    # The engine runs the model's real head at every step, then the script picks the token.
    engine.chooser = ScriptedChooser(script, lm.tokenizer.eos_token_id)
    engine.query_encoder.cpu = 0.0
    engine.query_encoder.first_ready = None
    # One token per forward call: the sweep measures what the protocols cost, not prompt-lookup luck.
    # A random model records no `reads`, so ImpRAG reads every hit it lists: one, as the others insert one.
    settings = RunSettings(top_k=1 if engine.own_decoder else 5, max_new_tokens=max_new,
                           max_retrievals=retrievals, draft_tokens=0)
    cpu0 = time.process_time()
    trace = engine.run_trace(inputs.task, text, retriever=inputs.retrievers[mode], settings=settings)
    cpu = time.process_time() - cpu0
    got = [r.inserted_tokens for r in trace.retrievals]
    if len(got) != retrievals or any(n != inputs.doc_tokens for n in got) or trace.stop_reason != "eos":
        raise BenchError(f"{mode} run off script: {len(got)} retrievals of {retrievals}, inserted {got}, "
                         f"stopped on {trace.stop_reason!r}")
    ft = dict(trace.cost.forward_tokens)
    ft["total"] = trace.cost.total_forward_tokens
    seconds = trace.cost.seconds
    return RunResult(seconds["total"], cpu, engine.query_encoder.cpu, ft, dict(seconds),
                     to_search_cpu=engine.query_encoder.first_ready - cpu0,
                     to_search_wall=seconds.get("prompt", 0.0) + seconds.get("query_reencoding", 0.0),
                     layer_groups=dict(trace.cost.layer_groups) if trace.cost.layer_groups else None)


def _median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def measure_cell(engines: dict, lm, inputs: Inputs, cfg: SweepConfig, *, model: str, scenario: str, length: int,
                 retrievals: int) -> dict[str, Any]:
    """All modes on one cell, interleaved, `cfg.repeats` times."""
    if scenario == "generated":
        script = query_script(inputs, lm, length, retrievals)
        text = "Where was the director of the film born?"
        max_new = len(script) + 8
    else:
        script = list(inputs.answer)
        text = read_input(lm, inputs.task, length)
        max_new = len(script) + 8
    modes = inputs.modes
    runs: dict[str, list[RunResult]] = {m: [] for m in modes}
    for rep in range(cfg.repeats):
        order = list(modes[rep % len(modes):]) + list(modes[:rep % len(modes)])
        for mode in order:
            runs[mode].append(run_once(engines[mode], lm, inputs, mode, script=script, text=text,
                                       retrievals=retrievals, max_new=max_new))
    cell: dict[str, Any] = {"scenario": scenario, "model": model, "query_tokens": length,
                            "retrievals": retrievals, "doc_tokens": inputs.doc_tokens,
                            "prompt_tokens": runs[modes[0]][0].forward_tokens["prompt"], "modes": {},
                            "speedup": {}}
    if scenario == "read":
        cell["query_tokens_read"] = len(lm.ptok(inputs.task).encode_data(text))
    for mode, rs in runs.items():
        first = rs[0]
        if any(r.forward_tokens != first.forward_tokens for r in rs):
            raise BenchError(f"{mode}: forward tokens differ between repeats of one cell")
        gen = first.forward_tokens["prompt"] + first.forward_tokens["generated"]
        phases = sorted({p for r in rs for p in r.phase_seconds})
        cell["modes"][mode] = {
            "forward_tokens": first.forward_tokens,
            # What each retrieval costs beyond writing the text: the inserted document, plus any
            # re-encoding (for the pipeline, tokens of its own retriever).
            "extra_tokens_per_retrieval": (first.forward_tokens["total"] - gen) / retrievals,
            "seconds": {"median": round(_median([r.wall for r in rs]), 5),
                        "runs": [round(r.wall, 5) for r in rs],
                        "by_phase": {p: round(_median([r.phase_seconds.get(p, 0.0) for r in rs]), 5)
                                     for p in phases}},
            "cpu_seconds": {"median": round(_median([r.cpu for r in rs]), 5), "runs": [round(r.cpu, 5) for r in rs],
                            "query_reencoding": round(_median([r.reencode_cpu for r in rs]), 5)},
            "to_first_search": {"cpu": round(_median([r.to_search_cpu for r in rs]), 5),
                                "wall": round(_median([r.to_search_wall for r in rs]), 5)},
        }
        if first.layer_groups is not None:
            if any(r.layer_groups != first.layer_groups for r in rs):
                raise BenchError(f"{mode}: forward tokens per layer group differ between repeats of one cell")
            cell["modes"][mode]["layer_groups"] = first.layer_groups
    if "imprag" in runs and DEFAULT_MODE in runs:
        cell["imprag"] = imprag_summary(engines["imprag"], runs["imprag"], runs[DEFAULT_MODE])
    if DEFAULT_MODE in runs:
        for b in BASELINE_NAMES:
            if b in runs:
                pairs = list(zip(runs[b], runs[DEFAULT_MODE]))
                wall = round(_median([x.wall / o.wall for x, o in pairs]), 4)
                cpu = round(_median([x.cpu / max(o.cpu, 1e-9) for x, o in pairs]), 4)
                cell.setdefault("speedup_wall", {})[b] = wall
                cell.setdefault("speedup_cpu", {})[b] = cpu
                cell["speedup"][b] = cpu if cfg.clock == "cpu" else wall
                # The baselines repeat OneGen's work and add the re-encoding; timing that part
                # inside each run gives a steadier estimate than the ratio of two totals.
                added = [(o.cpu + x.reencode_cpu) / max(o.cpu, 1e-9) for x, o in pairs]
                cell.setdefault("speedup_from_reencoding", {})[b] = round(_median(added), 4)
    return cell


def imprag_summary(engine, imprag: list[RunResult], onegen: list[RunResult]) -> dict[str, Any]:
    """ImpRAG's time to its first search as a share of OneGen's (whose query waits for the whole
    prefill), medians of the ratios within each repeat, beside the bottom group's share of the layers;
    and whether its forward tokens per group are exactly what the design says: the input and the
    generated tokens through every group, the passages through the bottom and middle groups only."""
    split = engine.query_encoder.split
    ft, groups = imprag[0].forward_tokens, imprag[0].layer_groups or {}
    passages, own = ft.get("inserted", 0), ft["prompt"] + ft["generated"]
    expected = {"bottom": own + passages, "middle": own + passages, "top": own}
    return {"bottom": split.bottom, "top": split.top, "n_layers": split.n_layers,
            "bottom_share": round(split.bottom / split.n_layers, 4),
            "to_search_share_cpu": round(_median([i.to_search_cpu / max(o.to_search_cpu, 1e-9)
                                                  for i, o in zip(imprag, onegen)]), 4),
            "to_search_share_wall": round(_median([i.to_search_wall / max(o.to_search_wall, 1e-9)
                                                   for i, o in zip(imprag, onegen)]), 4),
            "layer_groups_expected": expected, "layer_groups_exact": groups == expected}


def _planned_cells(cfg: SweepConfig, model: str) -> tuple[list[tuple[str, int, int]], list[dict]]:
    cells, skipped = [], []
    cap = cfg.max_generated.get(model)
    for length in cfg.lengths:
        for r in cfg.retrievals:
            if cap is not None and length * r > cap and (length, r) not in cfg.extra_cells.get(model, ()):
                skipped.append({"scenario": "generated", "model": model, "query_tokens": length, "retrievals": r,
                                "reason": f"{length * r} generated query tokens per run exceed this model's "
                                          f"budget of {cap} (one decode step each)"})
            else:
                cells.append(("generated", length, r))
    cells += [("read", length, 1) for length in cfg.read_lengths]
    return cells, skipped


def run_sweep(cfg: SweepConfig, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Run every cell of `cfg` and return the report (see SCHEMA)."""
    import torch

    from onegen.loading import pick_device

    started = time.perf_counter()
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    threads_before = torch.get_num_threads()
    if cfg.threads and cfg.device == "cpu":
        torch.set_num_threads(cfg.threads)
    try:
        sizes = model_sizes()
        names = list(dict.fromkeys([*cfg.modes, *(["imprag"] if cfg.imprag else [])]))
        modes = [get_mode(m) for m in names]
        # The separate retriever, loaded once: the engines of the modes that search with it share it.
        separate = next((m.document_encoder for m in modes if m.document_encoder.separate), None)
        encoder = separate.load(cfg.retriever_model, str(pick_device(cfg.device))) if separate else None
        report: dict[str, Any] = {"schema": SCHEMA, "config": _config_dict(cfg), "models": {}, "cells": [],
                                  "skipped": []}
        if encoder is not None:
            report["retriever"] = {"name": encoder.name, "max_tokens": encoder.max_tokens,
                                   "parameters": sum(p.numel() for p in encoder.model.parameters())}
        for key in cfg.models:
            size = sizes[key]
            lm = build_model(size, cfg.device, cfg.context)
            report["models"][key] = {"name": lm.name, "parameters": sum(p.numel() for p in lm.model.parameters()),
                                     "hidden": size.hidden, "layers": size.layers, "vocab": len(lm.tokenizer),
                                     "heads": size.heads, "intermediate": size.intermediate,
                                     "context": cfg.context, "device": str(lm.device),
                                     "dtype": str(lm.dtype).replace("torch.", "")}
            engines = {m.name: m.make_engine(lm, cfg.retriever_model) for m in modes}
            for engine in engines.values():
                engine.query_encoder = CpuTimedQuery(engine.query_encoder)
            inputs = {"generated": make_inputs(lm, "multi-hop", engines, cfg),
                      "read": make_inputs(lm, "single-hop", engines, cfg)}
            cells, skipped = _planned_cells(cfg, key)
            report["skipped"] += skipped
            # One untimed run per scenario: first calls allocate and warm caches.
            for scenario in SCENARIOS:
                one = SweepConfig(**{**asdict(cfg), "repeats": 1})
                measure_cell(engines, lm, inputs[scenario], one, model=key, scenario=scenario, length=8, retrievals=1)
            for i, (scenario, length, r) in enumerate(cells):
                cell = measure_cell(engines, lm, inputs[scenario], cfg, model=key, scenario=scenario, length=length,
                                    retrievals=r)
                report["cells"].append(cell)
                log(f"[{key} {i + 1}/{len(cells)}] {scenario:9s} L={length:<5d} R={r}  "
                    + "  ".join(f"{m} {c['cpu_seconds']['median']:.3f}s cpu {c['seconds']['median']:.3f}s wall"
                                for m, c in cell["modes"].items())
                    + "  speedup " + ", ".join(f"{b} {s:.2f}x" for b, s in cell["speedup"].items()))
            del engines, lm
        report["per_token_seconds"] = per_token_costs(report)
        report["checks"] = checks(report)
        report["machine"] = machine_info(cfg, load_start)
        report["seconds_total"] = round(time.perf_counter() - started, 1)
        return report
    finally:
        torch.set_num_threads(threads_before)


def _config_dict(cfg: SweepConfig) -> dict[str, Any]:
    d = asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def machine_info(cfg: SweepConfig, load_start: float | None) -> dict[str, Any]:
    """The shared machine description (threads as set for the sweep) and the load average."""
    from . import report as bench_report

    info = bench_report.machine_info(cfg.device)
    if load_start is not None:
        info["load_average_start"] = round(load_start, 2)
        info["load_average_end"] = round(os.getloadavg()[0], 2)
    return info


def per_token_costs(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """CPU seconds per token of writing (OneGen's whole run over its generated tokens: one decode
    step each, plus its share of prompt and documents) and of re-encoding (the two-pass query
    encoder's CPU time over its tokens), medians over the generated cells: their ratio bounds what
    re-encoding a written query can add."""
    out: dict[str, dict[str, float]] = {}
    for model in report["models"]:
        decode, reencode = [], []
        for c in report["cells"]:
            if c["model"] != model or c["scenario"] != "generated":
                continue
            # Re-encoding by the generator itself: the two-pass baseline.
            one, two = c["modes"].get(DEFAULT_MODE), c["modes"].get("two-pass")
            if one:
                decode.append(one["cpu_seconds"]["median"] / one["forward_tokens"]["generated"])
            if two and two["forward_tokens"]["query_reencoding"]:
                reencode.append(two["cpu_seconds"]["query_reencoding"] / two["forward_tokens"]["query_reencoding"])
        if decode and reencode:
            out[model] = {"decode": round(_median(decode), 6), "reencode": round(_median(reencode), 6),
                          "decode_over_reencode": round(_median(decode) / max(_median(reencode), 1e-9), 1)}
    return out


# -- the claim's checks -----------------------------------------------------------------------------

METRICS = {"speedup": "measured", "speedup_from_reencoding": "re-encoding estimate"}


def checks(report: dict[str, Any]) -> dict[str, Any]:
    """The goals, checked on the measured cells, by the headline speedup and by the re-encoding
    estimate (each with the cells or series that break it)."""
    cells = report["cells"]
    slower = {m: [_cell_name(c, b) for c in cells for b, s in c.get(m, {}).items() if s <= 1.0] for m in METRICS}
    ranges = {m: [min(v), max(v)] if (v := [s for c in cells for s in c.get(m, {}).values()]) else None
              for m in METRICS}
    only_docs = []
    for c in cells:
        o = c["modes"].get(DEFAULT_MODE)
        if o is None:
            continue
        ft = o["forward_tokens"]
        ok = (ft["query_reencoding"] == 0 and ft["total"] == ft["prompt"] + ft["generated"] + ft["inserted"]
              and ft["inserted"] == c["retrievals"] * c["doc_tokens"]
              and o["extra_tokens_per_retrieval"] == c["doc_tokens"])
        if not ok:
            only_docs.append(_cell_name(c))
    grows_l, grows_r = [], []
    for series, key, other in ((grows_l, "query_tokens", "retrievals"), (grows_r, "retrievals", "query_tokens")):
        groups: dict[tuple, list[dict]] = {}
        for c in cells:
            if c["scenario"] == "generated" or key == "query_tokens":
                groups.setdefault((c["scenario"], c["model"], c[other]), []).append(c)
        for (scenario, model, fixed), group in sorted(groups.items()):
            group.sort(key=lambda c: c[key])
            if len(group) < 2:
                continue
            for metric in METRICS:
                for b in BASELINE_NAMES:
                    s = [c.get(metric, {}).get(b) for c in group]
                    if None in s:
                        continue
                    series.append({"scenario": scenario, "model": model, other: fixed, "baseline": b,
                                   "metric": metric, key: [c[key] for c in group], "speedup": s,
                                   "last_above_first": s[-1] > s[0],
                                   "monotonic": all(y >= x for x, y in zip(s, s[1:]))})
    target = [{"model": c["model"], "speedup_two_pass": c["speedup"].get("two-pass"),
               "reencoding_estimate": c.get("speedup_from_reencoding", {}).get("two-pass"),
               "met": (c["speedup"].get("two-pass") or 0) >= TARGET["speedup"]}
              for c in cells if c["scenario"] == "generated" and c["query_tokens"] == TARGET["query_tokens"]
              and c["retrievals"] == TARGET["retrievals"]]
    return {
        "onegen_faster_in_every_cell": not slower["speedup"], "cells_not_faster": slower["speedup"],
        "onegen_less_work_in_every_cell": not slower["speedup_from_reencoding"],
        "speedup_range": ranges,
        "onegen_adds_only_the_document": not only_docs, "cells_with_extra_tokens": only_docs,
        "advantage_vs_query_length": grows_l, "advantage_vs_retrievals": grows_r,
        "target": {**TARGET, "cells": target},
        "imprag": imprag_checks(cells),
    }


def imprag_checks(cells: list[dict]) -> dict[str, Any] | None:
    """ImpRAG's time to the first search against the bottom group's share of the layers, per model
    at its longest input (where the prompt's fixed costs weigh least), and whether its forward tokens
    per group were exact in every cell."""
    mine = [c for c in cells if "imprag" in c]
    if not mine:
        return None
    longest: dict[str, dict] = {}
    for c in mine:
        if c["query_tokens"] >= longest.get(c["model"], {"query_tokens": -1})["query_tokens"]:
            longest[c["model"]] = c
    return {"groups_exact_in_every_cell": all(c["imprag"]["layer_groups_exact"] for c in mine),
            "cells_not_exact": [_cell_name(c) for c in mine if not c["imprag"]["layer_groups_exact"]],
            "longest": [{"model": m, "query_tokens": c.get("query_tokens_read", c["query_tokens"]),
                         "share_cpu": c["imprag"]["to_search_share_cpu"],
                         "share_wall": c["imprag"]["to_search_share_wall"],
                         "bottom_share": c["imprag"]["bottom_share"]} for m, c in longest.items()]}


def _cell_name(c: dict, baseline: str | None = None) -> str:
    s = f"{c['model']} {c['scenario']} L={c['query_tokens']} R={c['retrievals']}"
    return f"{s} vs {baseline}" if baseline else s


# -- the table --------------------------------------------------------------------------------------

def markdown(report: dict[str, Any], image: str | None = PLOT.name) -> str:
    """The benchmarks.md section: setup, the goals, and one table per scenario."""
    m = report["machine"]
    cfg = report["config"]
    ret = report.get("retriever")
    clock = "CPU" if cfg.get("clock", "cpu") == "cpu" else "wall"
    busy = "load_average_start" in m and max(m["load_average_start"], m["load_average_end"]) > 0.8 * (m["cpus"] or 1)
    lines = [
        "OneGen, two-pass (same model, query re-encoded) and pipeline (separate retriever) on the same "
        "random Llama-style models; the token choice is scripted, every forward pass is real (see "
        "`benchmarks/single_pass.py`).",
        "",
        (f"Load average {m['load_average_start']} at the start and {m['load_average_end']} at the end on "
         f"{m['cpus']} CPUs" + (": other work shared the cores, so wall times are inflated and noisy; the "
                                "headline is CPU time, which counts this process's own work" if busy else "")
         + ". " if "load_average_start" in m else "")
        + f"{cfg['repeats']} repeats per cell; the sweep took {report['seconds_total'] / 60:.1f} min.",
        "",
        "Models: " + "; ".join(f"{k}: {v['parameters'] / 1e6:.1f} M parameters (hidden {v['hidden']}, "
                               f"{v['layers']} layers, vocab {v['vocab']}), {v['dtype']}"
                               for k, v in report["models"].items())
        + (f". Pipeline retriever: {ret['name']} ({ret['parameters'] / 1e6:.1f} M parameters, reads at most "
           f"{ret['max_tokens']} tokens)." if ret else "."),
        "",
        "Forward tokens are per run: the generator's prompt + generated + inserted tokens, and the "
        "re-encoding (two-pass: the generator's own tokens again; pipeline: tokens of the retriever). "
        "`+ per retrieval` is what one retrieval costs the generator beyond writing the text. Times are "
        "medians over repeats. Speedups are medians over repeats of (baseline time / OneGen time in the same "
        "repeat), by CPU time and by wall time; `re-enc.` is (OneGen CPU time + the baseline's re-encoding "
        "CPU time, timed inside its run) / OneGen CPU time: every other piece of work is the same in all "
        "modes, so this estimate has the least noise. In the read scenario L is the exact number of tokens "
        "of the user text; the two-pass baseline re-encodes the whole prompt.",
        "",
        "ImpRAG (no retrieval token: the query is the input's attention query after the bottom layer group) "
        "runs in the read scenario too, at the model's default layer groups, reading its top passage in the "
        "middle group as the others insert theirs. `to first search` is the time from the run's start to "
        "its first query vector, ready to search (CPU time; the engine's wall timers give the prompt's "
        "prefill plus the query's encoding): OneGen's waits for the whole prefill, ImpRAG's for the bottom "
        "group's. Its share is the median over repeats of ImpRAG's time over OneGen's in the same repeat, "
        "set beside the bottom group's share of the layers; fixed costs of a run (tokenizing, the first "
        "layer's set-up) weigh most at short inputs. Tokens by group are counted by the mode's forward.",
        "",
        _checks_md(report["checks"], clock),
    ]
    costs = report.get("per_token_seconds") or {}
    if costs:
        lines += ["", "Why a written query gains little: every mode writes it one decode step per token, and "
                  "re-encoding it is one prefill call. Measured here (CPU time), per token: " + "; ".join(
                      f"{m}: writing {1000 * c['decode']:.2f} ms, re-encoding {1000 * c['reencode']:.3f} ms "
                      f"({c['decode_over_reencode']:g}x cheaper)" for m, c in costs.items())
                  + ". A query read from the input is prefilled, so re-encoding it doubles the largest cost."]
    for scenario, title in (("generated", "Query written by the model (multi-hop protocol: L generated tokens, "
                                          "then the retrieval token, R times)"),
                            ("read", "Query read from the input (single-hop protocol: L prompt tokens, "
                                     "one retrieval)")):
        cells = [c for c in report["cells"] if c["scenario"] == scenario]
        if not cells:
            continue
        # A mode with a separate retriever shows its retriever's tokens; the generator's are OneGen's.
        modes = [get_mode(m) for m in EVERY_TASK_MODES]
        token_keys = [(m.name, "query_reencoding" if m.document_encoder.separate else "total") for m in modes]
        same_model = [m.name for m in modes if not m.document_encoder.separate]
        names = " / ".join(m.short_label for m in modes)
        header = ["model", "L", "R", "doc",
                  "forward tokens: " + " / ".join(m.short_label + ("'s retriever" if m.document_encoder.separate
                                                                   else "") for m in modes),
                  "+ per retrieval: " + " / ".join(get_mode(m).short_label for m in same_model),
                  f"CPU s: {names}", f"wall s: {names}",
                  *(f"vs {b}: CPU, wall, re-enc." for b in BASELINE_NAMES)]
        imprag = any("imprag" in c for c in cells)
        if imprag:
            header += ["to first search, CPU s: OneGen / ImpRAG", "ImpRAG's share: CPU, wall (bottom layers)",
                       "ImpRAG tokens: bottom / middle / top"]
        lines += ["", f"#### {title}", "", "| " + " | ".join(header) + " |",
                  "|---|" + "---:|" * (len(header) - 1)]
        for c in cells:
            md = c["modes"]

            def get(mode: str, *keys: str):
                x = md.get(mode)
                for k in keys:
                    x = None if x is None else x.get(k)
                return x

            def speeds(b: str) -> str:
                return ", ".join(_speed(c.get(k, {}).get(b))
                                 for k in ("speedup_cpu", "speedup_wall", "speedup_from_reencoding"))

            lines.append("| " + " | ".join([
                c["model"], str(c.get("query_tokens_read", c["query_tokens"])), str(c["retrievals"]),
                str(c["doc_tokens"]),
                " / ".join(_fmt(get(mode, "forward_tokens", key)) for mode, key in token_keys),
                " / ".join(_fmt(get(mode, "extra_tokens_per_retrieval")) for mode in same_model),
                " / ".join(_fmt(get(mode, "cpu_seconds", "median"), 3) for mode in EVERY_TASK_MODES),
                " / ".join(_fmt(get(mode, "seconds", "median"), 3) for mode in EVERY_TASK_MODES),
                *(speeds(b) for b in BASELINE_NAMES),
                *(_imprag_columns(c) if imprag else ())]) + " |")
    if report["skipped"]:
        by_model: dict[str, list[str]] = {}
        for sk in report["skipped"]:
            by_model.setdefault(sk["model"], []).append(f"L={sk['query_tokens']} R={sk['retrievals']}")
        lines += ["", "Not measured (generated query tokens per run above the model's budget; each is one decode "
                  "step, and the whole grid would take hours on this machine): "
                  + "; ".join(f"{m} (budget {cfg['max_generated'].get(m)}): {', '.join(v)}"
                              for m, v in by_model.items()) + "."]
    if image:
        lines += ["", f"![speedup of OneGen over the baselines]({image})"]
    return "\n".join(lines) + "\n"


def _imprag_columns(c: dict) -> list[str]:
    im = c.get("imprag")
    if im is None:
        return ["-", "-", "-"]
    groups = c["modes"]["imprag"].get("layer_groups") or {}
    return [" / ".join(_fmt(c["modes"][m]["to_first_search"]["cpu"], 4) for m in (DEFAULT_MODE, "imprag")),
            f"{im['to_search_share_cpu']:.2f}, {im['to_search_share_wall']:.2f} "
            f"({im['bottom']}/{im['n_layers']} = {im['bottom_share']:.2f})",
            " / ".join(_fmt(groups.get(g)) for g in ("bottom", "middle", "top"))
            + ("" if im["layer_groups_exact"] else " (NOT as designed)")]


def _checks_md(ch: dict[str, Any], clock: str = "CPU") -> str:
    t = ch["target"]
    target = "; ".join(f"{c['model']}: {_speed(c['speedup_two_pass'])} measured, "
                       f"{_speed(c.get('reencoding_estimate'))} by the re-encoding estimate "
                       f"({'met' if c['met'] else 'NOT met'})" for c in t["cells"]) or "cell not measured"
    scenarios = {"generated": "written queries", "read": "queries read from the input"}

    def trend(series: list[dict]) -> str:
        parts = []
        for scenario, label in scenarios.items():
            for metric, name in METRICS.items():
                sel = [s for s in series if s["scenario"] == scenario and s["metric"] == metric]
                if sel:
                    up = sum(1 for s in sel if s["last_above_first"])
                    mono = sum(1 for s in sel if s["monotonic"])
                    parts.append(f"{label}, {name}: {up} of {len(sel)} series end higher than they start "
                                 f"({mono} rise monotonically)")
        return "; ".join(parts) or "not enough cells"

    faster = ch["onegen_faster_in_every_cell"]
    lo_hi = ch.get("speedup_range", {})
    rng = lambda m: f"{lo_hi[m][0]:.2f}x to {lo_hi[m][1]:.2f}x" if lo_hi.get(m) else "-"  # noqa: E731
    lines = [
        f"Goals (measured = {clock} time):",
        f"- OneGen faster than both baselines in every cell: measured **{'yes' if faster else 'no'}** "
        f"(speedups {rng('speedup')}"
        + ("" if faster else f"; not faster in {len(ch['cells_not_faster'])} comparisons: "
           + ", ".join(ch["cells_not_faster"])) + "); by the re-encoding estimate "
        f"**{'yes' if ch.get('onegen_less_work_in_every_cell') else 'no'}** ({rng('speedup_from_reencoding')})",
        f"- advantage grows with query length: {trend(ch['advantage_vs_query_length'])}",
        f"- advantage grows with retrievals per answer: {trend(ch['advantage_vs_retrievals'])}",
        f"- written query, L={t['query_tokens']}, R={t['retrievals']}: at least {t['speedup']}x faster than "
        f"two-pass: {target}",
        f"- OneGen adds no forward tokens per retrieval beyond the inserted document: "
        f"**{'yes' if ch['onegen_adds_only_the_document'] else 'no'}** (exact token counts, every cell)",
    ]
    im = ch.get("imprag")
    if im:
        lines += [
            "- ImpRAG's time to the first search is the bottom group's share of a full prefill (OneGen's time "
            "to its search), at the longest input: " + "; ".join(
                f"{x['model']}, L={x['query_tokens']}: {x['share_cpu']:.2f} by CPU time, {x['share_wall']:.2f} "
                f"by the engine's wall timers, against {x['bottom_share']:.2f} of the layers" for x in im["longest"]),
            "- ImpRAG's forward tokens per layer group are exact (input and answer through every group, the "
            f"passage through the bottom and middle groups only): **{'yes' if im['groups_exact_in_every_cell'] else 'no'}**"
            + ("" if im["groups_exact_in_every_cell"] else f" (not in {', '.join(im['cells_not_exact'])})"),
        ]
    return "\n".join(lines)


def _fmt(x, digits: int = 0) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and digits == 0:
        return f"{x:g}"
    return f"{x:.{digits}f}" if digits else f"{x}"


def _speed(x) -> str:
    return "-" if x is None else f"{x:.2f}x"


# -- the plot (PIL: matplotlib is not a dependency) -------------------------------------------------

_COLORS = {1: (31, 119, 180), 2: (255, 127, 14), 4: (44, 160, 44), 8: (214, 39, 40)}


def plot(report: dict[str, Any], path: Path) -> Path:
    """Speedup vs query length: one panel per (model, baseline), one line per retrieval count,
    the read scenario dashed."""
    import math

    from PIL import Image, ImageDraw, ImageFont

    models = list(report["models"])
    baselines = [b for b in BASELINE_NAMES if any(b in c["speedup"] for c in report["cells"])]
    if not models or not baselines:
        raise BenchError("nothing to plot")
    pw, ph, ml, mr, mt, mb = 460, 300, 62, 16, 34, 44
    legend_h = 54
    img = Image.new("RGB", (pw * len(baselines), ph * len(models) + legend_h + 30), "white")
    d = ImageDraw.Draw(img)
    font = _font(ImageFont, 13)
    small = _font(ImageFont, 11)
    clock = "CPU" if report["config"].get("clock", "cpu") == "cpu" else "wall"
    d.text((10, 8), f"OneGen speedup over each baseline ({clock} time, median of paired runs)", fill="black",
           font=font)
    speeds = [s for c in report["cells"] for s in c["speedup"].values()]
    lo = min(1.0, min(speeds)) * 0.97
    hi = max(1.0, max(speeds)) * 1.03
    lengths = sorted({c["query_tokens"] for c in report["cells"]})
    lx0, lx1 = math.log2(min(lengths)), math.log2(max(lengths))
    for row, model in enumerate(models):
        for col, base in enumerate(baselines):
            x0, y0 = col * pw + ml, 30 + row * ph + mt
            w, h = pw - ml - mr, ph - mt - mb

            def px(L, s):
                fx = 0.5 if lx1 == lx0 else (math.log2(L) - lx0) / (lx1 - lx0)
                return x0 + fx * w, y0 + h - (s - lo) / (hi - lo) * h

            d.rectangle([x0, y0, x0 + w, y0 + h], outline=(120, 120, 120))
            d.text((x0, y0 - 18), f"{model} model: OneGen vs {base}", fill="black", font=font)
            for tick in axis_ticks(lo, hi):
                _, ty = px(lengths[0], tick)
                d.line([x0 - 4, ty, x0, ty], fill=(120, 120, 120))
                d.text((x0 - 44, ty - 7), f"{tick:.2f}x", fill=(60, 60, 60), font=small)
            _, y1 = px(lengths[0], 1.0)
            d.line([x0, y1, x0 + w, y1], fill=(170, 170, 170))
            for L in lengths:
                tx, _ = px(L, lo)
                d.line([tx, y0 + h, tx, y0 + h + 4], fill=(120, 120, 120))
                d.text((tx - 10, y0 + h + 6), str(L), fill=(60, 60, 60), font=small)
            d.text((x0 + w // 2 - 60, y0 + h + 22), "query length (tokens)", fill=(60, 60, 60), font=small)
            for scenario, R, color, dashed in _series(report):
                pts = sorted((c["query_tokens"], c["speedup"][base]) for c in report["cells"]
                             if c["model"] == model and c["scenario"] == scenario and c["retrievals"] == R
                             and base in c["speedup"])
                xy = [px(L, s) for L, s in pts]
                for a, b in zip(xy, xy[1:]):
                    _line(d, a, b, color, dashed)
                for x, y in xy:
                    d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
    ly = 30 + ph * len(models) + 8
    x = 12
    for scenario, R, color, dashed in _series(report):
        label = f"R={R} (query written)" if scenario == "generated" else "query read in the prompt (R=1)"
        _line(d, (x, ly + 8), (x + 28, ly + 8), color, dashed)
        d.text((x + 34, ly + 1), label, fill="black", font=small)
        x += 54 + int(d.textlength(label, font=small))
        if x > img.width - 200:
            x, ly = 12, ly + 20
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def _series(report: dict[str, Any]):
    rs = sorted({c["retrievals"] for c in report["cells"] if c["scenario"] == "generated"})
    out = [("generated", r, _COLORS.get(r, (100, 100, 100)), False) for r in rs]
    if any(c["scenario"] == "read" for c in report["cells"]):
        out.append(("read", 1, (0, 0, 0), True))
    return out


def _line(d, a, b, color, dashed: bool) -> None:
    if not dashed:
        d.line([a, b], fill=color, width=2)
        return
    (xa, ya), (xb, yb) = a, b
    n = max(1, int(((xb - xa) ** 2 + (yb - ya) ** 2) ** 0.5 // 8))
    for i in range(0, n, 2):
        t0, t1 = i / n, min(1.0, (i + 1) / n)
        d.line([(xa + (xb - xa) * t0, ya + (yb - ya) * t0), (xa + (xb - xa) * t1, ya + (yb - ya) * t1)],
               fill=color, width=2)


def _font(ImageFont, size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


# -- command line -----------------------------------------------------------------------------------

HELP = "OneGen vs two-pass and pipeline retrieval: forward tokens and time by query length and retrievals"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Own options; --quick, --json, --write and --device come from the bench dispatcher."""
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests: seconds, not minutes
    p.add_argument("--output", metavar="FILE", help="also save the JSON report to FILE")
    p.add_argument("--plot", metavar="PNG",
                   help=f"where --write draws the plot (default: {PLOT.name} beside the benchmarks file)")
    p.add_argument("--sweep", metavar="FILE", default=str(SWEEP),
                   help="where --write saves the report the app's Compare tab draws (default: assets/bench/single-pass.json)")
    p.add_argument("--models", metavar="LIST", help="comma-separated model sizes, e.g. 5M (default: 5M,33M; --quick 5M)")
    p.add_argument("--repeats", type=int, metavar="N", help="repeats per cell (default 3; --quick 2)")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default 1: steadier timings)")
    p.add_argument("--clock", choices=("cpu", "wall"),
                   help="the headline time: cpu (default; the process's own work, robust on a shared machine) or wall")
    p.add_argument("--retriever", metavar="MODEL",
                   help="pipeline retriever: a sentence-transformers id or folder (default: all-MiniLM-L6-v2, offline)")


def config_from_args(args: argparse.Namespace) -> SweepConfig:
    preset = "tiny" if getattr(args, "tiny", False) else "quick" if args.quick else "full"
    base = PRESETS[preset]
    changes: dict[str, Any] = {"device": args.device}
    if args.repeats is not None:
        if args.repeats < 1:
            raise BenchError("--repeats must be at least 1")
        changes["repeats"] = args.repeats
    if args.threads is not None:
        changes["threads"] = args.threads
    if args.models:
        models = tuple(m.strip() for m in args.models.split(",") if m.strip())
        unknown = [m for m in models if m not in ("5M", "33M")]
        if unknown or not models:
            raise BenchError(f"unknown model size {', '.join(unknown) or args.models!r}; use 5M and/or 33M")
        changes["models"] = models
    if args.retriever:
        changes["retriever_model"] = args.retriever
    if args.clock:
        changes["clock"] = args.clock
    return SweepConfig(**{**asdict(base), **changes})


def main(args: argparse.Namespace) -> int:
    try:
        cfg = config_from_args(args)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    log(f"single-pass benchmark ({cfg.preset}): models {', '.join(cfg.models)}, device {cfg.device}")
    result = run_sweep(cfg, log)
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=1))
    if args.write:
        from . import report as bench_report

        doc = Path(args.write if isinstance(args.write, str) else bench_report.DEFAULT_PATH)
        # The plot sits beside the benchmarks file so the section's relative link holds.
        png = plot(result, Path(args.plot) if args.plot else doc.parent / PLOT.name)
        result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        sweep = Path(args.sweep)
        atomic_write(sweep, json.dumps(result, indent=1))
        where = bench_report.write_section(SECTION, markdown(result, image=os.path.relpath(png, doc.parent)),
                                           command=bench_report.command_line(), machine=result["machine"],
                                           title=TITLE, path=doc)
        log(f"wrote the {SECTION} section of {where}, {png} and {sweep}")
    if args.json:
        print(json.dumps(result))
    elif not args.write:
        print(markdown(result))
    else:
        print(_checks_md(result["checks"], "CPU" if cfg.clock == "cpu" else "wall"))
    return 0
