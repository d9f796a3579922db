"""Held-out questions in formats a single-hop model was not trained on, derived from a world's
`singlehop.json`: the same facts, gold passages and candidates, asked another way.

    fact verification   "Is it true that Thunlora's capital ... ? Answer yes or no."  -> yes / no
    fill in the blank   "The film X was released in ___."                             -> 2012
    multiple choice     "In which year ...? Options: A) 1990; B) 2012; ... Answer with the option's text."

Each file keeps the single-hop layout (`id`, `question`, `answers`, `gold_id`, `ctxs`) plus
`format`, so `python -m onegen evaluate --task single-hop --data FILE` reads it. Reproducible: the
same world file gives byte-identical output.

    python -m onegen.world.formats --world assets/world/heldout
"""
from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path
from typing import Callable

FORMATS = ("fact-verification", "fill-blank", "multiple-choice")
PER_FORMAT = 100
SEED = 26
BLANK = "___"
PAST_PARTICIPLE = {"wrote": "written", "painted": "painted", "recorded": "recorded", "directed": "directed",
                   "founded": "founded"}

# Question shapes of onegen/world/singlehop.py -> a statement with a blank where the answer goes, and
# the group naming the relation (None: the shape is one relation). A shape's other answers are the
# false claims and the wrong options, so a year is never offered for a city.
_STATEMENTS: list[tuple[re.Pattern, Callable[[re.Match], str], int | None]] = [
    (re.compile(r"^In which year was (.+) (born|released|published|completed|founded)\?$"),
     lambda m: f"{m[1]} was {m[2]} in {BLANK}", 2),
    (re.compile(r"^In which city was (.+) born\?$"), lambda m: f"{m[1]} was born in {BLANK}", None),
    (re.compile(r"^Who (directed|founded|wrote|painted|recorded) (.+)\?$"),
     lambda m: f"{m[2]} was {PAST_PARTICIPLE[m[1]]} by {BLANK}", 1),
    (re.compile(r"^Who was (.+) married to\?$"), lambda m: f"{m[1]} was married to {BLANK}", None),
    (re.compile(r"^Who is the father of (.+)\?$"), lambda m: f"The father of {m[1]} is {BLANK}", None),
    (re.compile(r"^Which club did (.+) play for\?$"), lambda m: f"{m[1]} played for {BLANK}", None),
    (re.compile(r"^In which country is (.+)\?$"), lambda m: f"{m[1]} is in {BLANK}", None),
    (re.compile(r"^What is the (population|capital) of (.+)\?$"), lambda m: f"The {m[1]} of {m[2]} is {BLANK}", 1),
    (re.compile(r"^In which city is (.+) headquartered\?$"), lambda m: f"{m[1]} is headquartered in {BLANK}", None),
]


def statement(question: str) -> tuple[str, str] | None:
    """(the question as a statement with a blank, its shape and relation), or None."""
    for i, (pattern, make, relation) in enumerate(_STATEMENTS):
        m = pattern.match(question)
        if m:
            text = make(m)
            return text[0].upper() + text[1:], f"{i}:{m[relation] if relation else ''}"
    return None


def _sentence_inside(text: str) -> str:
    """A statement to follow "Is it true that": only a leading article is lower-cased (names keep theirs)."""
    return "the" + text[3:] if text.startswith("The ") else text


def derive(items: list[dict], seed: int = SEED, n: int = PER_FORMAT) -> dict[str, list[dict]]:
    """The three formats from single-hop items: the first `n` items whose question has a known shape
    and at least three other answers of the same shape (the false claims and wrong options)."""
    rng = random.Random(seed)
    shaped = [(x, s) for x in items if (s := statement(x["question"]))]
    values: dict[str, list[str]] = {}
    for x, (_, shape) in shaped:
        if x["answers"][0] not in values.setdefault(shape, []):
            values[shape].append(x["answers"][0])
    out: dict[str, list[dict]] = {f: [] for f in FORMATS}
    for x, (text, shape) in shaped:
        if len(out[FORMATS[0]]) >= n:
            break
        answer = x["answers"][0]
        others = [v for v in values[shape] if v not in x["answers"]]
        if len(others) < 3:
            continue
        base = {"gold_id": x["gold_id"], "ctxs": x["ctxs"], "source": x["id"]}
        k = len(out[FORMATS[0]])
        true = k % 2 == 0  # half the claims true, half false
        claim = text.replace(BLANK, answer if true else rng.choice(others))
        out["fact-verification"].append({"id": f"{x['id']}-fv", "format": "fact-verification",
                                         "question": f"Is it true that {_sentence_inside(claim)}? Answer yes or no.",
                                         "answers": ["yes" if true else "no"], **base})
        out["fill-blank"].append({"id": f"{x['id']}-fb", "format": "fill-blank", "question": f"{text}.",
                                  "answers": list(x["answers"]), **base})
        options = [answer, *rng.sample(others, 3)]
        rng.shuffle(options)
        listed = "; ".join(f"{'ABCD'[i]}) {o}" for i, o in enumerate(options))
        out["multiple-choice"].append({"id": f"{x['id']}-mc", "format": "multiple-choice",
                                       "question": f"{x['question']} Options: {listed}. Answer with the option's text.",
                                       "answers": list(x["answers"]), "options": options, **base})
    return out


def write(world: Path, out: Path | None = None) -> list[Path]:
    items = json.loads((world / "singlehop.json").read_text(encoding="utf-8"))
    out = out or world
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, rows in derive(items).items():
        path = out / f"unseen-{name}.json"
        path.write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m onegen.world.formats", description=__doc__.split("\n\n")[0])
    p.add_argument("--world", type=Path, required=True, help="a world folder with singlehop.json")
    p.add_argument("--out", type=Path, help="folder to write (default: the world folder)")
    args = p.parse_args(argv)
    if not (args.world / "singlehop.json").is_file():
        print(f"error: {args.world} has no singlehop.json", file=__import__("sys").stderr)
        return 2
    for path in write(args.world, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
