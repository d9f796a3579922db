"""HTML renderers of the app: escaping of hostile text, timeline markers, cost strip numbers.
Pure functions on hand-made traces: no model, no gradio."""
from __future__ import annotations

import re

import pytest

from onegen import render_html as R
from onegen.documents import Document
from onegen.trace import Cost, Hit, Hop, LinkedEntity, Result, Retrieval, TokenRecord, Trace

EVIL = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'


def _hits(*titles, text="some text"):
    return [Hit(rank=i, id=f"d{i}", title=t, score=0.9 - 0.2 * i, text=text) for i, t in enumerate(titles)]


def _toks(*pieces, start=10):
    """(text, kind) pairs -> TokenRecords at consecutive positions."""
    return [TokenRecord(id=100 + i, text=t, kind=k, position=start + i) for i, (t, k) in enumerate(pieces)]


def el_trace(input_text="Paris and Rome.", titles=("Paris", "Rome")) -> Trace:
    toks = _toks(("<MENTION>", "generated"), ("Paris", "generated"), ("</MENTION>", "generated"),
                 ("[LK]", "generated"), ("[_CONTINUE_]", "forced"), (" and ", "generated"),
                 ("<MENTION>Rome</MENTION>", "generated"), ("[LK]", "generated"), ("[_CONTINUE_]", "forced"),
                 (".", "generated"), ("</s>", "generated"))
    rets = [Retrieval(step=0, position=13, token="[LK]", query_text="Paris", query_source="hidden-state",
                      hits=_hits(titles[0], "Lyon"), chosen=0),
            Retrieval(step=1, position=17, token="[LK]", query_text="Rome", query_source="hidden-state",
                      hits=_hits(titles[1], "Milan"), chosen=0)]
    ents = [LinkedEntity("Paris", 0, 5, "d0", titles[0], 0.9, 0), LinkedEntity("Rome", 10, 14, "d0", titles[1], 0.9, 1)]
    cost = Cost(forward_tokens={"prompt": 156, "generated": 11, "inserted": 0, "query_reencoding": 0},
                seconds={"prompt": 0.25, "generated": 1.5, "retrieval": 0.004, "total": 1.8})
    return Trace(task="entity-linking", mode="onegen", model={"name": "tiny"}, input=input_text, prompt_text="p",
                 prompt_ids=[1, 2], tokens=toks, retrievals=rets, cost=cost, stop_reason="eos",
                 result=Result(output_text="", entities=ents))


def mh_trace(title="Film A") -> Trace:
    toks = _toks(("First, who directed Film A?", "generated"), ("[Question Representation]", "generated"),
                 ("<paragraph>", "inserted"), ("wiki title: " + title, "inserted"), ("</paragraph>", "inserted"),
                 (" Ivo.", "generated"), (" <FINAL-ANSWER>Ivo</FINAL-ANSWER>", "generated"))
    r = Retrieval(step=0, position=11, token="[Question Representation]", query_text="First, who directed Film A?",
                  query_source="hidden-state", hits=_hits(title, "Corvale"), chosen=0,
                  inserted_text="<paragraph>wiki title: " + title + "</paragraph>", inserted_tokens=3)
    cost = Cost(forward_tokens={"prompt": 40, "generated": 4, "inserted": 3, "query_reencoding": 0},
                seconds={"prompt": 0.1, "total": 0.3})
    return Trace(task="multi-hop", mode="onegen", model={}, input="Who directed Film A?", prompt_text="p",
                 prompt_ids=[1], tokens=toks, retrievals=[r], cost=cost, stop_reason="final_answer",
                 result=Result(answer="Ivo", final_answer_found=True, hops=[Hop(r.query_text, 0, title, "Ivo.")]))


def sh_trace(title="Corvale") -> Trace:
    # The query token ends the prompt (position 5); tokens start after it.
    toks = _toks(("<paragraph>", "inserted"), (title + "\nCorvale is a city.", "inserted"), ("</paragraph>", "inserted"),
                 ("[Relevant]", "generated"), ("120000", "generated"), ("[Utility:5]", "generated"), start=6)
    r = Retrieval(step=0, position=5, token="[Question Representation]", query_text="How big is Corvale?",
                  query_source="hidden-state", hits=_hits(title, "Velor", "Film A"), chosen=0,
                  inserted_text="<paragraph>" + title + "\nCorvale is a city.</paragraph>", inserted_tokens=3)
    return Trace(task="single-hop", mode="onegen", model={}, input="How big is Corvale?", prompt_text="p",
                 prompt_ids=[1] * 6, tokens=toks, retrievals=[r], stop_reason="eos",
                 result=Result(answer="120000", final_answer_found=True, reflection_tokens=["[Relevant]", "[Utility:5]"]))


