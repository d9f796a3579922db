"""Real-looking data through the whole evaluation: a HotpotQA-style file (distractor layout) whose
titles, answers and sentences mix German umlauts, Cyrillic, Japanese, Arabic and emoji, some with a
trailing U+FEFF as scraped text often has, run with `onegen evaluate`'s own code; then every result
line is checked for U+FFFD (a character whose bytes were split across tokens and decoded apart)
and for retrieval or reflection tokens of another protocol than the task's.

    python -m onegen bench real-data                 # 100 questions, the embedded model, own context
    python -m onegen bench real-data --questions 10 --keep runs/real-data   # keep the file and results

The file is generated (seeded), never downloaded: this machine has no internet, and the point is
the characters, not the facts. `hotpot_style_items` and `scan_result_lines` are also what the tests
use on a handful of questions.
"""
from __future__ import annotations

import json
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

HELP = "real-looking data: non-Latin text and U+FEFF in a HotpotQA-style file; U+FFFD and foreign tokens in the output"

BOM = "\ufeff"
REPLACEMENT = "\ufffd"

# Name pieces per script (a person or place is drawn from one script so names look like real ones),
# kept as data beside this module.
_NAMES = json.loads((Path(__file__).with_name("real_data_names.json")).read_text(encoding="utf-8"))
PEOPLE: list[str] = _NAMES["people"]
PLACES: list[str] = _NAMES["places"]
FILM_HEADS: list[str] = _NAMES["film_heads"]
GENRES = ["drama", "comedy", "documentary", "thriller", "romance"]


@dataclass
class Generated:
    """The questions and what they exercise (for the report)."""

    items: list[dict[str, Any]]
    with_bom: int  # items with a trailing U+FEFF in a title, a sentence or the answer
    scripts: list[str] = field(default_factory=lambda: ["Latin with diacritics", "Cyrillic", "Japanese", "Arabic",
                                                        "emoji"])


def _bom(rng: random.Random, text: str, rate: float) -> str:
    return text + BOM if rng.random() < rate else text


def _film_title(rng: random.Random, used: set[str]) -> str:
    while True:
        head = rng.choice(FILM_HEADS)
        title = f"{head} {rng.choice(PLACES)}"
        if rng.random() < 0.2:
            title += " 🎥"
        if title not in used:
            used.add(title)
            return title


def _film(title: str, year: int, director: str, genre: str) -> list[str]:
    return [f"{title} is a {year} {genre} film.", f" It was directed by {director}.",
            f" It was released in {year}."]


def _person(name: str, place: str, year: int) -> list[str]:
    return [f"{name} is a film director.", f" {name} was born in {place} in {year}.",
            f" {name} has directed several films."]


def hotpot_style_items(n: int = 100, seed: int = 0, bom_rate: float = 0.25) -> Generated:
    """`n` HotpotQA distractor-layout items (question, answer, type, level, supporting_facts, context
    of [title, sentences]): bridge questions ("Where was the director of the film X born?") and
    comparisons ("Which film was released first, X or Y?"), each with its two gold paragraphs and
    distractors. About `bom_rate` of the items carry a trailing U+FEFF somewhere (a title, a
    sentence, or the answer)."""
    rng = random.Random(seed)
    items, with_bom = [], 0
    for i in range(n):
        used: set[str] = set()
        films = [_film_title(rng, used) for _ in range(4)]
        people = rng.sample(PEOPLE, 4)
        places = rng.sample(PLACES, 4)
        years = rng.sample(range(1950, 2021), 4)
        paragraphs = [[films[k], _film(films[k], years[k], people[k], rng.choice(GENRES))] for k in range(4)]
        paragraphs += [[people[k], _person(people[k], places[k], 1920 + years[k] % 50)] for k in range(4)]
        marked = rng.random() < bom_rate
        if i % 2 == 0:
            kind, question = "bridge", f"Where was the director of the film {films[0]} born?"
            answer, facts = places[0], [[films[0], 1], [people[0], 1]]
            gold = {films[0], people[0]}
        else:
            kind, question = "comparison", f"Which film was released first, {films[0]} or {films[1]}?"
            answer = films[0] if years[0] < years[1] else films[1]
            facts, gold = [[films[0], 2], [films[1], 2]], {films[0], films[1]}
        context = [p for p in paragraphs if p[0] in gold]
        context += rng.sample([p for p in paragraphs if p[0] not in gold], 6)
        rng.shuffle(context)
        if marked:
            with_bom += 1
            where = rng.choice(("title", "sentence", "answer"))
            if where == "answer":
                answer += BOM
            else:
                # A distractor's title (a gold title must stay equal to its supporting fact's) or
                # the last sentence of any paragraph.
                target = rng.choice([p for p in context if where == "sentence" or p[0] not in gold])
                if where == "title":
                    target[0] += BOM
                else:
                    target[1] = [*target[1][:-1], target[1][-1] + BOM]
        items.append({"_id": f"real-{i:03d}", "type": kind, "level": rng.choice(("easy", "medium", "hard")),
                      "question": question, "answer": answer, "supporting_facts": facts,
                      "context": [[t, list(s)] for t, s in context]})
    return Generated(items=items, with_bom=with_bom)


def write_items(path: Path, items: list[dict[str, Any]]) -> Path:
    """The items as one JSON list, as HotpotQA ships its dev file."""
    from onegen.fsutil import atomic_write

    atomic_write(path, json.dumps(items, ensure_ascii=False, indent=1))
    return path


