"""OpenInference spans of finished runs, as OTLP JSON (`python -m onegen export --format openinference`).

Each run becomes one trace: an LLM span for the generation pass (model, forward tokens by phase,
input and output) with one RETRIEVER span per retrieval under it (the query text, and every hit
as `retrieval.documents.N.document.{id,score,content,metadata}`). Spans are built with the
OpenTelemetry SDK and named by the `openinference-semantic-conventions` constants, then encoded
by OpenTelemetry's own OTLP encoder, so Phoenix and any OTLP/JSON reader take the file as it is.

    runs = read_runs("result.jsonl")               # or one Trace JSON file
    request = build_request(runs, end_ns=...)      # an ExportTraceServiceRequest
    text = to_otlp_json(request)                    # what the file holds
    parse_otlp_json(text) == request                # the way back (hex ids, as OTLP/JSON writes them)

Times: a trace records how long things took, not when. The last run ends at `end_ns` (the CLI
uses the source file's modification time) and runs sit back to back before it, in the file's
order. Inside a run, a retrieval's start is placed by walking its tokens and spreading each
phase's recorded seconds (prompt, generated, inserted) evenly over that phase's tokens; its
length is the seconds it recorded. docs/trace.md says the same.
"""
from __future__ import annotations

import base64
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .errors import OneGenError
from .trace import Trace, TraceFormatError

if TYPE_CHECKING:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

# What `pip install` needs for this export; requirements.txt pins the same versions.
PACKAGES = ("openinference-semantic-conventions==0.1.42", "opentelemetry-sdk==1.45.2",
            "opentelemetry-exporter-otlp-proto-common==1.45.2")
SERVICE_NAME = "onegen-explorer"
_NS = 1_000_000_000


class OpenInferenceExportError(OneGenError, ValueError):
    """A file that cannot be exported as spans, or the packages for it are missing."""


@dataclass(frozen=True)
class Run:
    """One run to export: `key` names it (a result line's example key, or the trace file's name)."""

    key: str
    trace: Trace


def require_packages() -> None:
    """Raise a message that says what to install when the span libraries are missing."""
    try:
        import openinference.semconv.trace  # noqa: F401
        import opentelemetry.exporter.otlp.proto.common.trace_encoder  # noqa: F401
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError as e:
        raise OpenInferenceExportError(
            f"the OpenInference export needs packages that are not installed ({e.name}): "
            f"pip install {' '.join(PACKAGES)}") from None


# -- reading -----------------------------------------------------------------------------------------

def read_runs(path: str | Path) -> list[Run]:
    """The runs of a Trace JSON file (one run) or of a result file of `onegen evaluate` (one per
    line that has a trace, in data order). Lines without a trace (the engine raised) are left out."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise OpenInferenceExportError(f"cannot read {path.name}: {getattr(e, 'strerror', None) or e}") from None
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None  # several lines: a result file
    if isinstance(whole, dict) and "schema" in whole:
        try:
            return [Run(key=path.stem, trace=Trace.from_dict(whole))]
        except TraceFormatError as e:
            raise OpenInferenceExportError(f"{path.name}: {e}") from None
    from .results import load_results

    results = load_results(path)
    runs = [Run(key=r.key, trace=r.trace) for r in results.records if r.trace is not None]
    if not runs:
        raise OpenInferenceExportError(f"{path.name}: no line has a trace (every example ended in an engine error)")
    return runs


# -- times ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Timeline:
    """Offsets in seconds from the start of a run: its length, and each retrieval's start."""

    total: float
    retrieval_starts: tuple[float, ...]


def timeline(trace: Trace) -> Timeline:
    """Where a run's retrievals fall in time, from the seconds its trace recorded by phase."""
    seconds, tokens = trace.cost.seconds, trace.cost.forward_tokens
    per_token = {kind: seconds.get(phase, 0.0) / tokens[phase] if tokens.get(phase) else 0.0
                 for kind, phase in (("generated", "generated"), ("forced", "generated"), ("inserted", "inserted"))}
    at = {r.position: r for r in trace.retrievals}
    starts: dict[int, float] = {}
    # A replay prefilled the original's first positions in one pass: their time is that pass's.
    clock = seconds.get("prompt", 0.0) + seconds.get("replay_prefix", 0.0)
    prefix = trace.replay.prefix_tokens if trace.replay is not None else 0
    prompt_end = len(trace.prompt_ids) - 1
    for r in trace.retrievals:  # a query read off the prompt (single-hop) comes right after it
        if r.position <= prompt_end:
            starts[r.step] = clock
            clock += r.seconds
    for t in trace.tokens:
        clock += per_token.get(t.kind, 0.0) if t.position >= prefix else 0.0
        r = at.get(t.position)
        if r is not None and r.step not in starts:
            starts[r.step] = clock
            clock += r.seconds
    for r in trace.retrievals:  # a retrieval at a position no token records (a malformed trace)
        starts.setdefault(r.step, clock)
    total = max(seconds.get("total", 0.0), clock)
    return Timeline(total=total, retrieval_starts=tuple(starts[r.step] for r in trace.retrievals))


