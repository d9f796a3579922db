"""Titles, one-line descriptions and Wikipedia-like paragraphs, plus the phrases that
name an entity unambiguously in running text and in questions.

Sentences are short and literal: sentence 0 says what the entity is, every later one
states one fact, so a small model can find each fact in one sentence.
"""
from __future__ import annotations

from onegen.documents import join_sentences
from onegen.world.model import Entity, World

TYPE_NOUN = {"person": "human", "city": "city", "country": "country", "film": "film"}
WORK_VERB = {"novel": "written", "painting": "painted", "album": "recorded"}
WORK_YEAR_VERB = {"novel": "published", "painting": "completed", "album": "released"}
SIZE_NOUN = {"company": "employees", "university": "students", "football club": "members"}
MAX_SENTENCES = 5


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def type_noun(entity: Entity) -> str:
    """The readable class used in the entity description ("human", "city", "novel")."""
    return TYPE_NOUN.get(entity.type, entity.subtype)


def entity_description(entity: Entity) -> str:
    """The entity-linking document text (the authors' db layout):
    `{name} is an instance of {type}. It is described as "{short}". {paragraph}`."""
    return (f"{entity.name} is an instance of {type_noun(entity)}. "
            f'It is described as "{entity.short_description}". {join_sentences(entity.sentences)}')


# ---------------------------------------------------------------------------
# Naming an entity so that readers can tell it from its namesakes
# ---------------------------------------------------------------------------

def _label(entity: Entity) -> str:
    return entity.subtype if entity.type in ("person", "work", "organisation") else entity.type


def _fine_label(world: World, entity: Entity) -> str:
    if entity.type == "city":
        return world.entity(entity.facts["located_in"]).name
    if entity.type == "film":
        return f"{entity.facts['release_year']} film"
    if entity.type == "person":
        return f"{entity.subtype}, born {entity.facts['birth_year']}"
    return _label(entity)


def title_of(world: World, entity: Entity) -> str:
    """Wikipedia-style title: the name, or "Name (painter)" / "Name (1987 film)" /
    "Name (Veloria)" when other entities share the name."""
    others = world.namesakes(entity)
    if not others:
        return entity.name
    if all(_label(o) != _label(entity) for o in others):
        return f"{entity.name} ({_label(entity)})"
    return f"{entity.name} ({_fine_label(world, entity)})"


def namesake_fits(world: World, entity: Entity, implied: tuple[str, ...] | None) -> bool:
    """Whether a namesake also fits what the surrounding words imply."""
    others = world.namesakes(entity)
    if implied is None:
        return bool(others)
    return any(o.type in implied or o.subtype in implied for o in others)


def text_ref(world: World, entity: Entity, implied: tuple[str, ...] | None = None) -> str:
    """How running text names `entity`; `implied` lists the types/subtypes the
    surrounding words already imply ("was born in" implies a city)."""
    if not namesake_fits(world, entity, implied):
        return entity.name
    if entity.type == "person":
        return f"the {entity.subtype} {entity.name}"
    if entity.type == "city":
        if any(o.type == "city" for o in world.namesakes(entity)):
            return f"{entity.name}, {world.entity(entity.facts['located_in']).name}"
        return f"the city {entity.name}"
    return typed_ref(world, entity)


def typed_ref(world: World, entity: Entity) -> str:
    """Films and works with their kind: "the film X", "the 1987 film X", "the novel X"."""
    if entity.type == "film":
        if any(o.type == "film" for o in world.namesakes(entity)):
            return f"the {entity.facts['release_year']} film {entity.name}"
        return f"the film {entity.name}"
    return f"the {entity.subtype} {entity.name}"


def org_phrase(org: Entity) -> str:
    """An organisation as running text names it: "the University of X", "Harvel FC"."""
    return f"the {org.name}" if org.name.startswith("University ") else org.name


def question_ref(world: World, entity: Entity, avoid: tuple[str, ...] = (), typed: bool = False) -> str | None:
    """How a question names `entity`; None when the only disambiguation would give away
    a fact in `avoid` (e.g. naming "the 1987 film X" in a question about its year)."""
    if entity.type == "organisation":
        return org_phrase(entity)
    others = world.namesakes(entity)
    if entity.type == "film" and any(o.type == "film" for o in others) and "release_year" in avoid:
        return None
    if entity.type == "city" and any(o.type == "city" for o in others):
        if "located_in" in avoid:
            return None
        return f"{entity.name} in {world.entity(entity.facts['located_in']).name}"
    if entity.type in ("film", "work") and (typed or others):
        return typed_ref(world, entity)
    return text_ref(world, entity) if others else entity.name