# -- the check ---------------------------------------------------------------------------------------

@dataclass
class ScanFinding:
    key: str
    problem: str  # "U+FFFD" or "foreign token [LK]"
    where: str  # "output", "token 12", "answer"


@dataclass
class ScanReport:
    lines: int
    replacement_chars: int
    foreign_tokens: int
    findings: list[ScanFinding]

    @property
    def clean(self) -> bool:
        return not self.findings


def foreign_token_strings(task: str) -> tuple[str, ...]:
    """Token strings other protocols add that `task`'s protocol does not use."""
    from onegen.protocols import SPECS

    own = set(SPECS[task].token_strings)
    return tuple(sorted({t for spec in SPECS.values() for t in spec.token_strings} - own))


def _texts_of(line: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    """(where, text) of everything the run produced in a result line (not the dataset's own fields)."""
    if isinstance(line.get("output"), str):
        yield "output", line["output"]
    trace = line.get("trace") or {}
    for t in trace.get("tokens") or []:
        if t.get("kind") != "inserted":
            yield f"token {t.get('position')}", t.get("text") or ""
    result = trace.get("result") or {}
    if isinstance(result.get("answer"), str):
        yield "answer", result["answer"]
    for k, hop in enumerate(result.get("hops") or []):
        yield f"hop {k + 1}", f"{hop.get('question') or ''} {hop.get('answer') or ''}"


def scan_result_lines(lines: Iterable[Mapping[str, Any]], task: str) -> ScanReport:
    """Every U+FFFD and every other protocol's token in what the run wrote."""
    foreign = foreign_token_strings(task)
    findings: list[ScanFinding] = []
    n = fffd = tokens = 0
    for line in lines:
        n += 1
        key = str((line.get("onegen") or {}).get("key", n - 1))
        for where, text in _texts_of(line):
            if REPLACEMENT in text:
                fffd += text.count(REPLACEMENT)
                findings.append(ScanFinding(key, "U+FFFD", where))
            for tok in foreign:
                if tok in text:
                    tokens += text.count(tok)
                    findings.append(ScanFinding(key, f"foreign token {tok}", where))
    return ScanReport(lines=n, replacement_chars=fffd, foreign_tokens=tokens, findings=findings)


# -- the benchmark ----------------------------------------------------------------------------------

def add_arguments(p) -> None:
    p.add_argument("--questions", type=int, default=100, help="questions to generate and run (default 100; quick 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated file (default 0)")
    p.add_argument("--model", default=None, help="model (default: the embedded model)")
    p.add_argument("--keep", type=Path, metavar="DIR", help="keep the data file and the result file in DIR")


def main(args) -> int:
    import torch

    from onegen.datasets import load_dataset
    from onegen.engine import Engine
    from onegen.evaluation import EvaluationSettings, evaluate
    from onegen.loading import load_model

    from .report import command_line, machine_info, write_section

    n = 5 if args.quick else args.questions
    gen = hotpot_style_items(n, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        data = write_items(folder / "hotpot-style-real.json", gen.items)
        out = folder / "result.jsonl"
        out.unlink(missing_ok=True)  # a fresh run: the figures are this run's
        t0 = time.perf_counter()
        lm = load_model(args.model, task="multi-hop", device=args.device)
        load_s = time.perf_counter() - t0
        examples = load_dataset(data, "multi-hop").examples
        report = evaluate(Engine(lm), "multi-hop", examples, EvaluationSettings(candidates="context"), out=out,
                          progress=not args.json)
        lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines() if x.strip()]
    scan = scan_result_lines(lines, "multi-hop")
    m = report.metrics
    result = {"questions": n, "with_trailing_bom": gen.with_bom, "model": lm.name, "threads": torch.get_num_threads(),
              "em": m.em, "f1": m.f1, "errors": m.errors, "stop_reasons": m.stop_reasons,
              "replacement_chars": scan.replacement_chars, "foreign_tokens": scan.foreign_tokens,
              "findings": [asdict(f) for f in scan.findings[:20]],
              "seconds_per_question_median": round(m.seconds_per_example_median or 0.0, 2),
              "seconds_total": round(m.seconds_total, 1), "model_load_s": round(load_s, 1)}
    print(json.dumps(result, ensure_ascii=False, indent=None if args.json else 2))
    if args.write:
        body = (
            f"{n} generated HotpotQA-style questions (distractor layout, {len(gen.scripts)} scripts: "
            f"{', '.join(gen.scripts)}; {gen.with_bom} with a trailing U+FEFF), each question's own context, "
            f"model {lm.name}.\n\n"
            "| U+FFFD in the output | foreign protocol tokens | errors | EM | F1 | s / question (median) | total |\n"
            "|---|---|---|---|---|---|---|\n"
            f"| {scan.replacement_chars} | {scan.foreign_tokens} | {m.errors} | {m.em or 0.0:.3f} | {m.f1 or 0.0:.3f} "
            f"| {result['seconds_per_question_median']} | {result['seconds_total']} s |\n\n"
            "The EM is not a quality figure: the facts are generated and the model was trained on another "
            "world; the row shows that non-Latin text and invisible characters pass through whole.")
        write_section("real-data", body, command=command_line(), machine=machine_info(args.device),
                      title="Real-looking data: non-Latin text and U+FEFF through an evaluation", path=args.write)
    return 0 if scan.clean else 1
