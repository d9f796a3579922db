"""The embedded default on this machine: load time, seconds per run for each task, and the
joint-training check (the model's own query vectors against a separate MiniLM retriever on the
same sub-questions of the held-out world)."""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from onegen.assets import assets_dir

HELP = "embedded default: load time, seconds per answer per task, OneGen vectors vs MiniLM recall@1"
HELDOUT = assets_dir() / "world" / "heldout"


def _speed_row(r: dict, label: str, goal: str) -> str:
    steal = f"; {r['steal_percent']}% steal" if r.get("steal_percent") is not None else ""
    return (f"| {label} | {r['median_s']} / {r['p90_s']} s (transformers forward: {r['transformers_median_s']} s, "
            f"{r['fused_speedup']}x; one token per call: {r['one_token_median_s']} s, {r['draft_speedup']}x; "
            f"same {r['identical_outputs']}{steal}) | {goal} |")


def add_arguments(p) -> None:
    p.add_argument("--model", default=None, help="model (default: the embedded default)")
    p.add_argument("--examples", type=int, default=20, help="held-out examples per task for timing")
    p.add_argument("--joint", type=int, default=200, help="held-out multi-hop questions for the recall check")


def load_seconds(model: str | None) -> float:
    """Seconds from a fresh interpreter to a loaded model (imports included)."""
    code = ("import time; t=time.perf_counter(); from onegen.loading import load_model; "
            f"load_model({model!r}); print(time.perf_counter()-t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    return float(out.stdout.strip().splitlines()[-1])


def task_inputs(task: str, n: int) -> list[str]:
    if task == "entity-linking":
        lines = (HELDOUT / "entity_linking.jsonl").read_text().splitlines()
        return [json.loads(x)["text"] for x in lines[:n]]
    name = {"multi-hop": "multihop.json", "single-hop": "singlehop.json"}[task]
    return [x["question"] for x in json.loads((HELDOUT / name).read_text())[:n]]


# What each timed mode changes against the default (fused decoder, prompt-lookup drafts).
MODES = {"default": {}, "transformers": {"fused_decoder": False}, "one_token": {"draft_tokens": 0}}


def time_runs(lm, task: str, n: int) -> dict:
    """Seconds per run in the default mode and with one speed-up switched off at a time (the
    transformers forward instead of the fused decoder; one token per forward call instead of
    drafts), interleaved per input in a rotating order so machine load hits every mode alike; the
    outputs must agree."""
    from onegen.engine import Engine, IndexRetriever, RunSettings
    from onegen.index import VectorIndex
    from onegen.registry import default_index
    from .report import cpu_ticks, steal_percent

    ticks = cpu_ticks()
    index = VectorIndex.load(default_index(lm.name, task), protocol=task, model_fingerprint=lm.fingerprint)
    engine = Engine(lm)
    retriever = IndexRetriever(index)
    names = list(MODES)
    seconds: dict[str, list[float]] = {m: [] for m in names}
    tokens, rejected, same = [], [], 0
    for i, text in enumerate(task_inputs(task, n)):
        outputs = {}
        for m in names[i % len(names):] + names[:i % len(names)]:
            t0 = time.perf_counter()
            trace = engine.run_trace(task, text, retriever=retriever, settings=RunSettings(**MODES[m]))
            seconds[m].append(time.perf_counter() - t0)
            outputs[m] = [t.id for t in trace.tokens]
            if m == "default":
                tokens.append(trace.cost.total_forward_tokens)
                rejected.append(trace.cost.forward_tokens["draft_rejected"])
        same += all(o == outputs["default"] for o in outputs.values())
    med = {m: statistics.median(v) for m, v in seconds.items()}
    ratio = lambda m: round(sum(seconds[m]) / sum(seconds["default"]), 2)  # noqa: E731
    return {"runs": n, "median_s": round(med["default"], 3),
            "p90_s": round(sorted(seconds["default"])[int(0.9 * (n - 1))], 3),
            "transformers_median_s": round(med["transformers"], 3), "fused_speedup": ratio("transformers"),
            "one_token_median_s": round(med["one_token"], 3), "draft_speedup": ratio("one_token"),
            "identical_outputs": f"{same}/{n}",
            "median_forward_tokens": int(statistics.median(tokens)),
            "median_rejected_draft_tokens": int(statistics.median(rejected)),
            "steal_percent": steal_percent(ticks)}


def joint_recall(lm, n: int) -> dict:
    """Recall@1 over the held-out paragraphs, per sub-question, teacher-forced: OneGen reads the
    hidden state at each gold `[Question Representation]` of one forward pass; MiniLM encodes the
    sub-question text and its own paragraph vectors."""
    import random

    import torch

    from onegen.index import VectorIndex
    from onegen.registry import default_index
    from onegen.train.examples import load_corpus, multi_hop_sample

    index = VectorIndex.load(default_index(lm.name, "multi-hop"), protocol="multi-hop", model_fingerprint=lm.fingerprint)
    corpus = load_corpus(HELDOUT)
    items = json.loads((HELDOUT / "multihop.json").read_text())[:n]
    ptok = lm.ptok("multi-hop")
    hits_onegen, questions, gold = 0, [], []
    rng = random.Random(0)
    for item in items:
        sample = multi_hop_sample(item, ptok, corpus, rng, 0)
        with torch.inference_mode():
            h = lm.backbone(input_ids=torch.tensor([sample.ids], device=lm.device)).last_hidden_state[0]
        for a, hop in zip(sample.anchors, item["decomposition"]):
            top = index.search(h[a.position].float().cpu(), 1)[0][0]
            hits_onegen += index.documents[top.doc].id == hop["paragraph_id"]
            questions.append(hop["question"])
            gold.append(hop["paragraph_id"])
    minilm = minilm_recall(questions, gold, index)
    return {"sub_questions": len(questions), "onegen_recall_at_1": round(hits_onegen / len(questions), 4),
            "minilm_recall_at_1": minilm}


def minilm_recall(questions: list[str], gold: list[str], index) -> float:
    import torch

    from onegen.baselines import document_text, load_sentence_encoder

    enc = load_sentence_encoder(None, device="cpu")
    docs = [index.documents[i] for i in range(len(index.documents))]
    dv = torch.nn.functional.normalize(enc.encode([document_text(d) for d in docs]), dim=-1)
    qv = torch.nn.functional.normalize(enc.encode(questions), dim=-1)
    best = (qv @ dv.T).argmax(1).tolist()
    return round(sum(docs[b].id == g for b, g in zip(best, gold)) / len(gold), 4)


def main(args) -> int:
    from onegen.loading import load_model
    from .report import command_line, machine_info, write_section

    result: dict = {"load_seconds": round(load_seconds(args.model), 2)}
    lm = load_model(args.model, device=args.device)
    n = 3 if args.quick else args.examples
    for task in ("multi-hop", "entity-linking", "single-hop"):
        result[task] = time_runs(lm, task, n)
    result["joint"] = joint_recall(lm, 20 if args.quick else args.joint)
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))
    if args.write:
        j = result["joint"]
        body = "\n".join([
            f"Model `{lm.name}` ({lm.describe()['parameters'] / 1e6:.0f} M parameters, {lm.dtype}), held-out world.",
            "",
            "| measure | value | goal |",
            "|---|---|---|",
            f"| process start to loaded model | {result['load_seconds']} s | <= 15 s |",
            *[_speed_row(result[t], label, goal) for t, label, goal in (
                ("multi-hop", f"multi-hop answer (median / p90 of {n})", "<= 5 s"),
                ("entity-linking", "entity-linking sentence (median / p90)", "<= 3 s"),
                ("single-hop", "single-hop answer (median / p90)", ""))],
            f"| recall@1, OneGen query vectors ({j['sub_questions']} sub-questions, teacher-forced) | {j['onegen_recall_at_1']} | |",
            f"| recall@1, separate MiniLM retriever, same sub-questions | {j['minilm_recall_at_1']} | |",
        ])
        body += ("\n\nSeconds are in the default mode: the fused Llama decoder (onegen/fused_llama.py) with "
                 "prompt-lookup drafts (`RunSettings.draft_tokens` 2). In parentheses the same inputs, "
                 "interleaved with them, with one of the two switched off (the transformers forward; one token "
                 "per forward call) and the ratio of that mode's total to the default's. \"same\" counts inputs "
                 "whose tokens were identical in all three modes; \"steal\" is the CPU time the hypervisor gave "
                 "to other guests during that task's runs (/proc/stat), which slows every mode alike.")
        write_section("embedded", body, command=command_line(), machine=machine_info(args.device),
                      title="Embedded default on this CPU")
    return 0
