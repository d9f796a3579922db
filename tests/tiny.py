"""Tiny random Llama checkpoints with each protocol's added tokens, built on the fly for tests.

Tokenizers come from ../shared/fixtures (the real Llama-2 ones) when present; otherwise a small
byte-level BPE is trained here, so engine tests also run on a user's machine.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import torch

from onegen.documents import Document

SHARED = Path(__file__).resolve().parents[2] / "shared"
LLAMA_FIXTURES = SHARED / "fixtures" / "llama2-tokenizers"

# Tiny corpora shared by the engine, CLI, baseline and evaluation tests.
PARAGRAPHS = [
    Document.from_sentences("p-film", "Film A", ["Film A is a 1998 drama.", "It was directed by Ivo Brandel."]),
    Document.from_sentences("p-ivo", "Ivo Brandel", ["Ivo Brandel is a director.", "He was born in Corvale."]),
    Document.from_sentences("p-corvale", "Corvale", ["Corvale is a city in Velor.", "It has 120000 inhabitants."]),
]
ENTITIES = [
    Document("Q90", "Paris", "Paris is an instance of city. It is described as \"capital of France\"."),
    Document("Q220", "Rome", "Rome is an instance of city. It is described as \"capital of Italy\"."),
    Document("Q1", "Ivo Brandel", "Ivo Brandel is an instance of human. It is described as \"a director\"."),
]
PASSAGES = [
    Document("w1", "Corvale", "Corvale is a city in Velor. It has 120000 inhabitants."),
    Document("w2", "Velor", "Velor is a country. Its capital is Corvale."),
    Document("w3", "Ivo Brandel", "Ivo Brandel is a director born in Corvale."),
]

# One HotpotQA-layout question about the corpora above (its own context, supporting facts).
HOTPOT_CONTEXT = [["Film A", ["Film A is a 1998 drama.", " It was directed by Ivo Brandel."]],
                  ["Ivo Brandel", ["Ivo Brandel is a director.", " He was born in Corvale."]],
                  ["Velor", ["Velor is a country.", " Its capital is Corvale."]]]
HOTPOT_FACTS = [["Film A", 1], ["Ivo Brandel", 1]]


def hotpot_item(id_, answer, type_="bridge", question="Where was the director of Film A born?", **extra):
    return {"_id": id_, "type": type_, "question": question, "answer": answer, "context": HOTPOT_CONTEXT,
            "supporting_facts": HOTPOT_FACTS, **extra}


_CORPUS = [
    "Barack Obama was born in Honolulu. Where was the director of the film born?",
    "First, who directed the film? The film was directed by Ivo Brandel. Second, where was Ivo born?",
    "wiki title: Corvale\ncontent: Corvale is a city in Velor. It has 120000 inhabitants.",
    "Represent the following document fragment and output it after the token. Here are document fragment:",
    "Represent the entity based on its description and output it after the token. The description of",
    "### Instruction:\n### Response:\n is an instance of human. It is described as a painter.",
    "You are good at multi-step reasoning in QA. Output the final answer wrapped by <FINAL-ANSWER></FINAL-ANSWER>.",
    "[INST] You are good at mention detection. TEST TEXT: <MENTION>Paris</MENTION> [/INST]",
    "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'\"()-",
]


def build_bpe_tokenizer(folder: Path, added: list[str]):
    """A byte-level BPE (vocab ~600) with `<s>`, `</s>` and the protocol's tokens as specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.add_special_tokens({"additional_special_tokens": added})
    fast.save_pretrained(str(folder))
    return fast


def tokenizer_folder(task: str, root: Path) -> Path:
    """A tokenizer folder with `task`'s protocol tokens: the real Llama-2 one when available."""
    from onegen.protocols import get_spec

    fixture = {"entity-linking": "entity-linking", "multi-hop": "multi-hop"}.get(task)
    if fixture and (LLAMA_FIXTURES / fixture).exists():
        return LLAMA_FIXTURES / fixture
    folder = root / f"tok-{task}"
    if not (folder / "tokenizer.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        build_bpe_tokenizer(folder, list(get_spec(task).token_strings))
    return folder


def build_tiny_model(task: str, root: Path, *, hidden: int = 64, layers: int = 2, seed: int = 0,
                     context: int = 1024, tokenizer_dir: Path | None = None) -> Path:
    """Save a random Llama checkpoint + tokenizer for `task` into a folder and return it."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = root / f"tiny-{task}-{hidden}x{layers}-s{seed}"
    if (folder / "config.json").exists():
        return folder
    tok_dir = tokenizer_dir or tokenizer_folder(task, root)
    tok = AutoTokenizer.from_pretrained(str(tok_dir), add_prefix_space=False)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=context, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


@functools.lru_cache(maxsize=None)
def _loaded(folder: str):
    from onegen.loading import load_model

    return load_model(folder, device="cpu")


def load_tiny(task: str, root: Path, **kw):
    return _loaded(str(build_tiny_model(task, root, **kw)))


HELDOUT_WORLD = Path(__file__).resolve().parents[1] / "assets" / "world" / "heldout"


def build_imprag_index(model: Path, out: Path, *, limit: int = 4, layers: str | None = None) -> Path:
    """An ImpRAG index (bottom-group passage vectors) of the held-out world's first `limit` single-hop
    passages, built by the index builder with the model's own layer groups or `layers` ("B,T")."""
    from index_builder.__main__ import main as build

    if not (out / "manifest.json").exists():
        split = ["--imprag-layers", *([layers] if layers else [])]
        code = build(["world", str(HELDOUT_WORLD), "--task", "single-hop", "--model", str(model), "--quiet",
                      "--limit", str(limit), "--out", str(out), *split])
        assert code == 0, f"the index builder exited with {code}"
    return out


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path
