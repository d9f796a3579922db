"""Task protocols: the exact strings, templates and loop rules each OneGen checkpoint family expects.

A `TaskSpec` is declarative: it names tokens by their strings, never by id. `resolve(spec, tokenizer)`
reads the ids from the loaded tokenizer and refuses a checkpoint that lacks a required token.
The strings are the ones the released weights were trained on (github.com/zjunlp/OneGen); changing a
single space changes the token ids and silently degrades the model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .errors import OneGenError

TaskName = Literal["entity-linking", "multi-hop", "single-hop"]

QR = "[Question Representation]"
DFR = "[Document Fragment Representation]"
PARA_OPEN, PARA_CLOSE = "<paragraph>", "</paragraph>"
SE, LK, CONTINUE = "[SE]", "[LK]", "[_CONTINUE_]"

SELF_RAG_REFLECTION_TOKENS: tuple[str, ...] = (
    "[No Retrieval]", "[Retrieval]", "[Continue to Use Evidence]", "[Irrelevant]", "[Relevant]",
    "[Utility:1]", "[Utility:2]", "[Utility:3]", "[Utility:4]", "[Utility:5]",
    "[Fully supported]", "[Partially supported]", "[No support / Contradictory]",
)


@dataclass(frozen=True)
class TaskSpec:
    """Everything the engine and the document encoder need to speak one checkpoint family's protocol."""

    name: str
    title: str
    # Added tokens the checkpoint must have (string -> short description; the description also
    # seeds the new embedding row when training a small model).
    added_tokens: dict[str, str]
    # Prompt for the generation pass; `{input}` is the user's text (tokenised as data).
    prompt_template: str
    # Document prompt; `{title}`/`{name}`, `{text}`/`{description}` are data.
    document_template: str
    # Token whose hidden state is a query vector when it is the *input* of a step.
    query_token: str
    # Token whose hidden state is a document vector.
    document_token: str
    # Occurrences of the document token inside the instruction text, which carry no vector.
    skip_document_tokens: int = 1
    # token -> token forced right after it (training never taught what follows it).
    forced_after: dict[str, str] = field(default_factory=dict)
    # Documents inserted after a retrieval: (open, body template, close); None: nothing inserted.
    insertion: tuple[str, str, str] | None = None
    # Stop when the generated text ends with one of these strings (besides EOS).
    stop_strings: tuple[str, ...] = ()
    max_new_tokens: int = 512
    max_retrievals: int = 5
    # When documents are encoded one vector per sentence (multi-hop) or one per document.
    vectors_per_sentence: bool = False
    # Where the query vector is read: "generated" (during decoding) or "prompt" (end of prompt).
    query_from: Literal["generated", "prompt"] = "generated"

    @property
    def token_strings(self) -> tuple[str, ...]:
        return tuple(self.added_tokens)


ENTITY_LINKING = TaskSpec(
    name="entity-linking",
    title="Entity linking",
    added_tokens={
        SE: "representation of an entity",
        LK: "information of subject or object",
        CONTINUE: "continue",
    },
    prompt_template=(
        "[INST] You are good at mention detection. Identify and extract mentions of entities from the text. "
        "Please output the original text with annotations. Here, the annotation for each mention should be "
        "formatted as `<MENTION>{mention in text}</MENTION>` when displayed. \n\nTEST TEXT:\n{input} [/INST]"
    ),
    document_template=(
        "<s>Represent the entity based on its description and output it after the '[SE]' token.\n"
        "The description of {title} is as follows:\n{text}[SE]"
    ),
    query_token=LK,
    document_token=SE,
    skip_document_tokens=1,
    forced_after={LK: CONTINUE},
    insertion=None,
    max_new_tokens=512,
    max_retrievals=256,  # one per mention; the token limit is the real bound
)

# The two QA checkpoints share their retrieval tokens and the opening of their document prompt.
_QA_TOKENS = {
    QR: "representation of a question",
    DFR: "representation of a document fragment",
    PARA_OPEN: "start of a retrieved paragraph",
    PARA_CLOSE: "end of a retrieved paragraph",
}
_QA_DOCUMENT_PROMPT = ("Represent the following document fragment and output it after the "
                       "'[Document Fragment Representation]' token. \nHere are document fragment:\n")
