"""`python -m index_builder`: build, merge, push and pull vector indexes.

    python -m index_builder SOURCE [source args] --task TASK --out DIR [options]
    python -m index_builder merge DIR.build [--out DIR] [--kind KIND]
    python -m index_builder push DIR owner/name
    python -m index_builder pull owner/name[@revision] --out DIR

Sources: wikipedia, jsonl (JSON Lines or one JSON list), parquet, onegen-entities (precomputed
vectors), world (the generated encyclopedia). A build is resumable: run the same command again
after an interruption. Shards hold about --shard-minutes of encoding each (2 by default, timed on
the first documents), so an interruption loses at most that much work.

Data-parallel encoding: `accelerate launch --multi_gpu --num_processes N -m index_builder ...`
(on a CPU-only machine as well: accelerate's `--cpu` flag starts a single process and expects MPI
for more, while `--multi_gpu` runs torchrun, whose processes then use gloo on the CPU), or start
the processes yourself with --process-index I --num-processes N and merge afterwards.
"""
from __future__ import annotations

import argparse
import logging
import operator
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from onegen.errors import OneGenError
from onegen.tasks import TASK_NAMES, TASKS, get_task

from .ann import GB, AnnSettings, fmt_bytes
from .build import (DEFAULT_SHARD_MINUTES, PRECOMPUTED_SHARD_SIZE, BuildError, BuildSpec, Parallel,
                    check_output_folder, merge, run_build)
from .sources import SOURCES

log = logging.getLogger("index_builder")

COMMANDS = ("merge", "push", "pull")
KINDS = ("flat", "hnsw", "ivfpq", "sq8")
EL_RELEASE = "zjunlp/OneGen-EntityLinking-Llama2-7B"


# -- arguments ------------------------------------------------------------------------------------

def _build_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("build")
    g.add_argument("--task", choices=TASK_NAMES, help="protocol the documents are encoded for")
    g.add_argument("--model", help="model id, folder or registry name (default: the embedded model)")
    g.add_argument("--out", required=True, type=Path, help="index folder to write")
    g.add_argument("--kind", choices=KINDS, default="flat",
                   help="flat (exact, default), hnsw (fast approximate), ivfpq or sq8 (compressed)")
    g.add_argument("--batch-size", type=int, default=16, help="documents per forward pass")
    g.add_argument("--imprag-layers", nargs="?", const="model", metavar="B,T",
                   help="ImpRAG mode: passage vectors from the bottom layers [0, B) (the key of each passage's "
                        "last token at layer B-1); B,T are the layer groups' boundaries (default: the model's own)")
    g.add_argument("--shard-minutes", type=float, default=DEFAULT_SHARD_MINUTES, metavar="M",
                   help="size resumable shards to about M minutes of encoding each, timed on the first documents "
                        f"(default {DEFAULT_SHARD_MINUTES:g}): an interruption loses at most that much work")
    g.add_argument("--shard-size", type=int,
                   help="documents per resumable shard instead of sizing them by time "
                        f"(precomputed vectors: default {PRECOMPUTED_SHARD_SIZE})")
    g.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    g.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), help="model precision (default: bf16 on GPU, fp32 on CPU)")
    g.add_argument("--limit", type=int, help="index at most this many documents")
    g.add_argument("--memory-budget", type=float, metavar="GB",
                   help="RAM for index + documents + model (default: available RAM)")
    g.add_argument("--restart", action="store_true", help="discard an unfinished build of this --out")
    g.add_argument("--keep-build", action="store_true", help="keep OUT.build (the shards) after merging")
    g.add_argument("--recall-sample", type=int, default=200, help="queries for the recall@10 check of approximate kinds")
    g.add_argument("--threads", type=int, help="CPU threads for encoding and faiss (default: all cores)")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    d = p.add_argument_group("parallel encoding without a launcher")
    d.add_argument("--process-index", type=int, help="this process's index (0-based)")
    d.add_argument("--num-processes", type=int, help="number of processes sharing the shards")
    _ann_options(p)
    return p


def _ann_options(p: argparse.ArgumentParser) -> None:
    a = p.add_argument_group("approximate kinds")
    a.add_argument("--hnsw-m", type=int, default=32)
    a.add_argument("--ef-construction", type=int, default=80)
    a.add_argument("--ef-search", type=int, default=128)
    a.add_argument("--nlist", type=int, help="IVF clusters (default about sqrt(N))")
    a.add_argument("--pq-m", type=int, help="PQ sub-quantisers (default dim/8, at most 256)")
    a.add_argument("--nprobe", type=int, default=32)
    a.add_argument("--rerank", type=int, help="re-score rerank x k candidates exactly (default 4 for ivfpq/sq8)")


