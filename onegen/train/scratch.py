"""A model from scratch: a byte-level BPE trained on the world's own text and a fresh Llama config."""
from __future__ import annotations

import json
from pathlib import Path

import torch


def world_texts(world_dir: Path):
    for name in ("paragraphs.jsonl", "entity_linking.jsonl"):
        with open(world_dir / name, encoding="utf-8") as f:
            for line in f:
                d = json.loads(line)
                yield d.get("text") or " ".join(d.get("sentences", []))
    for name in ("multihop.json", "singlehop.json"):
        for item in json.loads((world_dir / name).read_text()):
            yield item["question"]


def scratch_model(base: dict, world_dir: Path, seed: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    # A small vocabulary keeps unseen names and seen names split alike (see docs/embedded-models.md).
    trainer = trainers.BpeTrainer(vocab_size=int(base.get("bpe_vocab", 800)), special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(world_texts(world_dir), trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                  pad_token="</s>")
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      tie_word_embeddings=True, **base["scratch"])
    return LlamaForCausalLM(cfg), tok
