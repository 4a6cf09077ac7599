"""The HW4 baseline encoder: a linear prenet, then a stack of Transformer encoder layers.

`model.norm` places each layer's LayerNorms: `post` (after each residual sum) is PyTorch's
default and what the HW4 sample code trains; `pre` (before each sublayer) trains more
stably in deeper stacks and is spkid's default."""

from __future__ import annotations

import torch
from torch import nn

from spkid.models.registry import ENCODERS, register


@register(ENCODERS, "transformer")
class TransformerEncoder(nn.Module):
    def __init__(self, n_mels: int, m):
        super().__init__()
        self.prenet = nn.Linear(n_mels, m.d_model)
        norm = m.norm
        layer = nn.TransformerEncoderLayer(m.d_model, m.heads, m.ffn_dim, m.dropout,
                                           batch_first=True, norm_first=norm == "pre")
        # Nested tensors would change output shapes with padding; keep dense tensors.
        self.layers = nn.TransformerEncoder(layer, m.layers, enable_nested_tensor=False)
        self.out_dim = m.d_model

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, n_mels), mask (B, T) True on real frames -> (B, T, d_model)."""
        return self.layers(self.prenet(x), src_key_padding_mask=~mask)
