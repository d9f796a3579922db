"""Training the ImpRAG mode (onegen/train/imprag.py) on a random tiny Llama: both losses fall and
retrieval beats chance on the batch it trained on."""
from __future__ import annotations

import random

import pytest
import torch

from onegen.imprag import ImpragError, SplitForward
from onegen.train.imprag import ImpragSample, ImpragSpec, answer_nll, batch_losses, fork, sample_losses
from test_imprag import tiny_llama

pytestmark = pytest.mark.usefixtures("one_thread")


def batch(n_questions: int = 4, n_passages: int = 3, seed: int = 0, delimited: bool = False) -> list[ImpragSample]:
    """Questions naming a key token; the gold passage holds the key and the answer tokens
    (`delimited`: every passage ends in the same token, 3)."""
    rng = random.Random(seed)
    out = []
    for q in range(n_questions):
        key, answer = 10 + q, [40 + 2 * q, 41 + 2 * q]
        passages = [[rng.randrange(60, 97) for _ in range(3)] + [3] if delimited else
                    [rng.randrange(60, 97) for _ in range(4)] for _ in range(n_passages)]
        g = rng.randrange(n_passages)
        passages[g] = [key, *answer, 3]
        out.append(ImpragSample(prompt=[1, 5, key, 2], answer=answer, passages=passages,
                                gold=[i == g for i in range(n_passages)]))
    return out


def test_training_lowers_both_losses_and_beats_chance_on_its_batch():
    model = tiny_llama(2, seed=1)
    spec = ImpragSpec(2, 4, warmup_steps=12, temperature=0.1)
    fwd = SplitForward(model, spec.split(6))
    samples = batch()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    seen = []
    for step in range(spec.warmup_steps + 3):
        if step == spec.warmup_steps:
            with torch.no_grad():
                warmed = batch_losses(fwd, samples, spec, 0)  # the warm-up's losses where it ends
        losses = batch_losses(fwd, samples, spec, step)
        opt.zero_grad()
        losses.total.backward()
        opt.step()
        seen.append(losses)
    first, distill = seen[0], seen[spec.warmup_steps:]
    assert first.retrieval_kind == "nce" and all(x.retrieval_kind == "distill" for x in distill)
    assert warmed.retrieval < 0.1 * first.retrieval and warmed.lm < 0.5 * first.lm
    assert first.recall_at_1 < 1 and warmed.recall_at_1 == 1.0  # chance: one gold among three
    # self-distillation: its KL falls from where the warm-up left it
    assert distill[-1].retrieval < distill[0].retrieval and distill[-1].lm < distill[0].lm


def test_distillation_targets_follow_answer_likelihood_and_forks_share_the_input():
    model = tiny_llama(1)
    fwd = SplitForward(model, ImpragSpec(2, 4).split(6))
    s = batch(1)[0]
    with torch.no_grad():
        state = fwd.start(s.prompt)
        a, b = fork(state), fork(state)
        fwd.read(a, [s.passages[0]])
        fwd.read(b, [s.passages[1]])
        assert state.caches[0].keys is a.caches[0].keys is b.caches[0].keys  # bottom group run once
        assert state.caches[2].length == 0 and not state.read  # the original is untouched
    with pytest.raises(ImpragError, match="at least one gold"):
        batch_losses(fwd, [ImpragSample([1, 2], [3], [[4, 5]], [False])], ImpragSpec(2, 4), 0)
    with pytest.raises(ImpragError, match="temperatures"):
        ImpragSpec(2, 4, temperature=0)
    with pytest.raises(ImpragError, match="reader must be one of"):
        ImpragSpec(2, 4, reader="top-1")
    from onegen.train.trainer import recipe_changes

    base = {"name": "r", "imprag": {"bottom": 2, "top": 4, "reader": "candidates"}}
    # how many hits the exported mode reads is not training: a checkpoint takes it, --export-only writes it
    same = recipe_changes(base, base)  # the keys a partial recipe leaves at their defaults
    assert "imprag" not in same
    assert recipe_changes(base, {**base, "imprag": {**base["imprag"], "reads": 1}}) == same
    assert "imprag" in recipe_changes(base, {**base, "imprag": {**base["imprag"], "top": 5}})
    for bad in (0, -1, 1.5, "2"):
        with pytest.raises(ImpragError, match="reads must be a whole number"):
            ImpragSpec(2, 4, reads=bad)


def test_the_lm_loss_reads_the_gold_passage_or_every_candidate():
    model = tiny_llama(1)
    fwd = SplitForward(model, ImpragSpec(2, 4).split(6))
    s = batch(1)[0]
    gold = [p for p, g in zip(s.passages, s.gold) if g]
    with torch.no_grad():
        want = {"gold": answer_nll(fwd, fwd.start(s.prompt), gold, s.answer),
                "candidates": answer_nll(fwd, fwd.start(s.prompt), s.passages, s.answer)}
        for reader, nll in want.items():
            _, lm, _ = sample_losses(fwd, s, ImpragSpec(2, 4, reader=reader), distill=False)
            assert torch.allclose(lm, nll)
    assert not torch.allclose(want["gold"], want["candidates"])  # the distractors reach the reader


