"""Fixtures for the app tests: one tiny random model that speaks all three protocols, a tiny index
per task (with a hostile title in two of them), example files, and an in-process server.

Random weights almost never write retrieval tokens, so `serve(config, chooser_for=scripted_choices)`
gives the app a token chooser per task that follows a fixed text (SCRIPTS[task]) for every engine it
builds: runs, dataset runs and comparisons. Every forward pass stays real; only the choice of the
next token is scripted. The server runs in this process (`serve` starts it in a background thread).
"""
from __future__ import annotations

import contextlib
import json
import socket
from dataclasses import dataclass
from pathlib import Path

from onegen.documents import Document  # noqa: E402
from onegen.protocols import LK, QR, SPECS  # noqa: E402
from tiny import PARAGRAPHS  # noqa: E402,F401 - the app tests' multi-hop index

HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'

ENTITIES = [
    Document("Q90", "Paris", "Paris is an instance of city. It is described as \"capital of France\".",
             extra={"url": "https://en.wikipedia.org/wiki/Paris"}),
    Document("Q220", "Rome", "Rome is an instance of city. It is described as \"capital of Italy\"."),
    Document("Q1", "Ivo Brandel", "Ivo Brandel is an instance of human. It is described as \"a director\"."),
    Document("Q666", HOSTILE, "A hostile entity whose title is markup."),
]
PASSAGES = [
    Document("w1", "Corvale", "Corvale is a city in Velor. It has 120000 inhabitants."),
    Document("w2", "Velor", "Velor is a country. Its capital is Corvale."),
    Document("w3", HOSTILE, "Ivo Brandel is a director born in Corvale. " + HOSTILE),
]
EXAMPLES = {
    "entity-linking": "Paris is big and Rome too.",
    "multi-hop": "Where was the director of Film A born?",
    "single-hop": "How many inhabitants does Corvale have?",
}
# What the scripted "model" writes per task (special tokens by their strings).
SCRIPTS = {
    "entity-linking": ["<MENTION>Paris</MENTION>", LK, None, " is big and <MENTION>Rome</MENTION>", LK, None, " too."],
    "multi-hop": ["First, who directed Film A?", QR, " Ivo Brandel. Second, where was Ivo Brandel born?", QR,
                  " Corvale. <FINAL-ANSWER>Corvale</FINAL-ANSWER>"],
    "single-hop": ["[Relevant]", "Corvale has 120000 inhabitants.", "[Fully supported]", "[Utility:5]"],
}


@dataclass
class World:
    model: Path
    indexes: dict[str, Path]
    examples: Path


def build_world(root: Path) -> World:
    """Tiny model (all protocols' tokens), one index per task and example files under `root`."""
    from onegen.encode import build_index
    from tiny import build_bpe_tokenizer, build_tiny_model, load_tiny  # noqa: F401

    tokens = list(dict.fromkeys(t for s in SPECS.values() for t in s.token_strings))
    tok_dir = root / "tok-all"
    if not (tok_dir / "tokenizer.json").exists():
        tok_dir.mkdir(parents=True, exist_ok=True)
        build_bpe_tokenizer(tok_dir, tokens)
    model = build_tiny_model("all", root, tokenizer_dir=tok_dir)
    lm = _load(model)
    indexes = {}
    for task, docs in (("entity-linking", ENTITIES), ("multi-hop", PARAGRAPHS), ("single-hop", PASSAGES)):
        indexes[task] = root / f"index-{task}"
        if not (indexes[task] / "manifest.json").exists():
            build_index(lm, task, docs).save(indexes[task])
    examples = root / "examples"
    examples.mkdir(exist_ok=True)
    for task, text in EXAMPLES.items():
        (examples / f"{task}.jsonl").write_text(json.dumps({"text": text, "note": "test"}) + "\n")
    return World(model=model, indexes=indexes, examples=examples)


def _load(folder: Path):
    from tiny import _loaded

    return _loaded(str(folder))


def _script_ids(lm, task: str) -> list[int]:
    ptok = lm.ptok(task)
    vocab = lm.tokenizer.get_vocab()
    ids: list[int] = []
    for piece in SCRIPTS[task]:
        if piece is None:  # the step whose token the protocol forces ([_CONTINUE_]); any id will do
            ids.append(lm.tokenizer.eos_token_id)
        elif piece in vocab and piece.startswith("["):
            ids.append(vocab[piece])
        else:
            ids.extend(ptok.encode_data(piece))
    return ids


def scripted_choices(lm, task: str):
    """The app's chooser factory in tests: every run of `task` follows SCRIPTS[task], then EOS."""
    from onegen.engine import ScriptedChooser

    return ScriptedChooser(_script_ids(lm, task), lm.tokenizer.eos_token_id)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(config, chooser_for=None):
    """Build the app for `config` (its runs' tokens chosen by `chooser_for`, e.g. `scripted_choices`)
    and serve it on a free localhost port in a background thread."""
    import app as app_module
    from onegen.app_state import AppState

    demo = app_module.build_demo(AppState(config, chooser_for=chooser_for))
    port = free_port()
    app_module.launch(demo, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", demo
    finally:
        demo.close()


def config_for(world: World, **kw):
    from onegen.app_state import AppConfig

    return AppConfig(model=str(world.model), indexes={t: str(p) for t, p in world.indexes.items()},
                     examples_dir=world.examples, device="cpu", **kw)
