"""Name alignment of linked mentions (onegen/name_alignment.py), where spans are read from a copied
output (tasks.copied_offset), and how the setting travels: traces, evaluation files, recipes."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest

from onegen import render_html as R
from onegen.evaluation import EvaluationError, _check_same_run
from onegen.name_alignment import align_names, alignment_words, name_occurrence, shares_a_word
from onegen.result_checks import check_value, model_check, resolve_check
from onegen.render_text import result_block
from onegen.tasks import get_task, link_mentions
from onegen.trace import Hit, LinkedEntity, Result, Retrieval, TokenRecord, Trace


def entity(text: str, mention: str, title: str, retrieval: int = 0, at: int = 0) -> LinkedEntity:
    start = text.index(mention, at)
    return LinkedEntity(mention, start, start + len(mention), f"id-{title}", title, 0.8, retrieval)


def test_a_mention_that_takes_in_the_words_beside_a_name_moves_onto_the_name():
    text = "Fresnanden Thandane, who was born in Kanvica back in 1991, worked as an actor"
    linked, unlinked = align_names(text, [entity(text, "Kanvica back in 1991", "Kanvica")], "snap")
    assert unlinked == []
    (e,) = linked
    assert (e.mention, text[e.start:e.end], e.alignment) == ("Kanvica", "Kanvica", "snapped")
    assert text[e.model_start:e.model_end] == "Kanvica back in 1991"


def test_a_name_is_found_in_any_casing_and_without_its_article():
    text = "starring zinora teprammar, the night of haltandel was a hit. Night of Haltandel too."
    (e,), _ = align_names(text, [entity(text, "haltandel", "The Night of Haltandel")], "snap")
    assert e.mention == "the night of haltandel"
    second = text.index("Night of Haltandel")
    (f,), _ = align_names(text, [entity(text, "Haltandel", "The Night of Haltandel", at=second)], "snap")
    assert (f.start, f.mention) == (second, "Night of Haltandel")


def test_a_name_matches_whole_words_only():
    text = "Stivarburg, the Baloran capital, lies in Balora"
    assert name_occurrence(text, "Balora", 16, 23) is None  # inside "Baloran"
    assert name_occurrence(text, "Balora", len(text) - 6, len(text)) == (len(text) - 6, len(text))


def test_strict_refuses_a_link_that_shares_no_word_with_its_name_and_snap_keeps_it():
    text = "Believe it or not, the writer Ferine Suzasane came from Panhaven."
    ents = [entity(text, "Believe it or not", "Ferine Suzasane"), entity(text, "Ferine Suzasane", "Ferine Suzasane", 1)]
    linked, unlinked = align_names(text, ents, "strict")
    assert [e.mention for e in linked] == ["Ferine Suzasane"]
    assert [(e.mention, e.alignment) for e in unlinked] == [("Believe it or not", "no-shared-word")]
    linked, unlinked = align_names(text, ents, "snap")
    assert len(linked) == 2 and unlinked == []


def test_a_mention_need_not_spell_its_name_only_share_a_word():
    text = "The German side won."
    (e,), unlinked = align_names(text, [entity(text, "German", "Germany")], "strict")
    assert unlinked == [] and e.mention == "German" and e.alignment is None
    assert shares_a_word("German", "Germany") and shares_a_word("FC Theclar", "Theclar")
    assert not shares_a_word("in", "India") and not shares_a_word("We flew", "Bomora")


def test_two_pieces_of_one_title_link_it_once():
    text = "Interestingly, Orchard over Nagon (1982) features Molen Prosnoltton"
    ents = [entity(text, "Orchard", "Orchard over Nagon"), entity(text, "Nagon", "Orchard over Nagon", 1)]
    linked, unlinked = align_names(text, ents, "strict")
    assert [(e.mention, e.alignment) for e in linked] == [("Orchard over Nagon", "snapped")]
    assert [(e.mention, e.alignment) for e in unlinked] == [("Nagon", "duplicate")]


def test_a_mention_opened_on_the_words_before_a_name_moves_onto_the_name_right_after_it():
    text = "Born in Hudroltvale, Trakasar Grolane grew up there"
    for policy in ("snap", "strict"):
        (e,), unlinked = align_names(text, [entity(text, "Born in", "Hudroltvale")], policy)
        assert unlinked == [] and (e.mention, e.alignment) == ("Hudroltvale", "snapped")
        assert text[e.model_start:e.model_end] == "Born in"
    assert alignment_words(e, text) == "the model marked 'Born in'; moved onto the linked name that follows it"
    quoted = 'Few know that the album "Dreraren" sold well'
    at = quoted.index("Dreraren")
    assert name_occurrence(quoted, "Dreraren", 0, quoted.index(' "')) == (at, at + 8)


def test_only_a_name_right_after_the_span_counts_and_an_overlapping_one_comes_first():
    text = "Believe it or not, everyone knew the writer Dendel Danberg"
    linked, unlinked = align_names(text, [entity(text, "Believe it or not", "Dendel Danberg")], "strict")
    assert linked == [] and [e.alignment for e in unlinked] == ["no-shared-word"]
    assert name_occurrence("Kanvica, Kanvica", "Kanvica", 0, 7) == (0, 7)
    assert name_occurrence("Fans of Stona and Stona", "Stona", 0, 7) == (8, 13)
    assert name_occurrence("Fans of Stonaville", "Stona", 0, 7) is None


def test_a_mention_the_model_marked_on_the_name_keeps_it_against_one_moved_there():
    text = "Born in Hudroltvale, Trakasar Grolane grew up there"
    moved = entity(text, "Born in", "Hudroltvale")
    own = dataclasses.replace(entity(text, "Hudroltvale", "Hudroltvale", 1), entity_id="id-own")
    linked, unlinked = align_names(text, [moved, own], "strict")
    assert [(e.mention, e.entity_id, e.alignment) for e in linked] == [("Hudroltvale", "id-own", None)]
    assert [(e.mention, e.alignment) for e in unlinked] == [("Born in", "duplicate")]


def test_off_changes_nothing_and_unknown_policies_are_refused():
    text = "Believe it or not, Kanvica"
    ents = [entity(text, "Believe it or not", "Kanvica")]
    assert align_names(text, ents, "off") == (ents, [])
    with pytest.raises(ValueError, match="name alignment must be one of"):
        align_names(text, ents, "loose")


def test_the_model_says_which_policy_it_was_measured_with():
    assert model_check(SimpleNamespace(info={"name_alignment": "strict"}), "name_alignment") == "strict"
    assert model_check(SimpleNamespace(info={}), "name_alignment") == "off"  # a released checkpoint
    assert resolve_check("name_alignment", "snap", SimpleNamespace(info={"name_alignment": "strict"})) == "snap"
    with pytest.raises(ValueError, match="answer alignment must be one of"):
        check_value("answer_alignment", "strict")
    with pytest.raises(ValueError):
        model_check(SimpleNamespace(info={"name_alignment": "always"}), "name_alignment")


def _el_trace(text: str, pieces: list[str], mentions: list[tuple[str, str]], policy: str) -> Trace:
    """A copy-constrained entity-linking trace whose output is `pieces` joined, one retrieval per
    `[LK]` piece, linking the mentions in order to the given titles."""
    tokens, retrievals = [], []
    for i, piece in enumerate(pieces):
        tokens.append(TokenRecord(id=i, text=piece, kind="generated", position=100 + i))
        if piece == "[LK]":
            mention, title = mentions[len(retrievals)]
            retrievals.append(Retrieval(step=len(retrievals), position=100 + i, token="[LK]", query_text=mention,
                                        query_source="hidden-state", chosen=0,
                                        hits=[Hit(rank=0, id=f"id-{title}", title=title, score=0.8, text="")]))
    return Trace(task="entity-linking", mode="onegen", model={}, input=text, prompt_text="p", prompt_ids=[1],
                 tokens=tokens, retrievals=retrievals, settings={"copy_input": True, "name_alignment": policy},
                 stop_reason="eos")


def test_a_mention_is_placed_where_the_output_copied_it_not_at_its_first_match():
    text = "Stivarburg, the Baloran capital, lies in Balora"
    pieces = [" ", "<MENTION>", "Stivarburg", "</MENTION>", "[LK]", "[_CONTINUE_]", ", the Baloran capital, lies in ",
              "<MENTION>", "Balora", "</MENTION>", "[LK]", "[_CONTINUE_]"]
    trace = _el_trace(text, pieces, [("Stivarburg", "Stivarburg"), ("Balora", "Balora")], "off")
    spans = [(e.start, e.end) for e in link_mentions(text, trace)]
    assert spans == [(0, 10), (len(text) - 6, len(text))]


def test_an_aligned_run_reports_both_spans_and_keeps_them_through_json():
    text = "Fans of Stona Athletic still talk about Nesbanius Grolane"
    pieces = ["<MENTION>", "Fans of Stona Athletic", "</MENTION>", "[LK]", "[_CONTINUE_]", " still talk about ",
              "<MENTION>", "Nesbanius", "</MENTION>", "[LK]", "[_CONTINUE_]", " Grolane"]
    trace = _el_trace(text, pieces, [("Fans of Stona Athletic", "Stona Athletic"), ("Nesbanius", "Ferine Suzasane")],
                      "strict")
    task = get_task("entity-linking")
    task.fill_result(trace, text, eos_id=0)
    task.check_result(trace, text)
    (e,) = trace.result.entities
    assert (e.mention, e.model_start, e.model_end) == ("Stona Athletic", 0, 22)
    assert [u.mention for u in trace.result.unlinked] == ["Nesbanius"]
    again = Trace.from_json(trace.to_json())
    assert again.result.entities == trace.result.entities and again.result.unlinked == trace.result.unlinked
    words = result_block(trace)
    assert "the model marked 'Fans of Stona Athletic'" in words and "not linked by the name check (strict)" in words
    assert "retrieval token(s) without a mention" not in words
    html = R.result_html(trace)
    assert "og-aligned" in html and "Marked but not linked" in html and "Nesbanius" in html


def test_a_trace_without_alignment_writes_no_new_keys():
    trace = Trace(task="entity-linking", mode="onegen", model={}, input="Paris", prompt_text="p", prompt_ids=[1],
                  result=Result(entities=[LinkedEntity("Paris", 0, 5, "d0", "Paris", 0.9, 0)]))
    d = trace.to_dict()
    assert "unlinked" not in d["result"] and set(d["result"]["entities"][0]) == {
        "mention", "start", "end", "entity_id", "title", "score", "retrieval"}


def test_an_evaluation_file_from_before_alignment_counts_as_off(tmp_path):
    run = {"task": "entity-linking", "name_alignment": "strict"}
    old = {"onegen": {"key": "k", "run": {"task": "entity-linking"}}}
    with pytest.raises(EvaluationError, match="name_alignment='off'"):
        _check_same_run(old, run, tmp_path / "r.jsonl")
    _check_same_run(old, {**run, "name_alignment": "off"}, tmp_path / "r.jsonl")


def test_a_recipe_may_change_the_alignment_without_refusing_its_checkpoint(tmp_path):
    import json

    from onegen.train.recipe import Recipe
    from onegen.train.trainer import recipe_changes

    saved = Recipe(name="r", base={}).to_dict()
    assert recipe_changes(saved, {**saved, "name_alignment": "strict", "answer_alignment": "snap"}) == []
    assert recipe_changes(saved, {**saved, "seed": 7}) == ["seed"]
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"name": "r", "base": {}, "name_alignment": "always"}))
    with pytest.raises(ValueError, match="name_alignment: name alignment must be one of"):
        Recipe.load(path)