# ---------------------------------------------------------------------------
# Short descriptions and paragraphs
# ---------------------------------------------------------------------------

def short_description(world: World, e: Entity) -> str:
    f = e.facts
    if e.type == "person":
        demonym = world.entity(f["nationality"]).facts["demonym"]
        life = f"{f['birth_year']}-{f['death_year']}" if "death_year" in f else f"born {f['birth_year']}"
        return f"{demonym} {e.subtype} ({life})"
    if e.type == "city":
        country = world.entity(f["located_in"]).name
        return f"capital of {country}" if "capital_of" in f else f"city in {country}"
    if e.type == "country":
        return f"country with the capital {world.entity(f['capital']).name}"
    demonym = world.entity(f["country"]).facts["demonym"]
    if e.type == "film":
        director = world.entity(f["directed_by"]).name
        return f"{f['release_year']} {demonym} {f['genre']} film directed by {director}"
    if e.type == "organisation":
        return f"{demonym} {e.subtype} founded in {f['founding_year']}"
    year = next(v for k, v in f.items() if k.endswith("_year"))
    return f"{year} {e.subtype} by {world.entity(f['created_by']).name}"


class _Paragraph:
    """Collects sentences and remembers which relation each one states."""

    def __init__(self) -> None:
        self.sentences: list[str] = []
        self.fact_sentence: dict[str, int] = {}

    def add(self, sentence: str, *relations: str) -> None:
        if len(self.sentences) < MAX_SENTENCES:
            for r in relations:
                self.fact_sentence[r] = len(self.sentences)
            self.sentences.append(sentence)


def _pronouns(e: Entity) -> tuple[str, str]:
    return ("He", "His") if e.gender == "male" else ("She", "Her")




def _person_paragraph(world: World, e: Entity, works_by: dict[str, list[Entity]],
                      films_by: dict[str, list[Entity]]) -> _Paragraph:
    f, (he, his) = e.facts, _pronouns(e)
    p = _Paragraph()
    demonym = world.entity(f["nationality"]).facts["demonym"]
    p.add(f"{e.name} is {article(demonym)} {demonym} {e.subtype}.", "occupation", "nationality")
    p.add(f"{he} was born in {text_ref(world, world.entity(f['born_in']), ('city',))} in {f['birth_year']}.",
          "born_in", "birth_year")
    if "father" in f:
        p.add(f"{his} father was {text_ref(world, world.entity(f['father']), ('person',))}.", "father")
    if "spouse" in f:
        p.add(f"{he} was married to {text_ref(world, world.entity(f['spouse']), ('person',))}.", "spouse")
    if "plays_for" in f:
        p.add(f"{he} played for {world.entity(f['plays_for']).name}.", "plays_for")
    elif "works_at" in f:
        p.add(f"{he} worked at {org_phrase(world.entity(f['works_at']))}.", "works_at")
    elif "mayor_of" in f:
        p.add(f"{he} served as mayor of {text_ref(world, world.entity(f['mayor_of']), ('city',))}.", "mayor_of")
    elif e.id in works_by:  # the first work, or organisation, this person made
        work = works_by[e.id][0]
        if work.type == "organisation":
            p.add(f"{he} founded {org_phrase(work)}.", "founded")
        else:
            verb = {"novel": "wrote", "painting": "painted", "album": "recorded"}[work.subtype]
            p.add(f"{he} {verb} {typed_ref(world, work)}.", "notable_work")
    elif e.id in films_by:
        verb = "directed" if e.subtype == "film director" else "starred in"
        p.add(f"{he} {verb} {typed_ref(world, films_by[e.id][0])}.", "notable_film")
    if "death_year" in f:
        p.add(f"{he} died in {f['death_year']}.", "death_year")
    if len(p.sentences) < 3:  # nothing else to say: name the country outright
        p.add(f"{he} is a citizen of {world.entity(f['nationality']).name}.", "nationality")
    return p


