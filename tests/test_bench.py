"""The benchmark dispatcher, the shared docs/benchmarks.md sections, and a tiny engine benchmark run."""
from __future__ import annotations

import json

import pytest

from onegen.__main__ import main as cli
from benchmarks import BENCHMARKS
from benchmarks.report import TITLE, replace_section, section, write_section

MACHINE = {"cpus": 2, "cpu": "Test CPU", "python": "3.11", "torch": "2.x", "threads": 1, "device": "cpu",
           "os": "Linux"}


def test_replace_section_keeps_the_others():
    a = section("alpha", "A1", command="python -m onegen bench alpha", machine=MACHINE)
    b = section("beta", "B1", command="python -m onegen bench beta", machine=MACHINE)
    doc = replace_section("", "alpha", a)
    assert doc.startswith(TITLE) and doc.endswith(a)
    doc = replace_section(doc, "beta", b)
    hand_written = "\nA note someone wrote by hand.\n"
    doc += hand_written
    a2 = section("alpha", "A2 | new", command="python -m onegen bench alpha", machine=MACHINE)
    new = replace_section(doc, "alpha", a2)
    assert "A1" not in new and "A2 | new" in new
    assert b in new and hand_written in new
    assert new.index("bench:alpha") < new.index("bench:beta")  # replaced in place, not moved
    assert new.count("<!-- bench:alpha -->") == 1 and new.count("<!-- /bench:alpha -->") == 1
    with pytest.raises(ValueError, match="benchmark name"):
        replace_section(doc, "bad name -->", a)


def test_a_section_says_when_where_and_how():
    s = section("engine", "| table |", command="python -m onegen bench engine --write", machine=MACHINE,
                title="Engine", when=0)
    assert s.startswith("<!-- bench:engine -->\n## Engine\n")
    assert "- Date: 1970-01-01 00:00 UTC" in s
    assert "- Machine: 2 CPUs (Test CPU), torch 2.x, 1 torch threads, device cpu" in s
    assert "- Reproduce: `python -m onegen bench engine --write`" in s
    assert s.rstrip().endswith("<!-- /bench:engine -->")


def test_steal_is_read_from_proc_stat_and_reported(tmp_path):
    from benchmarks.report import cpu_ticks, machine_line, steal_percent

    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  600 0 100 200 0 0 0 100 50 0\ncpu0 300 0 50 100 0 0 0 50 25 0\n")
    before = cpu_ticks(stat)
    assert before == (100, 1000)  # guest time is inside user: not counted twice
    stat.write_text("cpu  900 0 150 300 0 0 0 150 80 0\n")
    assert steal_percent(before, cpu_ticks(stat)) == 10.0  # 50 of 500 new ticks
    assert steal_percent(before, before) is None and steal_percent(None) is None
    stat.write_text("intr 1 2 3\n")
    assert cpu_ticks(stat) is None and cpu_ticks(tmp_path / "absent") is None
    assert "12.5% of CPU time stolen by the hypervisor during the run" in machine_line({**MACHINE, "steal_percent": 12.5})
    assert "stolen" not in machine_line(MACHINE)


def test_write_section_updates_the_file_in_place(tmp_path):
    path = tmp_path / "docs" / "benchmarks.md"
    write_section("one", "first", command="c1", machine=MACHINE, path=path)
    write_section("two", "second", command="c2", machine=MACHINE, path=path)
    write_section("one", "third", command="c1", machine=MACHINE, path=path)
    text = path.read_text()
    assert "first" not in text and "second" in text and "third" in text
    assert text.index("bench:one") < text.index("bench:two")
    assert sorted(p.name for p in path.parent.iterdir()) == ["benchmarks.md"]  # no temp or lock files left


def test_every_registered_benchmark_has_the_interface():
    import importlib

    for name, module_name in BENCHMARKS.items():
        m = importlib.import_module(module_name)
        assert isinstance(m.HELP, str) and callable(m.add_arguments) and callable(m.main), name


def test_model_sizes_match_their_names():
    from benchmarks.models import SIZES

    def params(s):  # tied embeddings, Llama blocks (attention, MLP, two norms) and the final norm
        block = 4 * s.hidden * s.hidden + 3 * s.hidden * s.intermediate + 2 * s.hidden
        return s.vocab * s.hidden + s.layers * block + s.hidden

    assert 5.0e6 < params(SIZES["5M"]) < 5.5e6
    assert 33e6 < params(SIZES["33M"]) < 34e6


@pytest.fixture
def restore_threads():
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_engine_benchmark_smoke(tmp_path, capsys, restore_threads):
    """A tiny run: both sides make the same ids (the engine's greedy loop equals `generate`)."""
    out_file = tmp_path / "benchmarks.md"
    rc = cli(["bench", "engine", "--json", "--sizes", "tiny", "--new-tokens", "6", "--repeats", "1",
              "--write", str(out_file)])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    (r,) = data["results"]
    assert r["size"] == "tiny" and r["vocab"] == 1024
    assert r["identical"] is True and r["new_tokens"] == 6
    assert r["ratio"] > 0 and r["wall_ratio"] > 0
    assert len(r["engine_cpu_s"]) == len(r["generate_cpu_s"]) == len(r["engine_wall_s"]) == 1
    assert data["machine"]["threads"] == 1
    text = out_file.read_text()
    assert "<!-- bench:engine -->" in text and "| random Llama tiny |" in text


def test_engine_benchmark_refuses_unknown_size(capsys):
    assert cli(["bench", "engine", "--sizes", "7B"]) == 2
    assert "unknown model size '7B'" in capsys.readouterr().err
