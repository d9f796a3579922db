"""KORE50-like entity-linking texts: one or two short sentences whose wording lets a
reader tell namesakes apart ("Ivo Brandel scored twice for Harvel FC." links the
footballer, "Ivo Brandel painted Dusk at Tarn." the painter)."""
from __future__ import annotations

import random
from typing import Callable, Union

from onegen.world.model import Entity, ELItem, Mention, World
from onegen.world.relations import WorldIndex, WorldReader
from onegen.world.text import namesake_fits

Piece = Union[str, Entity]
Sentence = list[Piece]
MAX_MENTIONS = 4


def ref_pieces(world: World, e: Entity, implied: tuple[str, ...] | None) -> list[Piece]:
    """The entity with just enough words around it to rule out its namesakes."""
    if not namesake_fits(world, e, implied):
        return [e]
    if e.type == "person":
        return [f"the {e.subtype} ", e]
    if e.type == "city":
        if any(o.type == "city" for o in world.namesakes(e)):
            return [e, ", ", world.entity(e.facts["located_in"])]
        return ["the city ", e]
    if e.type == "film":
        if any(o.type == "film" for o in world.namesakes(e)):
            return [e, f" ({e.facts['release_year']})"]
        return ["the film ", e]
    return [f"the {e.subtype} ", e]


def org_pieces(org: Entity) -> list[Piece]:
    return ["the ", org] if org.name.startswith("University ") else [org]


def _year(e: Entity) -> str:
    return str(next(v for k, v in e.facts.items() if k.endswith("_year") and k != "birth_year"))


class _Templates(WorldReader):
    """Sentence templates keyed by what the seed entity is; each returns None when the
    seed lacks the facts it needs."""

    def made(self, p: Entity, subtype: str) -> list[Entity]:
        return [x for x in self.ix.made_by.get(p.id, []) if x.subtype == subtype]

    def for_entity(self, e: Entity) -> list[Callable[[Entity], Sentence | None]]:
        return {
            "person": [self.occupation, self.occupation, self.born, self.married, self.child, self.founder],
            "city": [self.capital, self.visit, self.home_ground, self.population, self.birthplace],
            "country": [self.country_capital, self.citizen],
            "film": [self.stars, self.directed_film, self.adaptation, self.film_director],
            "organisation": [self.founded, self.club_player],
            "work": [self.made_by],
        }[e.type]

    # persons ------------------------------------------------------------------
    def occupation(self, p: Entity) -> Sentence | None:
        w, rng, f, occ = self.w, self.rng, p.facts, p.subtype
        me = ref_pieces(w, p, (occ,))
        if occ in ("painter", "writer", "musician"):
            kind = {"painter": "painting", "writer": "novel", "musician": "album"}[occ]
            works = self.made(p, kind)
            if not works:
                return None
            x = rng.choice(works)
            if kind == "painting":
                return [*me, " painted ", x, " in ", _year(x), "."]
            verb = "wrote the novel " if kind == "novel" else "recorded the album "
            return [*me, " ", verb, x, "."]
        if occ == "film director":
            films = self.made(p, "film")
            x = rng.choice(films) if films else None
            return [*me, " directed the ", _year(x), " film ", x, "."] if x else None
        if occ == "actor":
            films = self.ix.referrers.get(p.id, [])
            films = [x for x in films if p.id in x.facts.get("starring", [])]
            return [*me, " played the lead in ", *ref_pieces(w, rng.choice(films), ("film",)), "."] if films else None
        if occ == "footballer" and "plays_for" in f:
            return [*me, " scored twice for ", self.e(f["plays_for"]), "."]
        if occ == "scientist" and "works_at" in f:
            return [*me, " taught at ", *org_pieces(self.e(f["works_at"])), "."]
        if occ == "politician":
            return [*me, " served as mayor of ", *ref_pieces(w, self.e(f["mayor_of"]), ("city",)), "."]
        return self.founder(p)

    def born(self, p: Entity) -> Sentence:
        city = self.e(p.facts["born_in"])
        return [*ref_pieces(self.w, p, ("person",)), " was born in ", *ref_pieces(self.w, city, ("city",)), "."]

    def married(self, p: Entity) -> Sentence | None:
        if "spouse" not in p.facts:
            return None
        return [*ref_pieces(self.w, p, ("person",)), " married ", *ref_pieces(self.w, self.e(p.facts["spouse"]), ("person",)), "."]

    def child(self, p: Entity) -> Sentence | None:
        if "father" not in p.facts:
            return None
        relation = "son" if p.gender == "male" else "daughter"
        return [*ref_pieces(self.w, p, ("person",)), f" is the {relation} of ",
                *ref_pieces(self.w, self.e(p.facts["father"]), ("person",)), "."]

    def founder(self, p: Entity) -> Sentence | None:
        orgs = [x for x in self.ix.made_by.get(p.id, []) if x.type == "organisation"]
        if not orgs:
            return None
        org = self.rng.choice(orgs)
        return [*ref_pieces(self.w, p, ("person",)), " founded ", *org_pieces(org), " in ", _year(org), "."]

    # places -------------------------------------------------------------------
    def capital(self, c: Entity) -> Sentence | None:
        if "capital_of" not in c.facts:
            return None
        return [c, " is the capital of ", self.e(c.facts["capital_of"]), "."]

    def visit(self, c: Entity) -> Sentence:
        return ["Many visitors travel to ", c, " in ", self.e(c.facts["located_in"]), "."]

    def home_ground(self, c: Entity) -> Sentence | None:
        clubs = [o for o in self.ix.referrers.get(c.id, [])
                 if o.subtype == "football club" and o.facts["headquartered_in"] == c.id]
        if not clubs:
            return None
        return [self.rng.choice(clubs), " plays its home games in ", *ref_pieces(self.w, c, ("city",)), "."]

    def population(self, c: Entity) -> Sentence:
        return [f"About {c.facts['population']:,} people live in ", *ref_pieces(self.w, c, ("city",)), "."]

    def birthplace(self, c: Entity) -> Sentence | None:
        people = [p for p in self.ix.referrers.get(c.id, []) if p.facts.get("born_in") == c.id]
        return self.born(self.rng.choice(people)) if people else None

    def country_capital(self, c: Entity) -> Sentence:
        return [c, " has its capital in ", *ref_pieces(self.w, self.e(c.facts["capital"]), ("city",)), "."]

    def citizen(self, c: Entity) -> Sentence | None:
        people = [p for p in self.ix.referrers.get(c.id, []) if p.facts.get("nationality") == c.id]
        if not people:
            return None
        return [*ref_pieces(self.w, self.rng.choice(people), ("person",)), " is a citizen of ", c, "."]

    # films, organisations, works ------------------------------------------------
    def stars(self, film: Entity) -> Sentence | None:
        cast = film.facts.get("starring")
        if not cast:
            return None
        actor = self.e(self.rng.choice(cast))
        return [*ref_pieces(self.w, film, ("film",)), " stars ", *ref_pieces(self.w, actor, ("actor",)), "."]

    def directed_film(self, film: Entity) -> Sentence:
        return self._directed(film)

    def film_director(self, film: Entity) -> Sentence:
        return ["The film ", film, " was directed by ",
                *ref_pieces(self.w, self.e(film.facts["directed_by"]), ("film director",)), "."]

    def _directed(self, film: Entity) -> Sentence:
        director = self.e(film.facts["directed_by"])
        return [*ref_pieces(self.w, director, ("film director",)), " directed the ", _year(film), " film ", film, "."]

    def adaptation(self, film: Entity) -> Sentence | None:
        if "based_on" not in film.facts:
            return None
        novel = self.e(film.facts["based_on"])
        writer = self.e(novel.facts["created_by"])
        return [*ref_pieces(self.w, film, ("film",)), " is based on the novel ", novel, " by ",
                *ref_pieces(self.w, writer, ("writer",)), "."]

    def founded(self, org: Entity) -> Sentence:
        city = self.e(org.facts["headquartered_in"])
        founder = self.e(org.facts["founded_by"])
        return [*org_pieces(org), ", based in ", *ref_pieces(self.w, city, ("city",)), ", was founded by ",
                *ref_pieces(self.w, founder, ("person",)), "."]

    def club_player(self, org: Entity) -> Sentence | None:
        players = [p for p in self.ix.referrers.get(org.id, []) if p.facts.get("plays_for") == org.id]
        if not players:
            return None
        return [*ref_pieces(self.w, self.rng.choice(players), ("footballer",)), " scored twice for ", org, "."]

    def made_by(self, work: Entity) -> Sentence:
        creator = self.e(work.facts["created_by"])
        if work.subtype == "novel":
            return ["The novel ", work, " was written by ", *ref_pieces(self.w, creator, ("writer",)), "."]
        if work.subtype == "painting":
            return [work, " was painted by ", *ref_pieces(self.w, creator, ("painter",)), " in ", _year(work), "."]
        return ["The album ", work, " by ", *ref_pieces(self.w, creator, ("musician",)), " came out in ", _year(work), "."]


