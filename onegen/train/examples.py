"""Training examples: world files -> token ids with label masks and retrieval anchors.

Token roles follow the protocol: GEN tokens carry next-token labels, CTX tokens (prompts, inserted
paragraphs, the token the system forces or inserts right after a retrieval token) are masked, and
RET tokens additionally anchor a contrastive loss on their hidden state. Sequences are built with
the same tokeniser calls the engine makes at inference, so training and inference see one format.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..documents import Document
from ..protocols import CONTINUE, LK, QR, get_spec
from ..tokenization import Part, ProtocolTokenizer, Token, template_parts

IGNORE = -100
ORDINALS = ("First", "Second", "Third", "Fourth", "Fifth")


@dataclass
class Anchor:
    position: int  # index in the query sequence whose hidden state is the query
    positive: tuple[str, int]  # (document key, fragment) of the gold vector
    negatives: list[str]  # hard-negative document keys


@dataclass
class QuerySample:
    task: str
    ids: list[int]
    labels: list[int]
    anchors: list[Anchor]
    kind: str = ""  # e.g. the multi-hop question type


@dataclass
class Corpus:
    """Documents per task, keyed "task|id"."""
    docs: dict[str, Document] = field(default_factory=dict)
    by_name: dict[str, list[str]] = field(default_factory=dict)  # entity name -> EL keys
    by_lower_name: dict[str, list[str]] = field(default_factory=dict)  # lower-cased name -> EL keys
    by_type: dict[str, list[str]] = field(default_factory=dict)  # entity type -> EL keys
    type_of: dict[str, str] = field(default_factory=dict)  # EL key -> entity type
    subtype_of: dict[str, str] = field(default_factory=dict)  # entity id -> subtype ("film director")
    paragraph_by_title: dict[str, str] = field(default_factory=dict)  # paragraph title -> multi-hop key


class SequenceBuilder:
    """Appends segments with their role; keeps ids, labels and anchor positions in step."""

    def __init__(self, ptok: ProtocolTokenizer):
        self.ptok = ptok
        self.ids: list[int] = []
        self.labels: list[int] = []

    def ctx(self, ids: Sequence[int]) -> None:
        self.ids += ids
        self.labels += [IGNORE] * len(ids)

    def gen(self, ids: Sequence[int]) -> None:
        self.ids += ids
        self.labels += list(ids)

    def gen_text(self, text: str) -> None:
        self.gen(self.ptok.encode_data(text))

    def gen_token(self, token: str) -> int:
        self.gen([self.ptok.special_ids[token]])
        return len(self.ids) - 1

    def parts(self, parts: list[Part], masked: bool) -> None:
        ids = self.ptok.encode(parts).ids
        self.ctx(ids) if masked else self.gen(ids)


def insertion_parts(task: str, title: str, text: str) -> list[Part]:
    """The inserted document exactly as the engine writes it."""
    open_t, body, close_t = get_spec(task).insertion  # type: ignore[misc]
    return [Token(open_t), *template_parts(body, title=title, text=text), Token(close_t)]


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_corpus(world_dir: Path) -> Corpus:
    """Entity documents (EL; descriptions from the authors' db.jsonl layout) and paragraphs
    (multi-hop, single-hop) of a world folder."""
    corpus = Corpus()
    descriptions = {}
    for row in read_jsonl(world_dir / "db.jsonl"):
        text = row["messages"][-1]["content"]
        descriptions[row["uid"]] = text[: -len("[SE]")] if text.endswith("[SE]") else text
    for e in read_jsonl(world_dir / "entities.jsonl"):
        key = f"entity-linking|{e['id']}"
        corpus.docs[key] = Document(id=e["id"], title=e["name"], text=descriptions[e["id"]])
        corpus.by_name.setdefault(e["name"], []).append(key)
        corpus.by_lower_name.setdefault(e["name"].lower(), []).append(key)
        corpus.by_type.setdefault(e["type"], []).append(key)
        corpus.type_of[key] = e["type"]
        corpus.subtype_of[e["id"]] = e.get("subtype", e["type"])
    for p in read_jsonl(world_dir / "paragraphs.jsonl"):
        doc = Document.from_sentences(p["id"], p["title"], p["sentences"])
        corpus.docs[f"multi-hop|{p['id']}"] = doc
        corpus.paragraph_by_title[p["title"]] = f"multi-hop|{p['id']}"
        corpus.docs[f"single-hop|{p['id']}"] = Document(id=p["id"], title=p["title"], text=doc.text)
    return corpus


# -- per task -------------------------------------------------------------------------------------

def entity_linking_sample(item: dict, ptok: ProtocolTokenizer, corpus: Corpus, rng, n_neg: int) -> QuerySample:
    spec = get_spec("entity-linking")
    b = SequenceBuilder(ptok)
    b.ctx(ptok.encode_template(spec.prompt_template, input=item["text"]).ids)
    text, cursor, anchors = item["text"], 0, []
    pieces = []
    for lab in sorted(item["labels"], key=lambda x: x["span"][0]):
        s, e = lab["span"]
        pieces.append(text[cursor:s] + f"<MENTION>{text[s:e]}</MENTION>")
        cursor = e
        key = f"entity-linking|{lab['entity_id']}"
        b.gen_text((" " if len(anchors) == 0 else "") + pieces[-1])
        pos = b.gen_token(LK)
        b.ctx([ptok.special_ids[CONTINUE]])  # forced by the system at inference: never a label
        anchors.append(Anchor(pos, (key, 0), entity_negatives(key, text[s:e], corpus, rng, n_neg)))
    b.gen_text(text[cursor:] if anchors else " " + text)
    b.gen([ptok.hf.eos_token_id])
    return QuerySample("entity-linking", b.ids, b.labels, anchors)


def entity_negatives(key: str, name: str, corpus: Corpus, rng, n: int) -> list[str]:
    """Entities sharing the mention's name first (the ambiguity linking must resolve), then same type.
    A mention written in other case ("ivo brandel") finds its namesakes by the lower-cased name."""
    same_name = [k for k in corpus.by_name.get(name) or corpus.by_lower_name.get(name.lower(), []) if k != key]
    etype_keys = corpus.by_type.get(corpus.type_of.get(key, ""), [])
    out = same_name[:n]
    while len(out) < n and etype_keys:
        k = rng.choice(etype_keys)
        if k != key and k not in out:
            out.append(k)
    return out


def multi_hop_sample(item: dict, ptok: ProtocolTokenizer, corpus: Corpus, rng, n_neg: int,
                     bridge_roles: str = "write", comparison_order: str = "answer") -> QuerySample:
    """`bridge_roles="drop"` writes each sub-question without the role that tells a namesake apart
    when the question itself does not give it (see `without_added_role`); "always" writes the role
    of a maker the previous hop found (see `with_maker_role`). `comparison_order="question"`
    or "question-winner" rewrites a comparison's conclusion (see `question_order_conclusion`)."""
    spec = get_spec("multi-hop")
    b = SequenceBuilder(ptok)
    b.ctx(ptok.encode_template(spec.prompt_template, input=item["question"]).ids)
    gold_ids = {h["paragraph_id"] for h in item["decomposition"]}
    distractors = [k for k in _context_keys(item, corpus) if k.split("|", 1)[1] not in gold_ids]
    anchors = []
    prev_answer = ""
    for k, hop in enumerate(item["decomposition"]):
        sub = hop["question"]
        if bridge_roles == "drop":
            sub = without_added_role(hop, item["question"])
        elif bridge_roles == "always" and k > 0:
            sub = with_maker_role(hop, item["decomposition"][k - 1], corpus)
        b.gen_text(f"{prev_answer} {ORDINALS[k]}, {_lower_first_word(sub)}")
        pos = b.gen_token(QR)
        key = f"multi-hop|{hop['paragraph_id']}"
        doc = corpus.docs[key]
        b.parts(insertion_parts("multi-hop", doc.title, doc.text), masked=True)
        anchors.append(Anchor(pos, (key, int(hop.get("sentence_index", 0))), rng.sample(distractors, min(n_neg, len(distractors)))))
        prev_answer = hop["answer_sentence"]
    conclusion = (item.get("conclusion") or "So the answer is").strip()
    if comparison_order in ("question", "question-winner"):
        conclusion = question_order_conclusion(item, comparison_order == "question-winner") or conclusion
    if conclusion.endswith(item["answer"]):  # the answer belongs inside the tags only
        conclusion = conclusion[: -len(item["answer"])].rstrip()
    b.gen_text(f"{prev_answer} {conclusion} <FINAL-ANSWER>{item['answer']}</FINAL-ANSWER>")
    b.gen([ptok.hf.eos_token_id])
    return QuerySample("multi-hop", b.ids, b.labels, anchors, kind=item.get("type", ""))


def question_order_conclusion(item: dict, name_winner: bool = False) -> str | None:
    """A comparison's conclusion with the values in question order: "{first} is W {second}, so the
    answer is", W being "earlier than"/"later than" for years, "more than"/"less than" for counts.
    With `name_winner` the value the question asks for follows, so that the answer is the option
    whose value was just written: "..., so the later one is {value} and the answer is".

    The world's own conclusion names the answer's value first, so its first number is already the
    decision, and "born later" is the one template whose word is "later than". Here the first
    number is a copy and the word a comparison of two values the model has written in its last two
    sentences, balanced over every template. None for an item that is not a two-value comparison.
    """
    m = re.fullmatch(r"[\d,]+ is (earlier than|later than|more than) [\d,]+, so the answer is",
                     (item.get("conclusion") or "").strip())
    hops = item.get("decomposition") or []
    if not m or len(hops) not in (2, 4):
        return None
    first, second = (hops[0], hops[1]) if len(hops) == 2 else (hops[1], hops[3])
    try:
        a, b = (int(h["answer"].replace(",", "")) for h in (first, second))
    except ValueError:
        return None
    asked = m.group(1)
    larger = "more than" if asked == "more than" else "later than"
    smaller = "less than" if asked == "more than" else "earlier than"
    said = f"{first['answer']} is {larger if a > b else smaller} {second['answer']}"
    if not name_winner:
        return f"{said}, so the answer is"
    wants_larger = asked != "earlier than"
    winner = first if (a > b) == wants_larger else second
    kind = {"earlier than": "earlier", "later than": "later", "more than": "larger"}[asked]
    return f"{said}, so the {kind} one is {winner['answer']} and the answer is"


def without_added_role(hop: dict, question: str) -> str:
    """The hop's sub-question without the qualifier the world adds to a name two entities share
    ("When was the film director X born?" -> "When was X born?"), unless the question names it too.

    The world writes the role only for shared names, and a model cannot know that a name it never
    saw is shared, so at inference it leaves the role out. Trained on sub-questions without it, the
    query state must tell the namesakes apart from the paragraph inserted a hop earlier.
    """
    m = re.fullmatch(r"(.+) \((.+)\)", hop.get("title", ""))
    if not m:
        return hop["question"]
    name, role = m.groups()
    phrase = f"the {role} {name}"
    if phrase not in hop["question"] or phrase.lower() in question.lower():
        return hop["question"]
    return hop["question"].replace(phrase, name)


# Who makes a film or a work is always of one occupation, so a model can write it after that hop.
MAKER_TYPES = ("film", "work")


def with_maker_role(hop: dict, previous: dict, corpus: Corpus) -> str:
    """The hop's sub-question with the role of the person it asks about ("When was X born?" ->
    "When was the film director X born?") when the previous hop found X as the maker of a film or
    a work. The world writes that role only for shared names, which a model cannot know of a name
    it never saw; written every time, it is something the model can always write, and the query
    state holds it for the paragraph titled "X (film director)" where the name is shared.
    """
    name = previous.get("answer", "")
    prev_type = corpus.type_of.get(f"entity-linking|{previous.get('paragraph_id')}")
    subtype = corpus.subtype_of.get(hop.get("paragraph_id", ""))
    if prev_type not in MAKER_TYPES or not subtype or not name or name not in hop["question"]:
        return hop["question"]
    phrase = f"the {subtype} {name}"
    return hop["question"] if phrase in hop["question"] else hop["question"].replace(name, phrase, 1)


_QUESTION_WORDS = {"Who", "What", "When", "Where", "Which", "How", "In", "Is", "Was", "Did", "Does", "Whose"}


def _lower_first_word(q: str) -> str:
    """"First, who directed ..." reads as one sentence; names keep their capitals."""
    word = q.split(" ", 1)[0]
    return q[0].lower() + q[1:] if word in _QUESTION_WORDS else q


def _context_keys(item: dict, corpus: Corpus) -> list[str]:
    return [k for title, _ in item["context"] if (k := corpus.paragraph_by_title.get(title))]


def single_hop_sample(item: dict, ptok: ProtocolTokenizer, corpus: Corpus, rng, n_neg: int) -> QuerySample:
    spec = get_spec("single-hop")
    b = SequenceBuilder(ptok)
    b.ctx(ptok.encode_template(spec.prompt_template, input=item["question"]).ids)
    pos = len(b.ids) - 1  # the prompt ends with [Question Representation]
    key = f"single-hop|{item['gold_id']}"
    doc = corpus.docs[key]
    b.parts(insertion_parts("single-hop", doc.title, doc.text), masked=True)
    b.gen_token("[Relevant]")
    b.gen_text(item["answers"][0])
    b.gen_token("[Fully supported]")
    b.gen_token("[Utility:5]")
    b.gen([ptok.hf.eos_token_id])
    negs = [f"single-hop|{c['id']}" for c in item["ctxs"] if c["id"] != item["gold_id"] and f"single-hop|{c['id']}" in corpus.docs]
    return QuerySample("single-hop", b.ids, b.labels, [Anchor(pos, (key, 0), rng.sample(negs, min(n_neg, len(negs))))])


BUILDERS = {"entity-linking": entity_linking_sample, "multi-hop": multi_hop_sample, "single-hop": single_hop_sample}


PHRASINGS = ("template", "varied")


def load_task_items(world_dir: Path, task: str, phrasings: str = "template") -> list[dict]:
    """A world folder's training items of `task`. `phrasings="varied"` rewords most questions and
    texts in the training part of the world's surface forms (onegen/world/phrasing.py); the
    held-out part never reaches training. Decompositions and answers stay as they are."""
    if phrasings not in PHRASINGS:
        raise ValueError(f"phrasings must be one of {list(PHRASINGS)}, not {phrasings!r}")
    if task == "entity-linking":
        items = [x for x in read_jsonl(world_dir / "entity_linking.jsonl") if x["labels"]]
    else:
        name = {"multi-hop": "multihop.json", "single-hop": "singlehop.json"}[task]
        items = json.loads((world_dir / name).read_text())
    if phrasings == "varied":
        from ..world.paraphrase import varied_training_items

        return varied_training_items(world_dir, task, items)
    return items
