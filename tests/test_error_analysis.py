"""Error categories on hand-built traces: every category, the gold rank, and [] for correct examples."""
from __future__ import annotations

import pytest

from onegen.datasets import ContextParagraph, ELExample, ELLabel, MultiHopExample, Passage, SingleHopExample
from onegen.error_analysis import (ENGINE_ERROR, MISSED_MENTION, NO_ANSWER, NO_FINAL_ANSWER, RETRIEVAL_LIMIT,
                                   RETRIEVAL_MISS, RIGHT_RETRIEVAL_WRONG_ANSWER, SPURIOUS_MENTION, WRONG_ANSWER,
                                   WRONG_ENTITY, ErrorCategory, align_mentions, answer_match, categorize,
                                   category_counts, context_document_id, hop_gold, retrieval_miss_at)
from onegen.trace import Hit, LinkedEntity, Result, Retrieval, Trace


def hit(rank, id_, title=None):
    return Hit(rank=rank, id=id_, title=title or id_, score=1.0 - rank / 10, text=f"text of {title or id_}")


def retrieval(step, hits, query=""):
    return Retrieval(step=step, position=10 * (step + 1), token="[X]", query_text=query, query_source="hidden-state",
                     hits=hits, chosen=0 if hits else None)


def trace(task, retrievals=(), stop="eos", **result):
    return Trace(task=task, mode="onegen", model={}, input="x", prompt_text="p", prompt_ids=[],
                 retrievals=list(retrievals), result=Result(**result), stop_reason=stop,
                 settings={"max_retrievals": 2})


def names(cats):
    return [c.name for c in cats]


# -- entity linking ------------------------------------------------------------------------------

TEXT = "Paris and Rome met Jordan in Berlin."


def label(start, end, entity_id, **kw):
    return ELLabel(span=(start, end), entity_id=entity_id, name=kw.get("name"), type=None,
                   optional=kw.get("optional", False), surface=TEXT[start:end])


def el_example(labels):
    return ELExample(id="d1", title="", text=TEXT, labels=labels, raw={"id": "d1", "text": TEXT, "labels": []})


def linked(mention, start, entity_id, retrieval_index):
    return LinkedEntity(mention=mention, start=start, end=None if start is None else start + len(mention),
                        entity_id=entity_id, title=entity_id, score=0.5, retrieval=retrieval_index)


def test_entity_linking_correct_example_has_no_categories():
    ex = el_example([label(0, 5, "Q90"), label(10, 14, "Q220")])
    tr = trace("entity-linking", [retrieval(0, [hit(0, "Q90")]), retrieval(1, [hit(0, "Q220")])],
               entities=[linked("Paris", 0, "Q90", 0), linked("Rome", 10, "Q220", 1)])
    assert categorize("entity-linking", ex, tr) == []


def test_entity_linking_every_category_and_the_gold_rank():
    ex = el_example([label(0, 5, "Q90"), label(10, 14, "Q220"), label(19, 25, "Q41421"), label(29, 35, "Q64")])
    tr = trace("entity-linking", [
        retrieval(0, [hit(0, "Q90")]),
        retrieval(1, [hit(0, "Q1"), hit(1, "Q2"), hit(2, "Q220")]),  # gold third
        retrieval(2, [hit(0, "Q3"), hit(1, "Q4")]),                  # gold absent
        retrieval(3, [hit(0, "Q5")]),
    ], entities=[linked("Paris", 0, "Q90", 0), linked("Rome", 10, "Q1", 1), linked("Jordan", 19, "Q3", 2),
                 linked("met", 15, "Q5", 3)])
    cats = categorize("entity-linking", ex, tr)
    assert names(cats) == [WRONG_ENTITY, WRONG_ENTITY, MISSED_MENTION, SPURIOUS_MENTION]
    rome, jordan, berlin, met = cats
    assert rome.detail["gold_rank"] == 3 and rome.detail["predicted"] == "Q1" and rome.detail["top_k"] == 3
    assert rome.detail["surface"] == "Rome" and rome.detail["span"] == [10, 14]
    assert jordan.detail["gold_rank"] is None
    assert berlin.detail["surface"] == "Berlin" and berlin.detail["gold"] == "Q64"
    assert met.detail["mention"] == "met" and met.detail["span"] == [15, 18]


def test_unknown_gold_is_neither_missed_nor_makes_a_prediction_spurious():
    ex = el_example([label(0, 5, "Unknown"), label(10, 14, "Unknown")])
    tr = trace("entity-linking", [retrieval(0, [hit(0, "Q90")])], entities=[linked("Paris", 0, "Q90", 0)])
    assert categorize("entity-linking", ex, tr) == []


