"""The generated encyclopedia ("the world") used to train and evaluate small OneGen
models offline: invented entities, Wikipedia-like paragraphs, and entity-linking,
multi-hop and single-hop task sets in the formats the OneGen authors evaluate on.

    from onegen.world import generate_world, export_world
    world = generate_world(seed=7, n_entities=600, split="heldout")
    export_world(world, "out/heldout")

Command line: `python -m onegen.world --help`. Surface forms for asking and writing about a
world in many words, split into a training and a held-out part, are in `phrasing.py`;
`python -m onegen.world paraphrased --out DIR` writes the held-out world's evaluation sets in
held-out wordings and an out-of-world set (`heldout_sets.py`).
"""
from onegen.world.build import default_task_counts, generate_world
from onegen.world.examples import curate_examples
from onegen.world.export import WORLD_FILES, db_row, export_world, paragraph_row
from onegen.world.model import (ENTITY_TYPES, MULTIHOP_TYPES, ELItem, Entity, Mention, MultiHopItem,
                                SingleHopItem, SubQuestion, World)
from onegen.world.names import name_words, word_split
from onegen.world.text import entity_description

__all__ = [
    "ENTITY_TYPES", "MULTIHOP_TYPES", "WORLD_FILES", "ELItem", "Entity", "Mention", "MultiHopItem",
    "SingleHopItem", "SubQuestion", "World", "curate_examples", "db_row", "default_task_counts",
    "entity_description", "export_world", "generate_world", "name_words", "paragraph_row", "word_split",
]
