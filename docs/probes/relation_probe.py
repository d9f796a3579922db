"""Does the embedded model read which relation an inference question asks?

For every inference question of a multi-hop result file (`python -m onegen evaluate --task
multi-hop ...`), the run's own tokens are fed again up to each relation decision, once with the
question in the prompt and once with the question left out:

- the sub-question's relation word ("First, who is the" / "Second, who is the" -> " spouse" or
  " father"), and what classifier-free guidance against the question-free prompt would choose
  there (log-odds (1 + g) * with - g * without);
- the reader's name after each hop's paragraph ("The father of X is" / "X was married to" ->
  the first token of the name the question needs at that hop).

    PYTHONPATH=. python docs/probes/relation_probe.py RESULTS.jsonl
"""
import json
import math
import re
import sys
from collections import defaultdict

import torch

from onegen.engine import Engine
from onegen.loading import load_model

lm = load_model("onegen-smol", task="multi-hop")
engine = Engine(lm)
MARKERS = {1: " First, who is the", 2: " Second, who is the"}
GUIDANCE = (1.0, 2.0)
NO_QUESTION = engine.prompt_ids("multi-hop", "")[1]


def first_id(text: str) -> int:
    return lm.tokenizer.encode(text, add_special_tokens=False)[0]


FATHER, SPOUSE = first_id(" father"), first_id(" spouse")


def next_token_probs(prompt: list[int], ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(lm.model(torch.tensor([prompt + ids])).logits[0, -1].float(), -1)


def name_slot(toks: list[dict], start: int) -> int | None:
    """The first token after "... is" / "... married to" from `start`: where the answer's name goes."""
    said = ""
    for i in range(start, len(toks)):
        if re.search(r" (is|to)$", said):
            return i
        said += toks[i]["text"]
    return None


def mean(rows: list[tuple], k: int) -> float:
    return sum(x[k] for x in rows) / len(rows)


decisions, readers = defaultdict(list), defaultdict(list)
for r in map(json.loads, open(sys.argv[1])):
    if r.get("type") != "inference":
        continue
    gold = [d["question"] for d in r["decomposition"]]
    chain = "mother" if "spouse" in gold[1] else "father-in-law" if "spouse" in gold[0] else "grandfather"
    right = r["onegen"]["scores"]["em"] == 1.0  # the evaluation's own score of this line
    with_question = engine.prompt_ids("multi-hop", r["question"])[1]
    toks, text, cut = r["trace"]["tokens"], "", {}
    for i, x in enumerate(toks):  # where the run's own text reaches each relation word
        text += x["text"]
        cut.update({h: i + 1 for h, m in MARKERS.items() if h not in cut and text.endswith(m)})
    for hop, n in cut.items():
        ids = [x["id"] for x in toks[:n]]
        w, wo = next_token_probs(with_question, ids), next_token_probs(NO_QUESTION, ids)
        decisions[chain, hop].append((w[SPOUSE].item(), wo[SPOUSE].item(), w[FATHER].item(), wo[FATHER].item()))
    ends = [i for i, x in enumerate(toks) if x["text"] == "</paragraph>"]
    asked = re.findall(r"(?:First|Second), who is the (\w+) of", text)
    for hop, (end, relation) in enumerate(zip(ends, asked), 1):
        slot = name_slot(toks, end + 1)
        if slot is None:
            continue
        ids = [x["id"] for x in toks[:slot]]
        needed = first_id(" " + r["decomposition"][hop - 1]["answer"])
        w, wo = next_token_probs(with_question, ids), next_token_probs(NO_QUESTION, ids)
        readers[chain, hop, relation, right].append((w[needed].item(), wo[needed].item()))

print("relation word: runs reaching it; mean p(' spouse') with / without the question; ' spouse' chosen: greedy, guidance g=1, g=2")
for (chain, hop), rows in sorted(decisions.items()):
    chose = [sum(x[0] > x[2] for x in rows)]
    for g in GUIDANCE:
        guided = lambda with_q, without: (1 + g) * math.log(with_q) - g * math.log(without)  # noqa: E731
        chose.append(sum(guided(x[0], x[1]) > guided(x[2], x[3]) for x in rows))
    print(f"  {chain} hop {hop}: {len(rows)}; {mean(rows, 0):.2f} / {mean(rows, 1):.2f}; {' / '.join(map(str, chose))}")
print("reader's name slot after a hop's paragraph: runs; mean p(the name the question needs) with / without the question")
for (chain, hop, relation, right), rows in sorted(readers.items()):
    print(f"  {chain} hop {hop}, asked the {relation}, answer {'right' if right else 'wrong'}: {len(rows)}; "
          f"{mean(rows, 0):.2f} / {mean(rows, 1):.2f}")
