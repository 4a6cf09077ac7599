"""WeSpeaker's waveform augmentation done on log-mel training crops, as they are drawn:
nothing is stored, so the disk holds the clean features once, and each crop's
augmentation is a pure function of (seed, step) like the crop itself.

    speed   a speed change by factor f moves every frequency to f times itself and makes
            the sound 1/f as long: the crop is read from f times as many stored frames,
            resampled in time, and its mel bands are warped (band b takes the energy
            density at frequency centre(b) / f, over its own bandwidth / f). The voice
            changes, so a crop at speed f trains a class of its own, `<speaker>~sp<f>`
            (spkid.data.views.speed_copy_name), as WeSpeaker's speed perturbation does.
    reverb  a generated room (spkid.features.waveform.Room): a direct path and an
            exponentially decaying tail whose energy relative to it is (r / r_c)^2, applied as the tail's energy per frame convolved with each mel
            band's power (late reverberation adds energy with random phase), power kept.
    babble  3 to 7 other speakers' crops of the same batch, each at equal power, mixed in
            the mel power domain at an SNR drawn from `babble_snr_db`.

A crop is at speed f (among 1.0 and `speed`, equally likely), and then reverberant with
probability `reverb`, else babbled with probability `babble` (never both, as each stored
copy was one or the other). Log-mels are the natural log of mel power (spkid.features.logmel).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spkid.data.views import speed_copy_name
from spkid.features.waveform import Room

BABBLE_SPEAKERS = (3, 7)
# Energy decay of 60 dB over RT60: power falls by exp(-ln(10**6) t / RT60).
LN_1E6 = 6 * np.log(10.0)


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)


@dataclass(frozen=True)
class SpeedWarp:
    """Where each output mel band reads its energy at speed f: fractional band `at`, plus
    `gain` (log) for the band's width there against its own width / f."""
    factor: float
    at: np.ndarray  # (n_mels,) fractional source band
    gain: np.ndarray  # (n_mels,) log

    @classmethod
    def of(cls, factor: float, features: dict) -> "SpeedWarp":
        """For log-mels made with `features` (LogMelExtractor.config(): htk mel scale)."""
        n, f_max = features["n_mels"], features["f_max"] or features["sample_rate"] / 2
        edges = np.linspace(_hz_to_mel(features["f_min"]), _hz_to_mel(f_max), n + 2)
        hz = _mel_to_hz(edges)
        width = hz[2:] - hz[:-2]  # each band's extent in Hz
        source = _mel_to_hz(edges[1:-1]) / factor
        at = np.clip((_hz_to_mel(source) - edges[1]) / (edges[1] - edges[0]), 0.0, n - 1.0)
        width_there = np.interp(at, np.arange(n), width)
        return cls(factor, at, np.log(width / factor) - np.log(width_there))

    def source_frames(self, frames: int) -> int:
        """Stored frames a crop of `frames` frames at this speed is read from."""
        return int(np.ceil((frames - 1) * self.factor)) + 1

    def output_frames(self, source: int) -> int:
        return int(np.floor((source - 1) / self.factor)) + 1

    def __call__(self, x: np.ndarray, frames: int) -> np.ndarray:
        """(frames, n_mels) log-mels at this speed from the source crop x (T, n_mels)."""
        t = np.minimum(np.arange(frames) * self.factor, len(x) - 1)
        t0 = np.floor(t).astype(np.int64)
        t1 = np.minimum(t0 + 1, len(x) - 1)
        a = (t - t0)[:, None]
        timed = (1 - a) * x[t0] + a * x[t1]
        b0 = np.floor(self.at).astype(np.int64)
        b1 = np.minimum(b0 + 1, x.shape[1] - 1)
        c = self.at - b0
        return (1 - c) * timed[:, b0] + c * timed[:, b1] + self.gain


