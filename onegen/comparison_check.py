"""Comparison check for multi-hop chains: the comparison a model wrote, recomputed from the values it
wrote.

A small model copies two values correctly and still compares them wrongly ("289,000 is more than
2,043,100") or names the other option after a right comparison. Where a chain states its comparison
in the shape "V1 is more than V2, so the larger one is V3 and the answer is" (the embedded default's
chains; `comparison_order: "question-winner"` in its recipe), "recompute" takes the direction the
model chose (larger, smaller, earlier, later), picks the winning value itself, follows the chain's
sentences from that value back to the option it belongs to ("Canbamica has a population of
2,043,100."; "Penius Drelsiners was born in 1879." <- "Summer over Gakrel was directed by Penius
Drelsiners."), and answers that option. Anything it cannot follow leaves the answer as written. The
model's own answer is kept in `Result.model_answer`, its statement in `Result.answer_check`.
"""
from __future__ import annotations

import re
from typing import Sequence

from .answer_alignment import aligned_answer
from .result_checks import check_value

_NUM = r"(\d[\d,]*(?:\.\d+)?)"
STATEMENT = re.compile(_NUM + r" is (?:more|less|larger|smaller|greater|fewer|earlier|later|higher|lower) than "
                       + _NUM + r", so the (larger|smaller|greater|fewer|more|less|earlier|later|higher|lower) one is")
_LARGER = frozenset({"larger", "greater", "more", "later", "higher"})
# A chain sentence: its subject, a verb, the rest ("X was directed by Y.", "Y was born in 1879.").
_SUBJECT = re.compile(r"^(.+?) (?:was|is|has|had|were|are) ")


def _value(text: str) -> float:
    return float(text.replace(",", ""))


def _holds(sentence: str, value: str) -> bool:
    return re.search(rf"(?<![\d,.]){re.escape(value)}(?![\d,]|\.\d)", sentence) is not None


def _subject(sentence: str) -> str | None:
    m = _SUBJECT.match(sentence.strip())
    return m.group(1).strip() if m else None


def _strip_article(name: str) -> str:
    return re.sub(r"^(the|a|an)\s+", "", name.strip(), flags=re.IGNORECASE)


def option_of(value: str, sentences: Sequence[str], question: str) -> str | None:
    """The option of `question` the chain ties `value` to: the subject of the sentence that holds
    the value, or, when that subject is not in the question (a director, a founder), the subject
    of the sentence that names it (the film, the organisation). None when the chain does not say."""
    q = question.lower()
    holding = [s for s in sentences if _holds(s, value)]
    if not holding:
        return None
    subject = _subject(holding[0])
    for _ in range(3):  # an option is at most three sentences back from its value
        if subject is None:
            return None
        if _strip_article(subject).lower() in q:
            return subject
        respelt = aligned_answer(subject, [question])  # the chain misspelt an option ("Piltora")
        if respelt is not None:
            return respelt
        named = [s for s in sentences if s not in holding and subject.lower() in s.lower()
                 and (_subject(s) or "").lower() != subject.lower()]
        if not named:
            return None
        holding, subject = named, _subject(named[0])
    return None


def recompute(generated: str, answer: str | None, sentences: Sequence[str], question: str) -> tuple[str, str] | None:
    """(the option the chain's own values make the answer, the model's statement) when it differs
    from `answer`; None when the answer stands or the chain cannot be followed."""
    if not answer:
        return None
    found = list(STATEMENT.finditer(generated))
    if not found:
        return None
    m = found[-1]
    first, second, direction = m.group(1), m.group(2), m.group(3)
    if _value(first) == _value(second):
        return None
    larger = _value(first) > _value(second)
    winner = first if (direction in _LARGER) == larger else second
    loser = second if winner is first else first
    option, other = option_of(winner, sentences, question), option_of(loser, sentences, question)
    if option is None or other is None or _strip_article(option).lower() == _strip_article(other).lower():
        return None
    if _strip_article(option).lower() == _strip_article(answer).lower():
        return None
    return option, generated[m.start():m.end()]


def check_comparison(generated: str, answer: str | None, sentences: Sequence[str], question: str,
                     policy: str) -> tuple[str, str] | None:
    """`recompute` under `policy` ("off" or "recompute")."""
    if check_value("comparison_check", policy) == "off":
        return None
    return recompute(generated, answer, sentences, question)
