"""Conformer encoder: a linear prenet, then torchaudio's Conformer blocks."""

from __future__ import annotations

import torch
from torch import nn

from spkid.core.install import require_torchaudio
from spkid.models.registry import ENCODERS, register


@register(ENCODERS, "conformer")
class ConformerEncoder(nn.Module):
    def __init__(self, n_mels: int, m):
        super().__init__()
        self.prenet = nn.Linear(n_mels, m.d_model)
        self.conformer = require_torchaudio().models.Conformer(
            input_dim=m.d_model, num_heads=m.heads, ffn_dim=m.ffn_dim, num_layers=m.layers,
            depthwise_conv_kernel_size=m.conv_kernel, dropout=m.dropout)
        self.out_dim = m.d_model
        self._mask: torch.Tensor | None = None
        # torchaudio's convolution module does not mask padding, so padded frames would leak
        # into real ones through the depthwise kernel; zero them on the way in.
        for layer in self.conformer.conformer_layers:
            layer.conv_module.sequential[2].register_forward_pre_hook(self._zero_padding)

    def _zero_padding(self, module, args):
        (x,) = args  # (B, C, T)
        if self._mask is None:
            return None
        return (x * self._mask[:, None, :].to(x.dtype),)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # Training crops are unpadded: multiplying by ones would only cost a pass over the
        # activations (and its backward) per layer. An exported graph (ONNX) always masks:
        # it cannot branch on the data.
        exporting = torch.compiler.is_exporting() or torch.jit.is_tracing()
        self._mask = mask if exporting or not bool(mask.all()) else None
        try:
            # torchaudio's Conformer.forward, with the padding mask from `mask` rather than
            # from lengths.max(): that would be a host sync and a constant in an exported graph.
            h = self.prenet(x).transpose(0, 1)  # (T, B, D)
            for layer in self.conformer.conformer_layers:
                h = layer(h, ~mask)
        finally:
            self._mask = None
        return h.transpose(0, 1)
