"""Loaders on small files written here, in every accepted layout, and their errors."""
import json

import pytest

from onegen.datasets import (
    ContextParagraph,
    DatasetFormatError,
    Passage,
    detect_task,
    el_result_line,
    extract_final_answer,
    final_answer_from_result_line,
    load_aliases,
    load_dataset,
    load_entity_linking,
    load_multi_hop,
    load_single_hop,
    qa_result_line,
    write_jsonl,
)
from onegen.metrics import ELDocument, el_scores, el_scores_from_result_lines, parse_el_output, qa_scores
from onegen.tasks import get_task


def write_lines(path, items):
    path.write_text("".join(json.dumps(i) + "\n" for i in items), encoding="utf-8")
    return path


def write_json(path, value, indent=2):
    path.write_text(json.dumps(value, indent=indent), encoding="utf-8")
    return path


EL_ITEM = {
    "id": 7, "title": "KORE50 7", "text": "Obama met Jimmy in Paris.",
    "labels": [
        {"id": 0, "span": [0, 5], "entity_id": "Q76", "name": "Barack Obama", "parent": None,
         "children": [], "optional": False, "type": "PER"},
        {"id": 1, "span": [10, 15], "entity_id": "Unknown", "name": None, "parent": None,
         "children": [], "optional": True, "type": "PER"},
        {"id": 2, "span": [18, 24], "entity_id": "Q90", "name": "Paris", "parent": None,
         "children": [], "optional": False, "type": "LOC"},
    ],
}

HOTPOT_ITEM = {
    "_id": "5a8b", "type": "bridge", "level": "hard",
    "question": "Which city hosts the tower designed by Eiffel's company?",
    "answer": "Paris",
    "context": [["Eiffel Tower", ["The Eiffel Tower is in Paris.", " It opened in 1889."]],
                ["Gustave Eiffel", ["Gustave Eiffel was an engineer."]]],
    "supporting_facts": [["Eiffel Tower", 0], ["Gustave Eiffel", 0], ["Eiffel Tower", 1]],
}

HOTPOT_COLUMNAR = {
    "id": "5a8c", "type": "comparison", "question": "Are both engineers?", "answer": "yes",
    "context": {"title": ["A", "B"], "sentences": [["A is an engineer."], ["B is an engineer.", "B sings."]]},
    "supporting_facts": {"title": ["A", "B"], "sent_id": [0, 0]},
}

WIKI2_ITEM = {
    "_id": "8813f87c", "type": "compositional",
    "question": "Who is the mother of the director of film Polish-Russian War?",
    "answer": "Małgorzata Braunek", "answer_id": "Q274128",
    "context": [["Polish-Russian War (film)", ["Polish-Russian War is a 2009 film.", "It was directed by Xawery Żuławski."]]],
    "supporting_facts": [["Polish-Russian War (film)", 1]],
    "evidences": [["Polish-Russian War", "director", "Xawery Żuławski"], ["Xawery Żuławski", "mother", "Małgorzata Braunek"]],
}

POPQA_ITEM = {
    "question": "What is Henry Feilden's occupation?", "answers": ["politician", "political leader"],
    "ctxs": [{"id": "p1", "title": "Henry Feilden", "text": "Henry Feilden was a Conservative politician."},
             {"title": "Feilden", "text": "Feilden is a surname.", "score": 1.2}],
}


# --- entity linking -------------------------------------------------------------

def test_load_entity_linking_jsonl(tmp_path):
    path = write_lines(tmp_path / "kore50.jsonl", [EL_ITEM, {**EL_ITEM, "id": "8", "labels": []}])
    data = load_entity_linking(path)
    assert data.task == "entity-linking" and len(data) == 2 and data.errors == []
    ex = data[0]
    assert ex.id == "7" and ex.title == "KORE50 7"
    assert [label.surface for label in ex.labels] == ["Obama", "Jimmy", " Paris"]
    assert ex.labels[0].span == (0, 5) and ex.labels[0].type == "PER" and ex.labels[1].optional
    assert ex.gold_pairs() == [("Obama", "Q76"), ("Jimmy", "Unknown"), ("Paris", "Q90")]
    assert ex.raw == EL_ITEM


