"""`onegen export --format openinference | elevant`: files other tools open.

OpenInference: the spans are built with the OpenTelemetry SDK, every attribute name is checked
against the `openinference-semantic-conventions` constants, and the OTLP/JSON file is parsed back
by protobuf into an ExportTraceServiceRequest. Where Arize Phoenix is installed, Phoenix's own
OTLP decoder and TraceDataset load the file. ELEVANT: the linked_articles file of a hand-made
result file with hostile text, and ELEVANT's finer error labels in the error categories.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from onegen.__main__ import main as cli
from onegen.datasets import ELExample, ELLabel
from onegen.error_analysis import MISSED_MENTION, SPURIOUS_MENTION, WRONG_ENTITY, categorize
from onegen.export_openinference import build_request, parse_otlp_json, read_runs, timeline, to_otlp_json
from onegen.results import category_choices, load_results, select
from onegen.tasks import get_task
from onegen.trace import Cost, Hit, LinkedEntity, Result, Retrieval, TokenRecord, Trace
from el_results import EL_TEXT, el_result_file

semconv = pytest.importorskip("openinference.semconv.trace")
from openinference.semconv.trace import (DocumentAttributes, MessageAttributes,  # noqa: E402
                                         OpenInferenceSpanKindValues, SpanAttributes)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "assets" / "results"
BUNDLED = {"entity-linking": "heldout-entity-linking.jsonl", "multi-hop": "heldout-multi-hop.jsonl",
           "single-hop": "heldout-single-hop.jsonl"}
HOSTILE = 'He said "<script>alert(1)</script>" & </MENTION>[LK] in 東京 — Zürich\'s Ωmega'


def first_lines(task: str, n: int, out: Path) -> Path:
    """The first `n` lines of a bundled result file (the multi-hop one is 12 MB: never read whole)."""
    with open(RESULTS / BUNDLED[task], encoding="utf-8") as f:
        out.write_text("".join(next(f) for _ in range(n)), encoding="utf-8")
    return out


def spans_of(request):
    return [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]


def attributes(span) -> dict:
    out = {}
    for kv in span.attributes:
        v = kv.value
        out[kv.key] = getattr(v, v.WhichOneof("value"))
    return out


def convention_names() -> tuple[set[str], re.Pattern]:
    """Every attribute name the conventions define, and the pattern of indexed names built from them."""
    plain = {v for k, v in vars(SpanAttributes).items() if k.isupper() and isinstance(v, str)}
    doc = "|".join(re.escape(v) for k, v in vars(DocumentAttributes).items() if k.isupper() and isinstance(v, str))
    msg = "|".join(re.escape(v) for k, v in vars(MessageAttributes).items() if k.isupper() and isinstance(v, str))
    indexed = re.compile(rf"^(?:{re.escape(SpanAttributes.RETRIEVAL_DOCUMENTS)}\.\d+\.(?:{doc})"
                         rf"|(?:{re.escape(SpanAttributes.LLM_INPUT_MESSAGES)}|"
                         rf"{re.escape(SpanAttributes.LLM_OUTPUT_MESSAGES)})\.\d+\.(?:{msg}))$")
    return plain, indexed


def hostile_trace() -> Trace:
    hits = [Hit(rank=0, id='id"<0>', title="<b>Zürich</b>", score=0.91, text=HOSTILE, fragment=None),
            Hit(rank=1, id="東京", title="東京 & Tokyo", score=0.5, text="Ωmega </paragraph> text")]
    r = Retrieval(step=0, position=4, token="[LK]", query_text='"Zürich" <i>', query_source="hidden-state",
                  hits=hits, chosen=0, seconds=0.25)
    tokens = [TokenRecord(10, "Zür", "generated", 3), TokenRecord(11, "[LK]", "generated", 4),
              TokenRecord(12, "ich", "generated", 5)]
    cost = Cost(forward_tokens={"prompt": 3, "generated": 3, "inserted": 0, "query_reencoding": 0,
                                "draft_rejected": 1},
                seconds={"prompt": 0.5, "generated": 0.75, "retrieval": 0.25, "total": 2.0})
    return Trace(task="entity-linking", mode="onegen", model={"name": "tiny <model>", "fingerprint": "f"},
                 input=HOSTILE, prompt_text="[INST] " + HOSTILE, prompt_ids=[1, 2, 3], tokens=tokens, retrievals=[r],
                 result=Result(output_text="Zür[LK]ich"), cost=cost, stop_reason="eos", settings={"top_k": 2})


# -- OpenInference ---------------------------------------------------------------------------------

@pytest.mark.parametrize("task", list(BUNDLED))
def test_openinference_spans_of_every_task_use_the_conventions_names(task, tmp_path, capsys):
    source = first_lines(task, 2, tmp_path / f"{task}.jsonl")
    assert cli(["export", "--format", "openinference", str(source)]) == 0
    out = source.with_suffix(".openinference.json")
    assert out.name in capsys.readouterr().out
    request = parse_otlp_json(out.read_text(encoding="utf-8"))  # protobuf's own parser, hex ids turned back
    runs = read_runs(source)
    spans = spans_of(request)
    plain, indexed = convention_names()
    kind_key = SpanAttributes.OPENINFERENCE_SPAN_KIND
    llm = [s for s in spans if attributes(s)[kind_key] == OpenInferenceSpanKindValues.LLM.value]
    retrievers = [s for s in spans if attributes(s)[kind_key] == OpenInferenceSpanKindValues.RETRIEVER.value]
    assert len(llm) == len(runs) == 2 and len(spans) == len(llm) + len(retrievers)
    assert len(retrievers) == sum(len(r.trace.retrievals) for r in runs) > 0
    for span in spans:
        for key in attributes(span):
            assert key in plain or indexed.match(key), f"{key!r} is not an OpenInference attribute name"
    by_id = {s.span_id: s for s in llm}
    for run, root in zip(runs, sorted(llm, key=lambda s: s.start_time_unix_nano)):
        a, tr = attributes(root), run.trace
        assert a[SpanAttributes.LLM_MODEL_NAME] == tr.model["name"] and a[SpanAttributes.INPUT_VALUE] == tr.input
        assert a[SpanAttributes.LLM_TOKEN_COUNT_COMPLETION] == tr.cost.forward_tokens["generated"]
        assert a[SpanAttributes.LLM_TOKEN_COUNT_PROMPT] == tr.cost.forward_tokens["prompt"] + \
            tr.cost.forward_tokens["inserted"]
        assert json.loads(a[SpanAttributes.METADATA])["forward_tokens"] == tr.cost.forward_tokens
        children = sorted((s for s in retrievers if s.trace_id == root.trace_id), key=lambda s: s.start_time_unix_nano)
        assert len(children) == len(tr.retrievals)
        for span, r in zip(children, tr.retrievals):
            assert by_id[span.parent_span_id] is root
            assert root.start_time_unix_nano <= span.start_time_unix_nano <= span.end_time_unix_nano \
                <= root.end_time_unix_nano
            b = attributes(span)
            assert b[SpanAttributes.INPUT_VALUE] == r.query_text
            for i, h in enumerate(r.hits):
                doc = f"{SpanAttributes.RETRIEVAL_DOCUMENTS}.{i}."
                assert b[doc + DocumentAttributes.DOCUMENT_ID] == h.id
                assert b[doc + DocumentAttributes.DOCUMENT_SCORE] == pytest.approx(h.score)
                assert b[doc + DocumentAttributes.DOCUMENT_CONTENT] == h.text
                assert json.loads(b[doc + DocumentAttributes.DOCUMENT_METADATA])["title"] == h.title
    # The last run ends when the file was last written; runs follow each other in data order.
    assert max(s.end_time_unix_nano for s in llm) == source.stat().st_mtime_ns


def test_a_trace_file_with_hostile_text_round_trips(tmp_path):
    trace = hostile_trace()
    source = tmp_path / "trace.json"
    source.write_text(trace.to_json(), encoding="utf-8")
    assert cli(["export", "--format", "openinference", str(source), "--out", str(tmp_path / "spans.json")]) == 0
    text = (tmp_path / "spans.json").read_text(encoding="utf-8")
    ids = re.findall(r'"(?:traceId|spanId|parentSpanId)": "([^"]*)"', text)
    assert ids and all(re.fullmatch(r"[0-9a-f]{16}|[0-9a-f]{32}", i) for i in ids)  # OTLP/JSON: hex ids
    assert re.findall(r'"kind": (\d+)', text)  # and integer enums
    spans = spans_of(parse_otlp_json(text))
    root = next(s for s in spans if not s.parent_span_id)
    (child,) = [s for s in spans if s.parent_span_id]
    a, b = attributes(root), attributes(child)
    assert a[SpanAttributes.INPUT_VALUE] == HOSTILE and a[SpanAttributes.LLM_MODEL_NAME] == "tiny <model>"
    assert b[SpanAttributes.INPUT_VALUE] == '"Zürich" <i>'
    doc = f"{SpanAttributes.RETRIEVAL_DOCUMENTS}.1."
    assert b[doc + DocumentAttributes.DOCUMENT_ID] == "東京"
    assert b[f"{SpanAttributes.RETRIEVAL_DOCUMENTS}.0.{DocumentAttributes.DOCUMENT_CONTENT}"] == HOSTILE
    # Times from the recorded seconds: prompt 0.5 s, 3 generated tokens in 0.75 s, the retrieval
    # after the second of them, 0.25 s long; the run's total is 2 s.
    assert timeline(trace).retrieval_starts == (pytest.approx(1.0),)
    assert root.end_time_unix_nano - root.start_time_unix_nano == 2_000_000_000
    assert child.start_time_unix_nano - root.start_time_unix_nano == 1_000_000_000
    assert child.end_time_unix_nano - child.start_time_unix_nano == 250_000_000
    # The same file exports to the same bytes (seeded ids, times from the file).
    assert cli(["export", "--format", "openinference", str(source), "--out", str(tmp_path / "again.json")]) == 0
    assert (tmp_path / "again.json").read_text(encoding="utf-8") == text


def test_not_a_trace_nor_a_result_file_is_refused(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "onegen-trace/9"}', encoding="utf-8")
    assert cli(["export", "--format", "openinference", str(bad)]) == 2
    assert "unsupported trace schema" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.openinference.json"))
    with pytest.raises(Exception, match="not an OTLP/JSON trace file"):
        parse_otlp_json('{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}')


def test_phoenix_loads_the_file_into_its_trace_dataset(tmp_path):
    pytest.importorskip("phoenix")
    import pandas

    if int(pandas.__version__.split(".")[0]) >= 3:
        pytest.skip("Phoenix's TraceDataset builds its frame with pandas < 3 only")
    from phoenix.trace.otel import decode_otlp_span
    from phoenix.trace.trace_dataset import TraceDataset

    text = to_otlp_json(build_request([read_runs_of(hostile_trace(), tmp_path)][0], end_ns=1_700_000_000_123_456_789))
    (tmp_path / "spans.json").write_text(text, encoding="utf-8")
    spans = [decode_otlp_span(s) for s in spans_of(parse_otlp_json((tmp_path / "spans.json").read_text("utf-8")))]
    frame = TraceDataset.from_spans(spans).dataframe
    assert sorted(frame["span_kind"]) == ["LLM", "RETRIEVER"]
    retriever = frame[frame["span_kind"] == "RETRIEVER"].iloc[0]
    docs = retriever["attributes.retrieval"]["documents"]
    assert [d["document"]["id"] for d in docs] == ['id"<0>', "東京"]
    assert docs[0]["document"]["content"] == HOSTILE and docs[0]["document"]["metadata"]["title"] == "<b>Zürich</b>"
    llm = frame[frame["span_kind"] == "LLM"].iloc[0]
    assert llm["attributes.llm"]["token_count"]["completion"] == 3 and llm["attributes.input"]["value"] == HOSTILE
    assert retriever["parent_id"] == llm["context.span_id"]


def read_runs_of(trace: Trace, folder: Path):
    path = folder / "one-trace.json"
    path.write_text(trace.to_json(), encoding="utf-8")
    return read_runs(path)


# -- ELEVANT ------------------------------------------------------------------------------------------

def test_elevant_file_holds_predictions_with_candidates_and_the_gold_labels(tmp_path, capsys):
    source = el_result_file(tmp_path)
    assert cli(["export", "--format", "elevant", str(source)]) == 0
    printed = capsys.readouterr().out
    out = tmp_path / "el-result.kore-like__set_.linked_articles.jsonl"  # ELEVANT's own file naming
    meta = tmp_path / "el-result.kore-like__set_.metadata.json"
    assert out.exists() and meta.exists() and "1 predicted mention(s) not found" in printed
    first, second = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert (first["id"], first["title"], first["text"]) == (0, 'T "1"', EL_TEXT)
    assert first["evaluation_span"] == [0, len(EL_TEXT)]
    mentions = first["entity_mentions"]
    assert [EL_TEXT[slice(*m["span"])] for m in mentions] == ["Zürich", "東京", "O'Brien", "york"]  # text order
    assert [m["id"] for m in mentions] == ["E-zurich", "E-kyoto", "E-obrien", "E-york"]
    assert mentions[1]["candidates"] == ["E-kyoto", "E-tokyo"]
    assert all(m["recognized_by"] == m["linked_by"] == "OneGen" for m in mentions)
    labels = first["labels"]
    assert [lab["id"] for lab in labels] == [0, 1, 2, 3]
    assert [lab["entity_id"] for lab in labels] == ["E-zurich", "E-tokyo", "<NIL>", "E-nyc"]
    assert labels[2]["name"] == "O'Brien" and labels[2]["type"] == "OTHER"  # no name: the surface
    assert second == {"id": 1, "title": "d2", "text": "Nothing here.", "entity_mentions": [],
                      "evaluation_span": [0, 13], "labels": []}  # the engine raised: nothing predicted
    metadata = json.loads(meta.read_text(encoding="utf-8"))
    assert metadata["experiment_name"] == "el-result" and metadata["linker_name"] == "OneGen"
    assert metadata["linking_time"] == 2.0
    assert '\\"<b>Zürich</b>\\" & 東京' in out.read_text(encoding="utf-8")  # quotes escaped, non-Latin kept
    mappings = tmp_path / "el-result.kore-like__set_.custom-mappings"
    names = dict(line.split("\t") for line in (mappings / "entity_to_name.tsv").read_text("utf-8").splitlines())
    assert names["E-tokyo"] == "東京 Metropolis" and names["E-kyoto"] == "<E-kyoto>"  # gold names, else hit titles
    assert "Unknown" not in names and "<NIL>" not in names
    types = (mappings / "entity_to_types.tsv").read_text("utf-8").splitlines()
    assert "E-nyc\tcity" in types and (mappings / "whitelist_types.tsv").read_text("utf-8") == "city\tcity\n"


def test_elevant_refuses_a_question_answering_file(tmp_path, capsys):
    source = first_lines("single-hop", 1, tmp_path / "sh.jsonl")
    assert cli(["export", "--format", "elevant", str(source)]) == 2
    assert "ELEVANT takes entity-linking results" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.linked_articles.jsonl"))


def test_elevant_error_labels_in_categories_and_filters(tmp_path):
    results = load_results(el_result_file(tmp_path))
    record = results.records[0]
    by_name = {}
    for c in record.categories:
        by_name.setdefault(c.name, []).append(c)
    (tokyo,) = by_name[WRONG_ENTITY]
    assert tokyo.kinds == ["wrong candidate", "partial name"]  # gold ranked 2nd; "東京" is part of "東京 Metropolis"
    assert tokyo.detail["elevant"] == ["DISAMBIGUATION_WRONG", "DISAMBIGUATION_PARTIAL_NAME_WRONG"]
    (nyc,) = by_name[MISSED_MENTION]
    assert nyc.kinds == ["lowercased"]  # "new york city" is not written as a name
    spurious = {c.detail["mention"]: c.kinds for c in by_name[SPURIOUS_MENTION]}
    assert spurious == {"Zurik": ["other"], "york": ["wrong span"]}
    choices = dict(category_choices(results))
    assert choices["wrong entity: wrong candidate"] == 1 and choices["spurious mention: wrong span"] == 1
    assert [r.key for r in select(results, category="wrong entity: partial name")] == ["d<1>"]


def el_case(text, labels, entities, retrievals):
    ex = ELExample(id="x", title="", text=text, labels=[
        ELLabel(span=s, entity_id=e, name=n, type=None, optional=False, surface=text[s[0]:s[1]])
        for s, e, n in labels], raw={})
    tr = Trace(task="entity-linking", mode="onegen", model={}, input=text, prompt_text="", prompt_ids=[],
               retrievals=retrievals, result=Result(entities=entities))
    return categorize("entity-linking", ex, tr)


def test_missed_mentions_partially_included_or_overlapping_and_not_among_candidates():
    text = "Ivo Brandel met Corvale Velor."
    hits = [Hit(0, "E9", "Nine", 0.9, "")]
    cats = el_case(text, [((0, 11), "E-ivo", "Ivo Brandel"), ((16, 29), "E-cv", "Corvale Velor")],
                   [LinkedEntity("Ivo", 0, 3, "E9", "Nine", 0.9, 0), LinkedEntity("Velor.", 24, 30, "E9", "Nine", 0.9, 1)],
                   [Retrieval(i, i, "[LK]", "", "hidden-state", hits, 0) for i in range(2)])
    kinds = {(c.name, c.detail.get("surface") or c.detail.get("mention")): c.kinds for c in cats}
    assert kinds[(MISSED_MENTION, "Ivo Brandel")] == ["partially included"]
    assert kinds[(MISSED_MENTION, "Corvale Velor")] == ["partial overlap"]
    assert kinds[(SPURIOUS_MENTION, "Ivo")] == ["wrong span"]
    cats = el_case(text, [((0, 11), "E-ivo", "Ivo Brandel")], [LinkedEntity("Ivo Brandel", 0, 11, "E9", "Nine", 0.9, 0)],
                   [Retrieval(0, 0, "[LK]", "", "hidden-state", hits, 0)])
    assert [(c.name, c.kinds, c.detail["elevant"]) for c in cats] == [
        (WRONG_ENTITY, ["not among candidates"], ["DISAMBIGUATION_CANDIDATES_WRONG"])]


def test_question_answering_categories_have_no_finer_labels():
    task = get_task("single-hop")
    results = load_results(first_lines("single-hop", 30, Path(os.environ.get("TMPDIR", "/tmp")) /
                                       f"sh-{os.getpid()}.jsonl"))
    assert task.name == results.task
    assert all(c.kinds == [] for r in results.records for c in r.categories)
