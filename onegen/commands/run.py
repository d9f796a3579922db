"""`python -m onegen run`: one input through the single-pass engine; its steps as they stream, or its Trace JSON.

    python -m onegen run --task multi-hop --example 0
    python -m onegen run --task entity-linking --text "Paris is the capital of France." --top-k 3
    python -m onegen run --task multi-hop --model ./my-model --candidates paragraphs.jsonl --text "..." --json

Bad input or files print one `error: ...` line on stderr and exit 2. Only light modules are
imported at the top so that `--help` and argument errors answer at once; torch and transformers
load inside main().
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path

from ..documents import Document, split_sentences
from ..errors import OneGenError
from ..modes import DEFAULT_MODE, MODE_NAMES, MODES, get_mode
from ..result_checks import CHECKS

GENERATOR_MODES = tuple(n for n in MODE_NAMES if not MODES[n].document_encoder.separate)
from ..tasks import TASK_NAMES
from ..tasks import get_task


class CommandError(OneGenError, ValueError):
    """A problem with the command's arguments or files; the message is for users."""


def whole_number(low: int, high: int | None = None, low_says: str | None = None):
    """An argparse type: a whole number from `low` (to `high`), with a readable refusal."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if high is not None and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        if value < low:
            raise argparse.ArgumentTypeError(f"{low_says or f'must be at least {low}'}, got {value}")
        return value

    return parse


_positive_int = whole_number(1)
_draft_len = whole_number(0, 16)


# On/off decoding options of `run` and `evaluate` (read by `decoding_settings`).
DECODING_SWITCHES = {
    "--transformers-forward":
        "decode with the model's transformers forward instead of the fused Llama decoder "
        "(onegen/fused_llama.py; Llama models on the CPU only); the output is the same either way",
    "--free-copy":
        "entity linking: let the model rewrite the text freely (the authors' loop) instead of "
        "constraining its output to the input plus mention tags",
    "--vectors":
        "keep each retrieval's query vector in the trace (float16, base64: "
        "retrievals[].query_vector in docs/trace.md)",
    "--no-early-close":
        "entity linking, copy-constrained: where the model's first choice leaves the input inside "
        "an open mention, keep copying into the mention (the mask alone) instead of closing it there",
    "--mask-opens":
        "entity linking, copy-constrained: let the mask open a mention where the model wanted "
        "something else (by default a mention starts only where the model chose to start one)",
}


# The settings a model may declare, for `run` and `evaluate`: the input normalization and the
# result checks (onegen/result_checks.py).
RESULT_CHECK_HELP = {
    "input_normalization":
        "off, or normalize: before the run, names of the index typed in other case take the index's "
        "case and an input ending in a letter or digit gets a closing mark (? or .); the trace keeps "
        "each edit",
    "name_alignment":
        "entity linking: check each linked mention's span against the linked entity's name in the input: "
        "off (the spans the model marked), snap (move a mention onto the name where it overlaps it or "
        "begins right after it), strict "
        "(snap, and refuse a link whose mention shares no word with the name)",
    "answer_alignment":
        "QA: off, or snap: an answer found nowhere in the question and the documents the run read, but "
        "one of their phrases with a slip (a letter or two, or cut short), becomes that phrase",
    "comparison_check":
        "multi-hop: off, or recompute: where the chain states a comparison (\"V1 is more than V2, so the "
        "larger one is\"), the option its own values make the answer",
}


def add_decoding_arguments(p: argparse.ArgumentParser) -> None:
    """How the engine decodes; shared by `run` and `evaluate` (see `decoding_settings`)."""
    p.add_argument("--draft-tokens", type=_draft_len, default=2, metavar="N",
                   help="prompt-lookup guesses checked per forward call when decoding greedily (default 2; "
                        "0: one token per call); the output is the same either way")
    for flag, text in DECODING_SWITCHES.items():
        p.add_argument(flag, action="store_true", help=text)
    for key, text in RESULT_CHECK_HELP.items():
        p.add_argument("--" + key.replace("_", "-"), choices=CHECKS[key], default=None,
                       help=text + "; default: the model's own setting, else off (docs/trace.md)")


def decoding_settings(args: argparse.Namespace) -> dict:
    """RunSettings fields from the options of `add_decoding_arguments`."""
    return {"draft_tokens": args.draft_tokens, "copy_input": not args.free_copy,
            "early_close": not args.no_early_close, "model_opens": not args.mask_opens,
            "fused_decoder": not args.transformers_forward, "query_vectors": args.vectors,
            **{key: getattr(args, key) for key in CHECKS}}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, choices=TASK_NAMES)
    p.add_argument("--model", metavar="ID_OR_DIR",
                   help="registry name, hub id or model folder (default: $ONEGEN_MODEL or the embedded model)")
    docs = p.add_mutually_exclusive_group()
    docs.add_argument("--index", metavar="DIR", help="index folder (default: the model's registry index for the task)")
    docs.add_argument("--candidates", metavar="FILE",
                      help="JSON list or JSONL of documents ({title, text} or {title, sentences}) to retrieve "
                           "from instead of an index; encoded once for this run")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="the input: a text to annotate or a question")
    src.add_argument("--example", type=int, metavar="N", help="line N (0-based) of assets/examples/TASK.jsonl")
    # Modes whose documents the generator encodes: they search the model's index or candidates as given.
    p.add_argument("--mode", choices=GENERATOR_MODES, default=DEFAULT_MODE,
                   help=f"retrieval mode (default {DEFAULT_MODE}): "
                        + "; ".join(f"{n}: {MODES[n].label}" for n in GENERATOR_MODES))
    p.add_argument("--top-k", type=_positive_int, default=5, metavar="K", help="hits kept per retrieval (default 5)")
    p.add_argument("--max-new-tokens", type=_positive_int, metavar="N", help="generation limit (default: the protocol's)")
    add_decoding_arguments(p)
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--json", action="store_true", help="print only the Trace JSON (schema onegen-trace/1)")


# -- inputs (no heavy imports) ------------------------------------------------------------------------

def example_text(task: str, n: int, examples_dir: Path | None = None) -> str:
    from .. import registry

    path = (examples_dir or registry.ASSETS / "examples") / f"{task}.jsonl"
    if not path.exists():
        raise CommandError(f"no examples for {task}: {_rel(path)} is missing; give the input with --text")
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not 0 <= n < len(lines):
        raise CommandError(f"example {n} is out of range: {_rel(path)} has {len(lines)} examples "
                           f"(0 to {len(lines) - 1})")
    try:
        text = json.loads(lines[n]).get("text")
    except (json.JSONDecodeError, AttributeError):
        text = None
    if not isinstance(text, str):
        raise CommandError(f"example {n} of {_rel(path)} is not a JSON object with a \"text\" string")
    return text


def read_candidates(path: str | Path, task: str) -> list[Document]:
    """Documents from a JSON list or JSONL: {"title", "text"} or {"title", "sentences"} objects,
    or HotpotQA-style [title, [sentences]] pairs. Multi-hop splits a plain text into sentences
    (one vector per sentence)."""
    path = Path(path)
    if not path.is_file():
        raise CommandError(f"candidates file {path} does not exist")
    raw = path.read_text(encoding="utf-8")
    try:
        items = json.loads(raw)
        if isinstance(items, dict):
            items = [items]
    except json.JSONDecodeError:
        items = []
        for i, line in enumerate(raw.splitlines()):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise CommandError(f"{path} line {i + 1} is not JSON: {e.msg}") from None
    if not isinstance(items, list) or not items:
        raise CommandError(f"{path} holds no documents: expected a JSON list or JSONL of {{title, text}} objects")
    return [_candidate(item, i, path, task) for i, item in enumerate(items)]


def _candidate(item, i: int, path: Path, task: str) -> Document:
    if isinstance(item, list) and len(item) == 2 and isinstance(item[0], str):
        item = {"title": item[0], "sentences": item[1]}
    if not isinstance(item, dict) or not isinstance(item.get("title", ""), str):
        raise CommandError(f"{path} document {i}: expected an object with \"title\" and \"text\" or \"sentences\"")
    doc_id = str(item.get("id", f"c{i}"))
    sentences = item.get("sentences")
    if sentences is not None:
        if not isinstance(sentences, list) or not sentences or not all(isinstance(s, str) for s in sentences):
            raise CommandError(f"{path} document {i}: \"sentences\" must be a non-empty list of strings")
        return Document.from_sentences(doc_id, item.get("title", ""), sentences)
    text = item.get("text")
    if not isinstance(text, str) or not text.strip():
        raise CommandError(f"{path} document {i}: needs a non-empty \"text\" or \"sentences\"")
    # Tasks whose documents carry one vector per sentence need the sentences.
    split = split_sentences(text) if get_task(task).spec.vectors_per_sentence else None
    return Document(id=doc_id, title=item.get("title", ""), text=text, sentences=split or None)


def model_reference(model: str | None) -> str:
    """The model to load; refuses a registry model whose embedded folder was never made."""
    from .. import registry

    ref = model or os.environ.get("ONEGEN_MODEL") or registry.DEFAULT_EMBEDDED
    entry = registry.lookup(ref)
    if entry is not None and entry.embedded and not Path(entry.source).is_dir():
        recipe = registry.ASSETS / "recipes" / f"{entry.name}.json"
        how = (f"make it with `python -m onegen train --recipe {_rel(recipe)}`" if recipe.exists()
               else "train and export it with `python -m onegen train`")
        raise CommandError(f"the model {entry.name!r} is not installed: the folder {_rel(Path(entry.source))} is "
                           f"missing; {how}, or pass --model with a hub id or a model folder")
    if model and model.startswith((".", "/", "~")) and not Path(model).expanduser().exists():
        raise CommandError(f"no model folder at {model}")
    return str(Path(ref).expanduser()) if ref.startswith("~") else ref


def index_reference(index: str | None, model: str, task: str) -> Path:
    """The index folder: --index, or the model's registry default; `hf://owner/name` is fetched."""
    from .. import hub, registry

    ref = index or registry.default_index(model, task)
    if ref is None:
        raise CommandError(f"no default {task} index for model {model!r}: pass --index DIR or --candidates FILE")
    if hub.is_hub_ref(ref):
        try:
            return hub.resolve_index_path(ref)  # downloaded once into the hub cache
        except (hub.IndexFetchError, ValueError) as e:
            raise CommandError(str(e)) from None
    path = Path(ref).expanduser()
    if not path.exists():
        source = "" if index else " (the model's default)"
        raise CommandError(f"the index folder {_rel(path)}{source} is missing; build it with the index builder "
                           "(`python -m index_builder`), or pass --index DIR or --candidates FILE")
    return path


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# -- main ---------------------------------------------------------------------------------------------

