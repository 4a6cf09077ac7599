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


def weighted_mean_std(h: torch.Tensor, w: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Concatenated weighted mean and weighted standard deviation over time.

    h (B, T, D) frames, w (B, T, 1) frame weights that sum to 1 over each utterance and are
    exactly 0 on padded frames -> (B, 2 * D). The std is the population (ddof=0) one,
    sqrt(sum_t w_t (h_t - mean)^2), computed in float32 around the mean (no E[h^2] - mean^2
    cancellation) and with the variance clamped to `eps` so the sqrt and its gradient stay
    finite on constant features."""
    hf, wf = h.float(), w.float()
    mean = (hf * wf).sum(1)
    var = (wf * (hf - mean.unsqueeze(1)).square()).sum(1)
    return torch.cat([mean, var.clamp_min(eps).sqrt()], dim=-1).to(h.dtype)


def mean_weights(mask: torch.Tensor) -> torch.Tensor:
    """Uniform weights over real frames: (B, T) bool -> (B, T, 1) float32, 0 on padding."""
    w = mask.float().unsqueeze(-1)
    return w / w.sum(1, keepdim=True).clamp_min(1.0)


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

    def weights(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, 1) float32 attention weights, summing to 1 over real frames, 0 on padding."""
        return masked_softmax(self.score(h), mask)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        w = self.weights(h, mask).to(h.dtype)  # (B, T, 1)
        return (h * w).sum(1)


@register(POOLINGS, "asp")
class AttentiveStatsPooling(SelfAttentionPooling):
    """Attentive statistics pooling (Okabe et al. 2018): the sap frame weights (same scoring
    module, same model.attention_dim, 0 = single linear score), then the weighted mean and
    weighted std concatenated."""

    def __init__(self, in_dim: int, m):
        super().__init__(in_dim, m)
        self.out_dim = 2 * in_dim

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return weighted_mean_std(h, self.weights(h, mask))


@register(POOLINGS, "tstp")
class TemporalStatsPooling(nn.Module):
    """Temporal statistics pooling (x-vector style): mean and std over real frames."""

    def __init__(self, in_dim: int, m=None):
        super().__init__()
        self.out_dim = 2 * in_dim

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return weighted_mean_std(h, mean_weights(mask))
