"""Copy-constrained decoding for entity linking: the output may only be the input text with mentions
wrapped in `<MENTION>...</MENTION>[LK][_CONTINUE_]`.

The entity-linking prompt asks the model to "output the original text with annotations", and the
scorer matches mention surfaces exactly, so a model that misspells a name while copying ("Girginesh"
for "Girgirnesh") loses a correct link twice: a missed mention and a spurious one. Constrained
decoding (as in GENRE's prefix-constrained entity linking) masks every token that would leave that
language; the model still decides where mentions start and end, and which entity each `[LK]`
retrieves. The engine records each step where the mask overrode the model's own first choice.

Inside an open mention the mask alone would make the model copy on: a model that wants to skip
the filler words after a name ("..., she had come from ...") would have them swallowed into the
mention. `CopyConstraint.closing` names the tokens that end the mention there instead (at a word
edge only); the engine uses them when the model's own first choice leaves the input (RunSettings.
early_close). Outside a mention the mask's best token may be `<MENTION>` where the model wanted
something the input does not have; `CopyConstraint.opening` names those tokens so that the engine
copies instead (RunSettings.model_opens): a mention starts only where the model chose to start one.

Work is on UTF-8 bytes, so byte-level BPE (GPT-2, SmolLM) and SentencePiece with byte fallback
(Llama) are handled alike. A small automaton tracks where in the input the output is; the allowed
tokens at a step are found by walking the automaton and the vocabulary's byte prefixes together,
which touches only tokens that could fit (tens), not the whole vocabulary.
"""
from __future__ import annotations

import unicodedata
import weakref
from dataclasses import dataclass
from functools import lru_cache, wraps
from typing import Any, Callable, Iterable, TypeVar

T = TypeVar("T")

OPEN = b"<MENTION>"
CLOSE = b"</MENTION>"

# Automaton modes: copying text, inside an open or close tag, or waiting for a protocol token.
TEXT, IN_OPEN, IN_CLOSE, NEED_LINK, NEED_CONTINUE = range(5)


@dataclass(frozen=True)
class _State:
    pos: int  # bytes of the input copied so far
    mode: int = TEXT
    tag: int = 0  # bytes of the current tag written (IN_OPEN / IN_CLOSE)
    inside: bool = False  # between <MENTION> and </MENTION>
    # A text byte was copied since the last tag: no empty mentions, no tag right after a link,
    # so the output is finite and every mention has a surface.
    moved: bool = True
    lead: bool = True  # before any byte: one extra leading space is fine (SentencePiece writes it)
    # A visible byte was copied inside the open mention: a mention is never only whitespace or
    # zero-width characters (a trailing U+FEFF must not become a linked "mention").
    content: bool = False


def blank(ch: str) -> bool:
    """Whitespace, format and control characters (U+FEFF, U+200B, soft hyphen, ...): nothing a
    reader sees, so nothing a mention may consist of, and nothing the output must copy at its end."""
    return ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cn", "Zl", "Zp")


def _byte_flags(text: str) -> tuple[list[bool], list[bool]]:
    """Per UTF-8 byte of `text`: is its character visible; are all bytes from here on blank."""
    visible: list[bool] = []
    for ch in text:
        visible.extend([not blank(ch)] * len(ch.encode("utf-8")))
    blank_tail = [False] * len(visible) + [True]
    for i in range(len(visible) - 1, -1, -1):
        blank_tail[i] = blank_tail[i + 1] and not visible[i]
    return visible, blank_tail


def _word_edges(text: str) -> list[bool]:
    """Per byte offset 0..len(UTF-8 bytes): is it a character boundary outside a word (not between
    two letters or digits)? A mention the decoder ends on its own initiative ends only there, so a
    misspelt name is corrected by the mask rather than cut in half."""
    edges: list[bool] = []
    prev_word = False
    for ch in text:
        word = ch.isalnum()
        edges.append(not (prev_word and word))
        edges.extend([False] * (len(ch.encode("utf-8")) - 1))  # inside a multi-byte character
        prev_word = word
    edges.append(True)
    return edges