def test_world_items_become_samples_and_the_recipe_key_is_checked(tmp_path):
    import json
    from pathlib import Path

    from onegen.train.examples import load_corpus
    from onegen.train.imprag import world_sample
    from onegen.train.recipe import Recipe
    from tiny import load_tiny

    world = Path(__file__).resolve().parents[1] / "assets" / "world" / "heldout"
    lm = load_tiny("single-hop", tmp_path / "m")
    ptok = lm.ptok("single-hop")
    corpus = load_corpus(world)
    item = json.loads((world / "singlehop.json").read_text())[0]
    s = world_sample(item, ptok, corpus, random.Random(0), n_neg=2)
    assert len(s.passages) == 3 and sum(s.gold) == 1
    gold = corpus.docs[f"single-hop|{item['gold_id']}"]
    assert gold.title in ptok.decode(s.passages[s.gold.index(True)])
    assert item["answers"][0] in ptok.decode(s.answer) and s.answer[-1] == ptok.hf.eos_token_id
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"name": "x", "base": {"path": "p"}, "imprag": {"bottom": 15, "top": 22}}))
    assert Recipe.load(path).imprag == {"bottom": 15, "top": 22}
    path.write_text(json.dumps({"name": "x", "base": {"path": "p"}, "imprag": {"bottom": 15, "warmup": 3}}))
    with pytest.raises(ValueError, match="imprag"):
        Recipe.load(path)


def test_the_trainer_runs_an_imprag_recipe_and_resumes(tmp_path):
    from onegen.train.imprag import ImpragTrainer
    from onegen.world import export_world, generate_world
    from test_train import micro_recipe

    world = tmp_path / "world"
    export_world(generate_world(seed=3, n_entities=150, split="train", n_el=10, n_multihop=10, n_singlehop=40), world)
    recipe = micro_recipe(tmp_path, tasks=["single-hop"], per_step={"single-hop": 2}, steps=4, checkpoint_every=2,
                          hard_negatives=2, imprag={"bottom": 1, "top": 2, "warmup_steps": 2, "centre": True, "reads": 1})
    t = ImpragTrainer(recipe, world, log=lambda *a: None)
    stats = t.train(progress=False)
    assert [s.step for s in stats] == [1, 2, 3, 4] and all(s.bpr == 0 for s in stats)
    assert all(s.lm > 0 and s.infonce >= 0 for s in stats) and (tmp_path / "run" / "checkpoint.pt").exists()
    again = ImpragTrainer(recipe, world, log=lambda *a: None)
    assert again.step == 4
    torch.testing.assert_close(again.centring.query, t.centring.query)  # a resumed run centres as before
    # the exported model carries its layer groups: the mode and the index builder read them
    from onegen.imprag import LayerSplit, model_split
    from onegen.loading import load_model
    from onegen.train.export import export_embedded

    lm = load_model(str(export_embedded(t, tmp_path / "model")), device="cpu")
    centring = lm.info["imprag"].pop("centring")
    assert lm.info["imprag"] == {"bottom": 1, "top": 2, "reads": 1} and model_split(lm) == LayerSplit(1, 2, 2)
    # the running means it trained with travel with it, for the mode and the index builder
    from onegen.imprag import Centring, ImpragQuery

    assert Centring.from_json(centring) == t.exported_centring()
    lm.info["imprag"]["centring"] = centring
    assert ImpragQuery(lm).centring == t.exported_centring()
    assert ImpragQuery(lm).reads == 1  # how many top hits its reader reads, as the recipe said
    card = (tmp_path / "model" / "README.md").read_text()
    assert "A small ImpRAG (implicit queries over layer groups) model" in card and "docs/imprag.md" in card
    assert "layer groups b=1, t=2" in card and "reads the top 1 hit" in card and "BPR" not in card
    with pytest.raises(ValueError, match="single-hop only"):
        ImpragTrainer(micro_recipe(tmp_path / "x", imprag={"bottom": 1, "top": 2}), world, log=lambda *a: None)


def delimited_batch(n_questions: int = 4, n_passages: int = 4, seed: int = 0) -> list[ImpragSample]:
    """As a real prompt and passages do: every prompt ends in one template token and every passage
    in one delimiter, so the vectors read at those tokens start out alike."""
    return batch(n_questions, n_passages, seed, delimited=True)


def test_running_centring_follows_the_batches_and_training_with_it_beats_chance():
    from onegen.train.imprag import RunningCentring

    c = RunningCentring(0.9)
    c.update(torch.ones(2, 3), torch.zeros(4, 3))
    c.update(torch.full((1, 3), 3.0), torch.ones(2, 3))
    torch.testing.assert_close(c.query, torch.full((3,), 1.2))  # the first batch sets, later ones move it
    torch.testing.assert_close(c.passage, torch.full((3,), 0.1))
    assert RunningCentring(0.9).centring() is None and c.centring().query_mean == pytest.approx((1.2,) * 3)

    model = tiny_llama(2, seed=1)
    spec = ImpragSpec(2, 4, warmup_steps=100, temperature=0.05, centre=True, centring_momentum=0.9)
    fwd = SplitForward(model, spec.split(6))
    samples = delimited_batch()
    centring = RunningCentring(spec.centring_momentum)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    seen = []
    for step in range(8):
        losses = batch_losses(fwd, samples, spec, step, centring)
        opt.zero_grad()
        losses.total.backward()
        opt.step()
        seen.append(losses)
    assert seen[0].recall_at_1 < 1 and seen[-1].recall_at_1 == 1.0  # chance: one gold among four
    assert seen[-1].retrieval < 0.1 * seen[0].retrieval
    # the scores were centred: the means moved with the batches the model saw
    with torch.no_grad():
        q = torch.stack([fwd.start(s.prompt).query for s in samples])
    assert torch.linalg.vector_norm(centring.query) > 0 and centring.query.shape == q.shape[1:]
    with pytest.raises(ImpragError, match="centring_momentum"):
        ImpragSpec(2, 4, centring_momentum=1.0)