def test_el_example_scores_through_metrics(tmp_path):
    ex = load_entity_linking(write_lines(tmp_path / "el.jsonl", [EL_ITEM]))[0]
    output = "<MENTION>Obama</MENTION>[LK][_CONTINUE_] met Jimmy in <MENTION>Paris</MENTION>[LK][_CONTINUE_]."
    preds = parse_el_output(output, ["Q76", "Q90"])
    s = el_scores([ELDocument(gold=ex.gold_pairs(), predictions=preds)])
    assert (s.tp, s.fp, s.fn) == (2, 0, 0)


@pytest.mark.parametrize("label_patch, field, words", [
    ({"span": [20, 99]}, "labels[0].span", "not inside the text"),
    ({"span": [0]}, "labels[0].span", "expected [start, end]"),
    ({"span": ["0", 5]}, "labels[0].span[0]", "expected an integer"),
    ({"entity_id": None}, "labels[0].entity_id", "expected a string"),
])
def test_el_label_errors_name_line_and_field(tmp_path, label_patch, field, words):
    bad = {**EL_ITEM, "labels": [{**EL_ITEM["labels"][0], **label_patch}]}
    path = write_lines(tmp_path / "el.jsonl", [EL_ITEM, bad])
    with pytest.raises(DatasetFormatError) as info:
        load_entity_linking(path)
    err = info.value
    assert err.where == "line 2" and err.field == field and words in err.problem
    assert str(path) in str(err) and "line 2" in str(err) and field in str(err)


def test_el_missing_field_and_missing_span(tmp_path):
    no_text = {k: v for k, v in EL_ITEM.items() if k != "text"}
    with pytest.raises(DatasetFormatError, match=r"line 1: field 'text': missing"):
        load_entity_linking(write_lines(tmp_path / "a.jsonl", [no_text]))
    one_line_after_blank = tmp_path / "c.jsonl"
    one_line_after_blank.write_text("\n" + json.dumps(no_text) + "\n", encoding="utf-8")
    with pytest.raises(DatasetFormatError, match=r"line 2: field 'text': missing"):
        load_entity_linking(one_line_after_blank)
    no_span = {**EL_ITEM, "labels": [{"entity_id": "Q1"}]}
    with pytest.raises(DatasetFormatError, match=r"field 'labels\[0\]\.span': missing"):
        load_entity_linking(write_lines(tmp_path / "b.jsonl", [no_span]))


def test_skip_bad_returns_good_items_and_errors(tmp_path):
    path = tmp_path / "el.jsonl"
    path.write_text(json.dumps(EL_ITEM) + "\n\n{not json\n" + json.dumps([1]) + "\n"
                    + json.dumps({**EL_ITEM, "id": 9}) + "\n", encoding="utf-8")
    data = load_entity_linking(path, skip_bad=True)
    assert [ex.id for ex in data] == ["7", "9"]
    assert [i for i, _ in data.errors] == [1, 2]
    assert "line 3" in data.errors[0][1] and "invalid JSON" in data.errors[0][1]
    assert "line 4" in data.errors[1][1] and "expected a JSON object" in data.errors[1][1]
    with pytest.raises(DatasetFormatError, match="line 3: invalid JSON"):
        load_entity_linking(path)


# --- file layouts -----------------------------------------------------------------

def test_json_list_wrapped_list_and_single_object(tmp_path):
    as_list = load_dataset(write_json(tmp_path / "a.json", [HOTPOT_ITEM, WIKI2_ITEM]))
    wrapped = load_dataset(write_json(tmp_path / "b.json", {"version": 1, "data": [HOTPOT_ITEM]}))
    single = load_dataset(write_json(tmp_path / "c.json", HOTPOT_ITEM))
    assert [ex.id for ex in as_list] == ["5a8b", "8813f87c"]
    assert [ex.id for ex in wrapped] == [ex.id for ex in single] == ["5a8b"]


def test_file_level_errors(tmp_path):
    (tmp_path / "empty.json").write_text("  \n", encoding="utf-8")
    with pytest.raises(DatasetFormatError, match="file is empty"):
        load_dataset(tmp_path / "empty.json")
    with pytest.raises(DatasetFormatError, match="contains no items"):
        load_multi_hop(write_json(tmp_path / "none.json", []))
    (tmp_path / "broken.json").write_text('[\n  {"a": 1},\n  {"b": }\n]', encoding="utf-8")
    with pytest.raises(DatasetFormatError, match=r"broken\.json: line 3: invalid JSON"):
        load_dataset(tmp_path / "broken.json")
    with pytest.raises(DatasetFormatError, match="cannot tell the task"):
        load_dataset(write_lines(tmp_path / "odd.jsonl", [{"foo": 1}]))
    with pytest.raises(ValueError, match="unknown task"):
        load_dataset(write_lines(tmp_path / "x.jsonl", [EL_ITEM]), task="ner")
    with pytest.raises(DatasetFormatError, match=r"item 1: expected a JSON object"):
        load_multi_hop(write_json(tmp_path / "mixed.json", [HOTPOT_ITEM, "oops"]))


