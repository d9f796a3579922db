"""Plain-text views of a run for terminals: pure functions from engine events or a Trace to strings.

`render_events` turns the engine's event stream into printable chunks as they happen (generated
text inline, one block per retrieval); `render_trace` gives the same view of a finished or saved
trace. No printing and no torch here: the CLI prints, tests compare strings.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator

from .answer_alignment import answer_note
from .calibration import result_retrievals, unconfident_links
from .name_alignment import alignment_words
from .tasks import TASKS
from .trace import Retrieval, TokenRecord, Trace

PREVIEW_CHARS = 160
# Why a run ended, in words for someone new to it ({..} from the trace's settings); the one map of
# stop reasons for the terminal and the page.
STOP_REASONS = {
    "eos": "the model ended its answer",
    "final_answer": "complete </FINAL-ANSWER>",
    "max_new_tokens": "hit the {max_new_tokens}-token limit",
    "context_full": "the model's context window is full",
    "copy_dead_end": "no token can spell the rest of the input (copy constraint)",
    "no_hits": "a retrieval found no document to read",
    "retrieval_limit": "it asked for more than the {max_retrievals} retrievals allowed",
    "repetition": "the answer started repeating itself",
}
# The ends the protocol intends; every other stop is shown as a warning, never as success.
INTENDED_STOPS = frozenset({"eos", "final_answer"})


def stop_words(trace: Trace) -> tuple[str, str]:
    """(why the run ended in words, "ok" when it ended as intended else "warn")."""
    reason = trace.stop_reason or ""
    settings = trace.settings if isinstance(trace.settings, dict) else {}
    return stop_reason_words(reason, settings), "ok" if reason in INTENDED_STOPS else "warn"


def stop_reason_words(reason: str, settings: dict[str, Any] | None = None) -> str:
    """A stop reason in words; the limits come from the run's settings when given."""
    words = STOP_REASONS.get(reason, reason or "it did not finish")
    limits = {k: (settings or {}).get(k) for k in ("max_new_tokens", "max_retrievals")}
    if "{max_new_tokens}" in words and limits["max_new_tokens"] is None:
        return "hit the token limit"
    if "{max_retrievals}" in words and limits["max_retrievals"] is None:
        return "it asked for more retrievals than allowed"
    return words.format(**limits)


# A retrieval whose top hit scored below its index's calibrated range (onegen/calibration.py).
NO_CONFIDENT_MATCH = "no confident match in this index"
SIGNAL_WORDS = {"top1": "top score", "margin": "lead of the top hit over the second"}


def calibration_of(trace: Trace) -> dict[str, Any] | None:
    """The calibration the trace's retrievals were judged by ({"signal", "threshold", ...}), if any."""
    cal = (trace.index or {}).get("calibration") if isinstance(trace.index, dict) else None
    return cal if isinstance(cal, dict) else None


def low_confidence_words(r: Retrieval, calibration: dict[str, Any] | None) -> str:
    """Why a retrieval is marked: its signal against the threshold, in words."""
    if calibration is None or "threshold" not in calibration:
        return NO_CONFIDENT_MATCH
    signal = calibration.get("signal", "top1")
    what = SIGNAL_WORDS.get(signal, signal)
    if not r.hits:
        return f"{NO_CONFIDENT_MATCH}: no hits"
    value = r.hits[0].score if signal == "top1" or len(r.hits) < 2 else r.hits[0].score - r.hits[1].score
    return (f"{NO_CONFIDENT_MATCH}: {what} {value:.4f} is below {float(calibration['threshold']):.4f}, "
            "the calibrated range of documents that hold the answer")


def run_confidence_words(trace: Trace) -> str:
    """One sentence when a retrieval the result rests on had no confident match; "" otherwise."""
    if trace.result.confident is not False:
        return ""
    low = [r for r in result_retrievals(trace) if r.confident is False]
    n = len(trace.retrievals)
    which = ", ".join(str(r.step + 1) for r in low)
    lead = (f"No confident match in this index: retrieval{'s' if len(low) != 1 else ''} {which} of {n} "
            "scored below the calibrated range")
    weak, sound = unconfident_links(trace)
    if weak and sound:  # links stand on their own retrievals: say which ones are in doubt
        named = ", ".join(f"{e.mention!r} -> {e.title}" for e in weak)
        return (f"{lead}, so {'its link' if len(weak) == 1 else 'their links'} ({named}) "
                f"{'does' if len(weak) == 1 else 'do'} not rest on a document this index holds about the text; "
                f"the other {len(sound)} link{'s' if len(sound) != 1 else ''} {'does' if len(sound) == 1 else 'do'}.")
    return f"{lead}, so the result does not rest on a document this index holds about the input."


