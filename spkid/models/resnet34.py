"""Thin ResNet-34 frame encoder (He et al. 2016; the "thin" speaker-verification variant of
Chung et al. 2020 / WeSpeaker): log-mels as a one-channel (time, mel) image (B, 1, T, F),
a 3x3 conv stem, BasicBlocks [3, 4, 6, 3] with base_width * [1, 2, 4, 8] channels.

Design choice, so that masks stay exact and T' == T: stages 2-4 stride (1, 2), i.e. only
over the mel axis; time keeps full resolution and the input mask is reused unchanged.
(WeSpeaker also strides time by 8; that would need a downsampled mask and makes embeddings
depend on where an utterance's length falls relative to the stride.) Padded time steps are
zeroed before every 3x3 convolution (block inputs and the inside of each block), so a
kernel reaching past an utterance's end sees zeros, exactly as for the utterance alone.

Output: (B, T, 8 * base_width * F') with F' = n_mels after three stride-2 halvings
(ceil each time: 40 -> 20 -> 10 -> 5, 80 -> 40 -> 20 -> 10). Full time resolution costs
compute: keep base_width small (4-8) on CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spkid.models.registry import ENCODERS, register

BLOCKS = (3, 4, 6, 3)
WIDTHS = (1, 2, 4, 8)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, freq_stride: int):
        super().__init__()
        stride = (1, freq_stride)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (nn.Identity() if freq_stride == 1 and cin == cout else
                         nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """x (B, C, T, F) with padded time steps already zero; m (B, 1, T, 1) 1.0 on real
        frames. Returns the block output with padded time steps zeroed again."""
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h * m.to(h.dtype)))
        out = F.relu(h + self.shortcut(x))
        return out * m.to(out.dtype)


@register(ENCODERS, "resnet34")
class ResNet34Encoder(nn.Module):
    def __init__(self, n_mels: int, m):
        super().__init__()
        w = m.base_width
        self.stem = nn.Sequential(nn.Conv2d(1, w, 3, padding=1, bias=False), nn.BatchNorm2d(w),
                                  nn.ReLU())
        blocks, cin, freq = [], w, n_mels
        for stage, (n, mult) in enumerate(zip(BLOCKS, WIDTHS)):
            cout = w * mult
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(cin, cout, stride))
                cin = cout
                if stride == 2:
                    freq = (freq - 1) // 2 + 1  # ceil(freq / 2): 3x3 kernel, padding 1
        self.blocks = nn.ModuleList(blocks)
        self.out_freq = freq
        self.out_dim = cin * freq

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, n_mels), mask (B, T) True on real frames -> (B, T, out_dim), with
        padded output frames set to zero."""
        m = mask[:, None, :, None].to(x.dtype)  # (B, 1, T, 1)
        h = self.stem((x * m.squeeze(1)).unsqueeze(1))
        h = h * m.to(h.dtype)
        for block in self.blocks:
            h = block(h, m)
        b, c, t, f = h.shape
        return h.permute(0, 2, 1, 3).reshape(b, t, c * f)