def test_mentions_align_by_surface_when_the_span_is_unknown():
    ex = el_example([label(10, 14, "Q220")])
    aligned = align_mentions(ex, [linked("Rome", None, "Q220", 0)])
    assert aligned.gold[0] is not None and aligned.unmatched == []
    tr = trace("entity-linking", [retrieval(0, [hit(0, "Q220")])], entities=[linked("Rome", None, "Q220", 0)])
    assert categorize("entity-linking", ex, tr) == []


# -- multi-hop --------------------------------------------------------------------------------------

def mh_example(answer="Corvale", decomposition=None, facts=(("Film A", 0), ("Ivo Brandel", 1))):
    context = [ContextParagraph("Film A", ["Film A is a drama."]), ContextParagraph("Ivo Brandel", ["Ivo was born."]),
               ContextParagraph("Velor", ["Velor is a country."])]
    return MultiHopExample(id="q1", type="bridge", question="Where?", answer=answer, aliases=["Corvale City"],
                           context=context, supporting_facts=list(facts), evidences=[], answer_id=None,
                           decomposition=decomposition, raw={})


def mh_trace(titles, answer="Corvale", limit=False, stop="final_answer"):
    rs = [retrieval(i, [hit(0, f"id-{t}", t), hit(1, "id-Film A", "Film A"), hit(2, "id-Ivo", "Ivo Brandel")])
          for i, t in enumerate(titles)]
    return trace("multi-hop", rs, answer=answer, final_answer_found=answer is not None,
                 retrieval_limit_reached=limit, stop=stop)


def test_multi_hop_correct_answer_or_alias_has_no_categories():
    assert categorize("multi-hop", mh_example(), mh_trace(["Film A", "Velor"])) == []
    assert categorize("multi-hop", mh_example(), mh_trace(["Film A"], answer="corvale city.")) == []


def test_multi_hop_right_retrieval_but_wrong_answer():
    cats = categorize("multi-hop", mh_example(), mh_trace(["Film A", "Ivo Brandel"], answer="Velor"))
    assert names(cats) == [RIGHT_RETRIEVAL_WRONG_ANSWER]
    assert cats[0].detail["answer"] == "Velor" and cats[0].detail["retrievals_checked"] == 2


def test_multi_hop_retrieval_miss_at_hop_with_decomposition():
    decomposition = [{"question": "Who directed Film A?", "title": "Film A"},
                     {"question": "Where was Ivo born?", "paragraph_support_idx": 1}]
    ex = mh_example(decomposition=decomposition)
    cats = categorize("multi-hop", ex, mh_trace(["Film A", "Velor"], answer="Velor"))
    assert names(cats) == [retrieval_miss_at(2)]
    d = cats[0].detail
    assert d["hop"] == 2 and d["retrieved"]["title"] == "Velor" and d["gold"]["source"] == "decomposition"
    assert d["gold_rank"] == 3  # "Ivo Brandel" is the third hit of that retrieval
    # Hop 1 by the supporting-fact rule would accept "Ivo Brandel"; the decomposition does not.
    cats = categorize("multi-hop", ex, mh_trace(["Ivo Brandel", "Ivo Brandel"], answer="Velor"))
    assert names(cats) == [retrieval_miss_at(1)]


def test_a_miss_after_the_first_hop_says_whether_the_query_named_the_bridge():
    decomposition = [{"question": "Who directed Film A?", "answer": "Ivo Brandel", "title": "Film A"},
                     {"question": "Where was Ivo Brandel born?", "title": "Ivo Brandel"}]
    ex = mh_example(decomposition=decomposition)

    def miss(second_query):
        rs = [retrieval(0, [hit(0, "id-Film A", "Film A")], "Who directed Film A?"),
              retrieval(1, [hit(0, "id-Velor", "Velor")], second_query)]
        (cat,) = categorize("multi-hop", ex, trace("multi-hop", rs, answer="Velor", final_answer_found=True))
        return cat.detail

    misread = miss("Second, where was Ivo Brandell born?")  # the model wrote another name
    assert misread["bridge"] == "Ivo Brandel" and misread["bridge_in_query"] is False
    assert miss("Second, where was ivo brandel born?")["bridge_in_query"] is True  # the retriever missed
    first = categorize("multi-hop", ex, mh_trace(["Velor", "Ivo Brandel"], answer="Velor"))[0].detail
    assert "bridge" not in first  # hop 1 has no previous answer


