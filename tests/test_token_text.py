"""Token texts join into the decoded string: a character whose bytes span several tokens (byte
fallback in SentencePiece, byte-level BPE) never becomes U+FFFD in a token, a trace's output or a
result file."""
from __future__ import annotations

import random

import pytest

from onegen.loading import load_tokenizer
from onegen.registry import ASSETS
from onegen.tokenization import ProtocolTokenizer
from tiny import LLAMA_FIXTURES

NON_LATIN = ["Der Himmel über Berlin", "Москва — столица России", "東京は日本の首都です",
             "emoji 🎉👍🏽 at the end 🙂", "مرحبا بالعالم", "mixed Ж€é東🎉 and ascii"]


def _tokenizers():
    out = [pytest.param(ASSETS / "models" / "onegen-smol", id="byte-level-bpe")]
    out.append(pytest.param(LLAMA_FIXTURES / "multi-hop", id="llama2-sentencepiece",
                            marks=pytest.mark.skipif(not LLAMA_FIXTURES.exists(), reason="no Llama-2 fixtures")))
    return out


@pytest.fixture(scope="module", params=_tokenizers())
def ptok(request):
    return ProtocolTokenizer(load_tokenizer(request.param), [])


def _joined(ptok, ids):
    return "".join(ptok.token_text(ids, i) for i in range(len(ids)))


@pytest.mark.parametrize("text", NON_LATIN)
def test_split_characters_join_whole(ptok, text):
    ids = ptok.encode_data(text)
    assert ptok.decode(ids) == text  # the tokenizer round-trips it
    assert _joined(ptok, ids) == text
    assert all("\ufffd" not in ptok.token_text(ids, i) for i in range(len(ids)))


def test_random_strings_with_multibyte_characters(ptok):
    rng = random.Random(0)
    alphabet = "ab é€🎉東Жü"
    for _ in range(200):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 25)))
        ids = ptok.encode_data(text)
        if ptok.decode(ids) != text:
            continue  # normalisation, not our concern here
        assert _joined(ptok, ids) == text, text


def test_a_character_belongs_to_the_token_that_completes_it(ptok):
    ids = ptok.encode_data("🎉")
    texts = [ptok.token_text(ids, i) for i in range(len(ids))]
    assert "".join(texts) == "🎉"
    assert texts[-1].endswith("🎉") and all(t == "" for t in texts[:-1] if "🎉" not in t)
