"""The world's tasks in other words: questions and entity-linking texts built from the surface
forms of `phrasing.py`, for a held-out evaluation in unseen wordings and for varied training.

Questions keep their item: the same facts, gold decomposition, context and answer, and only the
user's question changes, so a model's decomposition stays in the released protocol's shape.
Entity-linking texts are new sentences about the world's entities, with spans taken while the
text is built, so they are right by construction.
"""
from __future__ import annotations

import copy
import functools
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onegen.world.build import generate_world
from onegen.world.linking import MAX_MENTIONS, Piece, org_pieces, ref_pieces, render
from onegen.world.model import ELItem, Entity, Mention, MultiHopItem, SingleHopItem, World
from onegen.world.names import stable_int
from onegen.world.phrasing import (TEXT_OPENERS, draw_styles, families, gender_words, phrase_question,
                                   segments, slots_of, spouse_word, with_typo)
from onegen.world.relations import WorldIndex, WorldReader
from onegen.world.singlehop import WORK_WORDS
from onegen.world.text import article

# Varied training keeps this share of questions and texts exactly as the world wrote them.
TEMPLATE_SHARE = 0.4
WORK_CREATOR = {"novel": "writer", "painting": "painter", "album": "musician"}


@dataclass
class Phrased:
    """One paraphrase and how it was made (the family, the form and the styles applied)."""

    item: Any  # MultiHopItem, SingleHopItem or ELItem
    family: str
    form: str
    styles: list[str] = field(default_factory=list)


class FormDeck:
    """Deals each family's forms in shuffled rounds, so every form is used before any repeats."""

    def __init__(self, task: str, part: str, rng: random.Random):
        self.families, self.part, self.rng = families(task), part, rng
        self.decks: dict[str, list[str]] = {}

    def draw(self, family: str, filled: set[str]) -> str | None:
        usable = [f for f in self.families[family].forms(self.part) if set(slots_of(f)) <= filled]
        if not usable:
            return None
        deck = self.decks.get(family)
        if not deck or not set(deck) & set(usable):
            deck = self.decks[family] = self.rng.sample(usable, len(usable))
        form = next(f for f in deck if f in usable)
        deck.remove(form)
        return form


# ---------------------------------------------------------------------------
# Questions
# ---------------------------------------------------------------------------

def paraphrase_questions(items: list[MultiHopItem] | list[SingleHopItem], task: str, part: str,
                         rng: random.Random, id_suffix: str = "-p") -> list[Phrased]:
    """Every item again with its question in a form of `part`; ids get `id_suffix`, so that a
    paraphrase can be paired with the templated question it rewords."""
    deck = FormDeck(task, part, rng)
    out = []
    for item in items:
        form = deck.draw(item.template, set(item.slots))
        if form is None:
            raise LookupError(f"no {part} form of {item.template!r} fits the slots {sorted(item.slots)}")
        styles = draw_styles(rng)
        new = copy.copy(item)
        new.question, new.id = phrase_question(form, item.slots, styles, part, rng), item.id + id_suffix
        out.append(Phrased(new, item.template, form, styles))
    return out


# ---------------------------------------------------------------------------
# Entity-linking texts
# ---------------------------------------------------------------------------

Slots = dict[str, "list[Piece] | str"]


