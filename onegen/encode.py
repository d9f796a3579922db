"""Document encoding per protocol: run the model over document prompts and read the hidden state
at each document token (the same final-norm state the engine reads for queries)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

from .documents import Document
from .index import IndexManifest, VectorIndex, normalize
from .loading import LoadedModel
from .protocols import get_spec
from .tokenization import Data, Literal, Token, template_parts

MAX_DOCUMENT_TOKENS = 512


@dataclass
class DocumentPrompt:
    ids: list[int]
    vector_positions: list[int]  # positions whose hidden state is a vector of this document


def document_prompt(lm: LoadedModel, task: str, doc: Document, max_tokens: int = MAX_DOCUMENT_TOKENS) -> DocumentPrompt:
    """Token ids of a document prompt and the positions of its vectors.

    Entity linking: vector at the second `[SE]` (the first is quoted in the instruction).
    Multi-hop: one `[DFR]` after every sentence, the instruction's own `[DFR]` skipped.
    Single-hop: vector at the last `[DFR]`. Over-long documents lose trailing sentences (multi-hop)
    or trailing characters (the others), never their document token.
    """
    spec = get_spec(task)
    ptok = lm.ptok(task)
    if spec.vectors_per_sentence:
        sentences = list(doc.sentences) if doc.sentences else [doc.text]
        head, _, tail = spec.document_template.partition("{sentences}")
        while True:
            parts = template_parts(head, title=doc.title)
            for s in sentences:
                parts += [Data(s), Token(spec.document_token)]
            if tail:
                parts.append(Literal(tail))
            enc = ptok.encode(parts)
            if len(enc.ids) <= max_tokens or len(sentences) == 1:
                break
            sentences = sentences[:-1]
        positions = enc.positions(spec.document_token)[spec.skip_document_tokens:]
        if len(enc.ids) > max_tokens:  # one sentence still too long: keep its head and its token
            enc.ids = enc.ids[: max_tokens - 1] + [enc.ids[positions[0]]]
            positions = [max_tokens - 1]
        return DocumentPrompt(enc.ids, positions)

    text = doc.text
    while True:
        enc = ptok.encode_template(spec.document_template, title=doc.title, text=text)
        if len(enc.ids) <= max_tokens or not text:
            break
        text = text[: int(len(text) * max_tokens / len(enc.ids) * 0.95)]
    positions = enc.positions(spec.document_token)[spec.skip_document_tokens:]
    return DocumentPrompt(enc.ids, positions[-1:])


@torch.inference_mode()
def encode_documents(lm: LoadedModel, task: str, docs: Sequence[Document], *, batch_size: int = 16,
                     max_tokens: int = MAX_DOCUMENT_TOKENS, progress: bool = False,
                     desc: str = "encoding documents") -> tuple[torch.Tensor, torch.Tensor, int]:
    """Vectors [N, dim] (unit length, float32, CPU), owners [N] (vector -> document index), and the
    number of tokens forwarded."""
    prompts = [document_prompt(lm, task, d, max_tokens) for d in docs]
    # Longest first: batches of similar length waste little on padding.
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i].ids))
    per_doc: list[torch.Tensor | None] = [None] * len(prompts)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    tokens = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(prompts), desc=desc, unit="doc")
    for start in range(0, len(order), batch_size):
        batch = [prompts[i] for i in order[start:start + batch_size]]
        width = max(len(p.ids) for p in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, p in enumerate(batch):
            ids[r, : len(p.ids)] = torch.tensor(p.ids)
            mask[r, : len(p.ids)] = 1
        hidden = lm.backbone(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device), use_cache=False).last_hidden_state
        for r, i in enumerate(order[start:start + batch_size]):
            per_doc[i] = normalize(hidden[r, prompts[i].vector_positions]).cpu()
        tokens += sum(len(p.ids) for p in batch)
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    if not per_doc:
        return torch.zeros(0, lm.hidden_size), torch.zeros(0, dtype=torch.long), 0
    vectors = torch.cat(per_doc)  # type: ignore[arg-type]
    owners = torch.cat([torch.full((len(v),), i, dtype=torch.long) for i, v in enumerate(per_doc)])  # type: ignore[arg-type]
    return vectors, owners, tokens


def build_index(lm: LoadedModel, task: str, docs: Sequence[Document] | Iterable[Document], *, batch_size: int = 16,
                progress: bool = False, build: dict | None = None) -> VectorIndex:
    """Encode documents with `lm` per `task`'s protocol into an index stamped with the model's identity."""
    docs = list(docs)
    t0 = time.perf_counter()
    vectors, owners, tokens = encode_documents(lm, task, docs, batch_size=batch_size, progress=progress)
    manifest = IndexManifest(
        protocol=task, model=lm.name, model_fingerprint=lm.fingerprint, dim=lm.hidden_size, count=len(vectors),
        documents=len(docs), multi_vector=get_spec(task).vectors_per_sentence,
        build={"model_dtype": str(lm.dtype).replace("torch.", ""), "batch_size": batch_size, "tokens": tokens,
               "seconds": round(time.perf_counter() - t0, 3), **(build or {})})
    return VectorIndex(vectors, docs, owners=owners, manifest=manifest)
