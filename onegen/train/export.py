"""Write a trained model as an embedded-model folder: LoRA adapter (bf16), new token rows,
tokenizer, `onegen_model.json`, and a model card. Loaded by onegen.loading like any model."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..fsutil import staged_dir
from ..loading import EMBEDDED_MANIFEST
from ..result_checks import CHECKS


def export_embedded(trainer, out: str | Path, card_extra: str = "") -> Path:
    r = trainer.recipe
    out = Path(out)
    with staged_dir(out) as tmp:
        model = trainer.model
        emb = model.get_input_embeddings().weight.detach()
        rows = {"ids": trainer.new_ids.clone(), "input": emb[trainer.new_ids].float().contiguous()}
        head = model.get_output_embeddings().weight
        if head.data_ptr() != emb.data_ptr():
            rows["output"] = head.detach()[trainer.new_ids].float().contiguous()
        save_file(rows, str(tmp / "new_tokens.safetensors"))
        manifest = {"format": "onegen-embedded/1", "name": r.name, "tasks": r.tasks, "new_tokens": "new_tokens.safetensors",
                    "trained_steps": trainer.step, "world": r.world}
        if r.imprag is not None:  # the layer groups the ImpRAG mode was trained with (onegen.imprag.model_split)
            manifest["imprag"] = {"bottom": r.imprag["bottom"], "top": r.imprag["top"]}
            if r.imprag.get("tokens", "last") != "last":  # which tokens' states make the vectors
                manifest["imprag"]["tokens"] = r.imprag["tokens"]
            if r.imprag.get("reads"):  # how many top hits the mode's reader reads (onegen.imprag.model_reads)
                manifest["imprag"]["reads"] = int(r.imprag["reads"])
            centring = trainer.exported_centring()
            if centring is not None:  # subtracted from queries and passages (onegen.imprag.Centring)
                manifest["imprag"]["centring"] = centring.to_json()
        for key in CHECKS:  # the result checks its figures were measured with (onegen/result_checks.py)
            if getattr(r, key) is not None:
                manifest[key] = getattr(r, key)
        if r.lora is not None:
            # The embedding rows that changed are in new_tokens.safetensors; the base has the rest.
            model.save_pretrained(str(tmp / "adapter"), save_embedding_layers=False)
            # Halve the adapter's size: bf16 is plenty for LoRA factors, and the loader upcasts.
            f = tmp / "adapter" / "adapter_model.safetensors"
            save_file({k: v.to(torch.bfloat16).contiguous() for k, v in load_file(str(f)).items()}, str(f))
            manifest["adapter"] = "adapter"
            manifest["base"] = r.base
        else:
            model.save_pretrained(str(tmp / "full"))
            manifest["base"] = {"path": "full"}
        trainer.tokenizer.save_pretrained(str(tmp))
        (tmp / EMBEDDED_MANIFEST).write_text(json.dumps(manifest, indent=2))
        (tmp / "recipe.json").write_text(json.dumps(r.to_dict(), indent=2))
        (tmp / "README.md").write_text(model_card(r, trainer.step, card_extra))
    return out


def model_card(r, steps: int, extra: str) -> str:
    base = r.base.get("name") or r.base.get("path") or "from scratch"
    lora = f"LoRA r={r.lora.r}, alpha={r.lora.alpha} on {', '.join(r.lora.targets)}" if r.lora else "full fine-tune"
    if r.imprag is None:
        design, doc = "OneGen", "docs/embedded-models.md"
        objective = f"LM loss on generated tokens + BPR + InfoNCE (temperature {r.temperature}) on retrieval-token states"
    else:
        i = r.imprag
        design, doc = "ImpRAG (implicit queries over layer groups)", "docs/imprag.md"
        reads = f"; its reader reads the top {i['reads']} hit(s)" if i.get("reads") else ""
        objective = (f"layer groups b={i['bottom']}, t={i['top']} ({i.get('tokens', 'last')} token pooling{reads}); "
                     f"multi-label NCE warm-up for {i.get('warmup_steps', 50)} steps, then self-distillation from "
                     "answer likelihood, plus the LM loss reading "
                     + ("every candidate, gold among negatives" if i.get("reader") == "candidates" else "the gold passages"))
    return f"""# {r.name}

A small {design} model trained by OneGen Explorer's own trainer, for offline CPU demos and teaching.

- Base: {base} ({json.dumps(r.base)})
- Adaptation: {lora}; new token rows for {', '.join(r.tasks)} protocols (same token strings and
  templates as the released OneGen checkpoints)
- Data: the generated world (seed {r.world.get('seed')}, split {r.world.get('split')}, {r.world.get('entities')} entities);
  evaluated on a held-out world that shares no names with it
- Objective: {objective}
- Steps: {steps} (recipe: `assets/recipes/{r.name}.json`; reproduce with `python -m onegen train --recipe assets/recipes/{r.name}.json`)

## Limits
It knows nothing of the real world: it answers only by retrieving from the generated encyclopedia's
indexes. People do not type the generator's wordings: the runs on `-paraphrased` data ask the same
held-out world in wordings no training item used, closer to what a visitor meets. Metrics and
their commands are in {doc}.
{extra}
"""
