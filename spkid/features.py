"""Log-mel features, computed in batches with torch.

Each waveform is reflect-padded on its own before the batch is zero-padded to a common
length (the STFT runs with center=False), so an utterance's features never depend on
which other utterances share its batch.
"""

from __future__ import annotations

import numpy as np
import torch

from spkid.audio import read_audio, require_torchaudio

LOG_FLOOR = 1e-6  # keeps digital silence finite; about -138 dB re full scale


class LogMelExtractor:
    def __init__(self, sample_rate: int = 16000, n_mels: int = 40, n_fft: int = 400,
                 hop_length: int = 160, f_min: float = 0.0, f_max: float | None = None):
        self.sample_rate, self.n_mels, self.n_fft = sample_rate, n_mels, n_fft
        self.hop_length, self.f_min = hop_length, f_min
        self.f_max = f_max if f_max is not None else sample_rate / 2
        self._mel = require_torchaudio().transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, win_length=n_fft, hop_length=hop_length,
            f_min=f_min, f_max=self.f_max, n_mels=n_mels, power=2.0, center=False,
            window_fn=torch.hann_window, norm=None, mel_scale="htk")

    @classmethod
    def from_params(cls, features) -> "LogMelExtractor":
        return cls(features.sample_rate, features.n_mels, features.n_fft, features.hop_length,
                   features.f_min, features.f_max)

    def config(self) -> dict:
        return {"sample_rate": self.sample_rate, "n_mels": self.n_mels, "n_fft": self.n_fft,
                "hop_length": self.hop_length, "f_min": self.f_min, "f_max": self.f_max,
                "window": "hann", "mel_scale": "htk", "log_floor": LOG_FLOOR, "center": True}

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
        padded = [self._pad(np.asarray(w, dtype=np.float32)) for w in waves]
        width = max(len(p) for p in padded)
        batch = torch.zeros(len(padded), width)
        for i, p in enumerate(padded):
            batch[i, :len(p)] = torch.from_numpy(p)
        mel = self._mel(batch).clamp_min_(LOG_FLOOR).log_().transpose(1, 2)  # (B, T, n_mels)
        return [mel[i, :self.num_frames(len(w))].numpy().copy() for i, w in enumerate(waves)]


def pad_to_min_length(wave: np.ndarray, min_samples: int) -> np.ndarray:
    """Repeat a short recording until it is long enough (silence would add no speaker cues)."""
    if len(wave) >= min_samples:
        return wave
    return np.resize(wave, min_samples)


def manifest_to_shards(rows, manifest_path, meta: dict, extractor: LogMelExtractor,
                       writer, *, batch_size: int, min_seconds: float, short: str,
                       progress: bool = True) -> dict:
    """Stream every manifest row into `writer` (a ShardWriter): decode audio and compute
    log-mels batch by batch, or, for precomputed HW4 features, load and check them.
    Memory holds one batch plus one shard, whatever the number of utterances."""
    from tqdm import tqdm

    from spkid.manifest import resolve

    precomputed = meta.get("format") == "hw4"
    if precomputed and meta.get("n_mels") != extractor.n_mels:
        from spkid.errors import DataError
        raise DataError(f"{manifest_path}: the data set has {meta.get('n_mels')} mels but "
                        f"features.n_mels is {extractor.n_mels}")
    min_samples = int(round(min_seconds * extractor.sample_rate))
    stats = {"utterances": 0, "padded": 0, "skipped_short": 0}
    bar = tqdm(total=len(rows), desc="features", unit="utt", disable=not progress)
    try:
        for start in range(0, len(rows), batch_size):
            batch = rows[start:start + batch_size]
            if precomputed:
                from spkid.sources.hw4 import load_hw4_features
                feats = [load_hw4_features(resolve(manifest_path, r), r.num_frames, extractor.n_mels)
                         for r in batch]
            else:
                waves, kept = [], []
                for r in batch:
                    wave = read_audio(resolve(manifest_path, r), extractor.sample_rate)
                    if len(wave) < min_samples:
                        if short == "skip":
                            stats["skipped_short"] += 1
                            continue
                        wave = pad_to_min_length(wave, min_samples)
                        stats["padded"] += 1
                    waves.append(wave)
                    kept.append(r)
                batch, feats = kept, (extractor(waves) if waves else [])
            for r, f in zip(batch, feats):
                writer.add(r.utterance_id, r.speaker, r.role, f)
                stats["utterances"] += 1
            bar.update(len(rows[start:start + batch_size]))
    finally:
        bar.close()  # so an error message starts on a line of its own
    writer.flush()
    return stats