def _no_live_markup(html: str, shown: bool = True) -> None:
    assert "<script" not in html and "<img" not in html
    if shown:
        assert "&lt;script&gt;" in html


# -- escaping --------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [lambda: el_trace(EVIL + " and Rome.", (EVIL, "Rome")), lambda: mh_trace(EVIL),
                                  lambda: sh_trace(EVIL)])
def test_hostile_titles_are_escaped_everywhere(make):
    tr = make()
    pages = [R.result_html(tr), R.timeline_html(tr.tokens, tr.retrievals), R.cost_html(tr)]
    pages += [R.step_html(r, tr.task) for r in tr.retrievals]
    for page in pages:
        _no_live_markup(page, shown=False)
    _no_live_markup(pages[0])  # the result shows the title, as text
    _no_live_markup(pages[3])  # so does the first step's candidate list


def test_hostile_input_and_generated_text_are_escaped():
    tr = el_trace()
    tr.input = EVIL
    tr.result.entities = []
    tr.tokens.append(TokenRecord(id=1, text=EVIL, kind="generated", position=99))
    _no_live_markup(R.result_html(tr))
    _no_live_markup(R.timeline_html(tr.tokens, tr.retrievals))


def test_typed_special_token_strings_show_as_text_without_markers():
    # A user typing "[LK]" gets plain text tokens; markers come from retrieval positions only.
    toks = _toks(("Paris ", "generated"), ("[LK]", "generated"), (" </s> <paragraph>", "generated"))
    page = R.timeline_html(toks, [])
    assert page.count('class="og-chip"') == 0
    assert "[LK]" in page and "&lt;/s&gt; &lt;paragraph&gt;" in page


def test_document_view_escapes_and_rejects_unsafe_links():
    doc = Document("x1", EVIL, EVIL, sentences=[EVIL], extra={"url": "javascript:alert(1)"})
    near = [(Document("x2", EVIL, "t"), 0.5)]
    page = R.document_html(doc, near, links={"x2": "javascript:alert(2)"})
    _no_live_markup(page)
    assert "javascript:" not in page
    assert R.safe_href('https://en.wikipedia.org/wiki/A"onmouseover="x') == \
        "https://en.wikipedia.org/wiki/A&quot;onmouseover=&quot;x"
    assert R.safe_href("/etc/passwd") is None and R.safe_href("data:text/html,x") is None


def test_entity_links_use_url_or_browser_anchor():
    tr = el_trace()
    page = R.result_html(tr, links={"d0": "https://en.wikipedia.org/wiki/Paris", "d1": R.browse_href("entity-linking", "a&b")})
    assert 'href="https://en.wikipedia.org/wiki/Paris"' in page
    assert 'href="?browse=entity-linking&amp;doc=a%26b"' in page


def test_message_html_escapes():
    _no_live_markup(R.message_html(EVIL, "error"))
    assert 'og-error' in R.message_html("x", "error") and 'og-info' in R.message_html("x", "nonsense")


# -- timeline --------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [el_trace, mh_trace, sh_trace])
def test_one_marker_per_retrieval(make):
    tr = make()
    page = R.timeline_html(tr.tokens, tr.retrievals)
    assert page.count('class="og-chip"') == len(tr.retrievals)
    assert re.findall(r'data-step="(\d+)"', page) == [str(r.step) for r in tr.retrievals]


def test_marker_sits_where_the_token_was_emitted():
    tr = el_trace()
    text = re.sub(r"<[^>]+>", "", R.timeline_html(tr.tokens, tr.retrievals).replace('class="og-chip-n">', ">#"))
    # Chip 1 replaces the first [LK] (after "Paris</MENTION>"), chip 2 the second.
    assert re.search(r"Paris&lt;/MENTION&gt;#1\[LK\]\[_CONTINUE_\] and .*Rome&lt;/MENTION&gt;#2\[LK\]", text)


