"""The comparison check (onegen/comparison_check.py): a chain's comparison recomputed from the values
it wrote, mapped back to the question's option; anything it cannot follow is left as written."""
from __future__ import annotations

import pytest

from onegen.comparison_check import check_comparison, option_of, recompute
from onegen.render_text import result_block
from onegen.tasks import get_task
from onegen.trace import Hop, Result, TokenRecord, Trace

CITY_Q = "Which city has more inhabitants, Lelremmont or Canbamica?"
CITY = ["Lelremmont has a population of 289,000.", "Canbamica has a population of 2,043,100."]
FILM_Q = "Which film's director was born more recently, The Empty Benoron or Kren Sea?"
FILM = ["The Empty Benoron was directed by Clegrolora Londmar.", "Clegrolora Londmar was born in 1959.",
        "Kren Sea was directed by Grisola Grolane.", "Grisola Grolane was born in 1975."]


def test_a_wrong_comparison_is_recomputed_and_mapped_to_its_option():
    said = "289,000 is more than 2,043,100, so the larger one is 289,000 and the answer is "
    option, statement = recompute(" ".join(CITY) + " " + said, "Lelremmont", CITY, CITY_Q)
    assert option == "Canbamica" and statement.startswith("289,000 is more than 2,043,100")


def test_a_right_comparison_that_names_the_other_option_is_followed_through_the_chain():
    said = "1959 is earlier than 1975, so the later one is 1975 and the answer is "
    assert option_of("1975", FILM, FILM_Q) == "Kren Sea"
    assert recompute(said, "The Empty Benoron", FILM, FILM_Q)[0] == "Kren Sea"


def test_a_right_answer_an_unfollowable_chain_and_off_leave_the_answer_alone():
    said = "289,000 is less than 2,043,100, so the larger one is 2,043,100 and the answer is "
    assert recompute(said, "Canbamica", CITY, CITY_Q) is None
    assert recompute(said, "Lelremmont", ["Lelremmont is a city.", "It is large."], CITY_Q) is None  # no values
    assert recompute("no statement here", "Lelremmont", CITY, CITY_Q) is None
    assert check_comparison(said, "Lelremmont", CITY, CITY_Q, "off") is None
    with pytest.raises(ValueError, match="comparison check must be one of"):
        check_comparison(said, "Lelremmont", CITY, CITY_Q, "snap")


def test_an_option_the_chain_misspelt_is_named_as_the_question_spells_it():
    chain = ["Stunica has a population of 496,600.", "Piltora has a population of 1,758,100."]
    said = "496,600 is more than 1,758,100, so the larger one is 496,600 and the answer is "
    assert recompute(said, "Stunica", chain, "Which city has more inhabitants, Stunica or Priltora?")[0] == "Priltora"


def test_the_run_keeps_the_models_answer_and_says_why():
    said = "289,000 is more than 2,043,100, so the larger one is 289,000 and the answer is "
    text = " ".join(CITY) + " " + said + "<FINAL-ANSWER>Lelremmont</FINAL-ANSWER>"
    trace = Trace(task="multi-hop", mode="onegen", model={}, input=CITY_Q, prompt_text="p", prompt_ids=[1],
                  tokens=[TokenRecord(id=1, text=text, kind="generated", position=10)],
                  settings={"comparison_check": "recompute", "answer_alignment": "snap"}, stop_reason="final_answer",
                  result=Result(answer="Lelremmont", final_answer_found=True,
                                hops=[Hop("q1", 0, "Lelremmont", CITY[0]), Hop("q2", 1, "Canbamica", CITY[1])]))
    get_task("multi-hop").check_result(trace, CITY_Q)
    assert (trace.result.answer, trace.result.model_answer) == ("Canbamica", "Lelremmont")
    assert "recomputed from the chain's values" in trace.result.answer_check
    assert "the model answered 'Lelremmont'" in result_block(trace)
    assert Trace.from_json(trace.to_json()).result.answer_check == trace.result.answer_check
