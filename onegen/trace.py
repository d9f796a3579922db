"""The Trace: a typed, versioned record of one run, the one thing every renderer reads.

Schema `onegen-trace/1` is documented in docs/trace.md. `Trace.from_json(t.to_json()) == t` holds
for every trace (tests check it); readers refuse other schema versions with a clear message.
"""
from __future__ import annotations

import base64
import hashlib
import json
import struct
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, get_args

from .errors import OneGenError

SCHEMA = "onegen-trace/1"

# Forward-token phases of the generation pass. `query_reencoding` is 0 for OneGen by construction:
# the query vector is read off the generation pass. Two-pass baselines fill it.
# "draft_rejected": tokens of prompt-lookup drafts that greedy decoding did not keep (forwarded, then dropped).
# "replay_prefix": a replayed run's recorded sequence up to its changed retrieval, prefilled in one
# pass (onegen/replay.py); only replayed traces have it, so it is not among the PHASES every run lists.
# "prefix_shared": leading prompt positions a batched run took from another run's identical prefix
# (copied keys and values, not forwarded; onegen/fused_llama.py); only such runs have it.
Phase = Literal["prompt", "generated", "inserted", "query_reencoding", "draft_rejected", "replay_prefix",
                "prefix_shared"]
PHASES: tuple[Phase, ...] = tuple(p for p in get_args(Phase) if p not in ("replay_prefix", "prefix_shared"))

# Why a run ended (docs/trace.md, `stop_reason`).
StopReason = Literal[
    "eos",              # the model wrote EOS
    "final_answer",     # a complete stop string (multi-hop: </FINAL-ANSWER>)
    "max_new_tokens",   # the token limit (of the run, or of the segment: settings.max_new_tokens_per)
    "context_full",     # the next token or an inserted document would not fit the model's context
    "copy_dead_end",    # copy-constrained entity linking: no token can spell the rest of the input
    "no_hits",          # a retrieval found no document to insert
    "repetition",       # the last written tokens repeat one short n-gram (RunSettings.repetition_window)
    "retrieval_limit",  # the retrieval token again after the last allowed retrieval (not searched)
]
# How a token after the prompt came to be: chosen by the model, set by the protocol, or part of a
# retrieved document prefilled onto the cache.
TokenKind = Literal["generated", "forced", "inserted"]
# Why copy-constrained decoding chose other than the model: the mask's best allowed token; the
# first token of `</MENTION>` where the model's first choice left the input inside an open mention;
# or the best copy token where the mask's best would have opened a mention the model did not choose.
OverrideKind = Literal["mask", "early_close", "no_open"]
# What a replay chose at its changed retrieval (docs/trace.md, `replay`): the hit of a recorded rank,
# a document drawn at random from the index, a named document of the index, or nothing.
ReplayChoiceKind = Literal["rank", "random", "document", "none"]


class TraceFormatError(OneGenError, ValueError):
    pass


@dataclass
class Hit:
    rank: int
    id: str
    title: str
    score: float
    text: str
    # Sentence inside the document whose vector matched (multi-vector indexes), else None.
    fragment: int | None = None


@dataclass
class TokenRecord:
    id: int
    text: str
    kind: TokenKind
    position: int


@dataclass
class Override:
    """A step where copy-constrained decoding chose other than the model's own first choice."""
    position: int
    chosen: int
    preferred: int
    preferred_text: str
    kind: OverrideKind = "mask"  # traces made before early closing have no kind: all were "mask"


InputEditKind = Literal["name_case", "closing_mark"]


@dataclass
class InputEdit:
    """One change the input normalization made to the typed text (onegen/input_normalization.py):
    the typed characters [start, end), `before`, became `after` in the text the model read. A case
    change keeps its place in both texts; a closing mark is inserted at `start` (= `end`)."""
    start: int
    end: int
    before: str
    after: str
    kind: InputEditKind


# Stored query vectors: little-endian IEEE floats, base64 (struct format letter per dtype).
VECTOR_DTYPES = {"float16": "e", "float32": "f"}


