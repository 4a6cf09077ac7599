"""Classification heads. Each maps speaker embeddings to logits; given labels during
training, margin heads lower the target logit so classes must separate by more than the
margin. Cross-entropy on those logits is the loss."""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from spkid.models.registry import HEADS, register


@register(HEADS, "softmax")
class SoftmaxHead(nn.Module):
    def __init__(self, embedding_dim: int, n_classes: int, loss=None):
        super().__init__()
        self.fc = nn.Linear(embedding_dim, n_classes)

    def forward(self, emb: torch.Tensor, labels: torch.Tensor | None = None,
                margin: float | None = None) -> torch.Tensor:
        """Plain linear logits; labels and margin are accepted and ignored."""
        return self.fc(emb)


class CosineHead(nn.Module):
    """Logits s * cos(embedding, class weight); subclasses add a margin to the target."""

    def __init__(self, embedding_dim: int, n_classes: int, loss):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_classes, embedding_dim))
        nn.init.xavier_uniform_(self.weight)
        self.s = float(loss.s)
        self.m = float(loss.m)

    def cosine(self, emb: torch.Tensor) -> torch.Tensor:
        # Margin maths in float32: under fp16/bf16 autocast, s * (cos - m) loses the margin.
        # Autocast would run F.linear in half precision even on float32 inputs, so turn it off.
        with torch.autocast(emb.device.type, enabled=False):
            return F.linear(F.normalize(emb.float(), dim=-1),
                            F.normalize(self.weight.float(), dim=-1))

    def target_logit(self, cos_target: torch.Tensor, margin: float) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, emb: torch.Tensor, labels: torch.Tensor | None = None,
                margin: float | None = None) -> torch.Tensor:
        cos = self.cosine(emb)
        if labels is None:
            return self.s * cos
        margin = self.m if margin is None else float(margin)
        onehot = F.one_hot(labels, cos.shape[1]).bool()
        cos_target = cos.gather(1, labels[:, None])
        return self.s * torch.where(onehot, self.target_logit(cos_target, margin), cos)


@register(HEADS, "am_softmax")
class AMSoftmaxHead(CosineHead):
    """Additive margin: cos(theta) - m on the target class (CosFace / AM-softmax)."""

    def target_logit(self, cos_target: torch.Tensor, margin: float) -> torch.Tensor:
        return cos_target - margin


@register(HEADS, "aam_softmax")
class AAMSoftmaxHead(CosineHead):
    """Additive angular margin: cos(theta + m) on the target class (ArcFace, Deng et al. 2019).

    Follows WeSpeaker's ArcMarginProduct (wespeaker/models/projections.py, after insightface)
    with easy_margin=False: phi = cos(theta) cos(m) - sin(theta) sin(m) while theta + m <= pi
    (cos(theta) > cos(pi - m)), else cos(theta) - m sin(m) (their `mm` = sin(pi - m) * m), so
    the target logit keeps decreasing in theta over [0, pi] instead of rising again past
    theta = pi - m."""

    def target_logit(self, cos_target: torch.Tensor, margin: float) -> torch.Tensor:
        cos = cos_target.clamp(-1.0, 1.0)
        # Clamped away from 0 so the sqrt's gradient stays finite at theta = 0 or pi.
        sin = (1.0 - cos.square()).clamp(min=1e-7).sqrt()
        phi = cos * math.cos(margin) - sin * math.sin(margin)
        return torch.where(cos > math.cos(math.pi - margin), phi, cos - margin * math.sin(margin))


def margin_schedule(loss) -> Callable[[int], float]:
    """The margin to use at 1-based optimizer step `step`: loss.m throughout when
    loss.margin_warmup is null; else 0 before start_step, rising linearly from 0 (at
    start_step) to loss.m (at end_step), and loss.m from end_step on."""
    m = float(loss.m)
    warmup = loss.margin_warmup
    if warmup is None:
        return lambda step: m
    start, end = (int(v) for v in warmup)

    def at(step: int) -> float:
        if step >= end:
            return m
        if step <= start:
            return 0.0
        return m * (step - start) / (end - start)

    return at