# --- multi-hop ------------------------------------------------------------------

def test_hotpot_original_layout(tmp_path):
    ex = load_multi_hop(write_json(tmp_path / "hotpot.json", [HOTPOT_ITEM]))[0]
    assert ex.id == "5a8b" and ex.type == "bridge" and ex.answer == "Paris" and ex.aliases == []
    assert ex.context[0] == ContextParagraph("Eiffel Tower", ["The Eiffel Tower is in Paris.", " It opened in 1889."])
    assert ex.supporting_facts == [("Eiffel Tower", 0), ("Gustave Eiffel", 0), ("Eiffel Tower", 1)]
    assert ex.supporting_titles == ["Eiffel Tower", "Gustave Eiffel"]
    assert ex.evidences == [] and ex.answer_id is None and ex.decomposition is None
    assert ex.answers == ["Paris"] and ex.raw["level"] == "hard"


def test_hotpot_columnar_layout(tmp_path):
    ex = load_dataset(write_lines(tmp_path / "hotpot.jsonl", [HOTPOT_COLUMNAR]))[0]
    assert ex.id == "5a8c"
    assert ex.context == [ContextParagraph("A", ["A is an engineer."]),
                          ContextParagraph("B", ["B is an engineer.", "B sings."])]
    assert ex.supporting_facts == [("A", 0), ("B", 0)]


@pytest.mark.parametrize("patch, field", [
    ({"context": {"title": ["A", "B"], "sentences": [["x"]]}}, "context"),
    ({"context": {"title": ["A"]}}, "context.sentences"),
    ({"context": [["A", "not a list"]]}, "context[0][1]"),
    ({"context": [["A"]]}, "context[0]"),
    ({"supporting_facts": {"title": ["A"], "sent_id": ["0"]}}, "supporting_facts.sent_id[0]"),
    ({"supporting_facts": [["A", 0, 1]]}, "supporting_facts[0]"),
    ({"question": None}, "question"),
    ({"decomposition": ["not a dict"]}, "decomposition[0]"),
])
def test_multi_hop_malformed(tmp_path, patch, field):
    path = write_json(tmp_path / "bad.json", [HOTPOT_ITEM, {**HOTPOT_COLUMNAR, **patch}])
    with pytest.raises(DatasetFormatError) as info:
        load_multi_hop(path)
    assert info.value.where == "item 1" and info.value.field == field


def test_multi_hop_missing_id_and_answer(tmp_path):
    no_id = {k: v for k, v in HOTPOT_ITEM.items() if k != "_id"}
    loaded = load_multi_hop(write_json(tmp_path / "a.json", [HOTPOT_ITEM, no_id]))
    assert [ex.id for ex in loaded] == ["5a8b", "1"] and [ex.id_derived for ex in loaded] == [False, True]
    assert loaded.positions == [0, 1] and len(loaded.warnings) == 1
    assert "1 of 2 items have no id" in loaded.warnings[0] and "position" in loaded.warnings[0]
    no_answer = {k: v for k, v in HOTPOT_ITEM.items() if k != "answer"}
    with pytest.raises(DatasetFormatError, match=r"field 'answer': missing"):
        load_multi_hop(write_json(tmp_path / "b.json", [no_answer]))


def test_hub_layout_without_id_takes_its_position_with_a_warning(tmp_path):
    hub = {k: v for k, v in HOTPOT_COLUMNAR.items() if k != "id"}
    loaded = load_dataset(write_lines(tmp_path / "hub.jsonl", [hub, hub]), skip_bad=True)
    assert [ex.id for ex in loaded] == ["0", "1"] and loaded.errors == []
    assert loaded.warnings == ["2 of 2 items have no id (\"_id\" or \"id\"); each takes its 0-based position in "
                               "the file as its id (the first: '0'), stable as long as the file is not reordered"]
    assert load_multi_hop(write_json(tmp_path / "ok.json", [HOTPOT_ITEM])).warnings == []