# Which forward computed the run (RunSettings.fused_decoder): same hidden states, other speed.
DECODER_LABELS = {"fused-llama": "fused Llama decoder", "transformers": "transformers forward"}
# Forward-token phases (trace.PHASES) and timed parts of a run, in words; every view uses these.
PHASE_LABELS = {"prompt": "prompt", "generated": "generated", "inserted": "inserted",
                "query_reencoding": "query re-encoding", "draft_rejected": "rejected drafts",
                "replay_prefix": "replayed prefix", "prefix_shared": "shared prefix", "retrieval": "search",
                "documents": "candidate documents", "total": "total"}


def phase_labels(trace: Trace) -> dict[str, str]:
    """PHASE_LABELS for this run: a layer-split run (ImpRAG) reads its passages beside the input, so
    its "inserted" tokens are the passages read, never part of the sequence."""
    return {**PHASE_LABELS, "inserted": "passages read"} if trace.cost.layer_groups else PHASE_LABELS


def clip(text: str, limit: int = PREVIEW_CHARS) -> str:
    """One line: newlines shown as `\\n`, long text cut at the end with `...`."""
    flat = text.replace("\r", "").replace("\n", "\\n")
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def task_label(task: str) -> str:
    """The task's short name for people; the raw name for a task this version does not know."""
    known = TASKS.get(task)
    return known.label if known is not None else task



def run_header(task: str, model: str, index: dict[str, Any] | None, text: str) -> str:
    where = "no index"
    if index:
        where = f"{index.get('path', 'index')} ({index.get('documents', '?')} documents, {index.get('vectors', '?')} vectors)"
        cal = index.get("calibration")
        if isinstance(cal, dict) and "threshold" in cal:
            signal = cal.get("signal", "top1")
            where += (f"; calibrated: a {SIGNAL_WORDS.get(signal, signal)} below {float(cal['threshold']):.4f} "
                      f"is {NO_CONFIDENT_MATCH}")
    return f"== {task} | model {model} | retrieving from {where}\n== input: {clip(text)}\n"


# -- pieces ------------------------------------------------------------------------------------------

def retrieval_block(r: Retrieval, calibration: dict[str, Any] | None = None) -> str:
    """Query, top-k hits with scores (the chosen one starred), and a warning line when the index's
    calibration judged the top hit not a confident match. Insertion is reported separately: it
    happens after the retrieval event."""
    lines = [f"  [retrieval {r.step + 1}] {r.token} at position {r.position}, {r.seconds * 1000:.1f} ms"]
    lines.append(f"    query: {clip(r.query_text)!r}" if r.query_text else "    query: (no text before the token)")
    if not r.hits:
        lines.append("    no hits")
    for h in r.hits:
        mark = "*" if r.chosen is not None and h.rank == r.chosen else " "
        where = h.id if h.fragment is None else f"{h.id}, sentence {h.fragment + 1}"
        lines.append(f"    {mark} {h.rank + 1}. {h.score:+.4f}  {clip(h.title, 60)}  ({where})")
    if r.confident is False:
        lines.append(f"    ! {low_confidence_words(r, calibration)}")
    return "\n".join(lines) + "\n"


def insertion_line(tokens: int, text: str) -> str:
    if not tokens:
        return "    nothing inserted\n"
    return f"    inserted {tokens} tokens: {clip(text)}\n"