def test_hop_gold_rules():
    ex = mh_example(decomposition=[{"title": "Film A"}, {"paragraph_id": 1}, {"question": "no paragraph named"}])
    g0, g1, g2 = hop_gold(ex, 0), hop_gold(ex, 1), hop_gold(ex, 2)
    assert g0.source == "decomposition" and g0.matches(hit(0, "x", "film a"))
    assert g1.matches(hit(0, context_document_id("q1", 1), "whatever")) and g1.matches(hit(0, "1", "t"))
    assert not g1.matches(hit(0, "q1:2", "Ivo Brandel"))
    assert g2.source == "supporting_facts" and g2.matches(hit(0, "y", "Ivo Brandel"))
    assert hop_gold(mh_example(facts=()), 0) is None


def test_multi_hop_no_final_answer_and_retrieval_limit():
    cats = categorize("multi-hop", mh_example(), mh_trace(["Film A", "Velor"], answer=None, limit=True,
                                                           stop="max_new_tokens"))
    assert names(cats) == [retrieval_miss_at(2), RETRIEVAL_LIMIT, NO_FINAL_ANSWER]
    assert cats[1].detail == {"retrievals": 2, "limit": 2}
    assert cats[2].detail["stop_reason"] == "max_new_tokens"


def test_multi_hop_wrong_answer_without_any_checkable_retrieval():
    cats = categorize("multi-hop", mh_example(), mh_trace([], answer="Velor"))
    assert names(cats) == [WRONG_ANSWER]


# -- single-hop ---------------------------------------------------------------------------------

def sh_example(gold_id=None):
    return SingleHopExample(id="s1", question="Where was Ivo born?", answers=["Corvale"],
                            ctxs=[Passage("w1", "Corvale", "Corvale is a city."), Passage("w2", "Velor", "A country.")],
                            gold_id=gold_id, raw={})


def sh_trace(hits, answer):
    return trace("single-hop", [retrieval(0, hits)] if hits is not None else [], answer=answer,
                 final_answer_found=bool(answer))


def test_single_hop_categories():
    right = [hit(0, "w1", "Corvale")]
    wrong = [Hit(0, "w2", "Velor", 0.9, "A country."), Hit(1, "w1", "Corvale", 0.5, "Corvale is a city.")]
    assert categorize("single-hop", sh_example(), sh_trace(right, "He was born in Corvale.")) == []
    assert names(categorize("single-hop", sh_example(), sh_trace(right, "Velor"))) == [RIGHT_RETRIEVAL_WRONG_ANSWER]
    cats = categorize("single-hop", sh_example("w1"), sh_trace(wrong, "Velor"))
    assert names(cats) == [RETRIEVAL_MISS]
    assert cats[0].detail["rule"] == "gold_id" and cats[0].detail["gold_rank"] == 2
    # Without a gold id, the passage must contain an answer.
    assert categorize("single-hop", sh_example(), sh_trace(wrong, "Velor"))[0].detail["rule"] == "answer_in_passage"
    assert names(categorize("single-hop", sh_example(), sh_trace(right, ""))) == [NO_ANSWER]
    assert names(categorize("single-hop", sh_example(), sh_trace(None, ""))) == [RETRIEVAL_MISS, NO_ANSWER]


def test_answer_match_is_whole_word():
    assert answer_match("It is Corvale.", ["corvale"]) == 1.0
    assert answer_match("Corvalesque", ["Corvale"]) == 0.0
    assert answer_match(None, ["x"]) == 0.0


# -- any task -----------------------------------------------------------------------------------

def test_engine_error_and_bad_input():
    cats = categorize("multi-hop", mh_example(), None, "InputError: too long")
    assert cats == [ErrorCategory(ENGINE_ERROR, {"message": "InputError: too long"})]
    with pytest.raises(ValueError, match="unknown task"):
        categorize("ranking", mh_example(), mh_trace([]))
    with pytest.raises(TypeError, match="MultiHopExample"):
        categorize("multi-hop", sh_example(), sh_trace(None, ""))


def test_category_counts_over_records_lines_and_lists():
    class Rec:
        def __init__(self, cats):
            self.categories = cats

    a = [ErrorCategory(MISSED_MENTION), ErrorCategory(MISSED_MENTION), ErrorCategory(WRONG_ENTITY)]
    line = {"onegen": {"categories": [ErrorCategory(WRONG_ENTITY).to_dict(), ErrorCategory(SPURIOUS_MENTION).to_dict()]}}
    counts = category_counts([Rec(a), line, [ErrorCategory(SPURIOUS_MENTION)], Rec([])])
    assert counts == {MISSED_MENTION: 2, SPURIOUS_MENTION: 2, WRONG_ENTITY: 2}
    assert list(counts) == [MISSED_MENTION, SPURIOUS_MENTION, WRONG_ENTITY]
    assert ErrorCategory.from_dict(ErrorCategory(WRONG_ENTITY, {"gold_rank": 2}).to_dict()).detail == {"gold_rank": 2}