class VocabularyBytes:
    """Every ordinary token's bytes, and the set of all their prefixes (a trie in a set)."""

    def __init__(self, tokenizer):
        pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", None) or {})
        byte_level = (sum(1 for p in pieces if p and p.startswith("\u0120"))
                      > sum(1 for p in pieces if p and p.startswith("\u2581")))
        decode = _byte_level_decoder() if byte_level else _sentencepiece_bytes
        self.of_id: dict[int, bytes] = {}
        self.exact: dict[bytes, list[int]] = {}
        self.prefixes: set[bytes] = set()
        for i, p in enumerate(pieces):
            if p is None or i in special:
                continue
            b = decode(p)
            if not b:
                continue
            self.of_id[i] = b
            self.exact.setdefault(b, []).append(i)
            for k in range(1, len(b) + 1):
                self.prefixes.add(b[:k])


@lru_cache(maxsize=1)
def _byte_level_decoder():
    # GPT-2's reversible byte <-> printable-character table.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = {chr(c): b for b, c in zip(bs, cs)}

    def decode(piece: str) -> bytes | None:
        try:
            return bytes(table[ch] for ch in piece)
        except KeyError:
            return None
    return decode


def _sentencepiece_bytes(piece: str) -> bytes | None:
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        try:
            return bytes([int(piece[3:5], 16)])
        except ValueError:
            return None
    return piece.replace("\u2581", " ").encode("utf-8")


def per_tokenizer(build: Callable[[Any], T]) -> Callable[[Any], T]:
    """`build(tokenizer)` once per live tokenizer object. The cache keys on id(tokenizer) and keeps
    a weak reference beside the value, which tells a live tokenizer from a new one that reuses a
    freed object's id; entries of freed tokenizers are dropped on the next miss."""
    cache: dict[int, tuple[weakref.ref, T]] = {}

    @wraps(build)
    def cached(tokenizer) -> T:
        hit = cache.get(id(tokenizer))
        if hit is not None and hit[0]() is tokenizer:
            return hit[1]
        for key in [k for k, (ref, _) in cache.items() if ref() is None]:
            del cache[key]
        value = build(tokenizer)
        cache[id(tokenizer)] = (weakref.ref(tokenizer), value)
        return value

    return cached


@per_tokenizer
def vocabulary_bytes(tokenizer) -> VocabularyBytes:
    """Built once per tokenizer object (about 0.3 s for a 49k vocabulary)."""
    return VocabularyBytes(tokenizer)


States = frozenset  # of _State