def result_block(trace: Trace) -> str:
    """What the run produced, by what its result holds: linked entities, or an answer with its
    reasoning chain (hops) or its Self-RAG reflection tokens and passage."""
    res, lines = trace.result, []
    read_as = input_note(trace)
    if read_as:
        lines.append(read_as)
    warning = run_confidence_words(trace)
    if warning:
        lines.append(warning)
    if res.entities is not None:
        ents = res.entities
        lines.append(f"Linked entities ({len(ents)}):")
        for e in ents:
            span = f"chars {e.start}-{e.end}" if e.start is not None else "not found in the input"
            low = (0 <= e.retrieval < len(trace.retrievals) and trace.retrievals[e.retrieval].confident is False)
            lines.append(f"  {e.mention!r} ({span}) -> {e.title} [{e.entity_id}]  score {e.score:+.4f}"
                         + (f"  ({NO_CONFIDENT_MATCH})" if low else "")
                         + (f"  ({alignment_words(e, trace.input)})" if e.alignment else ""))
        if res.unlinked:
            lines.append(f"Marked but not linked by the name check ({trace.settings.get('name_alignment')}):")
            for e in res.unlinked:
                lines.append(f"  {e.mention!r} -> {alignment_words(e, trace.input)}, score {e.score:+.4f}")
        linked = {e.retrieval for e in ents} | {e.retrieval for e in res.unlinked or []}
        loose = [r for i, r in enumerate(trace.retrievals) if i not in linked]
        if loose:
            lines.append(f"  {len(loose)} retrieval token(s) without a mention before them, not linked "
                         f"(positions {', '.join(str(r.position) for r in loose)})")
        note = copy_note(trace)
        if note:
            lines.append(note)
    else:
        if res.answer:
            lines.append((f"Answer ({NO_CONFIDENT_MATCH}): {res.answer}" if warning else f"Answer: {res.answer}")
                         + (f"  ({answer_note(res.model_answer, res.answer_check)})" if res.model_answer is not None else ""))
        elif res.hops is not None:  # the chain ends with a marked final answer
            lines.append("Answer: none (no <FINAL-ANSWER>...</FINAL-ANSWER> in the output)")
        else:
            lines.append("Answer: none")
        for i, hop in enumerate(res.hops or []):
            lines.append(f"  hop {i + 1}: {clip(hop.question, 80)!r} -> {hop.title or '(no document)'} -> "
                         f"{clip(hop.answer, 80)!r}")
        if res.reflection_tokens is not None:  # Self-RAG: one passage, read for the whole answer
            if res.reflection_tokens:
                lines.append("Reflection tokens: " + " ".join(res.reflection_tokens))
            if trace.retrievals and trace.retrievals[0].chosen_hit:
                lines.append(f"Passage: {trace.retrievals[0].chosen_hit.title}")
    lines += layer_read_lines(trace)
    if res.retrieval_limit_reached:
        lines.append(f"Retrieval limit reached ({trace.settings.get('max_retrievals', '?')}).")
    lines.append(f"Stopped: {stop_words(trace)[0]}.")
    if trace.error:
        lines.append(f"Error: {trace.error}")
    return "\n".join(lines) + "\n"


def input_note(trace: Trace) -> str:
    """One line on what the input normalization changed (onegen/input_normalization.py): the text
    the model read, and why it differs from the typed one; "" when nothing changed."""
    edits = trace.input_edits or []
    if not edits:
        return ""
    names = [e for e in edits if e.kind == "name_case"]
    marks = [e.after for e in edits if e.kind == "closing_mark"]
    why = []
    if names:
        shown = ", ".join(f"{e.before!r} as {e.after!r}" for e in names[:3])
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        why.append(f"{'a name' if len(names) == 1 else str(len(names)) + ' names'} in the index's case ({shown}{more})")
    if marks:
        why.append(f"{marks[0]!r} added at the end")
    return f"Read as {clip(trace.input)!r}: {'; '.join(why)} (input normalization)."


def copy_note(trace: Trace) -> str:
    """One line on the copy constraint of a task that rewrites its input (entity linking): off, on
    and never needed, or where it acted."""
    task = TASKS.get(trace.task)
    if task is None or not task.copies_input or "copy_input" not in trace.settings:
        return ""
    if not trace.settings["copy_input"]:
        return "Free decoding: the model could rewrite the text (copy constraint off)."
    if not trace.overrides:
        return "Copy constraint on; the model copied the input on its own."
    wanted = ", ".join(repr(o.preferred_text) for o in trace.overrides[:5])
    more = f" and {len(trace.overrides) - 5} more" if len(trace.overrides) > 5 else ""
    n = len(trace.overrides)
    early = sum(1 for o in trace.overrides if o.kind == "early_close")
    closed = (f" At {early} of them the model's choice left the input inside a mention, so it closed the "
              f"mention early.") if early else ""
    held = sum(1 for o in trace.overrides if o.kind == "no_open")
    copied = (f" At {held} it copied the text rather than open a mention the model did not choose."
              if held else "")
    return (f"Copy constraint on: it overrode the model at {n} step{'s' if n != 1 else ''} "
            f"(the model wanted {wanted}{more}).{closed}{copied}")


def layer_read_lines(trace: Trace) -> list[str]:
    """A layer-split run (ImpRAG): where the query was read, and the reader's attention to each
    passage, averaged over the middle layers."""
    read = [(r, r.layer_read) for r in trace.retrievals if r.layer_read is not None]
    lines = []
    for r, lr in read:
        lines.append(f"Layer groups: bottom 0-{lr.bottom - 1} (query read at layer {lr.layer}, {lr.dimension} values, "
                     f"{lr.pooling}), middle {lr.bottom}-{lr.top - 1} (reads the passages), top {lr.top}-{lr.n_layers - 1}")
        if lr.reader_attention:
            layers, hits = len(lr.reader_attention), r.read_hits
            shares = [sum(row[j] for row in lr.reader_attention) / layers for j in range(len(lr.reader_attention[0]))]
            read = f", the top {len(hits)} of {len(r.hits)} read" if len(hits) < len(r.hits) else ""
            lines.append(f"Reader attention{read} (share per passage, mean over the middle layers): "
                         + ", ".join(f"{clip(h.title, 40)} {s:.3f}" for h, s in zip(hits, shares)))
    return lines


