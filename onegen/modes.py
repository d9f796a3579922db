"""The retrieval modes, each one value: what makes its query vector and what encodes the documents
it searches. The engine loop is the same in every mode (onegen/baselines.py explains why).

    mode = get_mode("two-pass")
    engine = mode.make_engine(lm)
    mode.label, mode.description, mode.document_encoder.name

Adding a mode: its query encoder (the baselines' are in onegen/baselines.py) and a `Mode` in
`MODES` below; the CLI's --mode choices, the app's labels and the benchmarks read this table.

Light to import: the CLI builds its choices from it before torch loads, so the encoders are
imported when an engine is made.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

from .errors import OneGenError

if TYPE_CHECKING:
    from .baselines import SentenceEncoder
    from .engine import Engine, QueryEncoder
    from .loading import LoadedModel

DEFAULT_RETRIEVER = "sentence-transformers/all-MiniLM-L6-v2"


class ModeError(OneGenError, ValueError):
    """A mode that cannot run as asked; the message is for users."""


@dataclass(frozen=True)
class DocumentEncoder:
    """What turns the documents a mode searches into vectors: the generator itself (`model` None:
    the index it built, or a run's candidates it encodes), or a separate sentence encoder that keeps
    its own vectors of the same documents (`model`: its default, which a retriever name overrides)."""

    name: str  # in words, for people
    model: str | None = None

    @property
    def separate(self) -> bool:
        return self.model is not None

    def load(self, retriever_model: str | None = None, device: str | None = None) -> SentenceEncoder | None:
        """The separate encoder (loaded once per name and device), or None when the generator encodes."""
        if not self.separate:
            return None
        from .baselines import load_sentence_encoder

        return load_sentence_encoder(retriever_model or self.model, device)


# (generator, the mode's separate document encoder or None) -> the query encoder of its engine
QueryEncoderFactory = Callable[["LoadedModel", Optional["SentenceEncoder"]], "QueryEncoder"]


@dataclass(frozen=True)
class Mode:
    name: str  # the trace's `mode` and the CLI's --mode value; its query encoder carries the same name
    label: str  # short, for menus and table headings
    description: str  # one or two sentences for people new to retrieval
    query_encoder: QueryEncoderFactory
    document_encoder: DocumentEncoder
    # False: a mode for questions that retrieve once from their input (ImpRAG reads its passages
    # beside the input, so it has no retrieval token to write while decoding).
    every_task: bool = True

    def check_task(self, task: str) -> None:
        """Refuse, with a message, a task this mode cannot run (before any model loads)."""
        from .protocols import get_spec

        spec = get_spec(task)
        if not self.every_task and (spec.query_from != "prompt" or spec.insertion is None):
            raise ModeError(f"the {self.name} mode answers questions that retrieve once from their input and read "
                            f"passages; {task} retrieves while it decodes")

    @property
    def reads_query_state(self) -> bool:
        """Whether the query is the retrieval token's hidden state in the pass that writes the text (what
        the query lens and the layer view explain); the other modes encode their queries elsewhere."""
        return self.query_encoder is hidden_state_query

    @property
    def short_label(self) -> str:
        """The label without its explanation in brackets ("two-pass"), for table columns."""
        return self.label.split(" (", 1)[0]

    def make_engine(self, lm: LoadedModel, retriever_model: str | None = None) -> Engine:
        """An engine whose retrievals go this mode's way. `retriever_model` names another separate
        encoder than the default; modes whose documents the generator encodes ignore it (a comparison
        passes the same value to every mode)."""
        from .baselines import PipelineEngine
        from .engine import Engine

        encoder = self.document_encoder.load(retriever_model, str(lm.device))
        query_encoder = self.query_encoder(lm, encoder)
        if encoder is None:
            return Engine(lm, query_encoder=query_encoder)
        # The candidates a run brings are embedded by the separate encoder too, not by the generator.
        return PipelineEngine(lm, encoder, query_encoder=query_encoder)


def hidden_state_query(lm: LoadedModel, encoder: SentenceEncoder | None) -> QueryEncoder:
    from .engine import HiddenStateQuery

    return HiddenStateQuery()


def two_pass_query(lm: LoadedModel, encoder: SentenceEncoder | None) -> QueryEncoder:
    from .baselines import TwoPassQuery

    return TwoPassQuery(lm)


def pipeline_query(lm: LoadedModel, encoder: SentenceEncoder | None) -> QueryEncoder:
    from .baselines import PipelineQuery

    if encoder is None:
        raise ModeError("the pipeline's query encoder needs the separate sentence encoder")
    return PipelineQuery(encoder)


def imprag_query(lm: LoadedModel, encoder: SentenceEncoder | None) -> QueryEncoder:
    from .imprag import ImpragQuery

    return ImpragQuery(lm)


GENERATOR = DocumentEncoder("the OneGen model (its own index, or the run's candidates it encodes)")
SENTENCE_ENCODER = DocumentEncoder(f"a separate sentence encoder ({DEFAULT_RETRIEVER.rsplit('/', 1)[-1]} "
                                   "unless another is named)", model=DEFAULT_RETRIEVER)

MODES: dict[str, Mode] = {m.name: m for m in (
    Mode("onegen", "OneGen",
         "The query vector is the hidden state of the retrieval token, read off the pass that writes the "
         "text: retrieving costs no extra forward tokens.",
         hidden_state_query, GENERATOR),
    Mode("two-pass", "two-pass (same model re-encodes)",
         "The same model reads the query text again in a second forward pass and takes its last hidden "
         "state: the same documents as OneGen, for the price of re-encoding every query.",
         two_pass_query, GENERATOR),
    Mode("pipeline", "pipeline (separate retriever)",
         "A separate sentence encoder embeds the query text and searches its own vectors of the same "
         "documents; the generator then goes on with the document it found.",
         pipeline_query, SENTENCE_ENCODER),
    Mode("imprag", "ImpRAG (implicit query, layer groups)",
         "No query text and no retrieval token: the query is the input's attention query at a bottom "
         "layer, and the retrieved passages are read only by the middle layers, beside the input.",
         imprag_query, DocumentEncoder("the generator's bottom layers (passage key vectors)"), every_task=False),
)}
MODE_NAMES: tuple[str, ...] = tuple(MODES)
# OneGen comes first: the default mode, and the reference that the modes after it (the baselines)
# are measured against.
DEFAULT_MODE: str = MODE_NAMES[0]
# The baselines set against OneGen on every task (Compare, the benchmarks): the other modes that run
# every task over the same loop.
BASELINE_NAMES: tuple[str, ...] = tuple(n for n in MODE_NAMES[1:] if MODES[n].every_task)
EVERY_TASK_MODES: tuple[str, ...] = (DEFAULT_MODE, *BASELINE_NAMES)
MODE_LABELS: dict[str, str] = {m.name: m.label for m in MODES.values()}


def get_mode(name: str) -> Mode:
    try:
        return MODES[name]
    except KeyError:
        raise ModeError(f"unknown mode {name!r}; choose one of: {', '.join(MODE_NAMES)}") from None
