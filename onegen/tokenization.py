"""Tokenisation per the protocol: template tokens are markers, everything a user or a corpus
wrote is data.

A template is cut at the protocol's token strings (and `<s>`/`</s>`); those become their ids. The
text between markers, template words and user data together, is tokenised as one run with
special-token splitting disabled. That reproduces the ids the released checkpoints were trained on
(the authors tokenised whole strings; SentencePiece attaches a space to the *next* word, so cutting
`question: ` from `Who` would change ids), while a user typing `[LK]` or `</s>` gets plain text.
No BOS/EOS is ever added automatically.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence, Union

_PLACEHOLDER = re.compile(r"\{(input|title|text|sentences)\}")


@dataclass(frozen=True)
class Data:
    """Text from a user or a corpus: never turned into special tokens."""
    text: str


@dataclass(frozen=True)
class Literal:
    """Template text: the protocol's token strings inside it become their ids."""
    text: str


@dataclass(frozen=True)
class Token:
    """One special token, by its string."""
    text: str


Part = Union[Data, Literal, Token]


@dataclass
class Encoded:
    ids: list[int]
    # (token string, position) for every special token placed by the template, in order.
    markers: list[tuple[str, int]] = field(default_factory=list)

    def positions(self, token: str) -> list[int]:
        return [p for t, p in self.markers if t == token]


class ProtocolTokenizer:
    """Wraps a Hugging Face tokenizer with the protocol's rules."""

    def __init__(self, tokenizer, token_strings: Sequence[str]):
        self.hf = tokenizer
        vocab = tokenizer.get_vocab()
        specials = [t for t in token_strings if t in vocab]
        for t in (tokenizer.bos_token, tokenizer.eos_token):
            if t and t in vocab and t not in specials:
                specials.append(t)
        self.special_ids = {t: vocab[t] for t in specials}
        # Longest first so that no token string matches inside a longer one.
        self._special_re = re.compile("|".join(re.escape(t) for t in sorted(specials, key=len, reverse=True))) if specials else None

    # -- encoding -----------------------------------------------------------------------------
    def encode_data(self, text: str) -> list[int]:
        if not text:
            return []
        return list(self.hf(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])

    def encode(self, parts: Sequence[Part]) -> Encoded:
        ids: list[int] = []
        markers: list[tuple[str, int]] = []
        run: list[str] = []

        def flush() -> None:
            if run:
                ids.extend(self.encode_data("".join(run)))
                run.clear()

        for part in self._expand_literals(parts):
            if isinstance(part, Token):
                flush()
                if part.text not in self.special_ids:
                    raise KeyError(f"token {part.text!r} is not in this tokenizer's vocabulary")
                markers.append((part.text, len(ids)))
                ids.append(self.special_ids[part.text])
            else:
                run.append(part.text)
        flush()
        return Encoded(ids, markers)

    def _expand_literals(self, parts: Sequence[Part]) -> list[Part]:
        out: list[Part] = []
        for part in parts:
            if isinstance(part, Literal) and self._special_re is not None:
                pos = 0
                for m in self._special_re.finditer(part.text):
                    if m.start() > pos:
                        out.append(Data(part.text[pos:m.start()]))
                    out.append(Token(m.group(0)))
                    pos = m.end()
                if pos < len(part.text):
                    out.append(Data(part.text[pos:]))
            elif isinstance(part, Literal):
                out.append(Data(part.text))
            else:
                out.append(part)
        return out

    def encode_template(self, template: str, **values: str) -> Encoded:
        return self.encode(template_parts(template, **values))

    # -- decoding -----------------------------------------------------------------------------
    def decode(self, ids: Sequence[int]) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def token_text(self, ids: Sequence[int], i: int, window: int = 6) -> str:
        """Text that token `i` adds to the decoded string, decoded in context so SentencePiece's
        leading spaces come out right. A character whose bytes span several tokens belongs to the
        token that completes it (the ones before it add ""), so joining the texts of all tokens
        gives the decoded string, never U+FFFD for a split character (as incremental detokenizers
        such as vLLM's do it, but stateless)."""
        start = max(0, i - window)
        # Begin at a character boundary: while the window's text starts with U+FFFD, its first
        # tokens are the last bytes of a character begun earlier (bounded: a run of byte tokens).
        for _ in range(16):
            if start == 0 or not self.decode(ids[start:i + 1]).startswith("\ufffd"):
                break
            start -= 1
        full = self.decode(ids[start:i + 1])
        if _incomplete(full):
            return ""  # a later token completes this character
        # The text before token i, up to the last token that ended a whole character. Some decoders
        # turn a whole run of byte tokens into U+FFFD while its last character is incomplete.
        for end in range(i, start - 1, -1):
            before = self.decode(ids[start:end])
            if not _incomplete(before):
                break
        if full.startswith(before):
            return full[len(before):]
        return self.decode(ids[i:i + 1])


def _incomplete(text: str) -> bool:
    """Does `text` end in the bytes of a character that a later token completes?"""
    return text.endswith("\ufffd")


def template_parts(template: str, **values: str) -> list[Part]:
    """Split a template at `{input}`, `{title}`, `{text}`, `{sentences}` into Literal and Data
    parts. Other braces (the EL prompt's literal `{mention in text}`) stay template text."""
    parts: list[Part] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(template):
        if m.start() > pos:
            parts.append(Literal(template[pos:m.start()]))
        name = m.group(1)
        if name not in values:
            raise KeyError(f"template needs a value for {{{name}}}")
        parts.append(Data(values[name]))
        pos = m.end()
    if pos < len(template):
        parts.append(Literal(template[pos:]))
    return parts
