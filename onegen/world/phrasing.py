"""Surface forms: the many ways a user can ask the world's questions and write its sentences.

Every question template of `multihop.py` and `singlehop.py` and every kind of entity-linking
sentence is a *family*. A family lists its surface forms as format strings over named slots
("Where was {film}'s director born?"); entity slots take the phrase that names an entity, the
other slots closed-class words ("wife", "his", "published"). A family has a `canonical` form
(the template the world has always written; None for sentence kinds it never wrote), a
`train` part and a `heldout` part.

The split is fixed by hand in this file and never computed, so that it cannot drift: each kind
of variation (another clause order, a synonym, a terse or two-sentence form, a possessive) has
examples in both parts, with different words, so a held-out form asks a model to generalise
from the same kind of variation it was trained on rather than from nothing. The phrasings the
issue reports failing on ("Which city was the guy who directed X born in?", "X was born in what
country?", "dad's dad", "wife's father", "between X and Y") are all held out.

Styles (casing, a dropped question mark or final period, one typo in a word that is not a
name) are shared by both parts; the openers users put in front ("Quick question: ") are split
like the forms. Held-out text is never built from a training form or opener, and training text
never from a held-out one: `tests/test_phrasing.py` fails if a held-out form's fixed words
turn up in training questions.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Iterator

PARTS = ("train", "heldout")
_SLOT = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Family:
    canonical: str | None
    train: tuple[str, ...]
    heldout: tuple[str, ...]

    def forms(self, part: str) -> tuple[str, ...]:
        """The forms a generator may use for `part`; the training part includes the canonical one."""
        if part == "train":
            return ((self.canonical,) if self.canonical else ()) + self.train
        if part == "heldout":
            return self.heldout
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")


# ---------------------------------------------------------------------------
# Multi-hop questions (one family per template of multihop.py)
# ---------------------------------------------------------------------------

MULTIHOP_FORMS: dict[str, Family] = {
    # compositional
    "director_birthplace": Family(
        "Where was the director of {film} born?",
        ("Where was {film}'s director born?",
         "In which city was the director of {film} born?",
         "Who directed {film}, and where was that person born?",
         "What is the birthplace of the person who directed {film}?",
         "Think of the director of {film}. Where was that director born?",
         "director of {film} birthplace"),
        ("Which city was the guy who directed {film} born in?",
         "The filmmaker behind {film} was born where?",
         "I watched {film} yesterday. In what city was its director born?",
         "{film} director's birthplace?")),
    "birth_country": Family(
        "In which country was {person} born?",
        ("Which country was {person} born in?",
         "What country is the birthplace of {person} in?",
         "{person} was born in a city. Which country is that city in?",
         "country of birth of {person}"),
        ("{person} was born in what country?",
         "Tell me the country where {person} was born.",
         "Which nation is {person}'s birthplace in?",
         "{person}: country of birth?")),
    "founder_birth_year": Family(
        "When was the founder of {org} born?",
        ("In which year was the founder of {org} born?",
         "What year was {org}'s founder born?",
         "Who founded {org}, and when was that person born?",
         "Think of whoever established {org}. When was that person born?",
         "birth year of the founder of {org}"),
        ("The person who set up {org} was born in what year?",
         "{org} was started by someone. What year was that someone born?",
         "Year of birth of the man or woman behind {org}?")),
    "creator_birthplace": Family(
        "Where was the {role} of {work} born?",
        ("Where was {work}'s {role} born?",
         "In which city was the {role} of {work} born?",
         "Who {made} {work}, and where was that person born?",
         "birthplace of the {role} of {work}"),
        ("Which city was the person who {made} {work} born in?",
         "The {role} of {work}: where were they born?",
         "Somebody {made} {work}. That somebody was born in which city?",
         "{work}: where was its {role} born?")),
    "headquarters_country": Family(
        "In which country is the headquarters of {org}?",
        ("Which country is {org} headquartered in?",
         "In which country is {org} based?",
         "What country are the headquarters of {org} located in?",
         "country of the headquarters of {org}"),
        ("{org} has its head office in what country?",
         "The headquarters of {org} are in which nation?",
         "Which country would I travel to to visit the headquarters of {org}?",
         "{org}: country of its headquarters?")),
    # inference
    "father_in_law": Family(
        "Who is the father-in-law of {person}?",
        ("Who is {person}'s father-in-law?",
         "Who is the father of {person}'s {spouse}?",
         "{person} married someone. Who is that person's father?",
         "Name the father of the person {person} married.",
         "father-in-law of {person}"),
        ("Who is {person}'s {spouse}'s father?",
         "Who's the dad of the one {person} wed?",
         "{person} has a {spouse}; who fathered that {spouse}?",
         "{person}: father-in-law?")),
    "paternal_grandfather": Family(
        "Who is the paternal grandfather of {person}?",
        ("Who is {person}'s paternal grandfather?",
         "Who is the father of {person}'s father?",
         "Who was {person}'s grandfather on {his} father's side?",
         "{person}'s father had a father. Who was he?",
         "paternal grandfather of {person}"),
        ("Who is {person}'s dad's dad?",
         "Who was the father of the man who fathered {person}?",
         "Name the grandpa of {person} on the paternal side.",
         "{person}: paternal grandfather?")),
    "mother": Family(
        "Who is the mother of {person}?",
        ("Who is {person}'s mother?",
         "Who was the wife of {person}'s father?",
         "Whom did the father of {person} marry?",
         "{person}'s father was married to someone. Who?",
         "mother of {person}"),
        ("Who did {person}'s father marry?",
         "Who is {person}'s mom?",
         "{person}'s dad had a wife. Who was she?",
         "{person}: mother?")),
    # comparison
    "released_first": Family(
        "Which film came out first, {a} or {b}?",
        ("Which film is older, {a} or {b}?",
         "Was {a} or {b} released first?",
         "Of {a} and {b}, which film was released earlier?",
         "{a} vs {b}: which came out first?",
         "which came out first {a} or {b}"),
        ("{a} or {b}: which was released first?",
         "Between {a} and {b}, which film came out earlier?",
         "Which one premiered before the other, {a} or {b}?",
         "first released: {a} or {b}?")),
    "born_first": Family(
        "Who was born first, {a} or {b}?",
        ("Who is older, {a} or {b}?",
         "Of {a} and {b}, who was born earlier?",
         "Was {a} or {b} born first?",
         "{a} vs {b}: who was born first?",
         "who was born earlier {a} or {b}"),
        ("{a} or {b}: who is the older one?",
         "Between {a} and {b}, who was born first?",
         "Who came into the world first, {a} or {b}?",
         "born first: {a} or {b}?")),
    "more_inhabitants": Family(
        "Which city has more inhabitants, {a} or {b}?",
        ("Which city is more populous, {a} or {b}?",
         "Of {a} and {b}, which city has the larger population?",
         "Does {a} or {b} have more inhabitants?",
         "{a} vs {b}: which has more people?",
         "which city is bigger by population {a} or {b}"),
        ("{a} or {b}: which has more residents?",
         "Between {a} and {b}, which city has more people living in it?",
         "Which of the two cities, {a} and {b}, is home to more people?",
         "more inhabitants: {a} or {b}?")),
    "founded_first": Family(
        "Which organisation was founded first, {a} or {b}?",
        ("Which organisation is older, {a} or {b}?",
         "Was {a} or {b} established first?",
         "Of {a} and {b}, which was founded earlier?",
         "{a} vs {b}: which was established first?",
         "which was founded first {a} or {b}"),
        ("{a} or {b}: which was set up first?",
         "Between {a} and {b}, which organization came first?",
         "Which of the two, {a} and {b}, was started earlier?",
         "founded first: {a} or {b}?")),
    # bridge comparison
    "director_born_first": Family(
        "Which film has the director who was born first, {a} or {b}?",
        ("Whose director was born earlier, {a} or {b}?",
         "Of {a} and {b}, which film's director is older?",
         "Which film was made by the older director, {a} or {b}?",
         "{a} vs {b}: which director was born first?"),
        ("{a} or {b}: which one's director was born first?",
         "Between {a} and {b}, which film had the older director?",
         "Which film's director came into the world first, {a} or {b}?",
         "older director: {a} or {b}?")),
    "director_born_later": Family(
        "Which film has the director who was born later, {a} or {b}?",
        ("Whose director was born later, {a} or {b}?",
         "Of {a} and {b}, which film's director is younger?",
         "Which film was made by the younger director, {a} or {b}?",
         "{a} vs {b}: which director was born later?"),
        ("{a} or {b}: which one's director was born later?",
         "Between {a} and {b}, which film had the younger director?",
         "Which film's director was born more recently, {a} or {b}?",
         "younger director: {a} or {b}?")),
    "author_born_first": Family(
        "Which novel has the author who was born first, {a} or {b}?",
        ("Whose author was born earlier, {a} or {b}?",
         "Of {a} and {b}, which novel's author is older?",
         "Which novel was written by the older writer, {a} or {b}?",
         "{a} vs {b}: which author was born first?"),
        ("{a} or {b}: which one's author was born first?",
         "Between {a} and {b}, which novel had the older author?",
         "Which book's writer came into the world first, {a} or {b}?",
         "older author: {a} or {b}?")),
    "founder_born_first": Family(
        "Which organisation has the founder who was born first, {a} or {b}?",
        ("Whose founder was born earlier, {a} or {b}?",
         "Of {a} and {b}, which organisation's founder is older?",
         "Which organisation was established by the older founder, {a} or {b}?",
         "{a} vs {b}: which founder was born first?"),
        ("{a} or {b}: which one's founder was born first?",
         "Between {a} and {b}, which organization had the older founder?",
         "Which was set up by the person born first, {a} or {b}?",
         "older founder: {a} or {b}?")),
}

# ---------------------------------------------------------------------------
# Single-hop questions (one family per template of singlehop.py)
# ---------------------------------------------------------------------------

SINGLEHOP_FORMS: dict[str, Family] = {
    "film_year": Family(
        "In which year was {film} released?",
        ("When was {film} released?", "What year did {film} come out?", "release year of {film}",
         "{film} was released when?"),
        ("{film} came out in what year?", "Which year saw the release of {film}?", "When did {film} hit cinemas?",
         "{film}: year of release?")),
    "film_director": Family(
        "Who directed {film}?",
        ("Who was the director of {film}?", "Who is {film}'s director?", "director of {film}", "Who made {film}?"),
        ("{film} was directed by whom?", "Name the director of {film}.", "Who was behind the camera for {film}?",
         "{film}: directed by?")),
    "birth_city": Family(
        "In which city was {person} born?",
        ("Where was {person} born?", "What city was {person} born in?", "birthplace of {person}",
         "{person} was born where?"),
        ("{person} was born in which city?", "Which town did {person} come from originally?",
         "What is {person}'s city of birth?",
         "{person}: place of birth?")),
    "birth_year": Family(
        "In which year was {person} born?",
        ("When was {person} born?", "What year was {person} born?", "birth year of {person}",
         "{person} was born when?"),
        ("{person} was born in what year?", "In what year did {person} come into the world?",
         "What's the year of {person}'s birth?",
         "{person}: year of birth?")),
    "spouse": Family(
        "Who was {person} married to?",
        ("Who did {person} marry?", "Who is {person}'s spouse?", "Who was {person}'s {spouse}?", "spouse of {person}"),
        ("{person} was married to whom?", "Name {person}'s {spouse}.", "Who did {person} wed?",
         "{person}: spouse?")),
    "father": Family(
        "Who is the father of {person}?",
        ("Who is {person}'s father?", "Who was {person}'s dad?", "father of {person}", "Whose {child} is {person}?"),
        ("{person} is the {child} of which man?", "Who fathered {person}?", "Name {person}'s father.",
         "{person}: father's name?")),
    "club": Family(
        "Which club did {person} play for?",
        ("What team did {person} play for?", "{person} played for which club?", "club of {person}",
         "Who did {person} play football for?"),
        ("{person} was a player at what club?", "Which football team had {person} as a player?",
         "Name the club {person} played for.",
         "{person}: club?")),
    "city_country": Family(
        "In which country is {city}?",
        ("Which country is {city} in?", "{city} is located in which country?", "country of {city}",
         "{city} lies in which country?"),
        ("{city} is in what country?", "What country does {city} belong to?",
         "Tell me which country {city} is part of.",
         "{city}: which country?")),
    "population": Family(
        "What is the population of {city}?",
        ("How many people live in {city}?", "What's the population of {city}?", "population of {city}",
         "How many inhabitants does {city} have?"),
        ("{city} has how many residents?", "How big is the population of {city}?",
         "Roughly how many people call {city} home?",
         "{city}: population?")),
    "capital": Family(
        "What is the capital of {country}?",
        ("Which city is the capital of {country}?", "What is {country}'s capital?", "capital of {country}",
         "{country} has which city as its capital?"),
        ("{country}'s capital city is what?", "Which city serves as the capital of {country}?",
         "Name the capital city of {country}.",
         "{country}: capital?")),
    "founder": Family(
        "Who founded {org}?",
        ("Who established {org}?", "Who was the founder of {org}?", "{org} was founded by whom?", "founder of {org}"),
        ("Who set up {org}?", "{org} was started by whom?", "Name the person who founded {org}.",
         "{org}: founded by?")),
    "founding_year": Family(
        "In which year was {org} founded?",
        ("When was {org} established?", "What year was {org} founded?", "founding year of {org}",
         "{org} was founded when?"),
        ("{org} was set up in what year?", "When did {org} get started?", "In what year did {org} open its doors?",
         "{org}: year founded?")),
    "headquarters": Family(
        "In which city is {org} headquartered?",
        ("Where is {org} headquartered?", "Which city is {org} based in?", "headquarters of {org}",
         "{org} has its headquarters in which city?"),
        ("{org} has its head office in which city?", "Where are {org}'s headquarters?",
         "In what city does {org} keep its main office?",
         "{org}: headquarters city?")),
    "creator": Family(
        "Who {made} {work}?",
        ("Who is the {role} of {work}?", "{work} was {made_pp} by whom?", "{role} of {work}",
         "Who was responsible for {work}?"),
        ("Who created {work}?", "Name the {role} of {work}.", "{work}: who {made} it?")),
    "work_year": Family(
        "In which year was {work} {finished}?",
        ("When was {work} {finished}?", "What year was {work} {finished}?", "{finishing} year of {work}",
         "{work} was {finished} when?"),
        ("{work} was {finished} in what year?", "Which year saw {work} {finished}?",
         "What's the year {work} was {finished}?",
         "{work}: year {finished}?")),
}

# ---------------------------------------------------------------------------
# Entity-linking sentences (one family per kind of fact; `linking.py` writes its own
# templates, so there is no canonical form). Lower-case entity slots take the phrase that
# tells namesakes apart ("the painter Ivo Brandel"), upper-case ones the bare name where the
# surrounding words already say what it is.
# ---------------------------------------------------------------------------

LINKING_FORMS: dict[str, Family] = {
    "born": Family(None,
        ("{c} is where {p} was born.",
         "{p} was, as far as anyone knows, born in {c}.",
         "The {demonym} {occupation} {P} was born in {c} in {year}.",
         "In {year}, {P} was born in {c}; {he} later became {a_occupation}."),
        ("{c} was the birthplace of {p}",
         "{P}, who was born in {c} back in {year}, worked as {a_occupation}.",
         "the {occupation} {P} comes from {c}, where {he} was born")),
    "married": Family(None,
        ("{q} was married to {p}.",
         "{P}, the {occupation}, married {q}.",
         "{p} and {q} were married for many years."),
        ("{p} tied the knot with {q}, or so the story goes.",
         "The {occupation} {P} and {his} {spouse} {q} married young.",
         "Everyone knew {p}; fewer knew that {he} married {q}")),
    "child": Family(None,
        ("{f} is the father of {p}.",
         "{p}, whose father was {f}, grew up surrounded by stories.",
         "{f} had a {child}, {p}."),
        ("{f}'s {child} {p} kept the family name",
         "As a {child} of {f}, {p} was, in a way, famous from birth.",
         "{p} never hid it: {his} father was {f}")),
    "born_married": Family(None,
        ("{p} was born in {c}. {He} later married {q}.",
         "{p} married {q}. {He} had been born in {c} in {year}."),
        ("Born in {c}, {p} grew up there. Later {he} married {q}",
         "{p} came from {c}. It was there that {he} met {q}, whom {he} married.")),
    "directed": Family(None,
        ("{X}, a {year} {genre} film, was directed by {d}.",
         "The film {X} was directed by {d}.",
         "In {year}, {d} made the film {X}."),
        ("{d}, a director people still argue about, made {X} in {year}.",
         "the {demonym} {genre} film {X} was shot by {d}",
         "{D}'s {year} film {X} got mixed reviews.")),
    "stars": Family(None,
        ("{a} played the lead in {x}.",
         "In {x}, the lead role went to {a}.",
         "{a}, then still young, starred in {x}."),
        ("{x} features {a} in the main role",
         "Audiences remember {a} mostly for {x}.",
         "{a} appears in {X}, a film from {year}.")),
    "starring_pair": Family(None,
        ("{x} stars {a} and {b}.",
         "{a} and {b} both acted in {x}."),
        ("{a}, {b}: both of them are in {x}",
         "Starring {a} and {b}, {x} was a hit.")),
    "club": Family(None,
        ("{p} played for {o} for years.",
         "{o}, based in {c}, signed {p}.",
         "The footballer {P} wore the shirt of {o}."),
        ("{o}'s {P} scored again",
         "{p}, a loyal player by all accounts, stayed at {o}.",
         "Fans of {o} still talk about {p}")),
    "founded": Family(None,
        ("{f} founded {o} in {year}.",
         "{o}, which {f} established, is based in {c}.",
         "It was {f} who established {o}."),
        ("{f} set up {o} back in {year}",
         "{o}, headquartered in {c}, owes its existence to {f}.",
         "The founder of {o}? That was {f}.")),
    "created": Family(None,
        ("{maker} {made} the {kind} {W} in {year}.",
         "The {kind} {W}, from {year}, is by {maker}.",
         "{W} is a {kind} that {maker} {made}."),
        ("{maker}'s {kind} {W} dates from {year}",
         "Few know that the {kind} {W} was {made_pp} by {maker}.",
         "the {year} {kind} {W}, {made_pp} by {maker}, is still discussed")),
    "capital": Family(None,
        ("{k} has its capital in {c}.",
         "The capital of {k} is {c}.",
         "{k}'s government sits in {c}, its capital."),
        ("{k}'s capital {C} is busy all year",
         "{c}, the {demonym} capital, lies in {k}",
         "Most people in {k} have been to {c}, the capital.")),
    "located": Family(None,
        ("{C} is a city in {K}.",
         "About {population} people live in {C}, {K}."),
        ("{C}, {K} is where the trip ended",
         "We flew to {K} and then drove on to {C}",
         "Some {population} people call {C} in {K} home.")),
    "mayor": Family(None,
        ("{p} was once the mayor of {c}.",
         "{c} elected {p} as its mayor."),
        ("{c}'s mayor {P} gave a speech",
         "For years the mayor of {c} was {p}")),
}

# Closed-class slots and every value they take; the other slots name entities.
CLOSED_SLOTS: dict[str, tuple[str, ...]] = {
    "role": ("author", "painter", "performer"),
    "made": ("wrote", "painted", "recorded"),
    "made_pp": ("written", "painted", "recorded"),
    "finished": ("published", "completed", "released"),
    "finishing": ("publication", "completion", "release"),
    "spouse": ("wife", "husband"),
    "child": ("son", "daughter"),
    "his": ("his", "her"),
    "him": ("him", "her"),
    "he": ("he", "she"),
    "He": ("He", "She"),
    "kind": ("novel", "painting", "album"),
}

# What users put in front of a question or a sentence, split like the forms.
QUESTION_OPENERS = {"train": ("Quick question: ", "Hey, ", "I was wondering, ", "Do you know this? "),
                    "heldout": ("Hi! ", "Quiz time: ", "Something I can't remember: ")}
TEXT_OPENERS = {"train": ("As it happens, ", "Fun fact: ", "Honestly, "),
                "heldout": ("Believe it or not, ", "From what I remember, ", "Interestingly, ")}

STYLES = ("opener", "typo", "all_lower", "lower_first", "no_end_mark")
# How often each style is applied to a paraphrase (independent draws; the two casings exclude
# each other). Questions lose their question mark, texts their final period.
STYLE_RATES = {"opener": 0.2, "typo": 0.2, "all_lower": 0.2, "lower_first": 0.15, "no_end_mark": 0.25}


def families(task: str) -> dict[str, Family]:
    return {"multi-hop": MULTIHOP_FORMS, "single-hop": SINGLEHOP_FORMS, "entity-linking": LINKING_FORMS}[task]


def slots_of(form: str) -> list[str]:
    return _SLOT.findall(form)


def segments(form: str) -> Iterator[tuple[bool, str]]:
    """(is_slot, text) pieces of a form, in order."""
    pos = 0
    for m in _SLOT.finditer(form):
        if m.start() > pos:
            yield False, form[pos:m.start()]
        yield True, m.group(1)
        pos = m.end()
    if pos < len(form):
        yield False, form[pos:]


def fixed_pattern(form: str, openers: bool = True) -> re.Pattern[str]:
    """What a form's fixed words look like in any text built from it: entity slots match any
    text, closed slots their values; case, a missing end mark and (with `openers`) any opener
    ending in ": ", ", ", "! " or "? " are allowed."""
    body = ""
    for is_slot, text in segments(form.rstrip("?.")):
        if not is_slot:
            body += re.escape(text)
        elif text in CLOSED_SLOTS:
            body += "(?:" + "|".join(map(re.escape, CLOSED_SLOTS[text])) + ")"
        else:
            body += ".+"
    prefix = r"(?:.*?[:,!?] )?" if openers else ""
    return re.compile(rf"^{prefix}{body}[?.]?$", re.IGNORECASE | re.DOTALL)


# ---------------------------------------------------------------------------
# Styles
# ---------------------------------------------------------------------------

def typo(word: str, rng: random.Random) -> str:
    """One slip of the keyboard inside a word: two neighbouring letters swapped, a letter
    dropped or a letter doubled. Never the first letter, so the word stays recognisable."""
    for _ in range(10):
        i = rng.randrange(1, len(word) - 1)
        kind = rng.choice(("swap", "drop", "double"))
        if kind == "swap":
            out = word[:i] + word[i + 1] + word[i] + word[i + 2:]
        elif kind == "drop":
            out = word[:i] + word[i + 1:]
        else:
            out = word[:i] + word[i] + word[i:]
        if out != word:
            return out
    return word[:1] + word[2:]


_TYPO_WORD = re.compile(r"[A-Za-z]{4,}")


def with_typo(form: str, rng: random.Random) -> str:
    """The form with one typo in a fixed word of four letters or more (never in a slot)."""
    spots = [(k, m) for k, (is_slot, text) in enumerate(segments(form)) if not is_slot
             for m in _TYPO_WORD.finditer(text)]
    if not spots:
        return form
    k, m = rng.choice(spots)
    parts = [("{" + t + "}") if s else t for s, t in segments(form)]
    text = parts[k]
    parts[k] = text[:m.start()] + typo(m.group(), rng) + text[m.end():]
    return "".join(parts)


def draw_styles(rng: random.Random) -> list[str]:
    chosen = [s for s in ("opener", "typo", "all_lower", "no_end_mark") if rng.random() < STYLE_RATES[s]]
    if "all_lower" not in chosen and rng.random() < STYLE_RATES["lower_first"]:
        chosen.append("lower_first")
    return chosen


def capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def phrase_question(form: str, slots: dict[str, str], styles: list[str], part: str,
                    rng: random.Random) -> str:
    """A question from `form` with `slots` filled in and `styles` applied; an opener comes from
    `part`'s openers."""
    if "typo" in styles:
        form = with_typo(form, rng)
    question = capitalise(form.format(**slots))
    if "opener" in styles:
        opener = rng.choice(QUESTION_OPENERS[part])
        first_is_fixed = not form.startswith("{")
        question = opener + (question[:1].lower() + question[1:] if first_is_fixed else question)
    if "all_lower" in styles:
        question = question.lower()
    elif "lower_first" in styles:
        question = question[:1].lower() + question[1:]
    if "no_end_mark" in styles:
        question = question.rstrip("?.")
    return question


def gender_words(gender: str | None) -> dict[str, str]:
    """The pronoun slots for a person of `gender`."""
    male = gender == "male"
    return {"he": "he" if male else "she", "He": "He" if male else "She", "his": "his" if male else "her",
            "him": "him" if male else "her", "child": "son" if male else "daughter"}


def spouse_word(spouse_gender: str | None) -> str:
    return "wife" if spouse_gender == "female" else "husband"
