"""Real-looking data through `onegen evaluate`: a generated HotpotQA-style file (non-Latin titles,
answers and sentences, trailing U+FEFF) on a tiny random checkpoint whose choices are scripted to
write Cyrillic, emoji and Japanese split across tokens. The result file must hold no U+FFFD and no
token of another protocol; `python -m onegen bench real-data` runs the same check on 100 questions
with the embedded model."""
from __future__ import annotations

import json

import pytest

from benchmarks.real_data import BOM, foreign_token_strings, hotpot_style_items, scan_result_lines, write_items
from onegen.__main__ import main as cli
from onegen.protocols import LK, QR, SINGLE_HOP
from scripted import script, text_ids, tid
from tiny import build_tiny_model, load_tiny

pytestmark = pytest.mark.usefixtures("one_thread")

ANSWER = "東京"


def test_generated_file_has_the_characters_it_promises():
    gen = hotpot_style_items(40, seed=3)
    text = json.dumps(gen.items, ensure_ascii=False)
    for sample in ("ü", "Ж", "京", "ل", "🎬"):
        assert sample in text
    assert 0 < gen.with_bom == text.count(BOM)
    for item in gen.items:
        titles = {t for t, _ in item["context"]}
        assert all(t in titles for t, _ in item["supporting_facts"])  # gold titles stay exact
        assert len(item["context"]) == 8 and item["type"] in ("bridge", "comparison")


def test_scan_finds_replacement_characters_and_foreign_tokens():
    line = {"onegen": {"key": "q1"}, "output": "prompt Berl\ufffdn",
            "trace": {"tokens": [{"position": 3, "kind": "generated", "text": LK},
                                 {"position": 4, "kind": "inserted", "text": "[SE]"}],  # a document's own text
                      "result": {"answer": "x [Retrieval]", "hops": []}}}
    report = scan_result_lines([line], "multi-hop")
    assert (report.replacement_chars, report.foreign_tokens) == (1, 2) and not report.clean
    assert [(f.problem, f.where) for f in report.findings] == [
        ("U+FFFD", "output"), (f"foreign token {LK}", "token 3"), ("foreign token [Retrieval]", "answer")]
    assert QR not in foreign_token_strings("multi-hop") and "[Retrieval]" in SINGLE_HOP.token_strings


def test_a_few_real_looking_questions_leave_no_broken_character_or_foreign_token(tmp_path, monkeypatch, capsys):
    root = tmp_path / "models"
    lm = load_tiny("multi-hop", root)
    qr = tid(lm, QR)
    t = lambda s: text_ids(lm, "multi-hop", s)  # noqa: E731
    script(monkeypatch, lm, t("First, who directed the film?") + [qr]
           + t(" Алексей Смирнов 🎉 directed it. Second, where was Алексей Смирнов born?") + [qr]
           + t(f" {ANSWER}{BOM}. <FINAL-ANSWER>{ANSWER}</FINAL-ANSWER>"))
    gen = hotpot_style_items(4, seed=1, bom_rate=1.0)
    data = write_items(tmp_path / "dev.json", gen.items)
    out = tmp_path / "result.jsonl"
    rc = cli(["evaluate", "--task", "multi-hop", "--data", str(data), "--candidates", "context", "--out", str(out),
              "--model", str(build_tiny_model("multi-hop", root)), "--device", "cpu", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 4
    report = scan_result_lines(lines, "multi-hop")
    assert report.clean, report.findings
    for line in lines:
        generated = line["output"][len(line["input"]):]
        assert "Алексей Смирнов 🎉 directed it" in generated and f"<FINAL-ANSWER>{ANSWER}</FINAL-ANSWER>" in generated
        assert line["trace"]["result"]["answer"] == ANSWER
        # Paragraphs from the item's own context go in whole, non-Latin titles and all.
        for r in line["trace"]["retrievals"]:
            assert r["hits"][0]["title"] in r["inserted_text"] and "\ufffd" not in r["inserted_text"]
        # Each token's text (what the app's timeline shows) joins into the decoded output.
        assert "".join(t["text"] for t in line["trace"]["tokens"]) == line["trace"]["result"]["output_text"]
