"""CAM++ frame encoder (Wang et al., Interspeech 2023), after 3D-Speaker's CAMPPlus
(modelscope/3D-Speaker, speakerlab/models/campplus/DTDNN.py and layers.py, commit 09e7806).

FCM front end: log-mels as a one-channel (time, mel) image, a 3x3 conv stem, two stages of
two BasicBlocks (spkid.models.resnet34's) each halving the mels, a 3x3 conv halving them
once more: `model.base_width` x ceil(n_mels / 8) features a frame (3D-Speaker: 32 x 10).
Then a TDNN layer (kernel 5, stride 2 in time) to `model.channels` (their init_channels,
128), three densely connected CAM-TDNN blocks (12, 24, 16 layers; kernel 3; dilations 1,
2, 2), each layer adding `model.growth_rate` channels (32) through a 4 x growth_rate
bottleneck and a context-aware mask, each block followed by a transit layer halving the
channels, and a last BN + ReLU: out_dim = 512 at the published widths. 3D-Speaker's
StatsPool and DenseLayer are spkid's pooling (tstp) and embedding layer; their
gradient checkpointing (memory_efficient) is left out.

Masks. The TDNN layer's stride halves time: output frame t is centred on input frame 2t,
so the output mask is mask[:, ::2] (`frame_mask`), which SpeakerNet hands to the pooling.
Padded frames are zeroed before every convolution wider than 1 (so a kernel reaching past
an utterance's end sees zeros, as for the utterance alone: this holds through the stride
too), and the context of each mask is a mean over real frames only: the utterance's and
its 100-frame segment's (3D-Speaker's seg_pooling, segments counted from the utterance's
first frame; the last one partial). On an unpadded input these equal 3D-Speaker's means
exactly. BatchNorm: as spkid.models.ecapa_tdnn says.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spkid.models.registry import ENCODERS, register
from spkid.models.resnet34 import BasicBlock

BLOCK_LAYERS = (12, 24, 16)
BLOCK_DILATIONS = (1, 2, 2)
BOTTLENECK = 4  # bn_size: a dense layer's bottleneck is 4 x growth_rate channels
SEGMENT = 100  # frames (after the stride: 2 s) of a context-aware mask's segment mean
CONTEXT_REDUCTION = 2


def masked_time_mean(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """x (B, C, T) zero on padded frames, m (B, 1, T) -> (B, C, 1) mean over real frames."""
    return x.sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp_min(1.0)


def segment_means(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Each frame's mean over the real frames of its SEGMENT-frame segment, (B, C, T).

    avg_pool1d divides a window's sum by the frames inside the tensor; the same pooling of
    the mask divides the count of real ones by that number too, so the ratio is sum over
    count of real frames, whatever the padding (ONNX Runtime's divisor cancels the same way)."""
    t = x.shape[-1]
    sums = F.avg_pool1d(x, SEGMENT, SEGMENT, ceil_mode=True)
    # A segment with a real frame has a share >= 1 / SEGMENT; an all-padding one has
    # share 0 and sum 0, and its frames are padding.
    share = F.avg_pool1d(m, SEGMENT, SEGMENT, ceil_mode=True).clamp_min(0.5 / SEGMENT)
    seg = sums / share
    b, c, n = seg.shape
    return seg.unsqueeze(-1).expand(b, c, n, SEGMENT).reshape(b, c, n * SEGMENT)[..., :t]


