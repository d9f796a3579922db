"""OneGen Explorer: watch one model write and retrieve in a single pass.

    python app.py                                   # embedded default model on the CPU
    python app.py --model zjunlp/OneGen-EntityLinking-Llama2-7B --index-entity-linking DIR
    ONEGEN_MODEL=... ONEGEN_INDEX_MULTI_HOP=DIR python app.py --port 7861
    python app.py --imprag-model runs/imprag-smol --imprag-index runs/idx-imprag   # ImpRAG beside OneGen

Tabs: Run (live timeline, retrieval steps, result, cost strip, trace download; OneGen, or ImpRAG on
single-hop questions when an ImpRAG model is configured), Trace viewer (upload a trace JSON), Index
browser, Compare (OneGen against a two-pass or pipeline baseline, on the single-pass sweep; one
single-hop question through OneGen, ImpRAG and the pipeline), Error browser (run or open result
files, filter, inspect, compare two), About. API endpoints: /link_entities, /answer_multi_hop, /answer_single_hop, each (text, top_k=5)
-> Trace JSON. This file reads the configuration and starts the server; the page is built by
onegen/ui (one module per tab), the shared model, indexes and jobs live in onegen/app_state.py
and onegen/jobs.py.
"""
from __future__ import annotations

import argparse
import logging
import threading
from pathlib import Path

from onegen.app_state import (EXAMPLES_DIR, IMPRAG_INDEX_ENV, IMPRAG_MODEL_ENV, MAX_INPUT_CHARS, AppConfig, AppState,
                              env_name)
from onegen.tasks import TASK_NAMES, get_task
from onegen.ui import build_demo, launch, on_zero_gpu

__all__ = ["build_demo", "launch", "main", "parse_args"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="OneGen Explorer: a web app for single-pass retrieval and generation.")
    p.add_argument("--model", help="registry name, Hugging Face id or model folder (default: $ONEGEN_MODEL, "
                                   "else the embedded onegen-smol)")
    for t in TASK_NAMES:
        p.add_argument(f"--index-{t}", dest="index_" + t.replace("-", "_"), metavar="DIR",
                       help=f"index folder or hf://owner/name for {get_task(t).label} (default: ${env_name(t)}, "
                            "else the model's registry index)")
    p.add_argument("--index", action="append", default=[], metavar="TASK=DIR",
                   help=f"index folder for a task, repeatable; TASK is one of {', '.join(TASK_NAMES)}")
    p.add_argument("--imprag-model", metavar="DIR",
                   help="an ImpRAG model (its info records its layer groups) for single-hop questions beside the "
                        f"OneGen model; 'none' turns the mode off (default: ${IMPRAG_MODEL_ENV}, else the shipped "
                        "imprag-smol beside the embedded default on its own world, else off; docs/imprag.md)")
    p.add_argument("--imprag-index", metavar="DIR",
                   help="the ImpRAG model's single-hop index, built with `python -m index_builder world ... "
                        f"--imprag-layers` (default: ${IMPRAG_INDEX_ENV}, else a registry model's own index)")
    p.add_argument("--examples", default=str(EXAMPLES_DIR), metavar="DIR", help="folder of <task>.jsonl examples")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: a GPU when present)")
    p.add_argument("--max-input-chars", type=int, default=MAX_INPUT_CHARS)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="open a public gradio.live link (off by default)")
    p.add_argument("--no-preload", dest="preload", action="store_false",
                   help="load the model on the first run instead of in the background at start-up")
    p.add_argument("--batch-runs", type=int, default=0, metavar="N",
                   help="decode up to N visitors' runs together in one batch (docs/batching.md); default: one at a time")
    args = p.parse_args(argv)
    if args.batch_runs < 0:
        p.error("--batch-runs must be 0 or more")
    indexes = {t: getattr(args, "index_" + t.replace("-", "_")) for t in TASK_NAMES}
    for item in args.index:
        name, sep, folder = item.partition("=")
        if not sep or name not in TASK_NAMES or not folder:
            p.error(f"--index takes TASK=DIR with TASK one of {', '.join(TASK_NAMES)}; got {item!r}")
        indexes[name] = folder
    args.config = AppConfig(model=args.model, indexes={t: d for t, d in indexes.items() if d},
                            examples_dir=Path(args.examples), device=args.device,
                            max_input_chars=args.max_input_chars, batch_runs=args.batch_runs,
                            imprag_model=args.imprag_model, imprag_index=args.imprag_index)
    return args


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    state = AppState(args.config)
    # Load while the server starts, so the first click finds the model ready. Not on ZeroGPU, where
    # a GPU exists only inside a decorated call.
    if args.preload and not on_zero_gpu():
        threading.Thread(target=state.preload, name="onegen-preload", daemon=True).start()
    launch(build_demo(state), args.host, args.port, args.share)


if __name__ == "__main__":
    main()