def test_inserted_paragraphs_are_collapsed_and_forced_tokens_dimmed():
    tr = mh_trace()
    page = R.timeline_html(tr.tokens, tr.retrievals)
    assert page.count('<details class="og-ins">') == 1 and "3 tokens" in page and "inserted: Film A" in page
    assert R.timeline_html(el_trace().tokens, []).count('class="og-forced"') == 2


def test_single_hop_marker_precedes_the_inserted_passage():
    tr = sh_trace()
    page = R.timeline_html(tr.tokens, tr.retrievals)
    assert page.index('class="og-chip"') < page.index('class="og-ins"')


def test_empty_and_running_timeline():
    assert "og-empty" in R.timeline_html([], [])
    assert "og-cursor" in R.timeline_html(_toks(("a", "generated")), [], running=True)


# -- step detail, results --------------------------------------------------------------------------

def test_step_detail_shows_query_bars_chosen_and_insertion():
    r = mh_trace().retrievals[0]
    page = R.step_html(r, "multi-hop")
    assert "First, who directed Film A?" in page
    assert page.count('class="og-bar-row') == 2 and "og-chosen" in page and "0.900" in page and "0.700" in page
    assert "Inserted into the context: 3 tokens" in page
    assert "no extra forward tokens" in page
    assert "nothing" in R.step_html(el_trace().retrievals[0], "entity-linking")
    assert "og-empty" in R.step_html(None, "multi-hop")


def test_bar_widths_follow_cosine():
    hits = [Hit(0, "a", "A", 0.75, ""), Hit(1, "b", "B", -0.2, "")]
    page = R.bars_html(hits, 0)
    assert "width:75.0%" in page and "width:0.0%" in page


def test_task_results():
    el = R.result_html(el_trace())
    assert el.count('<mark class="og-ent">') == 2 and "Lyon" in el and "Milan" in el  # alternatives
    mh = R.result_html(mh_trace())
    assert "Hop 1" in mh and "Final answer" in mh and "Final answer</div>Ivo</div>" in mh
    sh = R.result_html(sh_trace())
    assert "[Relevant]" in sh and "[Utility:5]" in sh and "120000" in sh and "Chosen passage" in sh


def test_step_choices_are_plain_text():
    labels = [label for label, _ in R.step_choices(el_trace().retrievals)]
    assert labels == ["1. Paris -> Paris", "2. Rome -> Rome"]


# -- cost strip ------------------------------------------------------------------------------------

def test_cost_strip_numbers():
    tr = el_trace()
    page = R.cost_html(tr)
    cells = dict(re.findall(r'data-phase="(\w+)"[^>]*><b>([\d,]+)</b>', page))
    assert cells == {"prompt": "156", "generated": "11", "inserted": "0", "query_reencoding": "0", "draft_rejected": "0",
                     "total": "167", "retrievals": "2"}
    secs = dict(re.findall(r'data-seconds="(\w+)">([\d.]+)<', page))
    assert secs == {"prompt": "0.25", "generated": "1.50", "retrieval": "0.00", "total": "1.80"}


def test_cost_strip_counts_candidate_document_tokens():
    tr = mh_trace()
    tr.cost.document_tokens = 1234
    assert "1,234 tokens spent encoding" in R.cost_html(tr)


def test_cost_strip_names_the_decoder_that_ran():
    tr = mh_trace()
    tr.settings["decoder"] = "transformers"
    assert 'data-decoder="transformers"' in R.cost_html(tr) and "transformers forward" in R.cost_html(tr)
    tr.settings.pop("decoder")
    assert "data-decoder" not in R.cost_html(tr)  # traces saved before the setting existed


# -- the Compare view ------------------------------------------------------------------------------