def test_gold_layouts_hotpot_2wiki_and_el(tmp_path):
    from onegen.datasets import multi_hop_gold

    hub = {k: v for k, v in HOTPOT_COLUMNAR.items() if k != "id"}
    hotpot = multi_hop_gold(load_dataset(write_lines(tmp_path / "hub.jsonl", [hub]), task="multi-hop").examples)
    assert hotpot.name == "HotpotQA" and not hotpot.jsonl and hotpot.aliases is None
    (item,) = hotpot.items
    assert item["_id"] == "0" and item["context"] == [["A", ["A is an engineer."]], ["B", ["B is an engineer.", "B sings."]]]
    assert item["supporting_facts"] == [["A", 0], ["B", 0]] and "answer_id" not in item
    aliases = write_lines(tmp_path / "id_aliases.json", [{"Q_id": "Q274128", "aliases": ["Malgorzata Braunek"],
                                                          "demonyms": ["Braunekian"]}])
    wiki = multi_hop_gold(load_dataset(write_json(tmp_path / "dev.json", [WIKI2_ITEM]), aliases_path=aliases).examples)
    assert wiki.name == "2WikiMultihopQA" and wiki.items[0]["answer_id"] == "Q274128"
    assert wiki.aliases == [{"Q_id": "Q274128", "aliases": ["Malgorzata Braunek", "Braunekian"], "demonyms": []}]
    el = load_entity_linking(write_lines(tmp_path / "el.jsonl", [EL_ITEM]))
    assert get_task("entity-linking").gold_layout(el.examples).items == [EL_ITEM]


def test_2wiki_with_aliases_file(tmp_path):
    aliases = write_lines(tmp_path / "id_aliases.json", [
        {"Q_id": "Q274128", "aliases": ["Malgorzata Braunek", "Małgorzata Braunek"], "demonyms": []},
        {"Q_id": "Q142", "aliases": ["French Republic"], "demonyms": ["French"]},
    ])
    assert load_aliases(aliases)["Q142"] == ["French Republic", "French"]
    data = load_dataset(write_json(tmp_path / "dev.json", [WIKI2_ITEM]), aliases_path=aliases)
    ex = data[0]
    assert ex.answer_id == "Q274128" and ex.type == "compositional"
    assert ex.aliases == ["Malgorzata Braunek"]  # the answer itself is not repeated
    assert ex.evidences[1] == ["Xawery Żuławski", "mother", "Małgorzata Braunek"]
    # ASCII spelling matches only through the alias
    assert qa_scores("Malgorzata Braunek", [ex.answer])["em"] == 0.0
    assert qa_scores("Malgorzata Braunek", ex.answers)["em"] == 1.0


def test_aliases_file_errors(tmp_path):
    bad = write_lines(tmp_path / "id_aliases.json", [{"Q_id": "Q1", "aliases": []}, {"aliases": ["x"]}])
    with pytest.raises(DatasetFormatError, match=r"line 2: field 'Q_id': missing"):
        load_aliases(bad)
    with pytest.raises(ValueError, match="multi-hop"):
        load_dataset(write_lines(tmp_path / "el.jsonl", [EL_ITEM]), aliases_path=bad)


def test_decomposition_is_kept(tmp_path):
    item = {**HOTPOT_ITEM, "question_decomposition": [{"question": "Who designed it?", "answer": "Eiffel"}]}
    ex = load_multi_hop(write_json(tmp_path / "d.json", [item]))[0]
    assert ex.decomposition == [{"question": "Who designed it?", "answer": "Eiffel"}]


# --- single-hop -------------------------------------------------------------------

def test_single_hop_popqa_jsonl(tmp_path):
    data = load_dataset(write_lines(tmp_path / "popqa.jsonl", [POPQA_ITEM, {**POPQA_ITEM, "id": 5, "gold_id": "p1"}]))
    assert data.task == "single-hop"
    ex = data[0]
    assert ex.id == "0" and ex.answers == ["politician", "political leader"] and ex.gold_id is None
    assert ex.ctxs == [Passage("p1", "Henry Feilden", "Henry Feilden was a Conservative politician."),
                       Passage("0#1", "Feilden", "Feilden is a surname.")]
    assert data[1].id == "5" and data[1].gold_id == "p1"


def test_single_hop_instruction_and_string_answer(tmp_path):
    item = {"instruction": "Name the capital of France.", "answer": "Paris"}
    ex = load_single_hop(write_json(tmp_path / "arc.json", [item]))[0]
    assert ex.question == "Name the capital of France." and ex.answers == ["Paris"] and ex.ctxs == []


