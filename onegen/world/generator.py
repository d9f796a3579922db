"""Entities and their facts: who was born where, who directed what, in which year.

Facts are drawn so that they stay consistent (a director is a person whose occupation
is film director and who was an adult when the film came out; a capital lies in its
country; a child's family name is the father's). Everything comes from one seeded
`random.Random`; sets are never iterated, so the output does not depend on the
per-process string hash seed.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable

from onegen.world import ambiguity
from onegen.world.model import ID_PREFIX, Entity
from onegen.world.names import TITLE_ADJECTIVES, TITLE_NOUNS, NameMaker, stable_int
from onegen.world.text import article

MIN_ENTITIES = 120
LAST_YEAR = 2023

# occupation: (share of persons, earliest birth year, latest birth year)
OCCUPATIONS: dict[str, tuple[float, int, int]] = {
    "film director": (0.14, 1870, 1985),
    "actor": (0.15, 1870, 1995),
    "footballer": (0.12, 1860, 1998),
    "painter": (0.10, 1780, 1975),
    "writer": (0.12, 1780, 1985),
    "scientist": (0.09, 1780, 1985),
    "musician": (0.10, 1900, 1995),
    "politician": (0.09, 1780, 1980),
    "entrepreneur": (0.09, 1780, 1985),
}
ORG_SUBTYPES = {"company": 0.45, "university": 0.25, "football club": 0.30}
WORK_SUBTYPES = {"novel": 0.45, "painting": 0.30, "album": 0.25}
WORK_CREATOR = {"novel": "writer", "painting": "painter", "album": "musician"}
WORK_YEAR = {"novel": "publication_year", "painting": "completion_year", "album": "release_year"}
FILM_GENRES = ("drama", "comedy", "thriller", "documentary", "science fiction", "romance", "war", "crime")
COMPANY_SUFFIXES = ("Industries", "Systems", "Motors", "Foods", "Records", "Press", "Airlines",
                    "Textiles", "Works", "Shipping")


@dataclass(frozen=True)
class TypeCounts:
    country: int
    city: int
    person: int
    organisation: int
    film: int
    work: int


def type_counts(n_entities: int) -> TypeCounts:
    if n_entities < MIN_ENTITIES:
        raise ValueError(f"a world needs at least {MIN_ENTITIES} entities, got {n_entities}")
    country = max(6, round(n_entities * 0.03))
    city = max(2 * country, round(n_entities * 0.15))
    organisation = round(n_entities * 0.10)
    film = round(n_entities * 0.14)
    work = round(n_entities * 0.13)
    person = n_entities - country - city - organisation - film - work
    return TypeCounts(country, city, person, organisation, film, work)


def apportion(total: int, shares: dict[str, float]) -> list[str]:
    """`total` labels in the given proportions (largest remainder), in key order."""
    norm = sum(shares.values())
    exact = {k: total * v / norm for k, v in shares.items()}
    counts = {k: math.floor(x) for k, x in exact.items()}
    by_remainder = sorted(shares, key=lambda k: (-(exact[k] - counts[k]), list(shares).index(k)))
    for k in by_remainder[: total - sum(counts.values())]:
        counts[k] += 1
    return [k for k in shares for _ in range(counts[k])]


class WorldBuilder:
    """Holds the entities under construction and the names already in use."""

    def __init__(self, seed: int, n_entities: int, split: str):
        if split not in ID_PREFIX:
            raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
        self.split = split
        self.counts = type_counts(n_entities)
        self.n_entities = n_entities
        self.rng = random.Random(stable_int("world", seed, split))
        self.names = NameMaker(self.rng, split)
        self.entities: list[Entity] = []
        self.by_id: dict[str, Entity] = {}
        self.taken: set[str] = set()  # lower-cased names in use; only for lookups
        self.family_name: dict[str, str] = {}  # person id -> family name
        self.given_name: dict[str, str] = {}
        self.given_pools: dict[str, list[str]] = {}  # gender -> given names persons draw from
        self.grouped: set[str] = set()  # ids already in a shared-name pair (membership only)

    # -- bookkeeping -------------------------------------------------------------

    def add(self, name: str, type_: str, subtype: str, **facts) -> Entity:
        entity = Entity(id=f"{ID_PREFIX[self.split]}{len(self.entities) + 1:04d}", name=name,
                        type=type_, subtype=subtype, facts=dict(facts))
        self.entities.append(entity)
        self.by_id[entity.id] = entity
        self.taken.add(name.lower())
        return entity

    def unique(self, make: Callable[[], str]) -> str:
        for _ in range(200):
            name = make()
            if name.lower() not in self.taken:
                return name
        raise RuntimeError("could not find an unused name")

    def rename(self, entity: Entity, name: str) -> None:
        self.taken.discard(entity.name.lower())
        entity.name = name
        self.taken.add(name.lower())

    def of_type(self, type_: str) -> list[Entity]:
        return [e for e in self.entities if e.type == type_]

    def with_occupation(self, occupation: str) -> list[Entity]:
        return [e for e in self.entities if e.type == "person" and e.subtype == occupation]

    # -- stages ------------------------------------------------------------------

    def build(self) -> list[Entity]:
        plan = ambiguity.plan(self.n_entities)
        self.add_countries()
        self.add_cities()
        shortfall = ambiguity.share_city_names(self, plan.city_city)
        self.add_persons()
        self.add_families()
        self.add_organisations()
        self.link_members()
        self.add_films()
        self.add_works()
        shortfall += ambiguity.share_film_titles(self, plan.film_film)
        shortfall += ambiguity.adapt_novels(self, plan.film_novel)
        shortfall += ambiguity.films_named_after_cities(self, plan.city_film)
        shortfall += ambiguity.musicians_named_after_cities(self, plan.city_musician)
        ambiguity.share_person_names(self, plan.person_person + shortfall)
        return self.entities

    def add_countries(self) -> None:
        for _ in range(self.counts.country):
            name, demonym = self.names.country()
            self.add(name, "country", "country", demonym=demonym,
                     independence_year=self.rng.randint(1700, 1990))

    def add_cities(self) -> None:
        rng = self.rng
        countries = self.of_type("country")
        for country in countries:
            city = self.add(self.unique(self.names.city), "city", "city", located_in=country.id,
                            capital_of=country.id, population=rng.randint(2000, 30000) * 100,
                            founding_year=rng.randint(700, 1700))
            country.facts["capital"] = city.id
        for _ in range(self.counts.city - len(countries)):
            self.add(self.unique(self.names.city), "city", "city",
                     located_in=rng.choice(countries).id, population=rng.randint(50, 9000) * 100,
                     founding_year=rng.randint(700, 1850))
        for country in countries:  # a country is larger than the sum of its named cities
            total = sum(c.facts["population"] for c in self.of_type("city")
                        if c.facts["located_in"] == country.id)
            country.facts["population"] = int(round(total * rng.uniform(1.5, 4.0), -3))

    def add_persons(self) -> None:
        rng = self.rng
        n = self.counts.person
        pools = self.given_pools = {g: [self.names.given(g) for _ in range(max(30, n // 8))]
                                    for g in ("male", "female")}
        families = [self.names.family() for _ in range(max(60, n // 3))]
        cities = self.of_type("city")
        occupations = apportion(n, {k: v[0] for k, v in OCCUPATIONS.items()})
        rng.shuffle(occupations)
        for occupation in occupations:
            gender = rng.choice(("male", "female"))
            _, lo, hi = OCCUPATIONS[occupation]
            born = rng.randint(lo, hi)
            city = rng.choice(cities)
            given, family = self._free_person_name(pools[gender], families)
            facts = {"occupation": occupation, "gender": gender, "birth_year": born}
            death = self._death_year(born)
            if death is not None:
                facts["death_year"] = death
            facts.update(born_in=city.id, nationality=city.facts["located_in"])
            if occupation == "politician":
                same_country = [c for c in cities if c.facts["located_in"] == city.facts["located_in"]]
                facts["mayor_of"] = rng.choice(same_country).id
            person = self.add(f"{given} {family}", "person", occupation, **facts)
            self.given_name[person.id], self.family_name[person.id] = given, family

    def _free_person_name(self, givens: list[str], families: list[str]) -> tuple[str, str]:
        for _ in range(200):
            given, family = self.rng.choice(givens), self.rng.choice(families)
            if f"{given} {family}".lower() not in self.taken:
                return given, family
        family = self.names.family()  # pools exhausted: widen them
        families.append(family)
        return self.rng.choice(givens), family

    def _death_year(self, born: int) -> int | None:
        rng = self.rng
        if born <= 1925:
            return min(born + rng.randint(40, 95), LAST_YEAR - 1)
        if born + 30 < LAST_YEAR and rng.random() < 0.25:
            return rng.randint(born + 30, LAST_YEAR - 1)
        return None

    def add_families(self) -> None:
        """Fathers (21-42 years older, alive at the birth) and spouses (born within 5
        years of each other, opposite genders, not siblings)."""
        rng = self.rng
        people = sorted(self.of_type("person"), key=lambda p: (p.facts["birth_year"], p.id))
        males_by_year: dict[int, list[Entity]] = {}
        for person in people:
            born = person.facts["birth_year"]
            if rng.random() < 0.6:
                candidates = [m for y in range(born - 42, born - 20) for m in males_by_year.get(y, [])
                              if m.facts.get("death_year", LAST_YEAR) >= born]
                if candidates:
                    father = rng.choice(candidates)
                    person.facts["father"] = father.id
                    self._take_family_name(person, self.family_name[father.id])
            if person.gender == "male":
                males_by_year.setdefault(born, []).append(person)

        by_gender_year: dict[tuple[str, int], list[Entity]] = {}
        for p in people:
            by_gender_year.setdefault((p.gender, p.facts["birth_year"]), []).append(p)
        order = list(people)
        rng.shuffle(order)
        for person in order:
            if "spouse" in person.facts or rng.random() >= 0.55:
                continue
            other = "female" if person.gender == "male" else "male"
            born = person.facts["birth_year"]
            candidates = [q for y in range(born - 5, born + 6) for q in by_gender_year.get((other, y), [])
                          if "spouse" not in q.facts
                          and not (q.facts.get("father") and q.facts.get("father") == person.facts.get("father"))]
            if candidates:
                spouse = rng.choice(candidates)
                person.facts["spouse"], spouse.facts["spouse"] = spouse.id, person.id

    def _take_family_name(self, person: Entity, family: str) -> None:
        given = self.given_name[person.id]
        pool = self.given_pools[person.gender]
        for _ in range(100):
            if f"{given} {family}".lower() not in self.taken or f"{given} {family}" == person.name:
                break
            given = self.rng.choice(pool)
        else:
            given = self.names.given(person.gender)
        self.given_name[person.id], self.family_name[person.id] = given, family
        self.rename(person, f"{given} {family}")

    def add_organisations(self) -> None:
        rng = self.rng
        persons = self.of_type("person")
        cities = self.of_type("city")
        founders = {
            "company": [p for p in persons if p.subtype == "entrepreneur"],
            "university": [p for p in persons if p.subtype in ("scientist", "politician")],
            "football club": [p for p in persons if p.subtype in ("footballer", "politician", "entrepreneur")],
        }
        subtypes = apportion(self.counts.organisation, ORG_SUBTYPES)
        rng.shuffle(subtypes)
        for subtype in subtypes:
            founder = rng.choice(founders[subtype] or persons)
            born = founder.facts["birth_year"]
            year = rng.randint(born + 20, min(founder.facts.get("death_year", LAST_YEAR), born + 75, 2020))
            hq = self.by_id[founder.facts["born_in"]] if rng.random() < 0.5 else rng.choice(cities)
            name = self.unique(lambda: self._org_name(subtype, hq))
            size_key, size = {
                "company": ("employees", rng.randint(50, 90000)),
                "university": ("students", rng.randint(20, 600) * 100),
                "football club": ("members", rng.randint(5, 500) * 100),
            }[subtype]
            self.add(name, "organisation", subtype, founded_by=founder.id, founding_year=year,
                     headquartered_in=hq.id, country=hq.facts["located_in"], **{size_key: size})

    def _org_name(self, subtype: str, hq: Entity) -> str:
        rng, plain = self.rng, self.names.plain
        if subtype == "company":
            return f"{plain()} {rng.choice(COMPANY_SUFFIXES)}"
        if subtype == "university":
            return rng.choice((f"University of {hq.name}", f"{plain()} University",
                               f"{plain()} Institute of Technology"))
        return rng.choice((f"{hq.name} FC", f"FC {plain()}", f"{plain()} United", f"{plain()} Rovers",
                           f"Sporting {hq.name}", f"{hq.name} Athletic"))

    def link_members(self) -> None:
        """Footballers play for a club that existed in their playing years; scientists
        work at a university founded before their thirtieth birthday."""
        orgs = self.of_type("organisation")
        for person, subtype, relation in (
            *((p, "football club", "plays_for") for p in self.with_occupation("footballer")),
            *((p, "university", "works_at") for p in self.with_occupation("scientist")),
        ):
            born = person.facts["birth_year"]
            fitting = [o for o in orgs if o.subtype == subtype and o.facts["founding_year"] <= born + 30]
            if fitting:
                person.facts[relation] = self.rng.choice(fitting).id

    def add_films(self) -> None:
        rng = self.rng
        directors = [d for d in self.with_occupation("film director") if self._film_window(d)]
        actors = self.with_occupation("actor")
        if not directors:
            raise RuntimeError("no film director can have made a film; enlarge the world")
        for _ in range(self.counts.film):
            director = rng.choice(directors)
            year = rng.randint(*self._film_window(director))
            cast = [a for a in actors if a.facts["birth_year"] + 16 <= year <= a.facts.get("death_year", LAST_YEAR)]
            starring = [a.id for a in rng.sample(cast, min(len(cast), rng.choice((1, 2))))]
            facts = {"directed_by": director.id, "release_year": year,
                     "genre": rng.choice(FILM_GENRES), "country": director.facts["nationality"]}
            if starring:
                facts["starring"] = starring
            self.add(self.unique(self._film_title), "film", "film", **facts)

    @staticmethod
    def _film_window(director: Entity) -> tuple[int, int] | None:
        born = director.facts["birth_year"]
        lo = max(born + 22, 1920)
        hi = min(director.facts.get("death_year", LAST_YEAR), born + 75, LAST_YEAR)
        return (lo, hi) if lo <= hi else None

    def _film_title(self) -> str:
        rng, w = self.rng, self.names.plain()
        noun, adj = rng.choice(TITLE_NOUNS), rng.choice(TITLE_ADJECTIVES)
        return rng.choice((w, f"The {noun} of {w}", f"{w} {noun}", f"Return to {w}",
                           f"The {adj} {w}", f"{noun} over {w}"))

    def add_works(self) -> None:
        rng = self.rng
        subtypes = apportion(self.counts.work, WORK_SUBTYPES)
        rng.shuffle(subtypes)
        for subtype in subtypes:
            creators = [p for p in self.with_occupation(WORK_CREATOR[subtype]) if self._work_window(p, subtype)]
            if not creators:
                raise RuntimeError(f"no {WORK_CREATOR[subtype]} can have made a {subtype}; enlarge the world")
            creator = rng.choice(creators)
            year = rng.randint(*self._work_window(creator, subtype))
            name = self.unique(lambda: self._work_title(subtype))
            self.add(name, "work", subtype, created_by=creator.id,
                     **{WORK_YEAR[subtype]: year}, country=creator.facts["nationality"])

    @staticmethod
    def _work_window(creator: Entity, subtype: str) -> tuple[int, int] | None:
        born = creator.facts["birth_year"]
        lo = max(born + 18, 1950) if subtype == "album" else born + 18
        hi = min(creator.facts.get("death_year", LAST_YEAR), born + 85, LAST_YEAR)
        return (lo, hi) if lo <= hi else None

    def _work_title(self, subtype: str) -> str:
        rng, w = self.rng, self.names.plain()
        noun, adj = rng.choice(TITLE_NOUNS), rng.choice(TITLE_ADJECTIVES)
        if subtype == "novel":
            return rng.choice((w, f"The {noun} of {w}", f"{article(noun).capitalize()} {noun} in {w}",
                               f"The {adj} {noun} of {w}"))
        if subtype == "album":
            return rng.choice((w, f"{adj} {w}", f"{w} {noun}"))
        city = rng.choice(self.of_type("city")).name
        return rng.choice((f"Portrait of {self.names.given(rng.choice(('male', 'female')))}",
                           f"View of {city}", f"{w} at Dawn", f"The {noun} at {w}"))