def _compare_result(og_seconds=2.0, reencode_seconds=0.5, reencode_tokens=40, retrievals=2):
    from onegen.baselines import Comparison, ModeDifference
    from onegen.trace import Cost, Retrieval, Trace

    def trace(mode, reencoded, secs):
        t = Trace(task="multi-hop", mode=mode, model={}, input="q", prompt_text="p", prompt_ids=[1, 2])
        t.retrievals = [Retrieval(step=i, position=10 + i, token="[QR]", query_text="sub", query_source=mode,
                                  hits=[], chosen=None) for i in range(retrievals)]
        t.cost = Cost()
        t.cost.forward_tokens.update(prompt=100, generated=50, inserted=60, query_reencoding=reencoded)
        t.cost.seconds.update(total=secs, query_reencoding=secs - og_seconds)
        return t

    og, two = trace("onegen", 0, og_seconds), trace("two-pass", reencode_tokens, og_seconds + reencode_seconds)
    return Comparison(
        task="multi-hop", input="q", modes=["onegen", "two-pass"], base="onegen",
        traces={"onegen": og, "two-pass": two},
        forward_tokens={"onegen": {"prompt": 100, "generated": 50, "inserted": 60, "query_reencoding": 0,
                                   "total": 210},
                        "two-pass": {"prompt": 100, "generated": 50, "inserted": 60,
                                     "query_reencoding": reencode_tokens, "total": 210 + reencode_tokens}},
        seconds={"onegen": dict(og.cost.seconds), "two-pass": dict(two.cost.seconds)},
        differences={"two-pass": ModeDifference(forward_tokens={"total": reencode_tokens}, seconds={},
                                                speedup=(og_seconds + reencode_seconds) / og_seconds)},
        same_documents={"two-pass": [True, False]})


def test_run_point_and_costs_of_a_comparison():
    from onegen import render_compare as RC

    result = _compare_result()
    p = RC.run_point(result, "two-pass")
    assert p.retrievals == 2 and p.query_tokens == 20  # 40 re-encoded tokens over 2 retrievals
    assert p.reencoding_speedup == pytest.approx(1.25) and p.token_ratio == pytest.approx(250 / 210)
    html = RC.costs_html(result)
    assert "same top document at 1 of 2 retrievals" in html and "+40" in html and "1.25x" in html


def test_sweep_plot_places_the_run_and_escapes_labels():
    from onegen import render_compare as RC

    assert "bench single-pass --write" in RC.sweep_svg(None, "two-pass")
    report = {"config": {"clock": "cpu"}, "models": {"5M": {"name": "<b>m</b>"}},
              "cells": [{"scenario": "generated", "model": "5M", "query_tokens": L, "retrievals": r,
                         "speedup": {"two-pass": 1 + L * r / 1000}} for L in (16, 256) for r in (1, 2)]
              + [{"scenario": "read", "model": "5M", "query_tokens": 16, "retrievals": 1, "speedup": {"two-pass": 9}}]}
    assert RC.sweep_series(report, "two-pass") == {("5M", 1): [(16, 1.016), (256, 1.256)],
                                                    ("5M", 2): [(16, 1.032), (256, 1.512)]}
    assert "bench single-pass" in RC.sweep_svg(report, "pipeline")  # no cells for that baseline
    svg = RC.sweep_svg(report, "two-pass", RC.run_point(_compare_result(), "two-pass"), point_label="<i>run</i>")
    assert svg.count("<path ") == 2 and "<polygon" in svg
    assert "<i>" not in svg and "&lt;i&gt;run&lt;/i&gt;: 1.25x, R=2, L=20" in svg and "&lt;b&gt;m" in svg


@pytest.mark.parametrize("reason, words, kind", [
    ("eos", "the model ended its answer", "ok"),
    ("final_answer", "complete </FINAL-ANSWER>", "ok"),
    ("max_new_tokens", "hit the 256-token limit", "warn"),
    ("context_full", "context window is full", "warn"),
    ("repetition", "the answer started repeating itself", "warn"),
    ("no_hits", "found no document", "warn"),
    ("retrieval_limit", "more than the 5 retrievals allowed", "warn"),
    ("copy_dead_end", "copy constraint", "warn"),
])
def test_stop_reasons_in_words_and_only_intended_ends_are_green(reason, words, kind):
    from onegen.render_text import stop_words

    trace = sh_trace()
    trace.stop_reason = reason
    trace.settings = {"max_new_tokens": 256, "max_retrievals": 5}
    said, said_kind = stop_words(trace)
    assert words in said and said_kind == kind and "_" not in said.replace("</FINAL-ANSWER>", "")
    html = R.result_html(trace)
    assert ("og-unfinished" in html) == (kind == "warn")
    assert R.esc(words) in html and reason not in html.replace(f'data-stop="{reason}"', "")