@dataclass
class StoredVector:
    """A query vector kept in the trace (RunSettings.query_vectors): `dim` floats of `dtype`,
    little-endian, base64 in `data`. float16 keeps a 576-wide vector in 1.5 kB of JSON."""

    dtype: str
    dim: int
    data: str

    @classmethod
    def encode(cls, values, dtype: str = "float16") -> "StoredVector":
        values = [float(v) for v in values]
        raw = struct.pack(f"<{len(values)}{VECTOR_DTYPES[dtype]}", *values)
        return cls(dtype=dtype, dim=len(values), data=base64.b64encode(raw).decode("ascii"))

    def values(self) -> list[float]:
        """The vector's floats; raises TraceFormatError when `data` does not hold `dim` of them."""
        code = VECTOR_DTYPES.get(self.dtype)
        if code is None:
            raise TraceFormatError(f"unsupported query vector dtype {self.dtype!r}; expected one of "
                                   f"{', '.join(VECTOR_DTYPES)}")
        try:
            return list(struct.unpack(f"<{self.dim}{code}", base64.b64decode(self.data, validate=True)))
        except (struct.error, ValueError) as e:
            raise TraceFormatError(f"query vector: {self.dim} {self.dtype} values expected ({e})") from None


@dataclass
class LayerRead:
    """A retrieval with implicit queries (ImpRAG, onegen/imprag.py): where the query vector was read
    and how much the reader attended to each passage it read."""

    layer: int  # the layer whose attention query (input) and keys (passages) are the vectors
    pooling: str
    dimension: int
    bottom: int  # layer groups: bottom [0, bottom), middle [bottom, top), top [top, n_layers)
    top: int
    n_layers: int
    # Per middle layer, per hit read (in hit order): the mean share of attention that the input's
    # and the answer's tokens put on that passage's tokens.
    reader_attention: list[list[float]] = field(default_factory=list)
    # How many of the top hits were read (the first `read`); 0 in traces that predate the field,
    # which read every hit.
    read: int = 0


@dataclass
class Retrieval:
    step: int
    # Position (in the whole sequence) of the retrieval token whose hidden state is the query.
    position: int
    token: str
    query_text: str
    query_source: str
    hits: list[Hit]
    chosen: int | None
    inserted_text: str = ""
    inserted_tokens: int = 0
    seconds: float = 0.0
    # Whether the top hit scored within the index's calibrated range (onegen/calibration.py);
    # False: no confident match in this index. None: the index has no calibration.
    confident: bool | None = None
    # The query vector itself, only when the run was asked to keep it (absent from the JSON otherwise).
    query_vector: StoredVector | None = None
    layer_read: LayerRead | None = None  # ImpRAG only (absent from the JSON otherwise)

    @property
    def chosen_hit(self) -> Hit | None:
        return self.hits[self.chosen] if self.chosen is not None and self.chosen < len(self.hits) else None

    @property
    def read_hits(self) -> list[Hit]:
        """The hits an ImpRAG reader read: its top `layer_read.read`, or every one (older traces)."""
        lr = self.layer_read
        return self.hits[:lr.read] if lr is not None and lr.read else list(self.hits)


@dataclass
class LinkedEntity:
    mention: str
    start: int | None  # character span in the input; None when the mention is not found there
    end: int | None
    entity_id: str
    title: str
    score: float
    retrieval: int  # index into Trace.retrievals
    # Name alignment (onegen/name_alignment.py): the span the model marked, where the alignment
    # moved the mention onto the linked entity's name; None (absent from the JSON) when unchanged.
    model_start: int | None = None
    model_end: int | None = None
    # What the alignment did: "snapped" (moved onto the name), or, in Result.unlinked, why the
    # link was refused ("no-shared-word", "duplicate"); None when nothing changed.
    alignment: str | None = None


_ENTITY_OPTIONAL = ("model_start", "model_end", "alignment")


@dataclass
class Hop:
    question: str
    retrieval: int | None
    title: str | None
    answer: str


