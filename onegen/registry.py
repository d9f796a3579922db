"""Named models: the three released checkpoints and the embedded models, with default indexes."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .assets import assets_dir

ASSETS = assets_dir()


@dataclass(frozen=True)
class ModelEntry:
    name: str
    source: str  # hub id or local folder
    tasks: tuple[str, ...]
    description: str
    # Default index per task: a folder, or an `hf://owner/name` dataset repo.
    indexes: dict[str, str] = field(default_factory=dict)
    embedded: bool = False


RELEASED = (
    ModelEntry("zjunlp/OneGen-EntityLinking-Llama2-7B", "zjunlp/OneGen-EntityLinking-Llama2-7B", ("entity-linking",),
               "OneGen entity linking, Llama-2-7B-chat, bf16 (13.5 GB; GPU)"),
    ModelEntry("zjunlp/OneGen-MultiHop-Llama2-7B", "zjunlp/OneGen-MultiHop-Llama2-7B", ("multi-hop",),
               "OneGen multi-hop QA, Llama-2-7B-chat, bf16 (13.5 GB; GPU)"),
    ModelEntry("zjunlp/OneGen-SelfRAG-Llama2-7B", "zjunlp/OneGen-SelfRAG-Llama2-7B", ("single-hop",),
               "OneGen single-hop QA (Self-RAG), Llama-2-7B-chat, bf16 (13.5 GB; GPU)"),
)

EMBEDDED = (
    ModelEntry("onegen-smol", str(ASSETS / "models" / "onegen-smol"), ("entity-linking", "multi-hop", "single-hop"),
               "embedded default: SmolLM2-135M + LoRA, one model for all three protocols, trained on the "
               "generated world (CPU)",
               indexes={"entity-linking": str(ASSETS / "indexes" / "heldout-entities"),
                        "multi-hop": str(ASSETS / "indexes" / "heldout-paragraphs"),
                        "single-hop": str(ASSETS / "indexes" / "heldout-passages")},
               embedded=True),
    ModelEntry("imprag-smol", str(ASSETS / "models" / "imprag-smol"), ("single-hop",),
               "embedded ImpRAG model: SmolLM2-135M + LoRA read in three layer groups, single-hop questions "
               "over the generated world (CPU; docs/imprag.md)",
               indexes={"single-hop": str(ASSETS / "indexes" / "heldout-passages-imprag")},
               embedded=True),
)

DEFAULT_EMBEDDED = "onegen-smol"
# The ImpRAG model the app puts beside the embedded default (docs/imprag.md).
DEFAULT_IMPRAG = "imprag-smol"


def entries() -> list[ModelEntry]:
    return [*EMBEDDED, *RELEASED]


def lookup(name: str | os.PathLike | None, task: str | None = None) -> ModelEntry | None:
    """The registry entry for `name`; None means a hub id or folder outside the registry.
    No name gives the embedded default (or $ONEGEN_MODEL)."""
    if name is None:
        name = os.environ.get("ONEGEN_MODEL") or DEFAULT_EMBEDDED
    name = str(name)
    for e in entries():
        if e.name == name:
            return e
    return None


def default_index(model_name: str, task: str) -> str | None:
    """$ONEGEN_INDEX_<TASK> overrides; otherwise the registry's index for that model and task."""
    env = os.environ.get("ONEGEN_INDEX_" + task.upper().replace("-", "_"))
    if env:
        return env
    e = lookup(model_name)
    return e.indexes.get(task) if e else None


def shipped(name: str) -> bool:
    """Whether a registry model's folder is present (an embedded one ships in assets/)."""
    from .loading import EMBEDDED_MANIFEST

    e = lookup(name)
    return e is not None and (Path(e.source) / EMBEDDED_MANIFEST).is_file()
