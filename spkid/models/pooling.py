"""Frame sequences -> one vector per utterance. Every pooling ignores padded frames."""

from __future__ import annotations

import torch
from torch import nn

from spkid.models.registry import POOLINGS, register


def masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    w = mask.to(h.dtype).unsqueeze(-1)
    return (h * w).sum(1) / w.sum(1).clamp_min(1.0)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over time (dim 1) that gives padded frames exactly zero weight."""
    scores = scores.float().masked_fill(~mask.unsqueeze(-1), float("-inf"))
    return torch.softmax(scores, dim=1)


@register(POOLINGS, "mean")
class MeanPooling(nn.Module):
    def __init__(self, in_dim: int, m=None):
        super().__init__()
        self.out_dim = in_dim

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_mean(h, mask)


@register(POOLINGS, "sap")
class SelfAttentionPooling(nn.Module):
    """Weighted mean with learned frame weights: softmax_t(v . tanh(W h_t)), or a single
    linear score when attention_dim is 0."""

    def __init__(self, in_dim: int, m):
        super().__init__()
        dim = m.attention_dim
        self.score = (nn.Linear(in_dim, 1) if dim == 0 else
                      nn.Sequential(nn.Linear(in_dim, dim), nn.Tanh(), nn.Linear(dim, 1)))
        self.out_dim = in_dim

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        w = masked_softmax(self.score(h), mask).to(h.dtype)  # (B, T, 1)
        return (h * w).sum(1)