@pytest.mark.parametrize("item, field", [
    ({"question": "q"}, "answers or answer"),
    ({"answers": ["a"], "ctxs": []}, "question or instruction"),
    ({"question": "q", "answers": []}, "answers"),
    ({"question": "q", "answers": ["a"], "ctxs": [{"title": "t"}]}, "ctxs[0].text"),
    ({"question": "q", "answers": [None]}, "answers[0]"),
])
def test_single_hop_malformed(tmp_path, item, field):
    with pytest.raises(DatasetFormatError) as info:
        load_single_hop(write_lines(tmp_path / "s.jsonl", [item]))
    assert info.value.field == field and info.value.where == "line 1"


def test_detect_task():
    assert detect_task(EL_ITEM) == "entity-linking"
    assert detect_task(HOTPOT_ITEM) == "multi-hop"
    assert detect_task(POPQA_ITEM) == "single-hop"
    assert detect_task({"title": "x"}) is None


def test_explicit_task_names(tmp_path):
    path = write_lines(tmp_path / "el.jsonl", [EL_ITEM])
    assert load_dataset(path, task="entity_linking").task == "entity-linking"
    with pytest.raises(DatasetFormatError, match="field 'question or instruction'"):
        load_dataset(path, task="single-hop")


# --- result lines -----------------------------------------------------------------

def test_el_result_line_round_trips_through_the_scorer(tmp_path):
    output = ("<MENTION>Obama</MENTION>[LK][_CONTINUE_] met <MENTION>Jimmy</MENTION>[LK][_CONTINUE_] in"
              "<MENTION> Paris</MENTION>[LK][_CONTINUE_].</s>")
    line = el_result_line(EL_ITEM, output, ["Q76", "Q5", "Q90"], trace={"steps": 3})
    assert line["output_qid"] == ["Q76", "Q5", "Q90"] and line["trace"] == {"steps": 3}
    assert {k: line[k] for k in EL_ITEM} == EL_ITEM and "output" not in EL_ITEM
    path = tmp_path / "result.jsonl"
    assert write_jsonl(path, [line]) == 1
    reread = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    s = el_scores_from_result_lines(reread)
    assert (s.tp, s.fp, s.fn, s.n_pred_ignored) == (2, 0, 0, 1)
    with pytest.raises(TypeError):
        el_result_line(EL_ITEM, output, "Q76")


def test_result_line_does_not_alias_the_item():
    line = el_result_line(EL_ITEM, "", [])
    line["labels"].append({"span": [0, 1]})
    assert len(EL_ITEM["labels"]) == 3
    assert "trace" not in line


def test_qa_result_line_keeps_prompt_first():
    prompt = ("... Output the final answer wrapped by <FINAL-ANSWER></FINAL-ANSWER>. "
              f"Here is a question: {HOTPOT_ITEM['question']}")
    generated = "First, who designed it?[Question Representation]... <FINAL-ANSWER>Paris</FINAL-ANSWER>"
    line = qa_result_line(HOTPOT_ITEM, prompt, generated, trace={"retrievals": 1})
    assert line["input"] == prompt and line["output"] == prompt + generated
    assert line["trace"] == {"retrievals": 1} and line["_id"] == "5a8b"
    assert qa_result_line(HOTPOT_ITEM, prompt, prompt + generated)["output"] == prompt + generated
    assert final_answer_from_result_line(line) == "Paris"
    # nothing generated: the prompt's empty pair must not count as an answer
    assert final_answer_from_result_line(qa_result_line(HOTPOT_ITEM, prompt, "I am not sure")) is None


def test_extract_final_answer():
    assert extract_final_answer("x <FINAL-ANSWER> Paris </FINAL-ANSWER>") == "Paris"
    assert extract_final_answer("<FINAL-ANSWER>a</FINAL-ANSWER> <FINAL-ANSWER>b\nc</FINAL-ANSWER>") == "b\nc"
    assert extract_final_answer("<FINAL-ANSWER>a</FINAL-ANSWER> <FINAL-ANSWER>unclosed") == "a"
    assert extract_final_answer("<FINAL-ANSWER>unclosed") is None
    assert extract_final_answer("who made <FINAL-ANSWER>X?<p>X was made by Y.</p> Y. <FINAL-ANSWER>Y</FINAL-ANSWER>") == "Y"
    assert extract_final_answer("") is None