@dataclass
class Result:
    output_text: str = ""
    answer: str | None = None
    final_answer_found: bool = False
    entities: list[LinkedEntity] | None = None
    # Entity linking: mentions the model marked and linked whose link the name alignment refused
    # (RunSettings.name_alignment); None when no alignment ran.
    unlinked: list[LinkedEntity] | None = None
    # QA: the answer as the model wrote it, where the answer alignment replaced it by the phrase of
    # the documents it read that it meant to copy (onegen/answer_alignment.py); None otherwise.
    model_answer: str | None = None
    # Multi-hop: why the comparison check replaced the answer (onegen/comparison_check.py), with
    # the model's own comparison; None otherwise.
    answer_check: str | None = None
    hops: list[Hop] | None = None
    reflection_tokens: list[str] | None = None
    retrieval_limit_reached: bool = False
    # False when any retrieval the result rests on had no confident match, True when every judged
    # one had, None when none was judged (see Retrieval.confident). Entity linking rests on the
    # retrievals of the links it kept (calibration.result_retrievals).
    confident: bool | None = None


@dataclass
class Cost:
    forward_tokens: dict[str, int] = field(default_factory=lambda: {p: 0 for p in PHASES})
    seconds: dict[str, float] = field(default_factory=dict)
    # Document vectors computed for this run (candidate paragraphs); not part of the generation pass.
    document_tokens: int = 0
    # Layer-split modes (ImpRAG): tokens forwarded through each layer group, {"bottom", "middle", "top"}.
    layer_groups: dict[str, int] | None = None

    @property
    def total_forward_tokens(self) -> int:
        return sum(n for p, n in self.forward_tokens.items() if p != "prefix_shared")  # copied, not forwarded

    def phases(self) -> tuple[str, ...]:
        """The phases to list: every run's PHASES, then any other this run counted (a replay's prefix)."""
        return (*PHASES, *(p for p in self.forward_tokens if p not in PHASES))


@dataclass
class Replay:
    """What makes a trace a replay of another: the changed retrieval and what was chosen there."""
    original: str  # Trace.digest() of the original trace
    step: int  # the retrieval (index into retrievals) whose choice was changed
    choice: ReplayChoiceKind
    rank: int | None = None  # "rank": the recorded hit chosen instead
    seed: int | None = None  # "random": the seed of the draw
    document: str | None = None  # id of the document used instead (None: nothing)
    original_document: str | None = None  # id of the document the original used there
    # Positions prefilled from the original in one pass: the prompt and every token through the
    # changed retrieval's token (cost.forward_tokens.replay_prefix).
    prefix_tokens: int = 0