class _Binder(WorldReader):
    """What fills each entity-linking family for a seed entity; each returns None when the seed
    lacks the facts the family needs."""

    def ref(self, e: Entity, *implied: str) -> list[Piece]:
        return ref_pieces(self.w, e, implied)

    def person(self, p: Entity, implied: str = "person") -> Slots:
        demonym = self.e(p.facts["nationality"]).facts["demonym"]
        return {"p": self.ref(p, implied), "P": [p], "occupation": p.subtype,
                "a_occupation": f"{article(p.subtype)} {p.subtype}", "demonym": demonym,
                "year": str(p.facts["birth_year"]), **gender_words(p.gender)}

    def family_slots(self, family: str, seed: Entity) -> Slots | None:
        return getattr(self, family)(seed)

    # persons --------------------------------------------------------------------------
    def born(self, p: Entity) -> Slots | None:
        if p.type != "person":
            return None
        return {**self.person(p), "c": self.ref(self.e(p.facts["born_in"]), "city")}

    def married(self, p: Entity) -> Slots | None:
        if p.type != "person" or "spouse" not in p.facts:
            return None
        q = self.e(p.facts["spouse"])
        return {**self.person(p), "q": self.ref(q, "person"), "spouse": spouse_word(q.gender)}

    def child(self, p: Entity) -> Slots | None:
        if p.type != "person" or "father" not in p.facts:
            return None
        return {**self.person(p), "f": self.ref(self.e(p.facts["father"]), "person")}

    def born_married(self, p: Entity) -> Slots | None:
        slots = self.married(p)
        return slots and {**slots, "c": self.ref(self.e(p.facts["born_in"]), "city")}

    def mayor(self, x: Entity) -> Slots | None:
        if x.type == "city":
            mayors = [p for p in self.ix.referrers.get(x.id, []) if p.facts.get("mayor_of") == x.id]
            x = self.rng.choice(mayors) if mayors else x
        if "mayor_of" not in x.facts:
            return None
        return {**self.person(x, "politician"), "c": self.ref(self.e(x.facts["mayor_of"]), "city")}

    # films ------------------------------------------------------------------------------
    def directed(self, x: Entity) -> Slots | None:
        if x.type == "person":
            films = [f for f in self.ix.made_by.get(x.id, []) if f.type == "film"]
            x = self.rng.choice(films) if films else x
        if x.type != "film":
            return None
        d = self.e(x.facts["directed_by"])
        return {"X": [x], "D": [d], "d": self.ref(d, "film director"), "year": str(x.facts["release_year"]),
                "genre": x.facts["genre"], "demonym": self.e(x.facts["country"]).facts["demonym"]}

    def _cast(self, x: Entity) -> tuple[Entity, list[Entity]] | None:
        if x.type == "person":
            films = [f for f in self.ix.referrers.get(x.id, []) if x.id in f.facts.get("starring", [])]
            if not films:
                return None
            film = self.rng.choice(films)
            return film, [x] + [self.e(a) for a in film.facts["starring"] if a != x.id]
        if x.type == "film" and x.facts.get("starring"):
            return x, [self.e(a) for a in self.rng.sample(x.facts["starring"], len(x.facts["starring"]))]
        return None

    def stars(self, x: Entity) -> Slots | None:
        cast = self._cast(x)
        if cast is None:
            return None
        film, actors = cast
        return {"x": self.ref(film, "film"), "X": [film], "a": self.ref(actors[0], "actor"),
                "year": str(film.facts["release_year"])}

    def starring_pair(self, x: Entity) -> Slots | None:
        cast = self._cast(x)
        if cast is None or len(cast[1]) < 2:
            return None
        film, actors = cast
        return {"x": self.ref(film, "film"), "a": self.ref(actors[0], "actor"), "b": self.ref(actors[1], "actor")}

    # organisations and works ------------------------------------------------------------
    def club(self, x: Entity) -> Slots | None:
        if x.type == "organisation":
            players = [p for p in self.ix.referrers.get(x.id, []) if p.facts.get("plays_for") == x.id]
            x = self.rng.choice(players) if players else x
        if "plays_for" not in x.facts:
            return None
        club = self.e(x.facts["plays_for"])
        return {**self.person(x, "footballer"), "o": [club],
                "c": self.ref(self.e(club.facts["headquartered_in"]), "city")}

    def founded(self, x: Entity) -> Slots | None:
        if x.type == "person":
            orgs = [o for o in self.ix.made_by.get(x.id, []) if o.type == "organisation"]
            x = self.rng.choice(orgs) if orgs else x
        if x.type != "organisation":
            return None
        return {"o": org_pieces(x), "f": self.ref(self.e(x.facts["founded_by"]), "person"),
                "c": self.ref(self.e(x.facts["headquartered_in"]), "city"), "year": str(x.facts["founding_year"])}

    def created(self, x: Entity) -> Slots | None:
        if x.type == "person":
            works = [w for w in self.ix.made_by.get(x.id, []) if w.type == "work"]
            x = self.rng.choice(works) if works else x
        if x.type != "work":
            return None
        creator = self.e(x.facts["created_by"])
        year = next(v for k, v in x.facts.items() if k.endswith("_year"))
        words = WORK_WORDS[x.subtype]
        return {"W": [x], "kind": x.subtype, "maker": self.ref(creator, WORK_CREATOR[x.subtype]),
                "made": words["made"], "made_pp": words["made_pp"], "year": str(year)}

    # places -------------------------------------------------------------------------------
    def capital(self, x: Entity) -> Slots | None:
        if x.type == "city" and "capital_of" in x.facts:
            x = self.e(x.facts["capital_of"])
        if x.type != "country":
            return None
        city = self.e(x.facts["capital"])
        return {"k": [x], "c": self.ref(city, "city"), "C": [city], "demonym": x.facts["demonym"]}

    def located(self, x: Entity) -> Slots | None:
        if x.type != "city":
            return None
        return {"C": [x], "K": [self.e(x.facts["located_in"])], "population": f"{x.facts['population']:,}"}