def _add_sources(sub) -> None:
    parent = _build_options()
    w = sub.add_parser("wikipedia", parents=[parent], help="Wikipedia pages (titles, category or link crawl)")
    src = w.add_mutually_exclusive_group(required=True)
    src.add_argument("--titles", type=Path, metavar="FILE", help="one title per line")
    src.add_argument("--category", metavar="NAME")
    src.add_argument("--seeds", metavar="T1,T2", help="crawl links from these pages")
    w.add_argument("--depth", type=int, help="sub-category depth (default 0) or crawl depth (default 1)")
    w.add_argument("--max-pages", type=int)
    w.add_argument("--lang", default="en")
    w.add_argument("--paragraphs", action="store_true",
                   help="one document per paragraph (always on for multi-hop: it encodes sentences of paragraphs)")
    w.add_argument("--full-text", action="store_true", help="whole pages instead of the lead section")
    w.add_argument("--cache-dir", default=".cache/wikipedia")

    j = sub.add_parser("jsonl", parents=[parent],
                       help='JSON Lines or one JSON list of {"title", "text"} records, or the authors\' db.jsonl')
    j.add_argument("path", type=Path)
    j.add_argument("--skip-bad", action="store_true", help="skip malformed lines instead of stopping")

    q = sub.add_parser("parquet", parents=[parent], help="Wikipedia dump in parquet (wikimedia/wikipedia layout)")
    q.add_argument("paths", nargs="+", metavar="GLOB")
    q.add_argument("--paragraphs", action="store_true", help="one document per paragraph (always on for multi-hop)")

    e = sub.add_parser("onegen-entities", parents=[parent],
                       help="the authors' precomputed entity vectors (no encoding; entity-linking)")
    e.add_argument("pkl", type=Path, help="OneGen-EntityLinking-Llama2-7B-Embedding.pkl")
    e.add_argument("--db", type=Path, help="db.jsonl with the entity descriptions")
    e.add_argument("--fingerprint", help="fingerprint of the model that made the vectors (instead of loading --model)")

    wd = sub.add_parser("world", parents=[parent], help="a generated encyclopedia folder (onegen.world)")
    wd.add_argument("path", type=Path, help="world folder (entities.jsonl, db.jsonl, paragraphs.jsonl)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m index_builder", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="{" + ",".join([*SOURCES, *COMMANDS]) + "}")
    _add_sources(sub)

    m = sub.add_parser("merge", help="assemble the encoded shards of DIR.build into an index")
    m.add_argument("build", type=Path, help="the build folder (OUT.build)")
    m.add_argument("--out", type=Path, help="index folder (default: the one the build was started for)")
    m.add_argument("--kind", choices=KINDS, help="default: the kind the build was started with")
    m.add_argument("--memory-budget", type=float, metavar="GB")
    m.add_argument("--recall-sample", type=int, default=200)
    m.add_argument("--keep-build", action="store_true")
    _ann_options(m)

    u = sub.add_parser("push", help="upload an index folder to a Hugging Face dataset repo")
    u.add_argument("folder", type=Path)
    u.add_argument("repo", help="owner/name")
    u.add_argument("--private", action="store_true")
    u.add_argument("--revision", help="branch to push to (created when missing)")
    u.add_argument("--message", help="commit message")

    d = sub.add_parser("pull", help="download an index from a Hugging Face dataset repo")
    d.add_argument("repo", help="owner/name[@revision] or hf://owner/name[@revision]")
    d.add_argument("--out", type=Path, required=True)
    return p


def ann_settings(args: argparse.Namespace, kind: str | None) -> AnnSettings | None:
    if kind is None:
        return None
    return AnnSettings(kind=kind, hnsw_m=args.hnsw_m, ef_construction=args.ef_construction, ef_search=args.ef_search,
                       nlist=args.nlist, pq_m=args.pq_m, nprobe=args.nprobe, rerank=args.rerank)


def budget_bytes(gb: float | None) -> int | None:
    if gb is None:
        return None
    if gb <= 0:
        raise BuildError("--memory-budget must be positive (GB)")
    return int(gb * GB)


# -- sources --------------------------------------------------------------------------------------

def _needs_paragraphs(task: str | None) -> bool:
    """Tasks whose index holds paragraphs (one vector per sentence) read a page per paragraph."""
    return task is not None and get_task(task).index_kind == "paragraphs"


