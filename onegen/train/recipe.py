"""Training recipes: one JSON file says everything a training run depends on."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


SCHEDULES = ("constant", "cosine")
BRIDGE_ROLES = ("write", "drop", "always")
COMPARISON_ORDERS = ("answer", "question", "question-winner")
PHRASINGS = ("template", "varied")  # the same as onegen.train.examples.PHRASINGS


@dataclass
class LoraSpec:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    # Adapt only the top N decoder layers (None: all). The layers below run without autograd,
    # which saves their backward pass and their activation memory.
    top_layers: int | None = None
    targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                         "gate_proj", "up_proj", "down_proj"])


@dataclass
class Recipe:
    name: str
    # Base model: {"package": ..., "module": ..., "gguf": ..., "name": ...} (a PyPI-shipped GGUF),
    # {"path": folder or hub id}, or {"scratch": {LlamaConfig fields}, "bpe_vocab": 800}.
    base: dict[str, Any]
    tasks: list[str] = field(default_factory=lambda: ["entity-linking", "multi-hop", "single-hop"])
    # World the training data is generated from (never the held-out one).
    world: dict[str, Any] = field(default_factory=lambda: {"seed": 1, "split": "train", "entities": 3000})
    # Anchors per step for each task.
    per_step: dict[str, int] = field(default_factory=lambda: {"entity-linking": 2, "multi-hop": 2, "single-hop": 1})
    hard_negatives: int = 2  # hard-negative documents per retrieval
    max_documents: int = 18  # document sequences per step (positives first)
    max_query_tokens: int = 640
    max_document_tokens: int = 160
    # Over-sample these multi-hop question types (weight per type; 1 = uniform).
    type_weights: dict[str, float] = field(default_factory=dict)
    # Over-sample multi-hop questions that begin with a key, e.g. one template of a type the
    # others outnumber ("... born later" among three "... born first"); multiplies the type weight.
    question_weights: dict[str, float] = field(default_factory=dict)
    # Over-sample multi-hop questions by the world template they were made from ("mother",
    # "father_in_law": the names of onegen/world/multihop.py), whatever words ask them; needs
    # `phrasings: "varied"`, which knows each item's template. Multiplies the other weights.
    template_weights: dict[str, float] = field(default_factory=dict)
    # Weight comparisons so that within each template the answer names the first option as often
    # as the second (the world balances that per type only; see `answer_position_weights`).
    balance_answers: bool = False
    # Multi-hop sub-questions: "write" them as the world does, "drop" the role the world adds to
    # a name two entities share ("the film director X") where the question does not name it, or
    # "always" name the role of a person the previous hop found as a film's director or a work's
    # creator (the relation fixes it), shared name or not.
    bridge_roles: str = "write"
    # The sentence before a comparison's answer: "answer" states the answer's value first, as the
    # world writes it ("1957 is earlier than 1977"); "question" states the values in the order the
    # question names them and lets the word say which is earlier or larger ("1977 is later than
    # 1957"), so choosing that word depends only on the two numbers, never on the template;
    # "question-winner" then names the value asked for ("..., so the earlier one is 1957 and the
    # answer is"), so the answer is the option whose value was just written.
    comparison_order: str = "answer"
    # The user's side of the training items: "template" asks every question and writes every
    # entity-linking text as the world generator does; "varied" rewords most of them in the
    # training part of the world's surface forms (other clause orders, synonyms, terse and
    # two-sentence questions, casing, typos, asides), keeping the held-out part for evaluation.
    # The model's decompositions and answers are the same either way.
    phrasings: str = "template"
    steps: int = 300
    lr: float = 5e-4
    token_lr: float = 1e-3
    warmup: int = 15
    # After warm-up: "constant" (a run stopped at step N equals an N-step recipe) or "cosine"
    # (decays to min_lr_ratio x lr at the last step; the schedule depends on `steps`).
    schedule: str = "constant"
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    lm_weight: float = 1.0
    bpr_weight: float = 1.0
    infonce_weight: float = 1.0
    temperature: float = 0.05
    lora: LoraSpec | None = field(default_factory=LoraSpec)
    seed: int = 0
    threads: int | None = None
    # Compile each decoder layer with torch.compile (inductor; needs a C++ compiler on CPU). It
    # fuses the layers' element-wise work, which is a large share of a CPU step. Its arithmetic
    # differs from eager only by float rounding, but over a whole run that rounding makes another
    # model, which must be measured again (docs/embedded-models.md).
    compile: bool = False
    checkpoint_every: int = 20
    out: str = "assets/models/onegen-smol"
    run_dir: str = "runs/onegen-smol"
    max_grad_norm: float = 1.0
    # The ImpRAG mode's training (onegen/train/imprag.py `ImpragSpec`: layer boundaries, warm-up
    # steps, temperatures, loss weights); None: the recipe trains OneGen only.
    imprag: dict[str, Any] | None = None
    # The result checks the exported model asks for (onegen/result_checks.py CHECKS lists each
    # one's settings): the input normalization, entity linking's name alignment, the QA answer
    # alignment and multi-hop's comparison check. Inference settings that training never reads;
    # None: none recorded.
    input_normalization: str | None = None
    name_alignment: str | None = None
    answer_alignment: str | None = None
    comparison_check: str | None = None

    @classmethod
    def load(cls, path: str | Path) -> "Recipe":
        try:
            raw = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ValueError(f"recipe {path} does not exist") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"recipe {path} is not valid JSON: {e}") from None
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"recipe {path}: unknown keys {sorted(unknown)}")
        if raw.get("lora") is not None:
            raw["lora"] = LoraSpec(**raw["lora"])
        recipe = cls(**raw)
        if recipe.schedule not in SCHEDULES:
            raise ValueError(f"recipe {path}: schedule must be one of {list(SCHEDULES)}, not {recipe.schedule!r}")
        if recipe.bridge_roles not in BRIDGE_ROLES:
            raise ValueError(f"recipe {path}: bridge_roles must be one of {list(BRIDGE_ROLES)}, not {recipe.bridge_roles!r}")
        if recipe.comparison_order not in COMPARISON_ORDERS:
            raise ValueError(f"recipe {path}: comparison_order must be one of {list(COMPARISON_ORDERS)}, "
                             f"not {recipe.comparison_order!r}")
        if recipe.imprag is not None:
            from ..imprag import ImpragError
            from .imprag import ImpragSpec

            try:
                ImpragSpec(**recipe.imprag)
            except (TypeError, ImpragError) as e:
                raise ValueError(f"recipe {path}: imprag: {e}") from None
        from ..result_checks import CHECKS, check_value

        for key in CHECKS:
            if getattr(recipe, key) is not None:
                try:
                    check_value(key, getattr(recipe, key))
                except ValueError as e:
                    raise ValueError(f"recipe {path}: {key}: {e}") from None
        if recipe.phrasings not in PHRASINGS:
            raise ValueError(f"recipe {path}: phrasings must be one of {list(PHRASINGS)}, not {recipe.phrasings!r}")
        for key in ("type_weights", "question_weights", "template_weights"):
            bad = {k: v for k, v in getattr(recipe, key).items()
                   if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0}
            if bad:
                raise ValueError(f"recipe {path}: {key} must be positive numbers, not {bad}")
        return recipe

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
