"""ECAPA-TDNN frame encoder (Desplanques, Thienpondt & Demuynck, Interspeech 2020).

Conv1d(k=5)+ReLU+BN, three SE-Res2Net blocks (kernel 3, dilations 2, 3, 4, Res2Net scale 8),
then multi-layer feature aggregation: the three block outputs concatenated and mixed by a
1x1 Conv1d+ReLU+BN. Width is `model.channels` (must divide by 8); out_dim = 3 * channels.
The paper's attentive statistics pooling and embedding layer are not part of the encoder:
pick them with model.pooling (asp) and model.embedding_dim.

Time resolution is kept (T' == T), so the input mask stays valid. Padding never reaches
real frames: padded frames are zeroed before every convolution (so a kernel reaching past
an utterance's end sees zeros, exactly as for the utterance alone), and the SE block's
squeeze is a masked mean. BatchNorm in eval mode is per-frame, so embeddings are
independent of the batch's padding; in train mode its batch statistics include padded
frames, as for any BatchNorm over a padded batch (training segments are normally unpadded).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spkid.models.pooling import masked_mean
from spkid.models.registry import ENCODERS, register

SCALE = 8  # Res2Net scale: channels are split into 8 groups
DILATIONS = (2, 3, 4)


class ConvReluBn(nn.Module):
    """The TDNN unit: Conv1d -> ReLU -> BatchNorm, with padded frames zeroed on the way in."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, dilation=dilation,
                              padding=dilation * (kernel - 1) // 2)
        self.bn = nn.BatchNorm1d(cout)

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """x (B, C, T), m (B, 1, T) 1.0 on real frames."""
        return self.bn(F.relu(self.conv(x * m)))


class SqueezeExcitation(nn.Module):
    """Channel gates from the utterance's mean over real frames only."""

    def __init__(self, channels: int, bottleneck: int):
        super().__init__()
        self.fc1 = nn.Linear(channels, bottleneck)
        self.fc2 = nn.Linear(bottleneck, channels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        s = masked_mean(x.transpose(1, 2), mask)  # (B, C)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * gate.unsqueeze(-1).to(x.dtype)


class SERes2NetBlock(nn.Module):
    """1x1 conv, Res2Net dilated convs (y_1 = x_1, y_i = K_i(x_i + y_{i-1})), 1x1 conv, SE,
    residual connection."""

    def __init__(self, channels: int, dilation: int, se_bottleneck: int):
        super().__init__()
        width = channels // SCALE
        self.conv_in = ConvReluBn(channels, channels)
        self.res2 = nn.ModuleList(ConvReluBn(width, width, 3, dilation) for _ in range(SCALE - 1))
        self.conv_out = ConvReluBn(channels, channels)
        self.se = SqueezeExcitation(channels, se_bottleneck)

    def forward(self, x: torch.Tensor, m: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        chunks = self.conv_in(x, m).chunk(SCALE, dim=1)
        out, y = [chunks[0]], None
        for chunk, conv in zip(chunks[1:], self.res2):
            y = conv(chunk if y is None else chunk + y, m)
            out.append(y)
        return x + self.se(self.conv_out(torch.cat(out, dim=1), m), mask)


@register(ENCODERS, "ecapa_tdnn")
class EcapaTdnnEncoder(nn.Module):
    def __init__(self, n_mels: int, m):
        super().__init__()
        c = m.channels
        if c % SCALE:
            raise ValueError(f"ecapa_tdnn: model.channels = {c} must be divisible by {SCALE} "
                             "(the Res2Net scale)")
        # The paper uses a 128-unit SE bottleneck at C = 512/1024; scale it down for thin models.
        se = min(128, max(c // 4, 8))
        self.stem = ConvReluBn(n_mels, c, kernel=5)
        self.blocks = nn.ModuleList(SERes2NetBlock(c, d, se) for d in DILATIONS)
        self.mfa = ConvReluBn(len(DILATIONS) * c, len(DILATIONS) * c)
        self.out_dim = len(DILATIONS) * c

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, n_mels), mask (B, T) True on real frames -> (B, T, 3 * channels), with
        padded output frames set to zero."""
        m = mask.unsqueeze(1).to(x.dtype)  # (B, 1, T)
        h = self.stem(x.transpose(1, 2), m)
        outs = []
        for block in self.blocks:
            h = block(h, m, mask)
            outs.append(h)
        h = self.mfa(torch.cat(outs, dim=1), m)
        return (h * m.to(h.dtype)).transpose(1, 2)