def build_text(form: str, slots: Slots, styles: list[str], part: str,
               rng: random.Random) -> tuple[str, list[Mention]]:
    """Render a linking form: spans are recorded as the text is built, then kept in step with
    every style (an opener shifts them; casing keeps their length)."""
    if "typo" in styles:
        form = with_typo(form, rng)
    pieces: list[Piece] = []
    for is_slot, text in segments(form):
        value = slots[text] if is_slot else text
        pieces.extend([value] if isinstance(value, str) else value)
    text, mentions = render([pieces])
    starts_with_name = bool(mentions) and mentions[0].start == 0
    if "opener" in styles:
        opener = rng.choice(TEXT_OPENERS[part])
        body = text if starts_with_name else text[:1].lower() + text[1:]
        text = opener + body
        mentions = [Mention(m.start + len(opener), m.end + len(opener), m.entity_id, m.surface, m.type)
                    for m in mentions]
    if "all_lower" in styles:
        text = text.lower()
    elif "lower_first" in styles and not (mentions and mentions[0].start == 0):
        text = text[:1].lower() + text[1:]
    if "no_end_mark" in styles and text.endswith("."):
        text = text[:-1]
    return text, [Mention(m.start, m.end, m.entity_id, text[m.start:m.end], m.type) for m in mentions]


class LinkingWriter:
    """Writes entity-linking texts in one part's forms, spreading them over the families."""

    def __init__(self, world: World, index: WorldIndex, part: str, rng: random.Random):
        self.binder, self.deck = _Binder(world, index, rng), FormDeck("entity-linking", part, rng)
        self.part, self.rng = part, rng
        self.names = list(families("entity-linking"))
        self.used = {name: 0 for name in self.names}

    def text_about(self, seed: Entity, item_id: str, avoid: set[str] = frozenset()) -> Phrased | None:
        """A text about `seed` (or an entity its facts name), in the least used family that fits;
        None when no family fits or every text would repeat one in `avoid`."""
        fits = []
        for name in self.rng.sample(self.names, len(self.names)):
            slots = self.binder.family_slots(name, seed)
            if slots is not None:
                fits.append((name, slots))
        for family, slots in sorted(fits, key=lambda f: self.used[f[0]]):
            form = self.deck.draw(family, set(slots))
            if form is None:
                continue
            styles = draw_styles(self.rng)
            text, mentions = build_text(form, slots, styles, self.part, self.rng)
            if text in avoid or not 1 <= len(mentions) <= MAX_MENTIONS:
                continue
            self.used[family] += 1
            return Phrased(ELItem(id=item_id, title=item_id, text=text, mentions=mentions), family, form, styles)
        return None