# -- spans ------------------------------------------------------------------------------------------

def _id_generator(seed: str):
    """Trace and span ids from a seeded generator: the same file exports to the same ids."""
    from opentelemetry.sdk.trace.id_generator import IdGenerator

    class SeededIds(IdGenerator):
        def __init__(self):
            self.rng = random.Random(seed)

        def generate_span_id(self) -> int:
            return self.rng.getrandbits(64) or 1

        def generate_trace_id(self) -> int:
            return self.rng.getrandbits(128) or 1

    return SeededIds()


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def llm_attributes(run: Run) -> dict[str, Any]:
    """The LLM span's attributes, named by the OpenInference conventions."""
    from openinference.semconv.trace import (MessageAttributes, OpenInferenceMimeTypeValues,
                                             OpenInferenceSpanKindValues, SpanAttributes)

    tr = run.trace
    tokens = tr.cost.forward_tokens
    # What the model read (its prompt and the documents prefilled onto its cache) and what it wrote
    # (chosen and forced tokens); the other phases are in the metadata.
    read = int(tokens.get("prompt", 0)) + int(tokens.get("inserted", 0))
    written = int(tokens.get("generated", 0))
    output = tr.result.answer if tr.result.answer is not None else tr.result.output_text
    model = tr.model or {}
    attrs: dict[str, Any] = {
        SpanAttributes.OPENINFERENCE_SPAN_KIND: OpenInferenceSpanKindValues.LLM.value,
        SpanAttributes.LLM_MODEL_NAME: str(model.get("name", "")),
        SpanAttributes.LLM_TOKEN_COUNT_PROMPT: read,
        SpanAttributes.LLM_TOKEN_COUNT_COMPLETION: written,
        SpanAttributes.LLM_TOKEN_COUNT_TOTAL: read + written,
        SpanAttributes.INPUT_VALUE: tr.typed_input,
        SpanAttributes.INPUT_MIME_TYPE: OpenInferenceMimeTypeValues.TEXT.value,
        SpanAttributes.OUTPUT_VALUE: output or "",
        SpanAttributes.OUTPUT_MIME_TYPE: OpenInferenceMimeTypeValues.TEXT.value,
        f"{SpanAttributes.LLM_INPUT_MESSAGES}.0.{MessageAttributes.MESSAGE_ROLE}": "user",
        f"{SpanAttributes.LLM_INPUT_MESSAGES}.0.{MessageAttributes.MESSAGE_CONTENT}": tr.prompt_text,
        f"{SpanAttributes.LLM_OUTPUT_MESSAGES}.0.{MessageAttributes.MESSAGE_ROLE}": "assistant",
        f"{SpanAttributes.LLM_OUTPUT_MESSAGES}.0.{MessageAttributes.MESSAGE_CONTENT}": tr.result.output_text,
        SpanAttributes.LLM_INVOCATION_PARAMETERS: _json(tr.settings),
        SpanAttributes.METADATA: _json({
            "key": run.key, "task": tr.task, "mode": tr.mode, "stop_reason": tr.stop_reason,
            "model_fingerprint": model.get("fingerprint", ""), "device": model.get("device", ""),
            "forward_tokens": dict(tokens), "seconds": dict(tr.cost.seconds),
            "document_tokens": tr.cost.document_tokens, "index": tr.index, "retrievals": len(tr.retrievals)}),
    }
    return attrs