def test_compare_headline_states_the_measurements_and_never_contradicts_them():
    pytest.importorskip("gradio")
    from onegen.ui.compare_tab import headline

    result = _compare_result()  # OneGen 2.0 s, two-pass 2.5 s; 40 tokens re-encoded
    text = headline(result, "two-pass")
    assert "OneGen 2.00 s and 210 forward tokens" in text and "2.50 s and 250 forward tokens" in text
    assert "total time was the shorter" in text and "40 forward tokens" in text and "1.25x" in text
    assert "2 retrieval queries" in text
    result.seconds["two-pass"]["total"] = 1.5  # machine noise: the baseline's measured total is lower
    text = headline(result, "two-pass")
    assert "total time was the longer" in text and "saved time" not in text and "faster" not in text


def test_compare_progress_names_each_mode_as_it_ends():
    pytest.importorskip("gradio")
    from onegen.jobs import CompareProgress
    from onegen.ui.compare_tab import progress_line

    assert progress_line(CompareProgress("onegen", 12, ())) == "OneGen: 12 tokens so far..."
    line = progress_line(CompareProgress("two-pass", 3, (("onegen", 40, 1.25),)))
    assert line.startswith("OneGen done: 40 tokens in 1.2 s. two-pass") and "3 tokens so far" in line
    line = progress_line(CompareProgress("onegen", 7, (("onegen", 40, 1.25), ("two-pass", 41, 1.5)), round=2,
                                         repeats=3))
    assert "Timing round 2 of 3" in line and "7 tokens so far" in line


def test_compare_headline_with_repeats_gives_the_median_and_every_run():
    pytest.importorskip("gradio")
    from dataclasses import replace

    from onegen.ui.compare_tab import headline

    result = replace(_compare_result(), repeats=3, run_seconds={"onegen": [2.4, 2.0, 1.9], "two-pass": [2.5, 2.7, 2.2]})
    text = headline(result, "two-pass")
    assert "the median of 3 runs each, taking turns" in text
    assert "runs: OneGen 2.40, 2.00, 1.90 s; two-pass" in text and "2.50, 2.70, 2.20 s" in text
    assert "one run each" not in text
    assert "a single run is noisy" in headline(_compare_result(), "two-pass")


def test_sweep_legend_dashes_the_smaller_model_by_size_not_by_name():
    from onegen import render_compare as RC

    report = {"config": {"clock": "cpu"}, "models": {"5M": {"name": "random-llama-5M", "parameters": 5_261_568},
                                                     "33M": {"name": "random-llama-33M", "parameters": 33_694_208}},
              "cells": [{"scenario": "generated", "model": m, "query_tokens": L, "retrievals": 1,
                         "speedup": {"two-pass": 1 + L / 1000}} for m in ("33M", "5M") for L in (16, 256)]}
    assert [m for m, _ in RC.sweep_series(report, "two-pass")] == ["5M", "33M"]
    svg = RC.sweep_svg(report, "two-pass")
    legend = re.findall(r'<line [^>]*?(stroke-dasharray="6 4")?/><text [^>]*>([^<]*) model, R=1</text>', svg)
    dashed = {model: bool(dash) for dash, model in legend}
    assert dashed == {"5M": True, "33M": False}
    assert "dashed lines are the smaller model (5M)" in svg
    # Without parameter counts the size is read off the name.
    assert RC.model_size("33M") > RC.model_size("5M") and RC.model_size("1.3B") == 1.3e9


def test_bundled_examples_carry_their_expected_results():
    from onegen.app_state import AppState
    from onegen.trace import LinkedEntity, Result

    app = AppState()
    for task in ("multi-hop", "single-hop"):
        assert all(isinstance(ex.get("answer"), str) for ex in app.examples(task))
    linking = app.examples("entity-linking")
    assert all(ex.get("links") for ex in linking)
    hehen = app.example("entity-linking", "Hehen stars Todora Kasard.")
    assert "the whole sentence as one mention" in hehen["known_failure"]
    trace = sh_trace()
    trace.result = Result(answer="The 2012.")
    assert app.example_verdict({"answer": "2012"}, trace) is True  # normalised: articles and punctuation go
    trace.result = Result(entities=[LinkedEntity("Hehen", 0, 5, "H0465", "Hehen", 0.9, 0)])
    assert app.example_verdict(hehen, trace) is False  # Todora Kasard is missing


def test_stop_reasons_without_the_run_settings_still_read_as_words():
    from onegen.render_text import stop_reason_words

    assert stop_reason_words("max_new_tokens") == "hit the token limit"
    assert stop_reason_words("retrieval_limit", {"max_new_tokens": 9}) == "it asked for more retrievals than allowed"
    assert stop_reason_words("repetition") == "the answer started repeating itself"
