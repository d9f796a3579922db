"""`generate_world`: entities, paragraphs and the three task sets from one seed."""
from __future__ import annotations

import random

from onegen.world.generator import WorldBuilder
from onegen.world.linking import make_entity_linking
from onegen.world.model import ID_PREFIX, World
from onegen.world.multihop import make_multihop
from onegen.world.names import stable_int
from onegen.world.relations import WorldIndex
from onegen.world.singlehop import make_singlehop
from onegen.world.text import write_texts


def default_task_counts(n_entities: int) -> tuple[int, int, int]:
    """(entity-linking texts, multi-hop questions, single-hop questions) for a world size."""
    return n_entities // 2, n_entities * 2 // 3, n_entities // 2


def generate_world(seed: int, n_entities: int = 600, split: str = "train", *,
                   n_el: int | None = None, n_multihop: int | None = None,
                   n_singlehop: int | None = None) -> World:
    """A deterministic world: the same arguments give the same entities, texts and tasks.

    `split` is "train" or "heldout"; the two never share an invented name word. Task
    counts default to `default_task_counts(n_entities)`. Each task has its own random
    stream, so asking for more questions does not change the entities or the texts.
    """
    if split not in ID_PREFIX:
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    counts = default_task_counts(n_entities)
    n_el, n_multihop, n_singlehop = (c if v is None else v for v, c in
                                     zip((n_el, n_multihop, n_singlehop), counts))
    for label, value in (("n_el", n_el), ("n_multihop", n_multihop), ("n_singlehop", n_singlehop)):
        if value < 0:
            raise ValueError(f"{label} must be >= 0, got {value}")
    world = World(seed=seed, split=split, entities=WorldBuilder(seed, n_entities, split).build())
    write_texts(world)
    index = WorldIndex.build(world)
    prefix = ID_PREFIX[split]

    def stream(task: str) -> random.Random:
        return random.Random(stable_int(task, seed, split))

    world.entity_linking = make_entity_linking(world, index, n_el, stream("el"), prefix)
    world.multihop = make_multihop(world, index, n_multihop, stream("multihop"), prefix)
    world.singlehop = make_singlehop(world, index, n_singlehop, stream("singlehop"), prefix)
    return world