@dataclass(frozen=True)
class CropAugment:
    """What train.augment asks of the loader, with the feature geometry it needs."""
    speed: tuple[float, ...]
    reverb: float
    rt60: tuple[float, float]
    babble: float
    babble_snr_db: tuple[float, float]
    frames_per_second: float
    warps: tuple[SpeedWarp, ...]

    @classmethod
    def from_params(cls, a, features: dict) -> "CropAugment | None":
        """None when train.augment `a` asks for none of these."""
        if not (a.speed or a.reverb or a.babble):
            return None
        return cls(tuple(a.speed), a.reverb, tuple(a.rt60), a.babble, tuple(a.babble_snr_db),
                   features["sample_rate"] / features["hop_length"],
                   tuple(SpeedWarp.of(f, features) for f in a.speed))

    def classes(self, speakers: list[str]) -> list[str]:
        """The classes a model trained with this augmentation has: the speakers, then each
        speed's copy of each speaker (class k * len(speakers) + s for factor k, 1-based)."""
        return list(speakers) + [speed_copy_name(s, f) for f in self.speed for s in speakers]

    def draw_speeds(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """Per crop: 0 for the clean speed, k for self.speed[k - 1]."""
        return rng.integers(0, len(self.speed) + 1, count) if self.speed else np.zeros(count, int)

    def source_frames(self, speeds: np.ndarray, frames: np.ndarray) -> np.ndarray:
        return np.array([n if k == 0 else self.warps[k - 1].source_frames(n)
                         for k, n in zip(speeds.tolist(), frames.tolist())], np.int64)

    def __call__(self, x: np.ndarray, lengths: np.ndarray, speeds: np.ndarray,
                 frames: np.ndarray, labels: np.ndarray, n_speakers: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(crops, mask, labels) from source crops x (B, T, F) of `lengths` frames: each at
        its speed (at most `frames` frames out), then in a room or with babble."""
        out_len = np.array([min(f, n) if k == 0 else min(f, self.warps[k - 1].output_frames(n))
                            for k, n, f in zip(speeds.tolist(), lengths.tolist(), frames.tolist())])
        y = np.zeros((len(x), int(out_len.max()), x.shape[2]), np.float32)
        for i, (k, n, m) in enumerate(zip(speeds.tolist(), lengths.tolist(), out_len.tolist())):
            y[i, :m] = x[i, :m] if k == 0 else self.warps[k - 1](x[i, :n].astype(np.float64), m)
        mask = np.arange(y.shape[1])[None, :] < out_len[:, None]
        kind = rng.random(len(y))
        rooms = np.flatnonzero(kind < self.reverb)
        babbled = np.flatnonzero((kind >= self.reverb) & (kind < self.reverb + self.babble))
        power = np.exp(y.astype(np.float64)) * mask[..., None]
        out = power.copy()
        for i in rooms:
            out[i] = self._room(power[i], int(out_len[i]), rng)
        for i in babbled:
            out[i] = self._babble(power, i, out_len, labels, rng)
        y = np.where(mask[..., None], np.log(np.maximum(out, 1e-30)), 0.0).astype(np.float32)
        return y, mask, labels + n_speakers * speeds

    def _room(self, power: np.ndarray, frames: int, rng: np.random.Generator) -> np.ndarray:
        """One crop's mel power (T, F) in a generated room, its power kept."""
        room = Room.draw(rng, self.rt60)
        decay = LN_1E6 / (room.rt60 * self.frames_per_second)  # per frame
        k = np.arange(int(np.ceil(room.rt60 * self.frames_per_second)) + 1)
        kernel = room.tail_energy * (np.exp(-decay * k) - np.exp(-decay * (k + 1)))
        kernel[0] += 1.0  # the direct path
        p = power[:frames]
        n = frames + len(kernel) - 1
        wet = np.fft.irfft(np.fft.rfft(p, n, axis=0) * np.fft.rfft(kernel, n)[:, None], n,
                           axis=0)[:frames]
        wet = np.maximum(wet, 0.0) * (p.sum() / max(wet.sum(), 1e-30))
        out = power.copy()
        out[:frames] = wet
        return out

    def _babble(self, power: np.ndarray, i: int, lengths: np.ndarray, labels: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
        """Crop i's mel power with 3 to 7 other speakers' crops of the batch mixed in."""
        others = np.flatnonzero(labels != labels[i])
        m = int(lengths[i])
        if not len(others):
            return power[i]
        voices = rng.choice(others, size=min(len(others), int(rng.integers(
            BABBLE_SPEAKERS[0], BABBLE_SPEAKERS[1] + 1))), replace=False)
        noise = np.zeros_like(power[i][:m])
        for j in voices:
            v = np.resize(power[j][:int(lengths[j])], (m, power.shape[2]))  # loop a short one
            noise += v / max(v.mean(), 1e-30)
        snr = rng.uniform(*self.babble_snr_db)
        gain = power[i][:m].mean() / max(noise.mean(), 1e-30) / 10 ** (snr / 10)
        out = power[i].copy()
        out[:m] = power[i][:m] + gain * noise
        return out