def paraphrase_linking(world: World, index: WorldIndex, n: int, part: str, rng: random.Random,
                       id_prefix: str) -> list[Phrased]:
    """`n` entity-linking texts in `part`'s forms; every other one is seeded on an entity with a
    shared name, as in linking.py."""
    writer = LinkingWriter(world, index, part, rng)
    ambiguous = [e for e in world.entities if world.namesakes(e)]
    rng.shuffle(ambiguous)
    out: list[Phrased] = []
    seen: set[str] = set()
    attempts = 0
    while len(out) < n and attempts < 50 * n:
        if len(out) % 2 == 0 and ambiguous:
            seed = ambiguous[attempts % len(ambiguous)]
        else:
            seed = rng.choice(world.entities)
        attempts += 1
        made = writer.text_about(seed, f"{id_prefix}-{len(out) + 1:04d}", seen)
        if made is not None:
            seen.add(made.item.text)
            out.append(made)
    return out


# ---------------------------------------------------------------------------
# Varied training items
# ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=2)
def _world_of_folder(folder: str, stats_text: str) -> World:
    """The world a folder was exported from, generated again from its stats.json."""
    stats = json.loads(stats_text)
    files = stats["files"]
    return generate_world(stats["seed"], stats["entities"], stats["split"], n_el=files["entity_linking.jsonl"],
                          n_multihop=files["multihop.json"], n_singlehop=files["singlehop.json"])


def world_of_folder(world_dir: str | Path) -> World:
    stats = Path(world_dir) / "stats.json"
    if not stats.exists():
        raise ValueError(f"{world_dir} has no stats.json; varied phrasings need a folder written by onegen.world")
    return _world_of_folder(str(Path(world_dir).resolve()), stats.read_text(encoding="utf-8"))


def _keeps_template(task: str, item_id: str) -> tuple[bool, random.Random]:
    rng = random.Random(stable_int("varied", task, item_id))
    return rng.random() < TEMPLATE_SHARE, rng


def varied_training_items(world_dir: str | Path, task: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The training items of a world folder with their questions (or texts) in the training part
    of the surface forms, the share TEMPLATE_SHARE left as the world wrote them. The choice is
    fixed per item id, so a run sees the same data each time. Only the user's question or text
    changes; decompositions, answers and ids stay. Questions also carry the name of the world
    template they were made from ("template")."""
    world = world_of_folder(world_dir)
    if world.split != "train":
        raise ValueError(f"{world_dir} holds a {world.split} world; varied phrasings are for training")
    if task == "entity-linking":
        made = {x.id: x for x in world.entity_linking}
        key = "text"
    else:
        made = {x.id: x for x in (world.multihop if task == "multi-hop" else world.singlehop)}
        key = "question"
    id_key = "_id" if task == "multi-hop" else "id"
    if any(made.get(x[id_key]) is None or getattr(made[x[id_key]], key) != x[key] for x in items):
        raise ValueError(f"{world_dir} was not written by this version of onegen.world (its {task} items differ "
                         "from a fresh generation); generate the world again to train with varied phrasings")
    out = []
    if task == "entity-linking":
        writer = LinkingWriter(world, WorldIndex.build(world), "train", random.Random(stable_int("varied-el", world.seed)))
        for x in items:
            keep, _ = _keeps_template(task, x["id"])
            first = made[x["id"]].mentions[0].entity_id
            phrased = None if keep else writer.text_about(world.entity(first), x["id"])
            out.append(phrased.item.to_dict() if phrased else x)
        return out
    for x in items:
        phrased = vary_question(made[x[id_key]], task)
        # The template travels with the item so that a recipe can weight it (`template_weights`).
        out.append({**x, "question": phrased.item.question if phrased else x["question"],
                    "template": made[x[id_key]].template})
    return out


def vary_question(item: MultiHopItem | SingleHopItem, task: str) -> Phrased | None:
    """The item with its question in a training form and styles, or None where it keeps the
    template wording (the share TEMPLATE_SHARE, fixed per item id)."""
    keep, rng = _keeps_template(task, item.id)
    usable = [f for f in families(task)[item.template].forms("train") if set(slots_of(f)) <= set(item.slots)]
    if keep or not usable:
        return None
    form = rng.choice(usable)
    styles = draw_styles(rng)
    new = copy.copy(item)
    new.question = phrase_question(form, item.slots, styles, "train", rng)
    return Phrased(new, item.template, form, styles)
