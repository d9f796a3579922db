"""Answer alignment for the QA tasks: an answer checked against the documents the run read.

A small model copying an unseen name slips by a letter or two ("Pirburora" for "Prirburora": the
answer starts a word with a token the passage never shows) or stops early ("Girgir" for
"Girgirnesh"). The run read the passage that spells the name, so after the run the answer can be
compared with it. With "snap", an answer that occurs nowhere in what the run read (its question and
the documents it read), but is one phrase of them with a slip, is replaced by that phrase:

- a phrase of as many words as the answer within `max_edits` (about one edit in five characters,
  at least one) of it, the closest one, when no other phrase is as close;
- or, for an answer of four or more characters cut short, the shortest phrase that continues it
  ("Girgir" -> "Girgirnesh", not "Girgirneshi"), when it is the only one of that length.

Answers without a letter (years, counts) are never changed: a digit off is another number, not a
slip. The model's own answer is kept in `Result.model_answer`.
"""
from __future__ import annotations

import re
from typing import Sequence

from rapidfuzz.distance import Levenshtein

from .result_checks import check_value

_WORD = re.compile(r"\w+(?:['\-]\w+)*")


def max_edits(answer: str) -> int:
    return max(1, round(len(answer) / 5))


def phrases(source: str, words: int) -> list[str]:
    """Every run of `words` consecutive words of `source`, as written there."""
    spans = [m.span() for m in _WORD.finditer(source)]
    return [source[spans[i][0]:spans[i + words - 1][1]] for i in range(len(spans) - words + 1)]


def occurs(answer: str, sources: Sequence[str]) -> bool:
    pattern = re.compile(rf"(?<!\w){re.escape(answer)}(?!\w)", re.IGNORECASE)
    return any(pattern.search(s) for s in sources)


def aligned_answer(answer: str | None, sources: Sequence[str]) -> str | None:
    """The phrase of `sources` the answer meant to copy; None when the answer stands as written."""
    a = (answer or "").strip()
    if not re.search(r"[^\W\d_]", a) or occurs(a, sources):
        return None
    n = len(_WORD.findall(a))
    if n == 0:
        return None
    candidates = {p for s in sources for p in phrases(s, n)}
    low = a.lower()
    if len(a) >= 4:
        longer = sorted({p for p in candidates if p.lower().startswith(low) and len(p) > len(a)}, key=len)
        if longer:
            shortest = [p for p in longer if len(p) == len(longer[0])]
            return shortest[0] if len({p.lower() for p in shortest}) == 1 else None
    limit = max_edits(a)
    scored = sorted((Levenshtein.distance(low, p.lower(), score_cutoff=limit + 1), p) for p in candidates)
    best = [p for d, p in scored if d <= limit and d == scored[0][0]] if scored else []
    return best[0] if best and len({p.lower() for p in best}) == 1 else None


def align_answer(answer: str | None, sources: Sequence[str], policy: str) -> str | None:
    """The answer after alignment under `policy` ("off" or "snap"); None when unchanged."""
    if check_value("answer_alignment", policy) == "off":
        return None
    return aligned_answer(answer, sources)


def answer_note(model_answer: str | None, check: str | None = None) -> str:
    """One line for a reader where a result check changed the answer; "" otherwise. `check`: the
    comparison check's words (Result.answer_check), when it was that check."""
    if model_answer is None:
        return ""
    return f"the model answered {model_answer!r}; " + (check or "spelled as in what the run read")
