"""`python -m onegen evaluate`: run a dataset through the engine, write result lines, print metrics.

Progress and notes go to stderr; the last line of stdout is one metrics JSON object.

    python -m onegen evaluate --task multi-hop --data hotpot_dev_distractor.json --out result.jsonl
    python -m onegen evaluate --task entity-linking --data kore50.jsonl --index runs/entities --limit 20
    python -m onegen evaluate --task multi-hop --data dev.json --control random-paragraph --seed 1
"""
from __future__ import annotations

import json
import sys

from ..modes import BASELINE_NAMES, DEFAULT_MODE, MODE_NAMES, MODES, get_mode
from ..metrics import ELMetrics, QAMetrics
from ..tasks import TASK_NAMES, get_task
from .run import add_decoding_arguments, decoding_settings


def add_arguments(p) -> None:
    p.add_argument("--task", required=True, choices=TASK_NAMES)
    p.add_argument("--data", required=True, help="test file: EL jsonl, HotpotQA/2Wiki JSON, or Self-RAG/PopQA items")
    p.add_argument("--model", help="registry name, hub id or folder (default: the embedded model or $ONEGEN_MODEL)")
    p.add_argument("--index", help="index folder (default: the model's registry index for the task)")
    p.add_argument("--candidates", choices=("context", "index"),
                   help="QA documents: each item's own paragraphs/ctxs (default) or a global index; "
                        "entity linking always uses an index")
    p.add_argument("--aliases", help="2WikiMultihopQA id_aliases.json: extra gold answers")
    p.add_argument("--limit", type=int, help="only the first N examples (after --stride and --shard)")
    p.add_argument("--stride", type=int, default=1,
                   help="take every K-th example: a smaller sample that keeps a file's mix of types")
    p.add_argument("--shard", metavar="K/N",
                   help="only examples K, K+N, K+2N, ... of the selection (0 <= K < N). On a CPU, N processes "
                        "of one thread each (OMP_NUM_THREADS=1), each with its own --out, can decode faster together "
                        "than one with N threads (docs/embedded-models.md); concatenate their --out files and rerun on the whole file "
                        "without --shard to score the selection (every line is resumed; the file is put back in data order)")
    p.add_argument("--out", help="result jsonl (resumed when it exists)")
    p.add_argument("--batch-size", type=int,
                   help="examples decoded together, one forward call a step for all (docs/batching.md); default: "
                        "as many as the free memory holds, at most 32 (printed); 1 decodes one at a time")
    p.add_argument("--top-k", type=int, default=5, help="hits kept per retrieval (default 5)")
    p.add_argument("--control", choices=("random-paragraph",),
                   help="replace every retrieval by random documents from the same pool")
    p.add_argument("--mode", choices=MODE_NAMES, default=DEFAULT_MODE,
                   help=f"{DEFAULT_MODE} (default), or a baseline: "
                        + " or ".join(MODES[b].label for b in BASELINE_NAMES)
                        + "; compare the result files in the app")
    p.add_argument("--retriever", help="the sentence encoder of a mode with a separate retriever "
                                       "(default: the offline all-MiniLM-L6-v2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random control (default 0)")
    p.add_argument("--max-new-tokens", type=int, help="generation limit (default: the protocol's)")
    add_decoding_arguments(p)
    p.add_argument("--retry-errors", action="store_true", help="redo examples whose line in --out holds an error")
    p.add_argument("--skip-bad", action="store_true", help="skip malformed items of --data instead of stopping")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--dtype", help="float32, bfloat16 or float16 (default: bf16 on GPU, fp32 on CPU)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def main(args) -> int:
    from ..baselines import make_engine
    from ..datasets import load_dataset
    from ..engine import RunSettings
    from ..evaluation import DataSource, EvaluationSettings, evaluate
    from ..loading import load_model

    if args.limit is not None and args.limit < 1:
        return _fail("--limit must be at least 1")
    if args.stride < 1:
        return _fail("--stride must be at least 1")
    if args.top_k < 1:
        return _fail("--top-k must be at least 1")
    try:
        shard, shards = parse_shard(args.shard)
    except ValueError as e:
        return _fail(str(e))
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        return _fail("--max-new-tokens must be at least 1")
    task = get_task(args.task)
    try:
        get_mode(args.mode).check_task(args.task)
    except ValueError as e:
        return _fail(str(e))
    if args.candidates is not None and args.candidates not in task.candidate_modes:
        return _fail(f"{task.label} takes --candidates {' or '.join(task.candidate_modes)}; "
                     f"--candidates {args.candidates} does not apply")
    if args.aliases and not task.takes_aliases:
        return _fail(f"--aliases applies to {' and '.join(t for t in TASK_NAMES if get_task(t).takes_aliases)} "
                     "files only")
    try:
        data = load_dataset(args.data, args.task, skip_bad=args.skip_bad, aliases_path=args.aliases)
    except (OSError, ValueError) as e:  # DatasetFormatError, and files that are missing or not JSON
        return _fail(str(e))
    for _, message in data.errors:
        print(f"skipped: {message}", file=sys.stderr)
    for message in data.warnings:
        print(f"warning: {args.data}: {message}", file=sys.stderr)
    examples, source = DataSource.select(data, stride=args.stride, shard=shard, shards=shards, limit=args.limit,
                                         aliases=args.aliases)
    if not examples:
        # Before the model loads: a run over nothing has no score to report.
        if not data.examples:
            return _fail(f"no valid example to run: all {len(data.errors)} items of {args.data} were skipped "
                         f"(the first: {data.errors[0][1]})")
        return _fail(f"the selection is empty: {len(data.examples)} examples, --stride {args.stride}"
                     + (f", --shard {args.shard}" if args.shard else "") + " leave none")
    try:
        lm = load_model(args.model, task=args.task, device=args.device, dtype=args.dtype)
    except (OSError, ValueError) as e:  # a model folder that is missing or broken, an unknown device or dtype
        return _fail(str(e))
    settings = RunSettings(max_new_tokens=args.max_new_tokens, **decoding_settings(args))
    if args.retriever and not get_mode(args.mode).document_encoder.separate:
        separate = ", ".join(m.name for m in MODES.values() if m.document_encoder.separate)
        return _fail(f"--retriever applies to modes with a separate retriever ({separate}) only")
    try:
        engine = make_engine(lm, args.mode, args.retriever)
    except (OSError, ValueError) as e:  # BaselineError, and a retriever that will not load
        return _fail(str(e))
    evaluation = EvaluationSettings(candidates=args.candidates or task.default_candidates, control=args.control,
                                    top_k=args.top_k, seed=args.seed, run=settings)
    from ..batch import BatchMemoryError, check_memory, default_batch_size

    own_decoder = engine.own_decoder  # ImpRAG's layer-split forward decodes one example at a time
    if own_decoder and (args.batch_size or 1) > 1:
        return _fail(f"--mode {args.mode} decodes one example at a time (its own decoder); use --batch-size 1")
    batch_size = 1 if own_decoder else args.batch_size if args.batch_size is not None else default_batch_size(lm)
    try:
        check_memory(lm, min(batch_size, len(examples)))
    except BatchMemoryError as e:
        return _fail(str(e))
    if args.batch_size is None and not own_decoder:
        print(f"batch size {batch_size} (from {lm.name} and the free memory; set it with --batch-size)",
              file=sys.stderr)
    report = evaluate(engine, args.task, examples, evaluation, index=args.index, out=args.out,
                      progress=not args.quiet, retry_errors=args.retry_errors, source=source, batch_size=batch_size)
    metrics = {"data": str(args.data), **report.metrics.to_dict()}
    if report.out is not None:
        metrics["out"] = str(report.out)
        print(f"result lines: {report.out}", file=sys.stderr)
    print(_summary(report.metrics), file=sys.stderr)
    sys.stdout.flush()
    print(json.dumps(metrics, ensure_ascii=False))
    return 0


def parse_shard(text: str | None) -> tuple[int, int]:
    """"K/N" -> (K, N); None -> (0, 1), the whole selection."""
    if text is None:
        return 0, 1
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard takes K/N, e.g. 0/2, not {text!r}") from None
    if not 0 <= k < n:
        raise ValueError(f"--shard {text}: K must be at least 0 and less than N")
    return k, n


def _summary(m: ELMetrics | QAMetrics) -> str:
    head = f"{m.task}: {m.examples} examples, {m.errors} errors"
    if m.skipped:
        head += f", {m.skipped} item{'s' if m.skipped != 1 else ''} skipped"
    if isinstance(m, ELMetrics):
        line = f"{head}; P {m.precision:.3f} R {m.recall:.3f} F1 {m.f1:.3f}"
        if m.spans is not None:
            acc = m.spans.linking_accuracy
            line += (f"; spans P {m.spans.precision:.3f} R {m.spans.recall:.3f} F1 {m.spans.f1:.3f}"
                     f"; linking accuracy on right spans {'n/a' if acc is None else f'{acc:.3f}'} ({m.spans.tp})")
        return line
    return f"{head}; EM {m.em or 0.0:.3f} F1 {m.f1 or 0.0:.3f}"


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2
