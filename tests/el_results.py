"""A hand-made entity-linking result file, written the way `onegen evaluate` writes one, with
hostile text (quotes, markup, non-Latin) in its text, titles and hits: for the export and error
browser tests."""
from __future__ import annotations

import json
from pathlib import Path

from onegen.trace import Hit, LinkedEntity, Result, Retrieval, Trace

EL_TEXT = 'Él dijo "<b>Zürich</b>" & 東京 met O\'Brien, the mayor of new york city.'


def el_result_file(tmp_path: Path) -> Path:
    """Two result lines written the way `onegen evaluate` writes them, with hostile text."""
    def at(s):
        return EL_TEXT.index(s), EL_TEXT.index(s) + len(s)

    raw = {"id": "d<1>", "title": 'T "1"', "text": EL_TEXT, "labels": [
        {"id": "m0", "span": list(at("Zürich")), "entity_id": "E-zurich", "name": "Zürich", "type": "city"},
        {"id": "m1", "span": list(at("東京")), "entity_id": "E-tokyo", "name": "東京 Metropolis", "type": "city"},
        {"id": "m2", "span": list(at("O'Brien")), "entity_id": "Unknown", "name": None, "type": None},
        {"id": "m3", "span": list(at("new york city")), "entity_id": "E-nyc", "name": "New York City", "type": "city"}]}
    hits = lambda *ids: [Hit(rank=i, id=x, title=f"<{x}>", score=1 - i / 10, text=f"text of {x}")  # noqa: E731
                         for i, x in enumerate(ids)]
    retrievals = [Retrieval(0, 20, "[LK]", "Zürich", "hidden-state", hits("E-zurich", "E-x"), 0),
                  Retrieval(1, 30, "[LK]", "東京", "hidden-state", hits("E-kyoto", "E-tokyo"), 0),
                  Retrieval(2, 40, "[LK]", "O'Brien", "hidden-state", hits("E-obrien"), 0),
                  Retrieval(3, 50, "[LK]", "Zurik", "hidden-state", hits("E-zurich"), 0),
                  Retrieval(4, 60, "[LK]", "york", "hidden-state", hits("E-york"), 0)]
    entities = [LinkedEntity("Zürich", *at("Zürich"), "E-zurich", "<E-zurich>", 1.0, 0),
                LinkedEntity("東京", *at("東京"), "E-kyoto", "<E-kyoto>", 1.0, 1),
                LinkedEntity("O'Brien", *at("O'Brien"), "E-obrien", "<E-obrien>", 1.0, 2),
                LinkedEntity("Zurik", None, None, "E-zurich", "<E-zurich>", 1.0, 3),
                LinkedEntity("york", *at("york"), "E-york", "<E-york>", 1.0, 4)]
    trace = Trace(task="entity-linking", mode="onegen", model={"name": "m"}, input=EL_TEXT, prompt_text="p",
                  prompt_ids=[1], retrievals=retrievals, result=Result(output_text="o", entities=entities),
                  stop_reason="eos", settings={"top_k": 2})
    run = {"task": "entity-linking", "mode": "onegen", "model": "m", "candidates": "index", "top_k": 2,
           "data": "data/kore-like <set>.jsonl"}
    lines = [{**raw, "output": "o", "output_qid": [], "trace": trace.to_dict(),
              "onegen": {"key": "d<1>", "run": run, "seconds": 1.5, "position": 0}},
             {"id": "d2", "title": "", "text": "Nothing here.", "labels": [], "output": "", "output_qid": [],
              "trace": None, "error": "RuntimeError: boom", "onegen": {"key": "d2", "run": run, "seconds": 0.5,
                                                                      "position": 1}}]
    path = tmp_path / "el-result.jsonl"
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    return path