class CopyConstraint:
    """Which tokens may follow, given what the run has written so far. States are immutable, so
    the engine can check a draft's tokens without committing to them."""

    def __init__(self, text: str, vocab: VocabularyBytes, *, link_id: int, continue_id: int, eos_id: int):
        self.text = text.encode("utf-8")
        self.visible, self.blank_tail = _byte_flags(text)
        self.word_edge = _word_edges(text)
        self.vocab = vocab
        self.link_id, self.continue_id, self.eos_id = link_id, continue_id, eos_id
        self.start: States = frozenset({_State(0)})

    # -- one byte / one token ---------------------------------------------------------------------
    def _next_bytes(self, s: _State, may_open: bool) -> Iterable[int]:
        if s.mode == IN_OPEN:
            yield OPEN[s.tag]
        elif s.mode == IN_CLOSE:
            yield CLOSE[s.tag]
        elif s.mode == TEXT:
            if s.pos < len(self.text):
                yield self.text[s.pos]
            if s.moved and not s.inside and may_open and s.pos < len(self.text):  # a mention needs text
                yield OPEN[0]
            if s.moved and s.inside and s.content:
                yield CLOSE[0]
            if s.lead:
                yield 0x20

    def _byte(self, s: _State, b: int, may_open: bool) -> list[_State]:
        out = []
        if s.mode == IN_OPEN:
            if OPEN[s.tag] == b:
                done = s.tag + 1 == len(OPEN)
                out.append(_State(s.pos, TEXT if done else IN_OPEN, 0 if done else s.tag + 1,
                                  inside=done, moved=False, lead=False))
        elif s.mode == IN_CLOSE:
            if CLOSE[s.tag] == b:
                done = s.tag + 1 == len(CLOSE)
                out.append(_State(s.pos, NEED_LINK if done else IN_CLOSE, 0 if done else s.tag + 1,
                                  inside=not done, moved=False, lead=False))
        elif s.mode == TEXT:
            if s.pos < len(self.text) and self.text[s.pos] == b:
                out.append(_State(s.pos + 1, TEXT, 0, s.inside, moved=True, lead=False,
                                  content=s.inside and (s.content or self.visible[s.pos])))
            if s.moved and not s.inside and may_open and s.pos < len(self.text) and OPEN[0] == b:
                out.append(_State(s.pos, IN_OPEN, 1, False, moved=False, lead=False))
            if s.moved and s.inside and s.content and CLOSE[0] == b:
                out.append(_State(s.pos, IN_CLOSE, 1, True, moved=False, lead=False))
            if s.lead and b == 0x20:
                out.append(_State(s.pos, TEXT, 0, s.inside, moved=s.moved, lead=False, content=s.content))
        return out

    def _bytes(self, states: States, b: int, may_open: bool) -> States:
        return frozenset(n for s in states for n in self._byte(s, b, may_open))

    def after(self, states: States, token_id: int, *, may_link: bool = True) -> States:
        """States after one token; empty if the token was not allowed."""
        if token_id == self.link_id:
            return frozenset(_State(s.pos, NEED_CONTINUE, inside=False, moved=False, lead=False)
                             for s in states if s.mode == NEED_LINK and may_link)
        if token_id == self.continue_id:
            return frozenset(_State(s.pos, TEXT, inside=False, moved=False, lead=False)
                             for s in states if s.mode == NEED_CONTINUE)
        if token_id == self.eos_id:
            return frozenset(s for s in states if self._may_end(s))
        b = self.vocab.of_id.get(token_id)
        if not b:
            return frozenset()
        for byte in b:
            states = self._bytes(states, byte, may_link)
            if not states:
                break
        return states

    def _may_end(self, s: _State) -> bool:
        # Trailing blanks (a final newline, a U+FEFF) need not be copied: a model that stops
        # before them has copied everything a reader sees.
        return s.mode == TEXT and self.blank_tail[s.pos] and not s.inside

    def closing(self, states: States, allowed: Iterable[int]) -> list[int]:
        """The tokens of `allowed` that begin `</MENTION>` right here, where the copied input is at a
        word edge: what the decoder may write instead to end an open mention early. [] when no
        mention is open or the input is mid-word."""
        if not any(s.mode == TEXT and s.inside and self.word_edge[s.pos] for s in states):
            return []
        out = []
        for t in allowed:
            if any(n.mode in (IN_CLOSE, NEED_LINK) and self.word_edge[n.pos] for n in self.after(states, t)):
                out.append(t)
        return out

    def opening(self, states: States, allowed: Iterable[int]) -> list[int]:
        """The tokens of `allowed` that would open a mention here (`<` of `<MENTION>`, possibly
        after copied text): what the mask must not write on the model's behalf. A token that may
        also copy a literal `<` of the input is not one of them."""
        if any(s.inside or s.mode != TEXT for s in states):
            return []
        out = []
        for t in allowed:
            nxt = self.after(states, t)
            if nxt and all(n.mode == IN_OPEN or n.inside for n in nxt):
                out.append(t)
        return out

    def spells_open(self, token_id: int) -> bool:
        """Does the token start `<MENTION>` in some spelling (after leading spaces), i.e. did a
        model that chose it mean to open a mention, even where its spelling is not allowed?"""
        b = (self.vocab.of_id.get(token_id) or b"").lstrip(b" ")
        return bool(b) and (OPEN.startswith(b) or b.startswith(OPEN))

    # -- the allowed set -----------------------------------------------------------------------------
    def allowed(self, states: States, *, may_link: bool = True) -> list[int]:
        """Token ids that keep the output inside the language. `may_link=False` (the run's
        retrieval limit is reached) forbids opening a mention, so no tag waits for a banned `[LK]`."""
        out: set[int] = set()
        for s in states:
            if s.mode == NEED_LINK and may_link:
                out.add(self.link_id)
            elif s.mode == NEED_CONTINUE:
                out.add(self.continue_id)
            elif self._may_end(s):
                out.add(self.eos_id)
        # Walk byte strings the automaton accepts, as long as some token starts with them. Each
        # prefix has one parent, so every string is visited once.
        stack: list[tuple[bytes, States]] = [(b"", states)]
        while stack:
            prefix, sts = stack.pop()
            for b in {b for s in sts for b in self._next_bytes(s, may_link)}:
                p = prefix + bytes([b])
                if p not in self.vocab.prefixes:
                    continue
                nxt = self._bytes(sts, b, may_link)
                if nxt:
                    out.update(self.vocab.exact.get(p, ()))
                    stack.append((p, nxt))
        return sorted(out)
