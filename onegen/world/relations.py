"""Reverse lookups over a finished world, and hard distractor selection.

Hard distractors are what make retrieval non-trivial: the namesake of an ambiguous
entity, entities sharing an invented name word (relatives share family names), entities
whose paragraph mentions the gold entity, and entities of the same kind.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from onegen.world.model import ENTITY_RELATIONS, Entity, World
from onegen.world.names import name_words



class WorldReader:
    """What every text generator reads: the world, its relation index and the seeded draws."""

    def __init__(self, world: World, index: WorldIndex, rng: random.Random):
        self.w, self.ix, self.rng = world, index, rng

    def e(self, entity_id: str) -> Entity:
        return self.w.entity(entity_id)


@dataclass
class WorldIndex:
    world: World
    by_subtype: dict[str, list[Entity]] = field(default_factory=dict)
    by_type: dict[str, list[Entity]] = field(default_factory=dict)
    by_word: dict[str, list[Entity]] = field(default_factory=dict)
    referrers: dict[str, list[Entity]] = field(default_factory=dict)  # id -> entities whose facts name it
    made_by: dict[str, list[Entity]] = field(default_factory=dict)  # person id -> films, works, organisations
    children: dict[str, list[Entity]] = field(default_factory=dict)

    @classmethod
    def build(cls, world: World) -> "WorldIndex":
        index = cls(world)
        for e in world.entities:
            index.by_subtype.setdefault(e.subtype, []).append(e)
            index.by_type.setdefault(e.type, []).append(e)
            for word in dict.fromkeys(w.lower() for w in name_words(e.name)):
                index.by_word.setdefault(word, []).append(e)
            for target in referenced_ids(e):
                index.referrers.setdefault(target, []).append(e)
            maker = e.facts.get("directed_by") or e.facts.get("created_by") or e.facts.get("founded_by")
            if maker:
                index.made_by.setdefault(maker, []).append(e)
            if "father" in e.facts:
                index.children.setdefault(e.facts["father"], []).append(e)
        return index

    def word_neighbours(self, entity: Entity) -> list[Entity]:
        """Other entities sharing an invented name word, in world order."""
        seen: dict[str, Entity] = {}
        for word in name_words(entity.name):
            for other in self.by_word.get(word.lower(), []):
                if other.id != entity.id and other.name != entity.name:
                    seen.setdefault(other.id, other)
        return list(seen.values())


def referenced_ids(entity: Entity) -> list[str]:
    out: list[str] = []
    for rel in ENTITY_RELATIONS:
        value = entity.facts.get(rel)
        if isinstance(value, list):
            out.extend(value)
        elif isinstance(value, str):
            out.append(value)
    return out


def hard_distractors(index: WorldIndex, gold: list[Entity], k: int, rng: random.Random) -> list[Entity]:
    """`k` entities (none of them gold), hardest first: namesakes, shared name words,
    paragraphs that mention a gold entity, same subtype, same type, anything."""
    world = index.world
    chosen: dict[str, Entity] = {g.id: g for g in gold}
    picked: list[Entity] = []

    def take(candidates: list[Entity], limit: int) -> None:
        if len(picked) >= k:
            return
        fresh = [c for c in dict((c.id, c) for c in candidates).values() if c.id not in chosen]
        for c in rng.sample(fresh, min(limit, len(fresh), k - len(picked))):
            chosen[c.id] = c
            picked.append(c)

    for g in gold:
        take(world.namesakes(g), k)
    for g in gold:
        take(index.word_neighbours(g), 2)
    for g in gold:
        take(index.referrers.get(g.id, []), 1)
    for g in gold:
        take(index.by_subtype[g.subtype], 2)
    for g in gold:
        take(index.by_type[g.type], k)
    take(world.entities, k)
    return picked
