"""The dataclasses of a generated world: entities and the three task sets."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from onegen.documents import Document

ENTITY_TYPES = ("person", "city", "country", "film", "organisation", "work")
ID_PREFIX = {"train": "T", "heldout": "H"}
MULTIHOP_TYPES = ("compositional", "inference", "comparison", "bridge_comparison")

# Facts whose value is another entity's id (lists allowed, e.g. "starring").
ENTITY_RELATIONS = (
    "born_in", "father", "spouse", "nationality", "plays_for", "works_at", "mayor_of",
    "located_in", "capital_of", "capital", "directed_by", "starring", "country", "based_on",
    "founded_by", "headquartered_in", "created_by",
)


@dataclass
class Entity:
    """One encyclopedia entry. `facts` maps a relation to a literal (year, number, label)
    or to another entity's id; `fact_sentence` maps a relation to the index of the
    paragraph sentence that states it (the supporting fact of a question)."""

    id: str
    name: str
    type: str
    subtype: str
    facts: dict[str, Any] = field(default_factory=dict)
    title: str = ""
    short_description: str = ""
    sentences: list[str] = field(default_factory=list)
    fact_sentence: dict[str, int] = field(default_factory=dict)

    @property
    def gender(self) -> str | None:
        return self.facts.get("gender")

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "type": self.type, "subtype": self.subtype,
                "short_description": self.short_description, "title": self.title,
                "facts": self.facts, "sentences": self.sentences}


@dataclass
class Mention:
    """A gold entity mention: text[start:end] is the surface form."""

    start: int
    end: int
    entity_id: str
    surface: str
    type: str


@dataclass
class ELItem:
    id: str
    title: str
    text: str
    mentions: list[Mention]

    def to_dict(self) -> dict[str, Any]:
        labels = [{"id": f"{self.id}-m{k}", "span": [m.start, m.end], "entity_id": m.entity_id,
                   "name": m.surface, "parent": None, "children": [], "optional": False,
                   "type": m.type} for k, m in enumerate(self.mentions)]
        return {"id": self.id, "title": self.title, "text": self.text, "labels": labels}


@dataclass
class SubQuestion:
    """One step of a decomposition: asks about the entity whose paragraph is gold."""

    question: str
    answer: str
    answer_sentence: str
    title: str
    paragraph_id: str
    sentence_index: int

    def to_dict(self) -> dict[str, Any]:
        return {"question": self.question, "answer": self.answer,
                "answer_sentence": self.answer_sentence, "title": self.title,
                "paragraph_id": self.paragraph_id, "sentence_index": self.sentence_index}


@dataclass
class MultiHopItem:
    id: str
    type: str
    question: str
    context: list[tuple[str, list[str]]]
    evidences: list[tuple[str, str, str]]
    answer: str
    answer_id: str | None
    decomposition: list[SubQuestion]
    conclusion: str
    template: str = ""  # which question template produced it (not exported)
    slots: dict[str, str] = field(default_factory=dict)  # what fills the template (not exported; phrasing.py)

    @property
    def supporting_facts(self) -> list[tuple[str, int]]:
        return [(s.title, s.sentence_index) for s in self.decomposition]

    def to_dict(self) -> dict[str, Any]:
        return {"_id": self.id, "type": self.type, "question": self.question,
                "context": [[t, list(s)] for t, s in self.context],
                "supporting_facts": [[t, i] for t, i in self.supporting_facts],
                "evidences": [list(e) for e in self.evidences], "answer": self.answer,
                "answer_id": self.answer_id,
                "decomposition": [s.to_dict() for s in self.decomposition],
                "conclusion": self.conclusion}


@dataclass
class SingleHopItem:
    id: str
    question: str
    answers: list[str]
    gold_id: str
    ctxs: list[dict[str, str]]
    template: str = ""  # not exported
    slots: dict[str, str] = field(default_factory=dict)  # what fills the template (not exported; phrasing.py)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "question": self.question, "answers": self.answers,
                "gold_id": self.gold_id, "ctxs": self.ctxs}


@dataclass
class World:
    seed: int
    split: str
    entities: list[Entity]
    entity_linking: list[ELItem] = field(default_factory=list)
    multihop: list[MultiHopItem] = field(default_factory=list)
    singlehop: list[SingleHopItem] = field(default_factory=list)
    _by_id: dict[str, Entity] = field(default_factory=dict, repr=False)

    _groups: dict[str, list[Entity]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        # Names are final once a World exists, so the lookups can be built once.
        self._by_id = {e.id: e for e in self.entities}
        for e in self.entities:
            self._groups.setdefault(e.name, []).append(e)

    def entity(self, entity_id: str) -> Entity:
        try:
            return self._by_id[entity_id]
        except KeyError:
            raise KeyError(f"no entity {entity_id!r} in this {self.split} world") from None

    @property
    def paragraphs(self) -> list[Document]:
        return [Document.from_sentences(e.id, e.title, e.sentences) for e in self.entities]

    def namesakes(self, entity: Entity) -> list[Entity]:
        """Other entities with exactly the same name."""
        return [e for e in self._name_groups().get(entity.name, []) if e.id != entity.id]

    def _name_groups(self) -> dict[str, list[Entity]]:
        return self._groups

    def is_ambiguous(self, entity: Entity) -> bool:
        return len(self._groups.get(entity.name, ())) > 1

    def ambiguous_fraction(self) -> float:
        shared = sum(len(g) for g in self._name_groups().values() if len(g) > 1)
        return shared / len(self.entities) if self.entities else 0.0

    def stats(self) -> dict[str, Any]:
        groups = [g for g in self._name_groups().values() if len(g) > 1]
        relations: Counter[str] = Counter()
        for e in self.entities:
            for rel in ENTITY_RELATIONS:
                value = e.facts.get(rel)
                relations[rel] += len(value) if isinstance(value, list) else int(value is not None)
        ambiguous_ids = {e.id for g in groups for e in g}
        el_ambiguous = sum(any(m.entity_id in ambiguous_ids for m in item.mentions)
                           for item in self.entity_linking)
        comparisons = [q for q in self.multihop if q.type in ("comparison", "bridge_comparison")]
        first = sum(q.answer_id == q.decomposition[0].paragraph_id for q in comparisons)
        return {
            "seed": self.seed,
            "split": self.split,
            "entities": len(self.entities),
            "types": dict(sorted(Counter(e.type for e in self.entities).items())),
            "subtypes": dict(sorted(Counter(e.subtype for e in self.entities).items())),
            "relations": {r: relations[r] for r in ENTITY_RELATIONS if relations[r]},
            "ambiguous_names": len(groups),
            "ambiguous_entity_fraction": round(self.ambiguous_fraction(), 4),
            "ambiguity_kinds": dict(sorted(Counter(
                " vs ".join(sorted(_kind(e) for e in g)) for g in groups).items())),
            "files": {
                "entities.jsonl": len(self.entities),
                "db.jsonl": len(self.entities),
                "paragraphs.jsonl": len(self.entities),
                "entity_linking.jsonl": len(self.entity_linking),
                "multihop.json": len(self.multihop),
                "singlehop.json": len(self.singlehop),
            },
            "entity_linking_ambiguous_share": round(el_ambiguous / max(1, len(self.entity_linking)), 4),
            "multihop_types": {t: sum(q.type == t for q in self.multihop) for t in MULTIHOP_TYPES},
            "multihop_templates": dict(sorted(Counter(q.template for q in self.multihop).items())),
            "comparison_answer_first_share": round(first / max(1, len(comparisons)), 4),
            "singlehop_templates": dict(sorted(Counter(q.template for q in self.singlehop).items())),
        }


def _kind(e: Entity) -> str:
    return e.subtype if e.type in ("person", "work") else e.type