def main(args: argparse.Namespace) -> int:
    try:
        return _main(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _main(args: argparse.Namespace) -> int:
    # Everything that can be checked without torch is checked first: mistakes answer at once.
    text = args.text if args.text is not None else example_text(args.task, args.example)
    if not text.strip():  # the engine refuses it too, but only after the model has loaded
        raise CommandError("the input is empty: give a sentence or a question with --text")
    mode = get_mode(getattr(args, "mode", DEFAULT_MODE))
    mode.check_task(args.task)
    candidates = read_candidates(args.candidates, args.task) if args.candidates else None
    model_ref = model_reference(args.model)
    index_path = None if candidates else index_reference(args.index, model_ref, args.task)

    import torch

    from ..engine import IndexRetriever, RunSettings
    from ..index_coverage import describe_index
    from ..loading import load_model
    from ..render_text import render_events, run_header

    device = _device(args.device, torch)
    lm = load_model(model_ref, task=args.task, device=device)
    retriever = None
    engine = mode.make_engine(lm)
    if index_path is not None:
        index = engine.load_index(index_path, args.task)
        retriever = IndexRetriever(index, label=str(index_path))
        # Always said, --json too: without --index the model's default index is searched.
        print(f"index: {describe_index(index)}", file=sys.stderr)
        if index.calibration_problem:
            print(f"note: no confidence flags: {index.calibration_problem}", file=sys.stderr)
    settings = RunSettings(top_k=args.top_k, max_new_tokens=args.max_new_tokens, **decoding_settings(args))
    events = engine.run(args.task, text, retriever=retriever, candidates=candidates, settings=settings)
    # The engine checks the input when the run starts: take the first event before printing.
    first = next(events)
    if args.json:
        trace = None
        for ev in itertools.chain([first], events):
            trace = getattr(ev, "trace", trace)
        print(trace.to_json())
        return 0
    desc = retriever.describe() if retriever else {"path": f"{args.candidates} (candidates)",
                                                   "documents": len(candidates), "vectors": "per-run"}
    out = sys.stdout
    out.write(run_header(args.task, lm.name, desc, text) + "\n")
    for chunk in render_events(itertools.chain([first], events), calibration=desc.get("calibration")):
        out.write(chunk)
        out.flush()
    return 0


def _device(name: str | None, torch) -> str | None:
    if name is None or name == "auto":
        return name
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise CommandError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CommandError(f"--device {name}: no CUDA GPU is available here; use --device cpu")
    return name
