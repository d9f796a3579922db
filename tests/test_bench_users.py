"""`python -m onegen bench users`: the ratios it reports (the server run itself is the benchmark)."""
from __future__ import annotations

from benchmarks import BENCHMARKS
from benchmarks.users import UsersResult, markdown


def test_each_users_time_is_set_against_their_own_question_alone():
    r = UsersResult("multi-hop", 2, 3, alone_s=[[1.0, 2.0, 3.0], [4.0, 4.0, 5.0]],
                    together_s=[[2.0, 3.0, 5.0], [4.0, 6.0, 8.0]], own_traces=True)
    assert r.ratios() == [1.0, 1.5, 2.5, 1.0, 1.5, 2.0]
    s = r.summary()
    assert s["median_ratio"] == 1.5 and s["max_ratio"] == 2.5 and s["goal_max_2x"] is False
    assert s["alone_median_s"] == 3.5 and s["together_median_s"] == 4.5
    table = markdown(r, steal=1.5)
    assert "| 2 | 3.5 s | 4.5 s | 1.5x | 2.5x | missed | yes |" in table and "steal 1.5%" in table
    assert BENCHMARKS["users"] == "benchmarks.users"


def test_a_user_handed_another_users_trace_is_reported():
    r = UsersResult("multi-hop", 1, 1, alone_s=[[1.0]], together_s=[[1.9]], own_traces=False)
    assert r.summary()["goal_max_2x"] is True
    assert "| NO |" in markdown(r, steal=None)
