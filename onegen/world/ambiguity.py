"""Names shared on purpose, so that linking and retrieval must use context.

Each shared name joins exactly two entities that context can tell apart: two persons of
different occupations, two cities in different countries, two films at least ten years
apart by different directors, a film adapted from a novel of the same title, a film
named after a city, and a musician whose one-word stage name is a city's name.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from onegen.world.model import Entity

if TYPE_CHECKING:
    from onegen.world.generator import WorldBuilder

# Share of entities that carry a shared name (two per pair); tests require >= 10%.
TARGET_FRACTION = 0.14


@dataclass(frozen=True)
class AmbiguityPlan:
    city_city: int
    film_film: int
    film_novel: int
    city_film: int
    city_musician: int
    person_person: int


def plan(n_entities: int) -> AmbiguityPlan:
    pairs = math.ceil(TARGET_FRACTION * n_entities / 2)
    city_city, film_film = round(0.15 * pairs), round(0.15 * pairs)
    film_novel, city_film, city_musician = round(0.10 * pairs), round(0.10 * pairs), round(0.10 * pairs)
    person_person = pairs - city_city - film_film - film_novel - city_film - city_musician
    return AmbiguityPlan(city_city, film_film, film_novel, city_film, city_musician, person_person)


def _free(builder: "WorldBuilder", entity: Entity) -> bool:
    return entity.id not in builder.grouped


def _pair_up(builder: "WorldBuilder", count: int, sources: list[Entity], targets: list[Entity],
             fits) -> list[tuple[Entity, Entity]]:
    """Up to `count` (source, target) pairs, each entity used once, in seeded order."""
    rng = builder.rng
    sources, targets = list(sources), list(targets)
    rng.shuffle(sources)
    rng.shuffle(targets)
    pairs = []
    for source in sources:
        if len(pairs) == count:
            break
        if not _free(builder, source):
            continue
        for target in targets:
            if target.id != source.id and _free(builder, target) and fits(source, target):
                builder.grouped.update((source.id, target.id))
                pairs.append((source, target))
                break
    return pairs


def share_city_names(builder: "WorldBuilder", count: int) -> int:
    """A non-capital city takes the name of a city in another country. Runs before
    organisations exist, so names like "University of X" follow the final city names."""
    cities = builder.of_type("city")
    targets = [c for c in cities if "capital_of" not in c.facts]
    pairs = _pair_up(builder, count, cities, targets,
                     lambda s, t: s.facts["located_in"] != t.facts["located_in"])
    for source, target in pairs:
        builder.rename(target, source.name)
    return count - len(pairs)


def share_film_titles(builder: "WorldBuilder", count: int) -> int:
    films = builder.of_type("film")
    pairs = _pair_up(builder, count, films, films,
                     lambda s, t: abs(s.facts["release_year"] - t.facts["release_year"]) >= 10
                     and s.facts["directed_by"] != t.facts["directed_by"])
    for source, target in pairs:
        builder.rename(target, source.name)
    return count - len(pairs)


def adapt_novels(builder: "WorldBuilder", count: int) -> int:
    """A film takes the title of an earlier novel and is based on it."""
    novels = [w for w in builder.of_type("work") if w.subtype == "novel"]
    films = builder.of_type("film")
    pairs = _pair_up(builder, count, novels, films,
                     lambda s, t: s.facts["publication_year"] < t.facts["release_year"])
    for novel, film in pairs:
        builder.rename(film, novel.name)
        film.facts["based_on"] = novel.id
    return count - len(pairs)


def films_named_after_cities(builder: "WorldBuilder", count: int) -> int:
    pairs = _pair_up(builder, count, builder.of_type("city"), builder.of_type("film"),
                     lambda s, t: True)
    for city, film in pairs:
        builder.rename(film, city.name)
    return count - len(pairs)


def _without_family_ties(builder: "WorldBuilder") -> list[Entity]:
    """Persons whose name no relative depends on (no father, no children)."""
    fathers = {p.facts["father"] for p in builder.of_type("person") if "father" in p.facts}
    return [p for p in builder.of_type("person") if "father" not in p.facts and p.id not in fathers]


def musicians_named_after_cities(builder: "WorldBuilder", count: int) -> int:
    musicians = [p for p in _without_family_ties(builder) if p.subtype == "musician"]
    pairs = _pair_up(builder, count, builder.of_type("city"), musicians, lambda s, t: True)
    for city, musician in pairs:
        builder.rename(musician, city.name)
    return count - len(pairs)


def share_person_names(builder: "WorldBuilder", count: int) -> int:
    """A person without family ties takes the full name of a person of the same gender
    and another occupation."""
    persons = [p for p in builder.of_type("person") if " " in p.name]
    pairs = _pair_up(builder, count, persons, _without_family_ties(builder),
                     lambda s, t: s.subtype != t.subtype and s.gender == t.gender)
    for source, target in pairs:
        builder.rename(target, source.name)
    return count - len(pairs)
