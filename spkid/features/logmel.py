"""Log-mel features, computed in batches with torch.

Each waveform is reflect-padded on its own before the batch is zero-padded to a common
length (the STFT runs with center=False), so an utterance's features never depend on
which other utterances share its batch.
"""

from __future__ import annotations

import numpy as np
import torch

from spkid.core.install import require_torchaudio

LOG_FLOOR = 1e-6  # keeps digital silence finite; about -138 dB re full scale
# Log-mels are computed in float64 and rounded to this step before the float32 cast. Which
# code path a CPU takes (plain, AVX2, AVX-512; FMA or not) moves float32 results by an ulp
# and so the stored bytes; in float64 the paths differ by ~1e-15, and a value that close to
# a rounding boundary of a 2**-12 grid turns up about once in 10**11 values. The step is
# 0.001 dB, a hundred times finer than float16 storage.
LOG_STEP = 2.0 ** -12
CHUNK_FRAMES = 512


class LogMelExtractor:
    def __init__(self, sample_rate: int = 16000, n_mels: int = 40, n_fft: int = 400,
                 hop_length: int = 160, f_min: float = 0.0, f_max: float | None = None):
        self.sample_rate, self.n_mels, self.n_fft = sample_rate, n_mels, n_fft
        self.hop_length, self.f_min = hop_length, f_min
        self.f_max = f_max if f_max is not None else sample_rate / 2
        # The filterbank and window are made in float64 too: made in float32 they would
        # differ by an ulp between CPUs like everything else.
        audio = require_torchaudio().transforms
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            self._stft = audio.Spectrogram(n_fft=n_fft, win_length=n_fft, hop_length=hop_length,
                                           center=False, window_fn=torch.hann_window, power=None)
            self._mel = audio.MelScale(n_mels=n_mels, sample_rate=sample_rate, f_min=f_min,
                                       f_max=self.f_max, n_stft=n_fft // 2 + 1, norm=None,
                                       mel_scale="htk")
        finally:
            torch.set_default_dtype(default)

    @classmethod
    def from_params(cls, features) -> "LogMelExtractor":
        return cls(features.sample_rate, features.n_mels, features.n_fft, features.hop_length,
                   features.f_min, features.f_max)

    @classmethod
    def from_config(cls, config: dict) -> "LogMelExtractor":
        """The extractor a `config()` describes (shard metadata, model.json["features"])."""
        return cls(config["sample_rate"], config["n_mels"], config["n_fft"],
                   config["hop_length"], config["f_min"], config.get("f_max"))

    def config(self) -> dict:
        return {"sample_rate": self.sample_rate, "n_mels": self.n_mels, "n_fft": self.n_fft,
                "hop_length": self.hop_length, "f_min": self.f_min, "f_max": self.f_max,
                "window": "hann", "mel_scale": "htk", "log_floor": LOG_FLOOR,
                # What happens, in torchaudio's words: the STFT runs uncentred on a wave
                # reflect-padded by n_fft // 2 on its own (frames as a centred STFT's).
                "center": False, "pad": "reflect n_fft // 2",
                # Identical bytes on every x86 CPU (see LOG_STEP).
                "precision": "float64", "log_step": LOG_STEP}

    def num_frames(self, num_samples: int) -> int:
        return 1 + num_samples // self.hop_length

    def _pad(self, wave: np.ndarray) -> np.ndarray:
        half = self.n_fft // 2
        # Reflection needs more samples than the pad; very short clips are zero-padded.
        mode = "reflect" if len(wave) > half else "constant"
        return np.pad(wave, (half, half), mode=mode)

    @torch.no_grad()
    def __call__(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        """(T_i, n_mels) float32 log-mel matrices for a batch of mono waveforms."""
        padded = [self._pad(np.asarray(w, dtype=np.float64)) for w in waves]
        if len(padded) == 1:
            batch = torch.from_numpy(padded[0])[None]
        else:
            batch = torch.zeros(len(padded), max(len(p) for p in padded), dtype=torch.float64)
            for i, p in enumerate(padded):
                batch[i, :len(p)] = torch.from_numpy(p)
        frames = 1 + (batch.shape[1] - self.n_fft) // self.hop_length
        # A few hundred frames at a time keep the float64 STFT's buffers in cache and reused
        # (whole recordings ran 20 % slower); every frame's numbers are the same either way.
        mel = torch.cat([self._log_mel(batch[:, a * self.hop_length:
                                             (min(frames, a + CHUNK_FRAMES) - 1) * self.hop_length
                                             + self.n_fft])
                         for a in range(0, frames, CHUNK_FRAMES)], dim=1)
        # Scaling by a power of two and rounding are exact, and the grid values are exact
        # in float32 (|log-mel| < 2**11), so the cast adds no rounding of its own.
        mel = mel.div_(LOG_STEP).round_().mul_(LOG_STEP).float()
        return [mel[i, :self.num_frames(len(w))].numpy().copy() for i, w in enumerate(waves)]

    def _log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, T, n_mels) float64 log-mels of an already padded (B, samples) float64 batch."""
        spec = self._stft(wave)
        # re² + im² as exact elementwise operations: several times faster than |z|² through
        # the complex abs (a hypot), with no CPU-specific fused multiply-add in it.
        parts = torch.view_as_real(spec).square_()
        power = parts[..., 0].add(parts[..., 1])
        return self._mel(power).clamp_min_(LOG_FLOOR).log_().transpose(1, 2)


def pad_to_min_length(wave: np.ndarray, min_samples: int) -> np.ndarray:
    """Repeat a short recording until it is long enough (silence would add no speaker cues)."""
    if len(wave) >= min_samples:
        return wave
    return np.resize(wave, min_samples)
