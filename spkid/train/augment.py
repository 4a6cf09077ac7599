"""On-the-fly augmentation of training batches, applied to log-mel features on the device.

Noise is mixed in the mel power domain (log(exp(x) + g * noise)), which is how the two
signals add before the logarithm up to their cross terms; it works on precomputed features
as well as on ours. Both draw from torch's global generator, which training checkpoints save,
so a resumed run replays the same masks and noises.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from spkid.core.errors import DataError
from spkid.core.install import require_torchaudio
from spkid.data.audio import find_noise, read_audio
from spkid.features.logmel import LogMelExtractor
from spkid.models.pooling import masked_mean


class SpecAugment(torch.nn.Module):
    """Random time and frequency bands of each crop (torchaudio's masks), filled with 0
    (`fill` "zero") or with the crop's own mean log-mel of each bin ("mean"). On raw
    log-mels 0 is a level far below speech; the bin's mean is what the masks fill after
    mean normalisation (WeSpeaker's, which masks normalised features with 0). On held-out
    speakers the mean was no better clean and worse on mismatched audio (BENCHMARKS)."""

    def __init__(self, time_masks: int, time_mask_width: int, freq_masks: int,
                 freq_mask_width: int, fill: str = "zero"):
        super().__init__()
        T = require_torchaudio().transforms
        # iid_masks: each segment of the batch gets its own masks.
        self.time = [T.TimeMasking(time_mask_width, iid_masks=True) for _ in range(time_masks)]
        self.freq = [T.FrequencyMasking(freq_mask_width, iid_masks=True) for _ in range(freq_masks)]
        self.fill = fill

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, F), mask (B, T) of real frames -> x with random bands filled; padded
        frames are left as they were."""
        level = 0.0
        if self.fill == "mean":
            real = (torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None
                    else mask)
            level = masked_mean(x, real).unsqueeze(1)
        spec = (x - level).transpose(1, 2).unsqueeze(1)  # torchaudio wants (B, C, freq, time)
        for band in self.time + self.freq:
            spec = band(spec)
        out = spec.squeeze(1).transpose(1, 2) + level
        return out if mask is None else torch.where(mask.unsqueeze(-1), out, x)


class NoiseAugment(torch.nn.Module):
    """Adds a random crop of a noise recording at a random SNR to a share of the segments."""

    def __init__(self, noise_logmels: list[np.ndarray], snr_db: tuple[float, float], prob: float):
        super().__init__()
        if not noise_logmels:
            raise DataError("train.augment.noise_dir holds no usable audio")
        power = [np.exp(m.astype(np.float64)) for m in noise_logmels]
        self.noise = torch.from_numpy(np.concatenate(power).astype(np.float32))  # (N, F) mel power
        self.snr_low, self.snr_high = snr_db
        self.prob = prob

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, F = x.shape
        noise = self.noise.to(x.device)
        if noise.shape[1] != F:
            raise DataError(f"noise features have {noise.shape[1]} mels, the data {F}")
        start = torch.randint(0, max(1, len(noise) - T), (B,))
        idx = (start[:, None] + torch.arange(T)[None, :]) % len(noise)
        crop = noise[idx.to(x.device)]  # (B, T, F)
        snr = self.snr_low + (self.snr_high - self.snr_low) * torch.rand(B, device=x.device)
        apply = (torch.rand(B, device=x.device) < self.prob).to(x.dtype)
        speech = x.exp()
        w = mask.to(x.dtype).unsqueeze(-1)
        ratio = (speech * w).sum((1, 2)) / (crop * w).sum((1, 2)).clamp_min(1e-12)
        gain = apply * ratio / 10 ** (snr / 10)
        return torch.log(speech + gain[:, None, None] * crop) * w


def load_noise(folder: str | Path, extractor: LogMelExtractor) -> list[np.ndarray]:
    """Log-mels of every recording in train.augment.noise_dir."""
    files = find_noise(folder, "train.augment.noise_dir")
    return extractor([read_audio(p, extractor.sample_rate) for p in files])


def augmentation(p):
    """The feature-domain augmentation p.train.augment asks for, as one (x, mask) -> x step
    (the identity when it asks for none)."""
    a = p.train.augment
    steps = []
    if a.specaugment:
        steps.append(SpecAugment(a.time_masks, a.time_mask_width, a.freq_masks,
                                 a.freq_mask_width, a.mask_fill))
    if a.noise_dir:
        steps.append(NoiseAugment(load_noise(a.noise_dir, LogMelExtractor.from_params(p.features)),
                                  tuple(a.snr_db), a.noise_prob))

    def augment(x, mask):
        for step in steps:
            x = step(x, mask)
        return x
    return augment