def retriever_attributes(trace: Trace, step: int) -> dict[str, Any]:
    """A RETRIEVER span's attributes: the query and every hit, best first."""
    from openinference.semconv.trace import (DocumentAttributes, OpenInferenceMimeTypeValues,
                                             OpenInferenceSpanKindValues, SpanAttributes)

    r = trace.retrievals[step]
    chosen = r.chosen_hit
    attrs: dict[str, Any] = {
        SpanAttributes.OPENINFERENCE_SPAN_KIND: OpenInferenceSpanKindValues.RETRIEVER.value,
        SpanAttributes.INPUT_VALUE: r.query_text,
        SpanAttributes.INPUT_MIME_TYPE: OpenInferenceMimeTypeValues.TEXT.value,
        SpanAttributes.OUTPUT_VALUE: "" if chosen is None else (chosen.title or chosen.id),
        SpanAttributes.OUTPUT_MIME_TYPE: OpenInferenceMimeTypeValues.TEXT.value,
        SpanAttributes.METADATA: _json({
            "step": r.step, "position": r.position, "token": r.token, "query_source": r.query_source,
            "chosen": r.chosen, "inserted_tokens": r.inserted_tokens, "seconds": r.seconds}),
    }
    for i, h in enumerate(r.hits):
        prefix = f"{SpanAttributes.RETRIEVAL_DOCUMENTS}.{i}."
        attrs[prefix + DocumentAttributes.DOCUMENT_ID] = h.id
        attrs[prefix + DocumentAttributes.DOCUMENT_SCORE] = float(h.score)
        attrs[prefix + DocumentAttributes.DOCUMENT_CONTENT] = h.text
        attrs[prefix + DocumentAttributes.DOCUMENT_METADATA] = _json(
            {"title": h.title, "rank": h.rank, "fragment": h.fragment, "chosen": i == r.chosen})
    return attrs


def build_spans(runs: Sequence[Run], *, end_ns: int, seed: str = "onegen"):
    """The finished SDK spans of `runs` (ReadableSpan objects), the last run ending at `end_ns`."""
    require_packages()
    from opentelemetry import trace as otel
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from openinference.semconv.resource import ResourceAttributes

    if not runs:
        raise OpenInferenceExportError("no run to export")
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": SERVICE_NAME,
                                                        ResourceAttributes.PROJECT_NAME: SERVICE_NAME}),
                              id_generator=_id_generator(seed))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("onegen.export_openinference")
    lines = [timeline(run.trace) for run in runs]
    start = end_ns - sum(int(t.total * _NS) for t in lines)
    for run, times in zip(runs, lines):
        tr = run.trace
        llm = tracer.start_span(f"onegen {tr.task}", context=otel.set_span_in_context(otel.INVALID_SPAN),
                                attributes=llm_attributes(run), start_time=start)
        parent = otel.set_span_in_context(llm)
        for r, offset in zip(tr.retrievals, times.retrieval_starts):
            t0 = start + int(offset * _NS)
            span = tracer.start_span(f"retrieve {r.token}".strip(), context=parent,
                                     attributes=retriever_attributes(tr, r.step), start_time=t0)
            span.end(end_time=t0 + int(r.seconds * _NS))
        if tr.error:
            llm.set_status(otel.Status(otel.StatusCode.ERROR, tr.error))
        start += int(times.total * _NS)
        llm.end(end_time=start)
    provider.shutdown()
    return exporter.get_finished_spans()


def build_request(runs: Sequence[Run], *, end_ns: int, seed: str = "onegen") -> ExportTraceServiceRequest:
    """The OTLP export request of `runs`, encoded by OpenTelemetry's own encoder."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    return encode_spans(build_spans(runs, end_ns=end_ns, seed=seed))


# -- OTLP/JSON ------------------------------------------------------------------------------------------

# OTLP/JSON differs from protobuf's JSON mapping in two ways: ids are hex, not base64, and enums
# are integers.
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def _ids(node: Any, convert) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            if k in _ID_FIELDS and isinstance(v, str):
                node[k] = convert(v)
            else:
                _ids(v, convert)
    elif isinstance(node, list):
        for v in node:
            _ids(v, convert)


def to_otlp_json(request: ExportTraceServiceRequest) -> str:
    from google.protobuf import json_format

    data = json_format.MessageToDict(request, use_integers_for_enums=True)
    _ids(data, lambda b64: base64.b64decode(b64).hex())
    return json.dumps(data, ensure_ascii=False, indent=1) + "\n"


def parse_otlp_json(text: str) -> ExportTraceServiceRequest:
    """Read an OTLP/JSON trace file back into its protobuf request."""
    require_packages()
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    try:
        data = json.loads(text)
        _ids(data, lambda hexed: base64.b64encode(bytes.fromhex(hexed)).decode("ascii"))
        return json_format.ParseDict(data, ExportTraceServiceRequest())
    except (ValueError, json_format.ParseError) as e:
        raise OpenInferenceExportError(f"not an OTLP/JSON trace file: {e}") from None


def export(path: str | Path, *, end_ns: int | None = None) -> tuple[str, int, int]:
    """(OTLP/JSON text, runs, spans) of a trace or result file; the last run ends at `end_ns`
    (default: the file's modification time)."""
    path = Path(path)
    runs = read_runs(path)
    if end_ns is None:
        end_ns = path.stat().st_mtime_ns
    request = build_request(runs, end_ns=end_ns, seed=f"{path.name}:{len(runs)}")
    spans = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
    return to_otlp_json(request), len(runs), spans