def render(sentences: list[Sentence]) -> tuple[str, list[Mention]]:
    """Join sentences into text and record each entity's character span."""
    text, mentions = "", []
    for sentence in sentences:
        if text:
            text += " "
        for k, piece in enumerate(sentence):
            if isinstance(piece, str):
                text += piece[:1].upper() + piece[1:] if k == 0 else piece
            else:
                start = len(text)
                text += piece.name
                mentions.append(Mention(start, len(text), piece.id, piece.name, piece.type))
    return text, mentions


def _sentence_for(templates: _Templates, seed: Entity, rng: random.Random) -> Sentence | None:
    options = templates.for_entity(seed)
    for template in rng.sample(options, len(options)):
        sentence = template(seed)
        if sentence is not None:
            return sentence
    return None


def make_entity_linking(world: World, index: WorldIndex, n: int, rng: random.Random,
                        id_prefix: str) -> list[ELItem]:
    """`n` texts; every other one is seeded on an entity with a shared name."""
    templates = _Templates(world, index, rng)
    ambiguous = [e for e in world.entities if world.namesakes(e)]
    rng.shuffle(ambiguous)
    items: list[ELItem] = []
    seen: set[str] = set()
    attempts = 0
    while len(items) < n and attempts < 50 * n:
        attempts += 1
        if len(items) % 2 == 0 and ambiguous:
            seed = ambiguous[attempts % len(ambiguous)]
        else:
            seed = rng.choice(world.entities)
        first = _sentence_for(templates, seed, rng)
        if first is None:
            continue
        sentences = [first]
        if rng.random() < 0.5:  # a second sentence about an entity the first one names
            others = [p for p in first if isinstance(p, Entity) and p.id != seed.id]
            second = _sentence_for(templates, rng.choice(others), rng) if others else None
            if second is not None and second != first:
                sentences.append(second)
        text, mentions = render(sentences)
        if len(mentions) > MAX_MENTIONS:
            text, mentions = render(sentences[:1])
        if text in seen or not 1 <= len(mentions) <= MAX_MENTIONS:
            continue
        seen.add(text)
        item_id = f"{id_prefix}-el-{len(items) + 1:04d}"
        items.append(ELItem(id=item_id, title=item_id, text=text, mentions=mentions))
    return items
