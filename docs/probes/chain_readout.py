"""Is the chain an inference question asks (mother, father-in-law, paternal grandfather) readable from
the model's state at the end of the question, for wordings the model never saw?

A logistic regression per layer reads the chain from the hidden state at the prompt's last token.
It is fit on the training world's inference questions (each in its template wording and in one
training form) and scored three ways:
- leaving out one training form at a time (fit on the others, scored on the one left out): does a
  read learnt from some wordings carry to another it was not fit on?
- on the held-out world's template and paraphrased questions.
With `--base`, the same for the base model without the embedded model's adapter. Result files
(`python -m onegen evaluate --task multi-hop ...`) given after the options are scored as a warning
would use the read: how many wrong and right answers the read disagrees with at p >= 0.9.

    PYTHONPATH=. python docs/probes/chain_readout.py [--base] [RESULTS.jsonl ...]
"""
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from onegen.commands.train import ensure_world
from onegen.engine import Engine
from onegen.loading import load_model
from onegen.registry import lookup
from onegen.train.recipe import Recipe
from onegen.world.paraphrase import vary_question, world_of_folder

args = sys.argv[1:]
base = "--base" in args
results = [a for a in args if a != "--base"]
folder = Path(lookup("onegen-smol").source)
if base:  # the same folder without its LoRA adapter: the base model with the new token rows
    copy = Path(tempfile.mkdtemp()) / "base"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("adapter"))
    folder = copy
lm = load_model(folder, task="multi-hop")
engine = Engine(lm)
CHAINS = {("father", "spouse"): "mother", ("spouse", "father"): "father-in-law",
          ("father", "father"): "grandfather"}


def chain(sub_questions: list[str]) -> str:
    relations = [re.search(r"who is the (\w+) of", q, re.I) for q in sub_questions[:2]]
    return CHAINS.get(tuple(m.group(1) if m else "" for m in relations), "other")


def gold_chain(item: dict) -> str:
    return chain([d["question"] for d in item["decomposition"]])


def states(questions: list[str]) -> np.ndarray:
    """[question, layer, width]: the hidden states at each prompt's last token."""
    out = []
    for q in questions:
        with torch.no_grad():
            hs = lm.model(torch.tensor([engine.prompt_ids("multi-hop", q)[1]]), output_hidden_states=True).hidden_states
        out.append(np.stack([h[0, -1].float().numpy() for h in hs]))
    return np.stack(out)


def fit(x: np.ndarray, y: np.ndarray):
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, C=0.01)).fit(x, y)


world_dir = ensure_world(Recipe.load("assets/recipes/onegen-smol.json").world)
made = {x.id: x for x in world_of_folder(world_dir).multihop}
questions, labels, forms = [], [], []
for item in json.loads((world_dir / "multihop.json").read_text()):
    if item["type"] != "inference":
        continue
    phrased = vary_question(made[item["_id"]], "multi-hop")
    for q, form in [(item["question"], "template")] + ([(phrased.item.question, phrased.form)] if phrased else []):
        questions.append(q), labels.append(gold_chain(item)), forms.append(form)
X, y, forms = states(questions), np.array(labels), np.array(forms)
held = {name: [x for x in json.load(open(f"assets/world/heldout/{name}.json")) if x["type"] == "inference"]
        for name in ("multihop", "multihop-paraphrased")}
held_x = {k: states([x["question"] for x in v]) for k, v in held.items()}
held_y = {k: np.array([gold_chain(x) for x in v]) for k, v in held.items()}
print(f"{'base' if base else 'shipped'} model; {len(y)} training questions in {len(set(forms)) - 1} training forms "
      "and the template; accuracy of the read (chance about 0.33):")
print("layer  one training form left out  held-out template  held-out paraphrased")
best = (-1.0, 0)
for layer in range(0, X.shape[1], 3):  # every third layer: 0, 3, ..., 30
    left_out = [(fit(X[forms != f, layer], y[forms != f]).predict(X[forms == f, layer]) == y[forms == f]).mean()
                for f in sorted(set(forms) - {"template"})]
    clf = fit(X[:, layer], y)
    scores = [(clf.predict(held_x[k][:, layer]) == held_y[k]).mean() for k in held]
    print(f"{layer:5d}  {np.mean(left_out):26.2f}  {scores[0]:17.2f}  {scores[1]:20.2f}")
    best = max(best, (float(np.mean(left_out)), layer))
layer = best[1]
clf = fit(X[:, layer], y)
for path in results:  # the read as a warning, at the layer that carried best across training forms
    rows = [r for r in map(json.loads, open(path)) if r.get("type") == "inference"]
    probs = clf.predict_proba(states([r["question"] for r in rows])[:, layer])
    caught = {True: 0, False: 0}
    count = {True: 0, False: 0}
    for r, p in zip(rows, probs):
        text = "".join(t["text"] for t in r["trace"]["tokens"])
        asked = chain(re.findall(r"(?:First|Second), (who is the \w+ of)", text))
        right = r["onegen"]["scores"]["em"] == 1.0
        count[right] += 1
        caught[right] += bool(clf.classes_[p.argmax()] != asked and p.max() >= 0.9)
    print(f"{path} (layer {layer}): the read disagrees with the chain at p >= 0.9 in {caught[False]} of "
          f"{count[False]} wrong answers and {caught[True]} of {count[True]} right ones")