def source_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The source's keyword arguments, JSON-able (they identify the build for resuming)."""
    name, task = args.command, args.task
    if name == "wikipedia":
        kw: dict[str, Any] = {"language": args.lang, "text": "full" if args.full_text else "summary",
                              "mode": "paragraphs" if args.paragraphs or _needs_paragraphs(task) else "pages",
                              "cache_dir": str(Path(args.cache_dir).resolve())}
        if args.titles:
            if not args.titles.is_file():
                raise BuildError(f"titles file not found: {args.titles}")
            kw["titles"] = [t.strip() for t in args.titles.read_text(encoding="utf-8").splitlines()
                            if t.strip() and not t.lstrip().startswith("#")]
        elif args.category:
            kw["category"] = args.category
        else:
            kw["seeds"] = [s.strip() for s in args.seeds.split(",") if s.strip()]
        if args.depth is not None:
            kw["depth"] = args.depth
        if args.max_pages is not None:
            kw["max_pages"] = args.max_pages
        return kw
    if name == "jsonl":
        return {"path": str(args.path.resolve()), "skip_bad": args.skip_bad}
    if name == "parquet":
        return {"paths": [str(Path(p).expanduser().absolute()) for p in args.paths],
                "mode": "paragraphs" if args.paragraphs or _needs_paragraphs(task) else "pages"}
    if name == "onegen-entities":
        return {"pkl_path": str(args.pkl.resolve()), "db_jsonl_path": str(args.db.resolve()) if args.db else None}
    if name == "world":
        return {"path": str(args.path.resolve()), "task": task}
    raise BuildError(f"unknown source {name!r}")


# -- parallel -------------------------------------------------------------------------------------

def parallel_setup(args: argparse.Namespace) -> tuple[Parallel, str | None]:
    """This process's share (explicit flags, an accelerate/torchrun launch, or alone) and its device."""
    if args.process_index is not None or args.num_processes is not None:
        if args.process_index is None or args.num_processes is None:
            raise BuildError("give both --process-index and --num-processes")
        if not 0 <= args.process_index < args.num_processes:
            raise BuildError("--process-index must be in [0, --num-processes)")
        return Parallel(args.process_index, args.num_processes, "explicit"), args.device
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch
        from accelerate import PartialState

        # Process 0 reads the whole corpus while the others wait at a barrier: allow a long wait.
        state = PartialState(cpu=args.device == "cpu" or not torch.cuda.is_available(), timeout=timedelta(hours=24))
        device = args.device or ("cpu" if state.device.type == "cpu" else str(state.device))
        return Parallel(state.process_index, state.num_processes, "accelerate", state.wait_for_everyone), device
    return Parallel(), args.device


def set_threads(n: int) -> None:
    """Cap torch's and faiss's CPU threads: on a shared machine, or with several processes per
    machine, oversubscribed OpenMP threads spin and can make encoding many times slower."""
    import faiss
    import torch

    if n < 1:
        raise BuildError("--threads must be at least 1")
    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)


# -- commands -------------------------------------------------------------------------------------

