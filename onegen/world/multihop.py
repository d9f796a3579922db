"""Two-hop and four-hop questions in the 2WikiMultihopQA layout, each with the gold
decomposition a OneGen multi-hop model is trained to write.

Every sub-question names the entity it asks about exactly as the question or the
previous sub-answer wrote it, so the retrieval step after it can succeed; the gold
paragraph of a sub-question is that entity's paragraph.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

from onegen.world.model import MULTIHOP_TYPES, Entity, MultiHopItem, SubQuestion, World
from onegen.world.phrasing import gender_words, spouse_word
from onegen.world.relations import WorldIndex, WorldReader, hard_distractors
from onegen.world.text import org_phrase, question_ref

CONTEXT_SIZE = 10
WORK_QUESTION = {"novel": "Who wrote {}?", "painting": "Who painted {}?", "album": "Who recorded {}?"}
WORK_VERB = {"novel": "written", "painting": "painted", "album": "recorded"}
WORK_ROLE = {"novel": "author", "painting": "painter", "album": "performer"}
WORK_MADE = {"novel": "wrote", "painting": "painted", "album": "recorded"}


@dataclass
class Draft:
    """A question before ids and distractors are attached."""

    question: str
    steps: list[SubQuestion]
    gold: list[Entity]
    evidences: list[tuple[str, str, str]]
    answer: str
    answer_id: str | None
    conclusion: str = "So the answer is"
    answer_position: int | None = None  # comparisons: 0 if the answer is the first option
    slots: dict[str, str] = field(default_factory=dict)  # fill the template's family in phrasing.py


def _subject(e: Entity) -> str:
    """The entity as the subject opening an answer sentence ("The University of X")."""
    phrase = org_phrase(e) if e.type == "organisation" else e.name
    return phrase[:1].upper() + phrase[1:]


def step(entity: Entity, relation: str, question: str, answer: object, sentence: str) -> SubQuestion:
    """A sub-question answered by the sentence of `entity`'s paragraph stating `relation`."""
    if relation not in entity.fact_sentence:
        raise LookupError(f"{entity.id} has no sentence for {relation}")
    return SubQuestion(question=question, answer=str(answer), answer_sentence=sentence,
                       title=entity.title, paragraph_id=entity.id,
                       sentence_index=entity.fact_sentence[relation])