_QA_RETRIEVAL = {"query_token": QR, "document_token": DFR, "skip_document_tokens": 1}

MULTI_HOP = TaskSpec(
    name="multi-hop",
    title="Multi-hop QA",
    added_tokens={t: _QA_TOKENS[t] for t in (QR, DFR, PARA_OPEN, PARA_CLOSE)},
    prompt_template=(
        "You are good at multi-step reasoning in QA. For complex questions, break down the process. "
        "Generate and answer sub-questions step-by-step, using retrieved documents at each stage. "
        "Output the final answer wrapped by <FINAL-ANSWER></FINAL-ANSWER>. Here is a question: {input}"
    ),
    document_template=_QA_DOCUMENT_PROMPT + "wiki title: {title}\ncontent: {sentences}",
    **_QA_RETRIEVAL,
    insertion=(PARA_OPEN, "wiki title: {title}\ncontent: {text}", PARA_CLOSE),
    stop_strings=("</FINAL-ANSWER>",),
    max_new_tokens=400,
    max_retrievals=5,
    vectors_per_sentence=True,
)

SINGLE_HOP = TaskSpec(
    name="single-hop",
    title="Single-hop QA (Self-RAG)",
    added_tokens={
        **{t: "self-reflection: " + t.strip("[]").lower() for t in SELF_RAG_REFLECTION_TOKENS},
        **{t: _QA_TOKENS[t] for t in (PARA_OPEN, PARA_CLOSE, QR, DFR)},
    },
    prompt_template="### Instruction:\n{input}\n\n### Response:\n[Retrieval][Question Representation]",
    document_template=_QA_DOCUMENT_PROMPT + "{title}\n{text}[Document Fragment Representation]",
    **_QA_RETRIEVAL,
    insertion=(PARA_OPEN, "{title}\n{text}", PARA_CLOSE),
    max_new_tokens=200,
    max_retrievals=1,
    query_from="prompt",
)

SPECS: dict[str, TaskSpec] = {s.name: s for s in (ENTITY_LINKING, MULTI_HOP, SINGLE_HOP)}


def get_spec(task: str) -> TaskSpec:
    try:
        return SPECS[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; choose one of: {', '.join(SPECS)}") from None


class MissingTokenError(OneGenError, ValueError):
    """The checkpoint's tokenizer lacks a token the protocol needs."""


@dataclass(frozen=True)
class ResolvedProtocol:
    """A TaskSpec bound to one tokenizer: every token string mapped to its id."""

    spec: TaskSpec
    ids: dict[str, int]
    eos_id: int
    bos_id: int | None

    @property
    def query_id(self) -> int:
        return self.ids[self.spec.query_token]

    @property
    def document_id(self) -> int:
        return self.ids[self.spec.document_token]

    def forced_ids(self) -> dict[int, int]:
        return {self.ids[a]: self.ids[b] for a, b in self.spec.forced_after.items()}


def resolve(spec: TaskSpec, tokenizer, checkpoint: str = "the checkpoint") -> ResolvedProtocol:
    """Read the protocol's token ids from `tokenizer`; refuse a tokenizer missing any of them."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in spec.token_strings if t not in vocab]
    if missing:
        raise MissingTokenError(
            f"{checkpoint} cannot run the {spec.name} protocol: its tokenizer has no "
            + ", ".join(repr(t) for t in missing)
            + f" token{'s' if len(missing) > 1 else ''}. Load a {spec.title} OneGen checkpoint, "
            "or train one with `python -m onegen train`."
        )
    ids = {t: vocab[t] for t in spec.token_strings}
    if tokenizer.eos_token_id is None:
        raise MissingTokenError(f"{checkpoint} has no EOS token; the protocol stops on EOS")
    return ResolvedProtocol(spec=spec, ids=ids, eos_id=tokenizer.eos_token_id, bos_id=tokenizer.bos_token_id)


def supported_tasks(tokenizer) -> list[str]:
    """Tasks whose every protocol token this tokenizer has (a multi-task model supports several)."""
    vocab = tokenizer.get_vocab()
    return [s.name for s in SPECS.values() if all(t in vocab for t in s.token_strings)]