@dataclass
class Trace:
    task: str
    mode: str
    model: dict[str, Any]
    input: str
    prompt_text: str
    prompt_ids: list[int]
    tokens: list[TokenRecord] = field(default_factory=list)
    retrievals: list[Retrieval] = field(default_factory=list)
    result: Result = field(default_factory=Result)
    cost: Cost = field(default_factory=Cost)
    stop_reason: StopReason | Literal[""] = ""  # "" until the run ends
    settings: dict[str, Any] = field(default_factory=dict)
    index: dict[str, Any] | None = None
    error: str | None = None
    # Copy-constrained entity linking: where the mask overrode the model (empty otherwise).
    overrides: list[Override] = field(default_factory=list)
    # A replayed run: which retrieval was changed and how (absent from the JSON otherwise).
    replay: Replay | None = None
    # What the input normalization changed in the typed text (`input` is the text the model read);
    # None (absent from the JSON) when it was off or changed nothing.
    input_edits: list[InputEdit] | None = None
    schema: str = SCHEMA

    # -- JSON ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for r in d["retrievals"]:
            for optional in ("query_vector", "layer_read"):
                if r.get(optional) is None:
                    r.pop(optional, None)
        for key in ("entities", "unlinked"):
            for e in d["result"].get(key) or []:
                for optional in _ENTITY_OPTIONAL:
                    if e.get(optional) is None:
                        e.pop(optional)
        for optional in ("unlinked", "model_answer", "answer_check"):
            if d["result"][optional] is None:
                d["result"].pop(optional)
        if d["cost"].get("layer_groups") is None:
            d["cost"].pop("layer_groups", None)
        for optional in ("replay", "input_edits"):
            if d[optional] is None:
                d.pop(optional)
        return {"schema": d.pop("schema"), **d}

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Trace":
        if not isinstance(d, dict):
            raise TraceFormatError("a trace must be a JSON object")
        schema = d.get("schema")
        if schema != SCHEMA:
            raise TraceFormatError(f"unsupported trace schema {schema!r}; this version reads {SCHEMA!r}")
        try:
            r = d["result"]
            result = Result(
                output_text=r.get("output_text", ""), answer=r.get("answer"),
                final_answer_found=bool(r.get("final_answer_found", False)),
                entities=None if r.get("entities") is None else [LinkedEntity(**e) for e in r["entities"]],
                unlinked=None if r.get("unlinked") is None else [LinkedEntity(**e) for e in r["unlinked"]],
                model_answer=r.get("model_answer"), answer_check=r.get("answer_check"),
                hops=None if r.get("hops") is None else [Hop(**h) for h in r["hops"]],
                reflection_tokens=r.get("reflection_tokens"),
                retrieval_limit_reached=bool(r.get("retrieval_limit_reached", False)),
                confident=_optional_bool(r.get("confident")),
            )
            c = d["cost"]
            cost = Cost(forward_tokens={k: int(v) for k, v in c["forward_tokens"].items()},
                        seconds={k: float(v) for k, v in c.get("seconds", {}).items()},
                        document_tokens=int(c.get("document_tokens", 0)),
                        layer_groups=None if c.get("layer_groups") is None
                        else {k: int(v) for k, v in c["layer_groups"].items()})
            retrievals = [
                Retrieval(**{**x, "hits": [Hit(**h) for h in x["hits"]], "confident": _optional_bool(x.get("confident")),
                             "query_vector": _vector(x.get("query_vector")),
                             "layer_read": None if x.get("layer_read") is None else LayerRead(**x["layer_read"])}) for x in d.get("retrievals", [])
            ]
            plain = {f.name for f in fields(cls)} - {"tokens", "retrievals", "result", "cost", "overrides", "replay",
                                                    "input_edits"}
            return cls(
                **{k: d[k] for k in plain if k in d},
                tokens=[TokenRecord(**t) for t in d.get("tokens", [])],
                retrievals=retrievals, result=result, cost=cost,
                overrides=[Override(**o) for o in d.get("overrides", [])],
                replay=None if d.get("replay") is None else Replay(**d["replay"]),
                input_edits=None if d.get("input_edits") is None else [InputEdit(**e) for e in d["input_edits"]],
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise TraceFormatError(f"malformed trace: {e}") from e

    @classmethod
    def from_json(cls, text: str) -> "Trace":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise TraceFormatError(f"not valid JSON: {e}") from e

    def digest(self) -> str:
        """The trace's identity: a hash of its JSON (the same after a JSON round trip)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    # -- views --------------------------------------------------------------------------------
    @property
    def typed_input(self) -> str:
        """The input as the user typed it: `input` without the normalization's edits."""
        text = self.input
        for e in sorted(self.input_edits or [], key=lambda e: e.start, reverse=True):
            text = text[:e.start] + e.before + text[e.start + len(e.after):]
        return text

    @property
    def generated_text(self) -> str:
        return "".join(t.text for t in self.tokens)


def _optional_bool(value: Any) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"confident must be true, false or null, got {value!r}")
    return value


def _vector(d: dict[str, Any] | None) -> StoredVector | None:
    if d is None:
        return None
    v = StoredVector(dtype=d["dtype"], dim=int(d["dim"]), data=d["data"])
    v.values()  # a damaged vector is refused when the trace is read, not when it is used
    return v

