"""Thin ResNet-34 frame encoder (He et al. 2016; the "thin" speaker-verification variant of
Chung et al. 2020 / WeSpeaker): log-mels as a one-channel (time, mel) image (B, 1, T, F),
a 3x3 conv stem, BasicBlocks [3, 4, 6, 3] with base_width * [1, 2, 4, 8] channels.

Stages 2-4 halve the mel axis; with `model.time_stride` 2 they halve time too, as
WeSpeaker's ResNet34 does (T' = ceil(T / 8): about a quarter of the compute, the same
parameters). With 1 (the default) time keeps full resolution. A strided output frame t is
centred on input frame 2t, so the output mask is the input's every other frame
(`frame_mask`), which SpeakerNet hands to the pooling. Padded time steps are zeroed before
every 3x3 convolution (block inputs and the inside of each block), so a kernel reaching
past an utterance's end sees zeros, exactly as for the utterance alone, strided or not.

Output: (B, T', 8 * base_width * F') with F' = n_mels after three stride-2 halvings
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
    def __init__(self, cin: int, cout: int, freq_stride: int, time_stride: int = 1):
        super().__init__()
        stride = (time_stride, freq_stride)
        self.time_stride = time_stride
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (nn.Identity() if stride == (1, 1) and cin == cout else
                         nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """x (B, C, T, F) with padded time steps already zero; m (B, 1, T, 1) 1.0 on real
        frames. Returns the block output with padded time steps zeroed again (its mask is
        m[:, :, ::time_stride])."""
        m = m[:, :, ::self.time_stride]
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h * m.to(h.dtype)))
        out = F.relu(h + self.shortcut(x))
        return out * m.to(out.dtype)


@register(ENCODERS, "resnet34")
class ResNet34Encoder(nn.Module):
    def __init__(self, n_mels: int, m):
        super().__init__()
        w = m.base_width
        self.time_stride = m.time_stride
        self.stem = nn.Sequential(nn.Conv2d(1, w, 3, padding=1, bias=False), nn.BatchNorm2d(w),
                                  nn.ReLU())
        blocks, cin, freq = [], w, n_mels
        for stage, (n, mult) in enumerate(zip(BLOCKS, WIDTHS)):
            cout = w * mult
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(cin, cout, stride, m.time_stride if stride == 2 else 1))
                cin = cout
                if stride == 2:
                    freq = (freq - 1) // 2 + 1  # ceil(freq / 2): 3x3 kernel, padding 1
        self.blocks = nn.ModuleList(blocks)
        self.out_freq = freq
        self.out_dim = cin * freq

    def frame_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """The mask of the output frames: every time_stride-th frame, once a stage."""
        for block in self.blocks:
            mask = mask[:, ::block.time_stride]
        return mask

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, n_mels), mask (B, T) True on real frames -> (B, T', out_dim), T' = T
        (or ceil(T / 8) with time_stride 2), with padded output frames set to zero."""
        m = mask[:, None, :, None].to(x.dtype)  # (B, 1, T, 1)
        h = self.stem((x * m.squeeze(1)).unsqueeze(1))
        h = h * m.to(h.dtype)
        for block in self.blocks:
            h = block(h, m)
            m = m[:, :, ::block.time_stride]
        b, c, t, f = h.shape
        return h.permute(0, 2, 1, 3).reshape(b, t, c * f)
