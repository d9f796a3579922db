"""Contrastive losses on retrieval-token hidden states (OneGen's RET role)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def similarity(queries: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
    """Cosine similarity matrix [Q, D]."""
    return F.normalize(queries, dim=-1) @ F.normalize(docs, dim=-1).T


def bpr_loss(sim: torch.Tensor, positive: torch.Tensor, negative_mask: torch.Tensor) -> torch.Tensor:
    """mean over anchors i and their negatives j of -log sigmoid(cos(q_i, p_i) - cos(q_i, n_ij))."""
    pos = sim.gather(1, positive[:, None])  # [Q, 1]
    diff = pos - sim
    losses = -F.logsigmoid(diff)[negative_mask]
    return losses.mean() if losses.numel() else sim.sum() * 0


def infonce_loss(sim: torch.Tensor, positive: torch.Tensor, candidate_mask: torch.Tensor,
                 temperature: float) -> torch.Tensor:
    """Cross-entropy of the positive among the anchor's candidates (positive + negatives) at `temperature`."""
    logits = (sim / temperature).masked_fill(~candidate_mask, float("-inf"))
    return F.cross_entropy(logits, positive)


def recall_at_1(sim: torch.Tensor, positive: torch.Tensor, candidate_mask: torch.Tensor) -> float:
    masked = sim.masked_fill(~candidate_mask, float("-inf"))
    return float((masked.argmax(1) == positive).float().mean()) if len(positive) else 0.0
