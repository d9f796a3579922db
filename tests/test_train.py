"""The trainer on a micro model: losses fall, retrieval beats chance, checkpoints resume exactly,
and an exported model loads through the product's own loader."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from onegen.train.examples import IGNORE, load_corpus, multi_hop_sample, entity_linking_sample, single_hop_sample
from onegen.train.recipe import Recipe


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from onegen.world import export_world, generate_world

    out = tmp_path_factory.mktemp("world")
    export_world(generate_world(seed=3, n_entities=150, split="train", n_el=40, n_multihop=40, n_singlehop=40), out)
    return out


def micro_recipe(tmp: Path, **kw) -> Recipe:
    base = {"scratch": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 1024},
            "bpe_vocab": 400}
    r = Recipe(name="micro", base=base, per_step={"entity-linking": 2, "multi-hop": 2, "single-hop": 2},
               steps=40, lr=3e-3, token_lr=3e-3, warmup=2, lora=None, seed=0, checkpoint_every=5,
               max_query_tokens=2048, max_document_tokens=400, max_documents=12,
               out=str(tmp / "model"), run_dir=str(tmp / "run"))
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def test_losses_fall_and_retrieval_beats_chance(world, tmp_path, monkeypatch):
    from onegen.train.trainer import Trainer

    torch.set_num_threads(1)
    t = Trainer(micro_recipe(tmp_path), world, log=lambda *a: None)
    fixed = t.batch(0)
    monkeypatch.setattr(t, "batch", lambda step: fixed)  # one batch, learned: a fast, certain signal
    with torch.no_grad():
        _, lm0, _, nce0, r0, _ = t.forward_losses(*fixed)
    stats = t.train(progress=False)
    with torch.no_grad():
        _, lm1, _, nce1, r1, _ = t.forward_losses(*fixed)
    assert float(lm1) < 0.7 * float(lm0)
    assert float(nce1) < 0.7 * float(nce0)
    n_docs = len(fixed[1])
    assert r1 > max(r0, 2.0 / n_docs), (r0, r1, n_docs)
    lines = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert len(lines) == len(stats) == 40
    assert {"lm", "bpr", "infonce", "recall_at_1"} <= set(json.loads(lines[0]))


def test_resume_equals_uninterrupted(world, tmp_path):
    from onegen.train.trainer import Trainer

    torch.set_num_threads(1)
    a = Trainer(micro_recipe(tmp_path / "a", steps=6, checkpoint_every=3), world, log=lambda *x: None)
    a.train(progress=False)
    b = Trainer(micro_recipe(tmp_path / "b", steps=6, checkpoint_every=3), world, log=lambda *x: None)
    b.train(steps=3, progress=False)
    b2 = Trainer(micro_recipe(tmp_path / "b", steps=6, checkpoint_every=3), world, log=lambda *x: None)
    assert b2.step == 3
    b2.train(progress=False)
    for (n, p), (_, q) in zip(a.model.named_parameters(), b2.model.named_parameters()):
        assert torch.allclose(p, q, atol=1e-5), n


def test_label_masks_follow_the_protocol(world):
    import random

    from onegen.protocols import CONTINUE, LK, PARA_CLOSE, PARA_OPEN, QR
    from onegen.tokenization import ProtocolTokenizer
    from onegen.train.examples import load_task_items
    from tiny import tokenizer_folder
    from onegen.loading import load_tokenizer
    from onegen.protocols import get_spec

    corpus = load_corpus(world)
    rng = random.Random(0)
    for task, build in (("multi-hop", multi_hop_sample), ("entity-linking", entity_linking_sample),
                        ("single-hop", single_hop_sample)):
        tok = load_tokenizer(tokenizer_folder(task, world.parent / "toks"))
        ptok = ProtocolTokenizer(tok, list(get_spec(task).token_strings))
        item = load_task_items(world, task)[0]
        s = build(item, ptok, corpus, rng, 2)
        ids, labels = s.ids, s.labels
        assert ids[-1] == tok.eos_token_id and labels[-1] == tok.eos_token_id  # EOS after the answer
        prompt_len = len(ptok.encode_template(get_spec(task).prompt_template,
                                              input=item.get("text") or item["question"]).ids)
        assert all(l == IGNORE for l in labels[:prompt_len])  # user segment masked
        sid = ptok.special_ids
        for a in s.anchors:
            assert ids[a.position] == sid[get_spec(task).query_token]
            assert labels[a.position + 1] == IGNORE  # the token after a retrieval token is not learned
        if task == "entity-linking":
            assert all(ids[a.position + 1] == sid[CONTINUE] for a in s.anchors)
            assert all(labels[a.position] == sid[LK] for a in s.anchors)  # the model learns to emit [LK]
        else:
            opens = [i for i, t in enumerate(ids) if t == sid[PARA_OPEN]]
            closes = [i for i, t in enumerate(ids) if t == sid[PARA_CLOSE]]
            assert opens and len(opens) == len(closes)
            for o, c in zip(opens, closes):
                assert all(l == IGNORE for l in labels[o:c + 1])  # inserted paragraphs masked, inclusive
        if task == "multi-hop":
            assert all(labels[a.position] == sid[QR] for a in s.anchors)
            assert len(s.anchors) == len(item["decomposition"])


def test_export_loads_through_the_registry_loader(world, tmp_path):
    from onegen.engine import Engine, RunSettings
    from onegen.loading import load_model
    from onegen.train.export import export_embedded
    from onegen.train.trainer import Trainer

    t = Trainer(micro_recipe(tmp_path, steps=1), world, log=lambda *x: None)
    t.train(progress=False)
    out = export_embedded(t, tmp_path / "exported")
    lm = load_model(out, device="cpu")
    assert set(lm.tasks) == {"entity-linking", "multi-hop", "single-hop"}
    emb = t.model.get_input_embeddings().weight
    assert torch.allclose(lm.model.get_input_embeddings().weight[t.new_ids], emb[t.new_ids])
    from onegen.documents import Document

    docs = [Document(id=str(i), title=f"T{i}", text=f"text {i}") for i in range(3)]
    trace = Engine(lm).run_trace("single-hop", "Who?", candidates=docs, settings=RunSettings(max_new_tokens=3))
    assert len(trace.retrievals) == 1


def test_recipe_rejects_unknown_keys(tmp_path):
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"name": "x", "base": {}, "stepz": 3}))
    with pytest.raises(ValueError, match="unknown keys"):
        Recipe.load(p)


def _corpus_of(titles: dict[str, str]):
    from onegen.documents import Document
    from onegen.train.examples import Corpus

    return Corpus(docs={k: Document(id=k, title=t, text=t) for k, t in titles.items()})


def test_document_keys_keep_positives_and_share_negatives_across_tasks():
    from onegen.train.examples import Anchor, QuerySample
    from onegen.train.trainer import document_keys

    titles = {f"entity-linking|p{i}": f"Name {i}" for i in range(4)}
    titles.update({"entity-linking|same0": "Name 0", "entity-linking|other1": "Other"})
    titles.update({f"multi-hop|p{i}": f"Par {i}" for i in range(4)})
    titles.update({f"multi-hop|d{i}": f"Distractor {i}" for i in range(4)})
    titles.update({"single-hop|p0": "Passage", "single-hop|n0": "Neg 0", "single-hop|n1": "Neg 1"})
    corpus = _corpus_of(titles)
    el = QuerySample("entity-linking", [], [], [
        Anchor(0, ("entity-linking|p1", 0), ["entity-linking|other1"]),
        Anchor(1, ("entity-linking|p0", 0), ["entity-linking|same0"]),  # a namesake: first in its round
        Anchor(2, ("entity-linking|p2", 0), []), Anchor(3, ("entity-linking|p3", 0), [])])
    mh = QuerySample("multi-hop", [], [], [Anchor(i, (f"multi-hop|p{i}", 0), [f"multi-hop|d{i}", "multi-hop|d3"])
                                           for i in range(3)])
    sh = QuerySample("single-hop", [], [], [Anchor(0, ("single-hop|p0", 0), ["single-hop|n0", "single-hop|n1"])])
    samples = [el, mh, sh]
    positives = ["entity-linking|p1", "entity-linking|p0", "entity-linking|p2", "entity-linking|p3",
                 "multi-hop|p0", "multi-hop|p1", "multi-hop|p2", "single-hop|p0"]

    # A budget below the positives still keeps every positive, and nothing else.
    assert document_keys(samples, corpus, max_documents=5, hard_negatives=2) == positives
    # Two places: the namesake first, then the anchors' first negatives with the tasks interleaved,
    # so the single-hop question (whose only other candidate is a negative) gets one in round one.
    assert document_keys(samples, corpus, 10, 2)[8:] == ["entity-linking|same0", "entity-linking|other1"]
    keys = document_keys(samples, corpus, 12, 2)
    assert keys[8:] == ["entity-linking|same0", "entity-linking|other1", "multi-hop|d0", "single-hop|n0"]
    # A generous budget takes every negative once, round by round.
    keys = document_keys(samples, corpus, 100, 2)
    assert len(keys) == len(set(keys)) == len(positives) + 8
    assert keys[-1] == "single-hop|n1"
    assert document_keys(samples, corpus, 100, 0) == positives


def test_lr_schedules(tmp_path):
    from onegen.train.trainer import lr_factor

    const = micro_recipe(tmp_path, steps=100, warmup=10)
    cosine = micro_recipe(tmp_path, steps=100, warmup=10, schedule="cosine", min_lr_ratio=0.1)
    for r in (const, cosine):
        assert lr_factor(r, 0) == pytest.approx(0.1)  # warm-up is the same
        assert lr_factor(r, 9) == pytest.approx(1.0)
    assert {lr_factor(const, s) for s in range(9, 500)} == {1.0}
    values = [lr_factor(cosine, s) for s in range(9, 100)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # never rises after warm-up
    assert values[-1] == pytest.approx(0.1) and lr_factor(cosine, 54) == pytest.approx(0.55, abs=0.02)


@pytest.mark.parametrize("key,value", [("schedule", "linear"), ("bridge_roles", "omit"), ("comparison_order", "winner")])
def test_recipe_rejects_an_unknown_choice(tmp_path, key, value):
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"name": "x", "base": {}, key: value}))
    with pytest.raises(ValueError, match=f"{key} must be one of"):
        Recipe.load(p)


def test_question_order_conclusion_states_the_values_as_the_question_names_them(world):
    import random

    from onegen.loading import load_tokenizer
    from onegen.protocols import get_spec
    from onegen.tokenization import ProtocolTokenizer
    from onegen.train.examples import load_task_items, question_order_conclusion
    from tiny import tokenizer_folder

    items = load_task_items(world, "multi-hop")
    words = set()
    for item in items:
        new = question_order_conclusion(item)
        if item["type"] not in ("comparison", "bridge_comparison"):
            assert new is None
            continue
        hops = item["decomposition"]
        first, second = (hops[0], hops[1]) if len(hops) == 2 else (hops[1], hops[3])
        a, b = (int(h["answer"].replace(",", "")) for h in (first, second))
        word = {True: "more than" if "more than" in item["conclusion"] else "later than",
                False: "less than" if "more than" in item["conclusion"] else "earlier than"}[a > b]
        assert new == f"{first['answer']} is {word} {second['answer']}, so the answer is"
        words.add(word)
        assert first["answer"] in item["conclusion"] and second["answer"] in item["conclusion"]
        # naming the winner: the answer's own value, the option the world's answer_id points at
        winner = first if item["answer_id"] == hops[0]["paragraph_id"] else second
        named = question_order_conclusion(item, name_winner=True)
        assert named.startswith(new.removesuffix(", so the answer is") + ", so the ")
        assert named.endswith(f" one is {winner['answer']} and the answer is")
    assert {"earlier than", "later than"} <= words  # both directions occur, whatever the template asks

    corpus = load_corpus(world)
    tok = load_tokenizer(tokenizer_folder("multi-hop", world.parent / "toks"))
    ptok = ProtocolTokenizer(tok, list(get_spec("multi-hop").token_strings))
    item = next(x for x in items if x["type"] == "comparison" and question_order_conclusion(x) != x["conclusion"])
    for order, conclusion in (("answer", item["conclusion"]), ("question", question_order_conclusion(item)),
                              ("question-winner", question_order_conclusion(item, name_winner=True))):
        s = multi_hop_sample(item, ptok, corpus, random.Random(0), 2, comparison_order=order)
        generated = tok.decode([t for t, lab in zip(s.ids, s.labels) if lab != IGNORE])
        assert f"{conclusion} <FINAL-ANSWER>{item['answer']}</FINAL-ANSWER>" in generated


def test_without_added_role_drops_only_what_the_question_does_not_say():
    from onegen.train.examples import without_added_role

    hop = {"question": "When was the film director Zenen Prosnoltton born?", "title": "Zenen Prosnoltton (film director)"}
    assert without_added_role(hop, "Which film has the director who was born first, A or B?") == \
        "When was Zenen Prosnoltton born?"
    # The question names the role itself: the sub-question copies it, so it stays.
    assert without_added_role(hop, "When was the film director Zenen Prosnoltton born?") == hop["question"]
    film = {"question": "Who directed the 2011 film Raskoreth Mirror?", "title": "Raskoreth Mirror (2011 film)"}
    assert without_added_role(film, "Which film has the director who was born first, X or the 2011 film Raskoreth Mirror?") \
        == film["question"]
    plain = {"question": "When was Todora Rard born?", "title": "Todora Rard"}
    assert without_added_role(plain, "Which film came out first, X or Y?") == plain["question"]


def test_multi_hop_sample_drops_the_added_role_when_asked(world):
    import copy
    import random

    from onegen.loading import load_tokenizer
    from onegen.protocols import get_spec
    from onegen.tokenization import ProtocolTokenizer
    from onegen.train.examples import load_task_items
    from tiny import tokenizer_folder

    corpus = load_corpus(world)
    tok = load_tokenizer(tokenizer_folder("multi-hop", world.parent / "toks"))
    ptok = ProtocolTokenizer(tok, list(get_spec("multi-hop").token_strings))
    item = copy.deepcopy(next(x for x in load_task_items(world, "multi-hop") if len(x["decomposition"]) >= 2))
    hop = item["decomposition"][1]
    name = "Zenen Prosnoltton"
    hop["title"], hop["question"] = f"{name} (film director)", f"When was the film director {name} born?"
    texts = {}
    for roles in ("write", "drop"):
        s = multi_hop_sample(item, ptok, corpus, random.Random(0), 2, bridge_roles=roles)
        texts[roles] = tok.decode(s.ids)
    assert f"Second, when was the film director {name} born?" in texts["write"]
    assert f"Second, when was {name} born?" in texts["drop"] and f"the film director {name}" not in texts["drop"]


def test_with_maker_role_names_the_occupation_the_previous_hop_fixes(world):
    from onegen.train.examples import load_task_items, with_maker_role

    corpus = load_corpus(world)
    items = load_task_items(world, "multi-hop")
    changed = 0
    for item in items:
        hops = item["decomposition"]
        for prev, hop in zip(hops, hops[1:]):
            new = with_maker_role(hop, prev, corpus)
            prev_type = corpus.type_of[f"entity-linking|{prev['paragraph_id']}"]
            if prev_type in ("film", "work") and prev["answer"] in hop["question"]:
                subtype = corpus.subtype_of[hop["paragraph_id"]]
                assert f"the {subtype} {prev['answer']}" in new
                assert new.replace(f"the {subtype} ", "", 1) == hop["question"].replace(f"the {subtype} ", "", 1)
                changed += new != hop["question"]
            else:  # founders, spouses, cities: the relation does not fix an occupation
                assert new == hop["question"]
    assert changed > 0


def test_resume_refuses_a_changed_recipe(world, tmp_path):
    from onegen.train.trainer import Trainer

    torch.set_num_threads(1)
    Trainer(micro_recipe(tmp_path, steps=2, checkpoint_every=1), world, log=lambda *x: None).train(progress=False)
    # Longer, elsewhere, other threads: the same run. A constant schedule may grow.
    Trainer(micro_recipe(tmp_path, steps=4, threads=1, out=str(tmp_path / "elsewhere")), world, log=lambda *x: None)
    with pytest.raises(ValueError, match=r"different recipe \(hard_negatives, lr differ\)"):
        Trainer(micro_recipe(tmp_path, lr=1e-2, hard_negatives=0), world, log=lambda *x: None)
    with pytest.raises(ValueError, match=r"\(schedule, steps differ\)"):
        Trainer(micro_recipe(tmp_path, steps=4, schedule="cosine"), world, log=lambda *x: None)


def test_train_command_refuses_another_recipes_checkpoint(world, tmp_path, capsys):
    from onegen.__main__ import main

    recipe = micro_recipe(tmp_path, steps=2)
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe.to_dict()))
    args = ["train", "--recipe", str(path), "--world", str(world), "--threads", "1", "--no-export"]
    assert main(args + ["--steps", "1"]) == 0
    path.write_text(json.dumps({**recipe.to_dict(), "temperature": 0.1}))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "different recipe (temperature differ)" in err and "Traceback" not in err
    assert json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])["step"] == 1  # untouched


def test_micro_batches_cover_every_sequence_and_cut_padding():
    import random

    from onegen.train.trainer import GROUP_OVERHEAD_TOKENS, micro_batches

    rng = random.Random(0)
    for trial in range(50):
        lengths = [rng.randint(20, 600) for _ in range(rng.randint(1, 25))]
        lengths += [3000] if trial % 10 == 0 else []  # longer than a micro-batch: alone
        cost = {}
        for strategy in ("fill", "min-padding"):
            groups = micro_batches(lengths, 2048, strategy)
            assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
            for g in groups:
                width = lengths[g[0]]
                assert width == max(lengths[i] for i in g)  # each batch is padded to its first member
                assert len(g) == 1 or len(g) * width <= 2048
            cost[strategy] = sum(len(g) * lengths[g[0]] + GROUP_OVERHEAD_TOKENS for g in groups)
        assert cost["min-padding"] <= cost["fill"]
    # Two long queries and many short documents: filling pads documents to the queries' width.
    lengths = [550, 450] + [100] * 14
    slots = {s: sum(len(g) * lengths[g[0]] for g in micro_batches(lengths, 2048, s)) for s in ("fill", "min-padding")}
    assert slots == {"fill": 3 * 550 + 13 * 100, "min-padding": 550 + 450 + 14 * 100}
    with pytest.raises(ValueError, match="unknown grouping"):
        micro_batches(lengths, 2048, "packed")


def test_grouping_changes_no_loss(world, tmp_path):
    from onegen.train.trainer import Trainer

    torch.set_num_threads(1)
    t = Trainer(micro_recipe(tmp_path), world, log=lambda *a: None)
    batch = t.batch(0)
    out = {}
    for g in ("fill", "min-padding"):
        t.grouping = g
        with torch.no_grad():
            out[g] = [float(x) for x in t.forward_losses(*batch)[:5]]
    assert out["fill"] == pytest.approx(out["min-padding"], abs=1e-5)


def test_bench_train_smoke(world, tmp_path, capsys):
    from onegen.__main__ import main

    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(micro_recipe(tmp_path, steps=3).to_dict()))
    doc = tmp_path / "bench.md"
    args = ["bench", "train", "--recipe", str(path), "--world", str(world), "--steps", "2", "--threads", "1", "--json"]
    assert main(args + ["--write", str(doc)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    assert result["max_loss_difference"] < 1e-4
    for g in ("fill", "min-padding"):
        assert len(result[g]["seconds"]) == 2 and result[g]["median_step_s"] > 0
    assert result["min-padding"]["padded_slots"] <= result["fill"]["padded_slots"] + 64 * 4
    assert not (tmp_path / "run").exists()  # the recipe's own run folder is left alone
    assert "<!-- bench:train -->" in doc.read_text()
    assert "compiled" not in result  # only with --compiled
    if _have_cpp_compiler():
        assert main(args + ["--compiled", "--warmup", "1", "--write", str(doc)]) == 0
        result = json.loads(capsys.readouterr().out.strip().splitlines()[0])
        assert result["max_loss_difference"] < 1e-4  # compiled layers included
        assert len(result["compiled"]["seconds"]) == 2 and len(result["compiled"]["warmup_seconds"]) == 1
        assert result["compile_speedup"] > 0 and set(result["recipe_minutes"]) == {"min-padding", "compiled"}
        assert "Compiled decoder layers" in doc.read_text()


def _have_cpp_compiler() -> bool:
    from onegen.train.trainer import cpp_compiler_problem

    return cpp_compiler_problem() is None


@pytest.mark.skipif(not _have_cpp_compiler(), reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_layers_match_eager_and_keep_names(world, tmp_path):
    from onegen.train.trainer import Trainer

    torch.set_num_threads(1)
    eager = Trainer(micro_recipe(tmp_path / "e", steps=3), world, log=lambda *a: None)
    comp = Trainer(micro_recipe(tmp_path / "c", steps=3, compile=True), world, log=lambda *a: None)
    assert all(layer._compiled_call_impl is not None for layer in comp.model.get_decoder().layers)
    # Same initial weights, same batches: the first step's losses agree to rounding (later steps
    # drift apart by rounding only).
    first = [eager.train(progress=False)[0], comp.train(progress=False)[0]]  # forward, backward, checkpoint
    for k in ("loss", "lm", "bpr", "infonce"):
        assert getattr(first[0], k) == pytest.approx(getattr(first[1], k), abs=1e-5), k
    e, c = eager.model.state_dict(), comp.model.state_dict()
    assert list(e) == list(c)  # compiling in place renames nothing: checkpoints and exports are the same
    assert max(float((e[k] - c[k]).abs().max()) for k in e) < 1e-3  # rounding apart, the same training
    # Compiling is a speed setting: a run may resume with it switched off.
    Trainer(micro_recipe(tmp_path / "c", steps=3), world, log=lambda *a: None)


def test_compile_without_a_cpp_compiler_is_a_clear_error(world, tmp_path, monkeypatch, capsys):
    import torch._inductor.cpp_builder as cpp_builder

    from onegen.__main__ import main

    def missing():
        raise RuntimeError("no g++")

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", missing)
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(micro_recipe(tmp_path, steps=1, compile=True).to_dict()))
    assert main(["train", "--recipe", str(path), "--world", str(world), "--threads", "1", "--no-export"]) == 2
    err = capsys.readouterr().err
    assert "no C++ compiler works here" in err and "--no-compile" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "log.jsonl").exists()


def test_question_weights_over_sample_one_template(world, tmp_path):
    from onegen.train.trainer import Trainer, sampling_weights

    items = [{"type": "comparison", "question": "Who was born first, A or B?"},
             {"type": "comparison", "question": "Which city has more inhabitants, C or D?"},
             {"type": "compositional", "question": "Where was E born?"}]
    assert sampling_weights(items, {}, {}) is None
    assert sampling_weights(items, {"comparison": 2.0}, {"Which city has more": 3.0}) == [2.0, 6.0, 1.0]
    with pytest.raises(ValueError, match="no training question starts with"):
        sampling_weights(items, {}, {"Which city has fewer": 2.0})

    # In the trainer: a heavily weighted prefix takes nearly all of the multi-hop sampling weight.
    first = json.loads((world / "multihop.json").read_text())[0]["question"]
    prefix = first.split(",")[0]
    t = Trainer(micro_recipe(tmp_path, question_weights={prefix: 1000.0}), world, log=lambda *a: None)
    share = sum(w for x, w in zip(t.items["multi-hop"], t.multi_hop_weights) if x["question"].startswith(prefix))
    assert share / sum(t.multi_hop_weights) > 0.95


def test_template_weights_over_sample_a_template_whatever_its_wording():
    from onegen.train.trainer import sampling_weights

    items = [{"type": "inference", "question": "Who is X's mother?", "template": "mother"},
             {"type": "inference", "question": "Name the mother of Y.", "template": "mother"},
             {"type": "inference", "question": "Who is Z's paternal grandfather?", "template": "paternal_grandfather"}]
    assert sampling_weights(items, {"inference": 1.5}, {}, template_weights={"mother": 2.0}) == [3.0, 3.0, 1.5]
    with pytest.raises(ValueError, match="no training question was made from template"):
        sampling_weights(items, {}, {}, template_weights={"grandmother": 2.0})
    # Items read with template phrasings carry no template, so a weight for one is refused.
    with pytest.raises(ValueError, match="varied"):
        sampling_weights([{k: v for k, v in x.items() if k != "template"} for x in items], {}, {},
                         template_weights={"mother": 2.0})


def test_varied_items_carry_their_world_template(world):
    from onegen.train.examples import load_task_items

    items = load_task_items(world, "multi-hop", "varied")
    from onegen.world.phrasing import MULTIHOP_FORMS

    assert {x["template"] for x in items} <= set(MULTIHOP_FORMS)
    mothers = [x for x in items if x["template"] == "mother"]
    assert mothers and all(len(x["decomposition"]) == 2 for x in mothers)


def test_recipe_rejects_non_positive_weights(tmp_path):
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"name": "x", "base": {}, "question_weights": {"Who": 0}}))
    with pytest.raises(ValueError, match="question_weights must be positive numbers"):
        Recipe.load(p)
    p.write_text(json.dumps({"name": "x", "base": {}, "template_weights": {"mother": -1}}))
    with pytest.raises(ValueError, match="template_weights must be positive numbers"):
        Recipe.load(p)


def test_a_recipe_saved_before_a_key_existed_reads_as_its_default(tmp_path):
    from onegen.train.trainer import recipe_changes

    current = micro_recipe(tmp_path).to_dict()
    old = {k: v for k, v in current.items() if k not in ("question_weights", "lora")}
    assert recipe_changes(old, current) == ["lora"]  # micro recipes have no LoRA; the default has
    assert recipe_changes(old, {**current, "question_weights": {"Who": 2.0}}) == ["lora", "question_weights"]


def test_balance_answers_weighs_each_templates_answer_positions_equally():
    from onegen.train.trainer import answer_position_weights, sampling_weights

    def item(question: str, first_wins: bool, qtype: str = "comparison") -> dict:
        return {"type": qtype, "question": question, "answer_id": "A" if first_wins else "B",
                "decomposition": [{"paragraph_id": "A"}, {"paragraph_id": "B"}]}

    items = ([item("Who was born first, X or Y?", True)] * 3 + [item("Who was born first, X or Y?", False)]
             + [item("Which city has more inhabitants, X or Y?", True)] * 2  # one side only: kept as is
             + [item("Who is the mother of X?", True, "inference")])
    w = answer_position_weights(items)
    assert w == [4 / 6] * 3 + [2.0] + [1.0, 1.0] + [1.0]
    assert sum(w[:3]) == pytest.approx(w[3]) and sum(w[:4]) == pytest.approx(4)  # template total kept
    assert sampling_weights(items, {}, {}) is None
    assert sampling_weights(items, {"comparison": 2.0}, {}, balance_answers=True) == [2 * x for x in w[:6]] + [1.0]