class _Templates(WorldReader):
    def __init__(self, world: World, index: WorldIndex, rng: random.Random):
        super().__init__(world, index, rng)
        self.balance = {"comparison": [0, 0], "bridge_comparison": [0, 0]}  # answers first / second

    def pick(self, subtypes: tuple[str, ...]) -> Entity:
        pool = [x for s in subtypes for x in self.ix.by_subtype.get(s, [])]
        return self.rng.choice(pool)

    def ref(self, e: Entity, avoid: tuple[str, ...] = (), typed: bool = False) -> str:
        phrase = question_ref(self.w, e, avoid, typed)
        if phrase is None:
            raise LookupError("no way to name this entity without giving the answer away")
        return phrase

    def by_type(self) -> dict[str, list[Callable[[], Draft]]]:
        return {
            "compositional": [self.director_birthplace, self.birth_country, self.founder_birth_year,
                              self.creator_birthplace, self.headquarters_country],
            "inference": [self.father_in_law, self.paternal_grandfather, self.mother],
            "comparison": [self.released_first, self.born_first, self.more_inhabitants, self.founded_first],
            "bridge_comparison": [self.director_born_first, self.director_born_later,
                                  self.author_born_first, self.founder_born_first],
        }

    # shared steps ----------------------------------------------------------------
    def born_in(self, p: Entity, asked_as: str) -> tuple[SubQuestion, Entity]:
        city = self.e(p.facts["born_in"])
        return step(p, "born_in", f"Where was {asked_as} born?", city.name,
                    f"{p.name} was born in {city.name}."), city

    def birth_year(self, p: Entity, asked_as: str) -> SubQuestion:
        year = p.facts["birth_year"]
        return step(p, "birth_year", f"When was {asked_as} born?", year, f"{p.name} was born in {year}.")

    def country_of(self, city: Entity) -> tuple[SubQuestion, Entity]:
        country = self.e(city.facts["located_in"])
        asked = self.ref(city, avoid=("located_in",))
        return step(city, "located_in", f"In which country is {asked}?", country.name,
                    f"{city.name} is a city in {country.name}."), country

    def maker(self, x: Entity) -> tuple[SubQuestion, Entity, str]:
        """Who directed / wrote / founded x; returns the step, the person, the relation label."""
        if x.type == "film":
            d = self.e(x.facts["directed_by"])
            return step(x, "directed_by", f"Who directed {self.ref(x, typed=True)}?", d.name,
                        f"{x.name} was directed by {d.name}."), d, "director"
        if x.type == "organisation":
            f = self.e(x.facts["founded_by"])
            return step(x, "founded_by", f"Who founded {self.ref(x)}?", f.name,
                        f"{_subject(x)} was founded by {f.name}."), f, "founded by"
        c = self.e(x.facts["created_by"])
        return step(x, "created_by", WORK_QUESTION[x.subtype].format(self.ref(x, typed=True)), c.name,
                    f"{x.name} was {WORK_VERB[x.subtype]} by {c.name}."), c, WORK_ROLE[x.subtype]

    def relative(self, p: Entity, relation: str) -> tuple[SubQuestion, Entity]:
        other = self.e(p.facts[relation])
        asked = self.ref(p)
        if relation == "spouse":
            return step(p, "spouse", f"Who is the spouse of {asked}?", other.name,
                        f"{p.name} was married to {other.name}."), other
        return step(p, "father", f"Who is the father of {asked}?", other.name,
                    f"The father of {p.name} is {other.name}."), other

    # compositional ---------------------------------------------------------------
    def director_birthplace(self) -> Draft:
        film = self.pick(("film",))
        s1, director, _ = self.maker(film)
        s2, city = self.born_in(director, self.ref(director))
        return Draft(f"Where was the director of {self.ref(film, typed=True)} born?", [s1, s2],
                     [film, director], [(film.name, "director", director.name),
                                        (director.name, "place of birth", city.name)], city.name, city.id,
                     slots={"film": self.ref(film, typed=True)})

    def birth_country(self) -> Draft:
        p = self.rng.choice(self.ix.by_type["person"])
        asked = self.ref(p)
        s1, city = self.born_in(p, asked)
        s2, country = self.country_of(city)
        return Draft(f"In which country was {asked} born?", [s1, s2], [p, city],
                     [(p.name, "place of birth", city.name), (city.name, "country", country.name)],
                     country.name, country.id, slots={"person": asked, **gender_words(p.gender)})

    def founder_birth_year(self) -> Draft:
        org = self.rng.choice(self.ix.by_type["organisation"])
        s1, founder, _ = self.maker(org)
        s2 = self.birth_year(founder, self.ref(founder))
        return Draft(f"When was the founder of {self.ref(org)} born?", [s1, s2], [org, founder],
                     [(org.name, "founded by", founder.name),
                      (founder.name, "date of birth", s2.answer)], s2.answer, None, slots={"org": self.ref(org)})

    def creator_birthplace(self) -> Draft:
        work = self.rng.choice(self.ix.by_type["work"])
        s1, creator, role = self.maker(work)
        s2, city = self.born_in(creator, self.ref(creator))
        return Draft(f"Where was the {role} of {self.ref(work, typed=True)} born?", [s1, s2], [work, creator],
                     [(work.name, role, creator.name), (creator.name, "place of birth", city.name)],
                     city.name, city.id, slots={"role": role, "work": self.ref(work, typed=True),
                                                "made": WORK_MADE[work.subtype]})

    def headquarters_country(self) -> Draft:
        org = self.rng.choice(self.ix.by_type["organisation"])
        city = self.e(org.facts["headquartered_in"])
        s1 = step(org, "headquartered_in", f"Where is {self.ref(org)} headquartered?", city.name,
                  f"{_subject(org)} is headquartered in {city.name}.")
        s2, country = self.country_of(city)
        return Draft(f"In which country is the headquarters of {self.ref(org)}?", [s1, s2], [org, city],
                     [(org.name, "headquarters location", city.name), (city.name, "country", country.name)],
                     country.name, country.id, slots={"org": self.ref(org)})

    # inference ---------------------------------------------------------------------
    def _chain(self, question: str, first: str, second: str, label: str) -> Draft:
        p = self.rng.choice(self.ix.by_type["person"])
        s1, middle = self.relative(p, first)
        s2, answer = self.relative(middle, second)
        slots = {"person": self.ref(p), **gender_words(p.gender)}
        if "spouse" in p.facts:
            slots["spouse"] = spouse_word(self.e(p.facts["spouse"]).gender)
        return Draft(question.format(self.ref(p)), [s1, s2], [p, middle],
                     [(p.name, first, middle.name), (middle.name, second, answer.name),
                      (p.name, label, answer.name)], answer.name, answer.id, slots=slots)

    def father_in_law(self) -> Draft:
        return self._chain("Who is the father-in-law of {}?", "spouse", "father", "father-in-law")

    def paternal_grandfather(self) -> Draft:
        return self._chain("Who is the paternal grandfather of {}?", "father", "father", "paternal grandfather")

    def mother(self) -> Draft:
        return self._chain("Who is the mother of {}?", "father", "spouse", "mother")

    # comparison ----------------------------------------------------------------------
    def _order(self, kind: str, winner: Entity, loser: Entity) -> tuple[Entity, Entity]:
        """Put the answer first or second, whichever has been used less so far."""
        counts = self.balance[kind]
        return (winner, loser) if counts[0] <= counts[1] else (loser, winner)

    def _compare(self, pool: list[Entity], relation: str, question: str, sub: str, sentence: str,
                 label: str, larger_wins: bool, fmt: Callable[[int], str] = str) -> Draft:
        a, b = self.rng.sample(pool, 2)
        if a.name == b.name or a.facts[relation] == b.facts[relation]:
            raise LookupError("a comparison needs two different names and values")
        winner, loser = (a, b) if (a.facts[relation] > b.facts[relation]) == larger_wins else (b, a)
        first, second = self._order("comparison", winner, loser)
        refs = {e.id: self.ref(e, avoid=(relation,)) for e in (first, second)}
        steps = [step(e, relation, sub.format(refs[e.id]), fmt(e.facts[relation]),
                      sentence.format(name=_subject(e), value=fmt(e.facts[relation]))) for e in (first, second)]
        word = "more than" if larger_wins else "earlier than"
        conclusion = f"{fmt(winner.facts[relation])} is {word} {fmt(loser.facts[relation])}, so the answer is"
        return Draft(question.format(refs[first.id], refs[second.id]), steps, [first, second],
                     [(e.name, label, fmt(e.facts[relation])) for e in (first, second)],
                     winner.name, winner.id, conclusion, int(first.id != winner.id),
                     slots={"a": refs[first.id], "b": refs[second.id]})

    def released_first(self) -> Draft:
        return self._compare(self.ix.by_type["film"], "release_year", "Which film came out first, {} or {}?",
                             "When was {} released?", "{name} was released in {value}.",
                             "publication date", larger_wins=False)

    def born_first(self) -> Draft:
        occupation = self.rng.choice(sorted({p.subtype for p in self.ix.by_type["person"]}))
        return self._compare(self.ix.by_subtype[occupation], "birth_year", "Who was born first, {} or {}?",
                             "When was {} born?", "{name} was born in {value}.", "date of birth",
                             larger_wins=False)

    def more_inhabitants(self) -> Draft:
        return self._compare(self.ix.by_type["city"], "population", "Which city has more inhabitants, {} or {}?",
                             "How many inhabitants does {} have?", "{name} has a population of {value}.",
                             "population", larger_wins=True, fmt="{:,}".format)

    def founded_first(self) -> Draft:
        return self._compare(self.ix.by_type["organisation"], "founding_year",
                             "Which organisation was founded first, {} or {}?", "When was {} founded?",
                             "{name} was founded in {value}.", "inception", larger_wins=False)

    # bridge comparison ------------------------------------------------------------------
    def _bridge(self, pool: list[Entity], question: str, earlier_wins: bool) -> Draft:
        a, b = self.rng.sample(pool, 2)
        (sa, pa, label), (sb, pb, _) = self.maker(a), self.maker(b)
        ya, yb = pa.facts["birth_year"], pb.facts["birth_year"]
        if a.name == b.name or pa.id == pb.id or ya == yb:
            raise LookupError("a bridge comparison needs two names, two people and two birth years")
        winner, loser = (a, b) if (ya < yb) == earlier_wins else (b, a)
        first, second = self._order("bridge_comparison", winner, loser)
        hops = {a.id: (sa, pa), b.id: (sb, pb)}
        steps, evidences = [], []
        for x in (first, second):
            s, person = hops[x.id]
            born = self.birth_year(person, self.ref(person))
            steps += [s, born]
            evidences += [(x.name, label, person.name), (person.name, "date of birth", born.answer)]
        win_year = hops[winner.id][1].facts["birth_year"]
        lose_year = hops[loser.id][1].facts["birth_year"]
        word = "earlier than" if earlier_wins else "later than"
        return Draft(question.format(self.ref(first), self.ref(second)), steps,
                     [first, hops[first.id][1], second, hops[second.id][1]], evidences,
                     winner.name, winner.id, f"{win_year} is {word} {lose_year}, so the answer is",
                     int(first.id != winner.id), slots={"a": self.ref(first), "b": self.ref(second)})

    def director_born_first(self) -> Draft:
        return self._bridge(self.ix.by_type["film"], "Which film has the director who was born first, {} or {}?", True)

    def director_born_later(self) -> Draft:
        return self._bridge(self.ix.by_type["film"], "Which film has the director who was born later, {} or {}?", False)

    def author_born_first(self) -> Draft:
        return self._bridge(self.ix.by_subtype["novel"],
                            "Which novel has the author who was born first, {} or {}?", True)

    def founder_born_first(self) -> Draft:
        return self._bridge(self.ix.by_type["organisation"],
                            "Which organisation has the founder who was born first, {} or {}?", True)


