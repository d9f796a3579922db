"""Random Llama-style models with a matching tokenizer, built in memory for benchmarks.

Sizes are named by parameter count (tied embeddings). The tokenizer is a byte-level BPE trained on
a seeded pseudo-word corpus to exactly the model's vocabulary, with a protocol's tokens added, so
the engine runs its real tokenisation and decoding paths. Nothing is downloaded or cached.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from onegen.loading import LoadedModel
from onegen.protocols import get_spec


@dataclass(frozen=True)
class ModelSize:
    name: str
    hidden: int
    layers: int
    vocab: int

    @property
    def intermediate(self) -> int:
        return self.hidden * 43 // 16  # about 8/3 x hidden, as Llama

    @property
    def heads(self) -> int:
        return max(1, self.hidden // 64)


SIZES = {
    "tiny": ModelSize("tiny", hidden=64, layers=2, vocab=1024),  # smoke tests only
    "5M": ModelSize("5M", hidden=256, layers=4, vocab=8192),
    "33M": ModelSize("33M", hidden=512, layers=8, vocab=16384),
}

_CONSONANTS, _VOWELS = "bcdfghklmnprstvz", "aeiou"


def _corpus(seed: int, vocab: int, words_per_line: int = 50) -> list[str]:
    """Pseudo-words from syllables: enough distinct pairs for a BPE vocabulary of `vocab` (up to 16k)."""
    rng = random.Random(seed)
    syllables = [c + v for c in _CONSONANTS for v in _VOWELS] + \
                [c + v + e for c in _CONSONANTS[:8] for v in _VOWELS for e in "nrsl"]
    n_words, lines = min(60_000, vocab * 8), min(2500, max(100, vocab // 6))
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(n_words)]
    text = [" ".join(rng.choice(words) for _ in range(words_per_line)) for _ in range(lines)]
    return text + ["The question: who directed the film, and where was the director born? 0123456789 .,;:!?'\"()-"]


def build_tokenizer(vocab: int, task: str, seed: int = 0):
    """A fast tokenizer with exactly `vocab` ids: BPE pieces, <unk>/<s>/</s> and `task`'s tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    added = list(get_spec(task).token_strings)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab - len(added), special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(seed, vocab), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="</s>")
    fast.add_special_tokens({"additional_special_tokens": added})
    return fast


def random_model(size: ModelSize, task: str, *, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 seed: int = 0, context: int = 2048) -> LoadedModel:
    """A random Llama-style LoadedModel of `size` that speaks `task`'s protocol."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tokenizer(size.vocab, task, seed)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=size.hidden, intermediate_size=size.intermediate,
                      num_hidden_layers=size.layers, num_attention_heads=size.heads,
                      num_key_value_heads=size.heads, max_position_embeddings=context,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg).to(device, dtype).eval()
    return LoadedModel(name=f"random-llama-{size.name}", model=model, tokenizer=tok, device=torch.device(device),
                       dtype=dtype, source="random")


def parameter_count(lm: LoadedModel) -> int:
    return sum(p.numel() for p in lm.model.parameters())