def _paragraph(world: World, e: Entity, works_by: dict[str, list[Entity]],
               films_by: dict[str, list[Entity]], adaptations: dict[str, Entity]) -> _Paragraph:
    if e.type == "person":
        return _person_paragraph(world, e, works_by, films_by)
    f, p = e.facts, _Paragraph()
    if e.type == "city":
        country = world.entity(f["located_in"]).name
        p.add(f"{e.name} is a city in {country}.", "located_in")
        if "capital_of" in f:
            p.add(f"It is the capital of {country}.", "capital_of")
        p.add(f"It was founded in {f['founding_year']}.", "founding_year")
        p.add(f"It has a population of {f['population']:,}.", "population")
    elif e.type == "country":
        p.add(f"{e.name} is a sovereign country.")
        p.add(f"Its capital is {text_ref(world, world.entity(f['capital']), ('city',))}.", "capital")
        p.add(f"It became independent in {f['independence_year']}.", "independence_year")
        p.add(f"It has a population of {f['population']:,}.", "population")
    elif e.type == "film":
        demonym = world.entity(f["country"]).facts["demonym"]
        p.add(f"{e.name} is {article(demonym)} {demonym} {f['genre']} film.", "genre", "country")
        director = world.entity(f["directed_by"])
        p.add(f"The film was directed by {text_ref(world, director, ('film director',))}.", "directed_by")
        p.add(f"It was released in {f['release_year']}.", "release_year")
        if f.get("starring"):
            cast = [text_ref(world, world.entity(a), ("actor",)) for a in f["starring"]]
            p.add(f"It stars {' and '.join(cast)}.", "starring")
        if "based_on" in f:
            p.add(f"It is based on the novel {world.entity(f['based_on']).name}.", "based_on")
    elif e.type == "organisation":
        demonym = world.entity(f["country"]).facts["demonym"]
        p.add(f"{e.name} is {article(demonym)} {demonym} {e.subtype}.", "country")
        p.add(f"It was founded by {text_ref(world, world.entity(f['founded_by']), ('person',))}.", "founded_by")
        p.add(f"It was founded in {f['founding_year']}.", "founding_year")
        p.add(f"Its headquarters are in {text_ref(world, world.entity(f['headquartered_in']), ('city',))}.",
              "headquartered_in")
        size_key = SIZE_NOUN[e.subtype]
        p.add(f"It has {f[size_key]:,} {size_key}.", size_key)
    else:  # work
        demonym = world.entity(f["country"]).facts["demonym"]
        p.add(f"{e.name} is {article(demonym)} {demonym} {e.subtype}.", "country")
        creator = world.entity(f["created_by"])
        creator_ref = text_ref(world, creator, ({"novel": "writer", "painting": "painter",
                                                  "album": "musician"}[e.subtype],))
        p.add(f"It was {WORK_VERB[e.subtype]} by {creator_ref}.", "created_by")
        year_key = next(k for k in f if k.endswith("_year"))
        p.add(f"It was {WORK_YEAR_VERB[e.subtype]} in {f[year_key]}.", year_key)
        if e.id in adaptations:
            film = adaptations[e.id]
            p.add(f"It was adapted into a film of the same title in {film.facts['release_year']}.",
                  "adapted_into")
    return p


def write_texts(world: World) -> None:
    """Fill in title, short description, sentences and fact positions of every entity."""
    works_by: dict[str, list[Entity]] = {}  # person id -> works and organisations they made
    films_by: dict[str, list[Entity]] = {}
    adaptations: dict[str, Entity] = {}
    for e in world.entities:
        if e.type == "work":
            works_by.setdefault(e.facts["created_by"], []).append(e)
        elif e.type == "film":
            for person in [e.facts["directed_by"], *e.facts.get("starring", [])]:
                films_by.setdefault(person, []).append(e)
            if "based_on" in e.facts:
                adaptations[e.facts["based_on"]] = e
        elif e.type == "organisation":
            works_by.setdefault(e.facts["founded_by"], []).append(e)
    for e in world.entities:
        e.title = title_of(world, e)
        e.short_description = short_description(world, e)
        paragraph = _paragraph(world, e, works_by, films_by, adaptations)
        e.sentences, e.fact_sentence = paragraph.sentences, paragraph.fact_sentence
    titles = [e.title for e in world.entities]
    if len(set(titles)) != len(titles):
        raise RuntimeError("two entities received the same title; the disambiguation rules have a gap")
