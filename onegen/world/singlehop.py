"""PopQA-style single-hop questions answered by one paragraph, with ten candidate
passages (the gold one plus hard distractors) in the Self-RAG `ctxs` layout."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

from onegen.documents import join_sentences
from onegen.world.model import Entity, SingleHopItem, World
from onegen.world.phrasing import gender_words, spouse_word
from onegen.world.relations import WorldIndex, WorldReader, hard_distractors
from onegen.world.text import question_ref

CANDIDATES = 10
WORK_WHO = {"novel": "Who wrote {}?", "painting": "Who painted {}?", "album": "Who recorded {}?"}
WORK_WHEN = {"novel": "In which year was {} published?", "painting": "In which year was {} completed?",
             "album": "In which year was {} released?"}
# The closed-class words of the work templates, for their families in phrasing.py.
WORK_WORDS = {
    "novel": {"made": "wrote", "made_pp": "written", "role": "author", "finished": "published",
              "finishing": "publication"},
    "painting": {"made": "painted", "made_pp": "painted", "role": "painter", "finished": "completed",
                 "finishing": "completion"},
    "album": {"made": "recorded", "made_pp": "recorded", "role": "performer", "finished": "released",
              "finishing": "release"},
}


@dataclass
class Question:
    question: str
    answers: list[str]
    gold: Entity
    slots: dict[str, str] = field(default_factory=dict)  # fill the template's family in phrasing.py


class _Templates(WorldReader):
    def name(self, entity_id: str) -> str:
        return self.w.entity(entity_id).name

    def ref(self, e: Entity, avoid: tuple[str, ...] = (), typed: bool = False) -> str:
        phrase = question_ref(self.w, e, avoid, typed)
        if phrase is None:
            raise LookupError("no way to name this entity without giving the answer away")
        return phrase

    def draw(self, type_: str) -> Entity:
        return self.rng.choice(self.ix.by_type[type_])

    def all(self) -> list[Callable[[], Question]]:
        return [self.film_year, self.film_director, self.birth_city, self.birth_year, self.spouse,
                self.father, self.club, self.city_country, self.population, self.capital, self.founder,
                self.founding_year, self.headquarters, self.creator, self.work_year]

    def film_year(self) -> Question:
        f = self.draw("film")
        year = str(f.facts["release_year"])
        film = self.ref(f, ('release_year',), True)
        return Question(f"In which year was {film} released?", [year], f, {"film": film})

    def film_director(self) -> Question:
        f = self.draw("film")
        film = self.ref(f, typed=True)
        return Question(f"Who directed {film}?", [self.name(f.facts["directed_by"])], f, {"film": film})

    def birth_city(self) -> Question:
        p = self.draw("person")
        return Question(f"In which city was {self.ref(p)} born?", [self.name(p.facts["born_in"])], p,
                        {"person": self.ref(p)})

    def birth_year(self) -> Question:
        p = self.draw("person")
        return Question(f"In which year was {self.ref(p)} born?", [str(p.facts["birth_year"])], p,
                        {"person": self.ref(p)})

    def spouse(self) -> Question:
        p = self.draw("person")
        spouse = self.w.entity(p.facts["spouse"])
        return Question(f"Who was {self.ref(p)} married to?", [spouse.name], p,
                        {"person": self.ref(p), "spouse": spouse_word(spouse.gender)})

    def father(self) -> Question:
        p = self.draw("person")
        return Question(f"Who is the father of {self.ref(p)}?", [self.name(p.facts["father"])], p,
                        {"person": self.ref(p), "child": gender_words(p.gender)["child"]})

    def club(self) -> Question:
        p = self.rng.choice(self.ix.by_subtype["footballer"])
        return Question(f"Which club did {self.ref(p)} play for?", [self.name(p.facts["plays_for"])], p,
                        {"person": self.ref(p)})

    def city_country(self) -> Question:
        c = self.draw("city")
        city = self.ref(c, ('located_in',))
        return Question(f"In which country is {city}?", [self.name(c.facts["located_in"])], c, {"city": city})

    def population(self) -> Question:
        c = self.draw("city")
        n = c.facts["population"]
        city = self.ref(c, ('population',))
        return Question(f"What is the population of {city}?", [f"{n:,}", str(n)], c, {"city": city})

    def capital(self) -> Question:
        c = self.draw("country")
        return Question(f"What is the capital of {c.name}?", [self.name(c.facts["capital"])], c, {"country": c.name})

    def founder(self) -> Question:
        o = self.draw("organisation")
        return Question(f"Who founded {self.ref(o)}?", [self.name(o.facts["founded_by"])], o, {"org": self.ref(o)})

    def founding_year(self) -> Question:
        o = self.draw("organisation")
        return Question(f"In which year was {self.ref(o)} founded?", [str(o.facts["founding_year"])], o,
                        {"org": self.ref(o)})

    def headquarters(self) -> Question:
        o = self.draw("organisation")
        return Question(f"In which city is {self.ref(o)} headquartered?", [self.name(o.facts["headquartered_in"])], o,
                        {"org": self.ref(o)})

    def creator(self) -> Question:
        w = self.draw("work")
        work = self.ref(w, typed=True)
        return Question(WORK_WHO[w.subtype].format(work), [self.name(w.facts["created_by"])], w,
                        {"work": work, **WORK_WORDS[w.subtype]})

    def work_year(self) -> Question:
        w = self.draw("work")
        year = next(str(v) for k, v in w.facts.items() if k.endswith("_year"))
        work = self.ref(w, typed=True)
        return Question(WORK_WHEN[w.subtype].format(work), [year], w, {"work": work, **WORK_WORDS[w.subtype]})


def make_singlehop(world: World, index: WorldIndex, n: int, rng: random.Random, id_prefix: str) -> list[SingleHopItem]:
    """`n` questions, templates taken in turn, each with ten shuffled candidates."""
    makers = _Templates(world, index, rng).all()
    items: list[SingleHopItem] = []
    seen: set[str] = set()
    attempts = 0
    while len(items) < n and attempts < 100 * n:
        maker = makers[attempts % len(makers)]
        attempts += 1
        try:
            q = maker()
        except (KeyError, LookupError, IndexError):
            continue  # the drawn entity lacks the fact this template asks about
        if q.question in seen:
            continue
        seen.add(q.question)
        candidates = [q.gold, *hard_distractors(index, [q.gold], CANDIDATES - 1, rng)]
        rng.shuffle(candidates)
        ctxs = [{"id": c.id, "title": c.title, "text": join_sentences(c.sentences)} for c in candidates]
        items.append(SingleHopItem(id=f"{id_prefix}-sh-{len(items) + 1:05d}", question=q.question,
                                   answers=q.answers, gold_id=q.gold.id, ctxs=ctxs, template=maker.__name__,
                                   slots=q.slots))
    return items