def cost_line(trace: Trace) -> str:
    ft = trace.cost.forward_tokens
    labels = phase_labels(trace)
    tokens = ", ".join(f"{labels.get(p, p)} {ft.get(p, 0)}" for p in trace.cost.phases())
    docs = f"; candidate documents {trace.cost.document_tokens}" if trace.cost.document_tokens else ""
    groups = trace.cost.layer_groups
    if groups:
        docs += "; by layer group " + ", ".join(f"{g} {n}" for g, n in groups.items())
    secs = trace.cost.seconds
    phases = trace.cost.phases()
    order = [p for p in (*phases, "retrieval", "documents") if p in secs] + [
        p for p in secs if p not in phases and p not in ("retrieval", "documents", "total")]
    seconds = ", ".join(f"{labels.get(p, p)} {secs[p]:.3f}" for p in order)
    total = f" (total {secs['total']:.3f})" if "total" in secs else ""
    decoder = DECODER_LABELS.get(trace.settings.get("decoder"))
    return (f"Cost: forward tokens {tokens} (total {trace.cost.total_forward_tokens}){docs} | "
            f"seconds {seconds}{total}{f' | {decoder}' if decoder else ''}\n")


# -- streams -----------------------------------------------------------------------------------------

def _render_steps(steps: Iterable[tuple[str, Any]]) -> Iterator[str]:
    """Steps are ("calibration", dict or None) first when known, then ("token", TokenRecord),
    ("retrieval", Retrieval) or ("done", Trace)."""
    inserted: list[TokenRecord] = []
    calibration: dict[str, Any] | None = None
    pending = False  # a retrieval block is open until its inserted tokens (if any) are counted
    at_line_start = True

    def close() -> Iterator[str]:
        nonlocal pending, at_line_start
        if pending:
            yield insertion_line(len(inserted), "".join(t.text for t in inserted))
            inserted.clear()
            pending, at_line_start = False, True

    for kind, item in steps:
        if kind == "calibration":
            calibration = item
        elif kind == "token":
            if item.kind == "inserted":
                inserted.append(item)
                continue
            yield from close()
            if item.text:
                at_line_start = item.text.endswith("\n")
                yield item.text
        elif kind == "retrieval":
            yield from close()
            yield ("" if at_line_start else "\n") + retrieval_block(item, calibration)
            pending, at_line_start = True, True
        elif kind == "done":
            yield from close()
            yield ("" if at_line_start else "\n") + "\n" + result_block(item) + cost_line(item)


def render_events(events: Iterable[Any], calibration: dict[str, Any] | None = None) -> Iterator[str]:
    """Printable chunks for the engine's TokenEvent / RetrievalEvent / DoneEvent stream, as it
    comes; `calibration` (the retriever's, as a trace records it) words the low-confidence lines."""
    def steps() -> Iterator[tuple[str, Any]]:
        yield "calibration", calibration
        for ev in events:
            if hasattr(ev, "token"):
                yield "token", ev.token
            elif hasattr(ev, "retrieval"):
                yield "retrieval", ev.retrieval
            elif hasattr(ev, "trace"):
                yield "done", ev.trace
            else:
                raise TypeError(f"not an engine event: {ev!r}")
    return _render_steps(steps())


def trace_steps(trace: Trace) -> Iterator[tuple[str, Any]]:
    """The event order of a recorded run: each retrieval right after the token at its position
    (before the first token for a query read at the end of the prompt)."""
    by_position = {r.position: r for r in trace.retrievals}
    prompt_end = len(trace.prompt_ids)
    yield "calibration", calibration_of(trace)
    for r in trace.retrievals:
        if r.position < prompt_end:
            yield "retrieval", r
    for t in trace.tokens:
        yield "token", t
        if t.kind != "inserted" and t.position in by_position:
            yield "retrieval", by_position[t.position]
    yield "done", trace


def render_trace(trace: Trace, header: bool = True) -> str:
    """The whole run as text, the same view the CLI streams."""
    head = run_header(trace.task, trace.model.get("name", "?"), trace.index, trace.input) + "\n" if header else ""
    return head + "".join(_render_steps(trace_steps(trace)))