class ContextAwareMasking(nn.Module):
    """3D-Speaker's CAMLayer: a dilated kernel-3 conv gated by sigmoid(W2 relu(W1 context)),
    the context being the utterance mean plus the frame's segment mean."""

    def __init__(self, cin: int, cout: int, dilation: int):
        super().__init__()
        self.local = nn.Conv1d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False)
        self.context_in = nn.Conv1d(cin, cin // CONTEXT_REDUCTION, 1)
        self.context_out = nn.Conv1d(cin // CONTEXT_REDUCTION, cout, 1)

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        x = x * m
        context = masked_time_mean(x, m) + segment_means(x, m)
        gate = torch.sigmoid(self.context_out(F.relu(self.context_in(context))))
        return self.local(x) * gate


class DenseTdnnLayer(nn.Module):
    """BN-ReLU, 1x1 conv to the bottleneck, BN-ReLU, context-aware masking to growth_rate."""

    def __init__(self, cin: int, growth: int, dilation: int):
        super().__init__()
        self.bn_in = nn.BatchNorm1d(cin)
        self.bottleneck = nn.Conv1d(cin, BOTTLENECK * growth, 1, bias=False)
        self.bn_mid = nn.BatchNorm1d(BOTTLENECK * growth)
        self.cam = ContextAwareMasking(BOTTLENECK * growth, growth, dilation)

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn_mid(self.bottleneck(F.relu(self.bn_in(x)))))
        return self.cam(h, m)


class DenseTdnnBlock(nn.Module):
    """Dense connectivity: each layer sees every earlier layer's output; then the transit
    layer (BN-ReLU, 1x1 conv without bias) halves the channels."""

    def __init__(self, cin: int, layers: int, growth: int, dilation: int):
        super().__init__()
        self.layers = nn.ModuleList(DenseTdnnLayer(cin + i * growth, growth, dilation)
                                    for i in range(layers))
        width = cin + layers * growth
        self.transit_bn = nn.BatchNorm1d(width)
        self.transit = nn.Conv1d(width, width // 2, 1, bias=False)
        self.out_channels = width // 2

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.cat([x, layer(x, m)], dim=1)
        return self.transit(F.relu(self.transit_bn(x)))


@register(ENCODERS, "campplus")
class CamPlusPlusEncoder(nn.Module):
    def __init__(self, n_mels: int, m):
        super().__init__()
        w, growth = m.base_width, m.growth_rate
        # FCM: 3D-Speaker's BasicResBlock is resnet34's BasicBlock on the transposed plane.
        self.stem = nn.Sequential(nn.Conv2d(1, w, 3, padding=1, bias=False), nn.BatchNorm2d(w))
        self.fcm_blocks = nn.ModuleList(BasicBlock(w, w, stride) for stride in (2, 1, 2, 1))
        self.fcm_out = nn.Sequential(nn.Conv2d(w, w, 3, stride=(1, 2), padding=1, bias=False),
                                     nn.BatchNorm2d(w))
        freq = n_mels
        for _ in range(3):
            freq = (freq - 1) // 2 + 1  # ceil(freq / 2): 3x3 kernel, padding 1, stride 2
        self.tdnn = nn.Conv1d(w * freq, m.channels, 5, stride=2, padding=2, bias=False)
        self.tdnn_bn = nn.BatchNorm1d(m.channels)
        blocks, c = [], m.channels
        for layers, dilation in zip(BLOCK_LAYERS, BLOCK_DILATIONS):
            blocks.append(DenseTdnnBlock(c, layers, growth, dilation))
            c = blocks[-1].out_channels
        self.blocks = nn.ModuleList(blocks)
        self.out_bn = nn.BatchNorm1d(c)
        self.out_dim = c

    @staticmethod
    def frame_mask(mask: torch.Tensor) -> torch.Tensor:
        """The mask of the output frames: the TDNN layer's stride 2 keeps every other frame."""
        return mask[:, ::2]

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, n_mels), mask (B, T) True on real frames -> (B, ceil(T / 2), out_dim),
        with padded output frames (frame_mask(mask) False) set to zero."""
        m2 = mask[:, None, :, None].to(x.dtype)  # (B, 1, T, 1)
        h = F.relu(self.stem(x.unsqueeze(1) * m2)) * m2
        for block in self.fcm_blocks:
            h = block(h, m2)
        h = F.relu(self.fcm_out(h)) * m2
        b, c, t, f = h.shape
        # channel-major features, as 3D-Speaker's (B, C, F, T) -> (B, C * F, T)
        h = h.permute(0, 1, 3, 2).reshape(b, c * f, t)
        m = self.frame_mask(mask)[:, None, :].to(h.dtype)  # (B, 1, ceil(T / 2))
        h = F.relu(self.tdnn_bn(self.tdnn(h))) * m
        for block in self.blocks:
            h = block(h, m)
        h = F.relu(self.out_bn(h)) * m
        return h.transpose(1, 2)
