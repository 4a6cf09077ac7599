"""Classification heads. Each maps speaker embeddings to logits; given labels during
training, margin heads lower the target logit so classes must separate by more than the
margin. Cross-entropy on those logits is the loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spkid.models.registry import HEADS, register


@register(HEADS, "softmax")
class SoftmaxHead(nn.Module):
    def __init__(self, embedding_dim: int, n_classes: int, loss=None):
        super().__init__()
        self.fc = nn.Linear(embedding_dim, n_classes)

    def forward(self, emb: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
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
        # Margin maths in float32: under fp16 autocast, s * (cos - m) loses the margin.
        return F.linear(F.normalize(emb.float(), dim=-1), F.normalize(self.weight.float(), dim=-1))

    def target_logit(self, cos_target: torch.Tensor, margin: float) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, emb: torch.Tensor, labels: torch.Tensor | None = None,
                margin: float | None = None) -> torch.Tensor:
        cos = self.cosine(emb)
        if labels is None:
            return self.s * cos
        margin = self.m if margin is None else margin
        onehot = F.one_hot(labels, cos.shape[1]).bool()
        cos_target = cos.gather(1, labels[:, None])
        return self.s * torch.where(onehot, self.target_logit(cos_target, margin), cos)


@register(HEADS, "am_softmax")
class AMSoftmaxHead(CosineHead):
    """Additive margin: cos(theta) - m on the target class (CosFace / AM-softmax)."""

    def target_logit(self, cos_target: torch.Tensor, margin: float) -> torch.Tensor:
        return cos_target - margin