def cmd_build(args: argparse.Namespace) -> int:
    from onegen.loading import load_model

    from .sources import open_source

    precomputed = args.command == "onegen-entities"
    if precomputed:
        # The released entity vectors serve the task whose index holds entities.
        entity_task = next(t.name for t in TASKS.values() if t.index_kind == "entities")
        if args.task not in (None, entity_task):
            raise BuildError(f"onegen-entities holds entity vectors: its task is {entity_task}")
        args.task = entity_task
        if not args.model and not args.fingerprint:
            raise BuildError("onegen-entities: give --fingerprint FP, or --model ID_OR_DIR to compute it "
                             "(loads the model once): an index must name the model its vectors come from")
    elif args.task is None:
        raise BuildError("give --task (" + " | ".join(TASK_NAMES) + ")")
    par, device = parallel_setup(args)
    if args.threads:
        set_threads(args.threads)
    for h in log.handlers:
        h.setFormatter(logging.Formatter(f"[process {par.rank}] %(message)s" if par.world > 1 else "%(message)s"))
    if args.shard_size is not None and args.shard_size < 1:
        raise BuildError("--shard-size must be at least 1")
    if not args.shard_minutes > 0:
        raise BuildError("--shard-minutes must be more than 0")
    source_kw = source_arguments(args)
    source = open_source(args.command, **source_kw)
    # Everything that can be refused without the model is refused before it loads (minutes for a 7B).
    check_output_folder(args.out)
    if par.main and callable(getattr(source, "check", None)):
        source.check()

    lm, model_bytes = None, 0
    if not precomputed or args.model:
        lm = load_model(args.model, task=args.task, device="cpu" if precomputed else device, dtype=args.dtype)
        if lm.device.type == "cpu":
            model_bytes = sum(p.numel() * p.element_size() for p in lm.model.parameters())
        log.info("model %s (%s, %s, %d-d, fingerprint %s)", lm.name, lm.device, str(lm.dtype).replace("torch.", ""),
                 lm.hidden_size, lm.fingerprint[:12])
    if precomputed:
        vectors, _ = source.load()
        dim = int(vectors.shape[1])
        if lm is not None and lm.hidden_size != dim:
            raise BuildError(f"the vectors are {dim}-d; {lm.name} makes {lm.hidden_size}-d vectors")
        if lm is not None and args.fingerprint and args.fingerprint != lm.fingerprint:
            raise BuildError(f"--fingerprint {args.fingerprint} does not match the model's {lm.fingerprint}")
        spec = BuildSpec(task=entity_task, model=lm.name if lm else (args.model or EL_RELEASE),
                         model_fingerprint=lm.fingerprint if lm else args.fingerprint, dim=dim,
                         source={"name": args.command, "args": source_kw},
                         shard_size=args.shard_size or PRECOMPUTED_SHARD_SIZE, limit=args.limit,
                         model_dtype=str(vectors.dtype).replace("torch.", ""), precomputed=True)
        lm = None  # nothing to encode; free the model
    else:
        assert lm is not None
        encode = layer_split_encoder(lm, getattr(args, "imprag_layers", None))
        spec = BuildSpec(task=args.task, model=lm.name, model_fingerprint=lm.fingerprint,
                         dim=encode.dimension if encode else lm.hidden_size,
                         source={"name": args.command, "args": source_kw}, shard_size=args.shard_size,
                         limit=args.limit, model_dtype=str(lm.dtype).replace("torch.", ""),
                         shard_minutes=args.shard_minutes, layer_split=encode.layer_split if encode else None)
    total = operator.length_hint(source) or None
    result = run_build(
        spec, args.out, documents=lambda: iter(source),
        batches=(lambda: source.iter_batches(spec.shard_size)) if precomputed else None,
        total=total, lm=lm, model_bytes=model_bytes, settings=ann_settings(args, args.kind),
        batch_size=args.batch_size, memory_budget=budget_bytes(args.memory_budget), parallel=par,
        restart=args.restart, keep_build=args.keep_build, recall_sample=args.recall_sample, progress=not args.quiet,
        encode=None if precomputed else encode)
    if par.mode == "accelerate":
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    if result.out is not None:
        _summary(result.out)
    return 0


def layer_split_encoder(lm, layers: str | None):
    """The ImpRAG passage encoder for `--imprag-layers` ("model": the model's own split, or "B,T"),
    or None for OneGen's final hidden states."""
    if layers is None:
        return None
    from onegen.imprag import ImpragError, LayerSplit, PassageEncoder, model_split

    if layers == "model":
        return PassageEncoder(lm)
    try:
        b, t = (int(x) for x in layers.split(","))
    except ValueError:
        raise BuildError(f"--imprag-layers takes two whole numbers B,T; got {layers!r}") from None
    try:
        # other boundaries, the model's own token pooling
        return PassageEncoder(lm, LayerSplit(b, t, lm.model.config.num_hidden_layers, model_split(lm).tokens))
    except ImpragError as e:
        raise BuildError(f"--imprag-layers: {e}") from None


def _summary(path: Path) -> None:
    from onegen.index import read_manifest

    m = read_manifest(path)
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    line = (f"{path}: {m.kind} index, {m.documents:,} documents, {m.count:,} vectors x {m.dim}, "
            f"{m.protocol}, model {m.model}, {fmt_bytes(size)} on disk")
    b = m.build
    if b.get("documents_per_second"):
        line += f", encoded at {b['documents_per_second']} documents/s"
    if "recall_at_10" in b:
        line += f", recall@10 {b['recall_at_10']:.3f} on {b['recall_sample']} queries"
    print(line)


def cmd_merge(args: argparse.Namespace) -> int:
    out = merge(args.build, args.out, kind=args.kind, settings=ann_settings(args, args.kind),
                memory_budget=budget_bytes(args.memory_budget), recall_sample=args.recall_sample,
                keep_build=args.keep_build)
    _summary(out)
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from .hub import push

    url = push(args.folder, args.repo, private=args.private, revision=args.revision, message=args.message)
    print(f"pushed {args.folder} to {url}")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from .hub import pull

    out = pull(args.repo, args.out)
    _summary(out)
    return 0


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (tests swap it)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        log.addHandler(_StderrHandler())
        log.propagate = False
    log.setLevel(logging.INFO)
    commands = {"merge": cmd_merge, "push": cmd_push, "pull": cmd_pull}
    try:
        return commands.get(args.command, cmd_build)(args)
    # The one place errors become messages: every OneGen error, and the builtins that sources and
    # file readers raise for a missing or malformed input.
    except (OneGenError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