def make_multihop(world: World, index: WorldIndex, n: int, rng: random.Random, id_prefix: str) -> list[MultiHopItem]:
    """`n` questions split evenly over the four 2Wiki types, templates taken in turn."""
    templates = _Templates(world, index, rng)
    per_type = {t: n // len(MULTIHOP_TYPES) + (i < n % len(MULTIHOP_TYPES)) for i, t in enumerate(MULTIHOP_TYPES)}
    items: list[MultiHopItem] = []
    seen: set[str] = set()
    for qtype, makers in templates.by_type().items():
        made, attempts = 0, 0
        while made < per_type[qtype] and attempts < 200 * per_type[qtype]:
            maker = makers[attempts % len(makers)]
            attempts += 1
            try:
                draft = maker()
            except (KeyError, LookupError, ValueError):
                continue  # the drawn entities lack a fact this template needs
            if draft.question in seen:
                continue
            seen.add(draft.question)
            if draft.answer_position is not None:
                templates.balance[qtype][draft.answer_position] += 1
            gold = list({g.id: g for g in draft.gold}.values())
            paragraphs = gold + hard_distractors(index, gold, CONTEXT_SIZE - len(gold), rng)
            rng.shuffle(paragraphs)
            items.append(MultiHopItem(
                id=f"{id_prefix}-mh-{len(items) + 1:05d}", type=qtype, question=draft.question,
                context=[(p.title, list(p.sentences)) for p in paragraphs], evidences=draft.evidences,
                answer=draft.answer, answer_id=draft.answer_id, decomposition=draft.steps,
                conclusion=draft.conclusion, template=maker.__name__, slots=draft.slots))
            made += 1
    return items
