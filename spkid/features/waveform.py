"""Waveform signal processing for augmentation: speed change, generated rooms and their
impulse responses, reverberation and noise at a given SNR (float64 numpy in and out).

Training augments log-mel crops (spkid.train.mel_augment), drawing its rooms from `Room`
here; the waveform transforms are what those are tested against, and what the
benchmarks' mismatched test audio is made with."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from spkid.core.install import require_torchaudio

SPEED_OF_SOUND = 343.0


def change_speed(wave: np.ndarray, factor: float, sample_rate: int) -> np.ndarray:
    """The wave played `factor` times faster (len / factor samples; pitch moves with it)."""
    # Read at sample_rate * factor, written at sample_rate (torchaudio's `speed` does the
    # same but truncates sample_rate * factor, which turns 0.95 * 16000 into 15199).
    return require_torchaudio().functional.resample(
        torch.from_numpy(wave), int(round(sample_rate * factor)), sample_rate).numpy()


@dataclass(frozen=True)
class Room:
    """A generated room: a 3-10 m by 3-10 m by 2.5-4 m box with an RT60 from a range, the
    talker 0.5 m to half the room away from the microphone."""
    rt60: float
    size: np.ndarray
    distance: float

    @classmethod
    def draw(cls, rng: np.random.Generator, rt60_range: tuple[float, float]) -> "Room":
        rt60 = rng.uniform(*rt60_range)
        size = np.array([rng.uniform(3, 10), rng.uniform(3, 10), rng.uniform(2.5, 4)])
        return cls(rt60, size, rng.uniform(0.5, size[:2].min() / 2))

    @property
    def tail_energy(self) -> float:
        """Reverberant-to-direct energy ratio (r / r_c)^2, with the critical distance
        r_c = 0.057 sqrt(V / RT60) (statistical room acoustics)."""
        return (self.distance / (0.057 * np.sqrt(self.size.prod() / self.rt60))) ** 2


def room_impulse_response(rng: np.random.Generator, sample_rate: int,
                          rt60_range: tuple[float, float]) -> np.ndarray:
    """A seeded room's impulse response: the direct path at sample 0, then from the first
    reflection on, Gaussian noise decaying by 60 dB over RT60 with the room's tail energy."""
    room = Room.draw(rng, rt60_range)
    rt60, size = room.rt60, room.size
    # First reflection after the direct sound: the floor or ceiling bounce, about a room
    # height's extra path at most.
    delay = max(1, int(round(rng.uniform(0.3, 1.0) * size[2] / SPEED_OF_SOUND * sample_rate)))
    n = delay + int(rt60 * sample_rate)
    tail = rng.standard_normal(n - delay) * np.exp(-3 * np.log(10) * np.arange(n - delay)
                                                   / (rt60 * sample_rate))
    rir = np.zeros(n)
    rir[0] = 1.0
    rir[delay:] = tail * np.sqrt(room.tail_energy / np.sum(tail ** 2))
    return rir


def reverberate(wave: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """The wave heard in the room (same length, aligned to the direct path, same power)."""
    # torchaudio's fftconvolve transforms at exactly len(wave) + len(rir) - 1 points, which
    # is often a large prime: 107 ms for 14 s of audio, against 14 ms at the next length
    # whose only factors are 2, 3 and 5 (the same result to 1e-12).
    n = _smooth_length(len(wave) + len(rir) - 1)
    spectrum = torch.fft.rfft(torch.from_numpy(wave), n) * torch.fft.rfft(torch.from_numpy(rir), n)
    wet = torch.fft.irfft(spectrum, n)[:len(wave)].numpy()
    return wet * np.sqrt(power(wave) / max(power(wet), 1e-20))


def _smooth_length(n: int) -> int:
    """The smallest m >= n with no prime factor above 5 (a fast FFT size)."""
    while True:
        k = n
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return n
        n += 1


def add_noise(wave: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """wave + noise scaled to `snr_db` below the wave's power (a silent wave stays as is)."""
    if power(wave) == 0 or power(noise) == 0:
        return wave
    return require_torchaudio().functional.add_noise(
        torch.from_numpy(wave)[None], torch.from_numpy(noise)[None],
        torch.tensor([float(snr_db)], dtype=torch.float64))[0].numpy()


def power(x: np.ndarray) -> float:
    """Mean square of x (0 for an empty one)."""
    return float(np.mean(np.square(x))) if len(x) else 0.0


def unit_power(x: np.ndarray) -> np.ndarray:
    """x scaled to power 1 (silence stays silent)."""
    p = power(x)
    return x / np.sqrt(p) if p > 0 else x


def looped_crop(rng: np.random.Generator, x: np.ndarray, n: int) -> np.ndarray:
    """n samples from a random start, looping a recording shorter than that."""
    if len(x) == 0:
        return np.zeros(n)
    start = int(rng.integers(len(x)))
    return np.resize(np.roll(x, -start), n)
