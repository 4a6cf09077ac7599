"""Reading audio: soundfile decodes (torchaudio.load needs torchcodec, which does not load
everywhere), torchaudio resamples. Every failure names the file."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

from spkid.errors import DataError, SpkidError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")

# Full scale is 1. Float files can hold anything, and samples this large push the mel power
# past float32's range (from about 1e18 at the default n_fft), so the log-mels would be inf;
# 1e12 keeps that from happening up to n_fft 65536 while still taking float files that
# hold integer-scale samples (+-32768, +-2**31).
MAX_AMPLITUDE = 1e12

TORCHAUDIO_FIX = ("install a CUDA-linked torch from PyPI next to it, in a fresh virtual "
                  "environment: pip install 'torch>=2.11,<2.15' 'torchaudio==2.11.*' "
                  "(a +cpu torch or torch 2.15 cannot load torchaudio 2.11)")


def require_torchaudio():
    """Import torchaudio, or fail in one line that says how to fix the install."""
    try:
        import torchaudio
    except Exception as exc:  # an ABI mismatch raises OSError/ImportError/RuntimeError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpkidError(f"torchaudio failed to import ({first}); {TORCHAUDIO_FIX}") from None
    return torchaudio


def audio_info(path: str | Path) -> tuple[float, int]:
    """(duration in seconds, sample rate) without decoding the samples."""
    try:
        info = sf.info(str(path))
    except Exception as exc:
        raise _unreadable(path, "read audio header", exc) from None
    if info.samplerate <= 0:
        raise DataError(f"{path}: invalid sample rate {info.samplerate}")
    return info.frames / info.samplerate, info.samplerate


def read_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Decode a file to mono float32 at `sample_rate` (channels are averaged)."""
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise _unreadable(path, "decode audio", exc) from None
    if data.shape[0] == 0:
        raise DataError(f"{path}: audio is empty (0 samples)")
    check_samples(path, data)
    return resample(data.mean(axis=1), sr, sample_rate)


def check_samples(path: str | Path, samples: np.ndarray) -> None:
    """Refuse decoded samples no recording holds: NaN, inf, or beyond MAX_AMPLITUDE."""
    if samples.size == 0:
        return
    # Two reductions and no temporary arrays (a long recording is hundreds of MB); NaN
    # propagates through max and min.
    peak = float(max(samples.max(), -samples.min()))
    if not np.isfinite(peak):
        raise DataError(f"{path}: audio contains NaN or inf samples")
    if peak > MAX_AMPLITUDE:
        raise DataError(f"{path}: samples reach {peak:.3g}, far beyond full scale (1); "
                        "not usable audio")


def resample(wave: np.ndarray, orig_sr: int, sample_rate: int) -> np.ndarray:
    """The wave at `sample_rate`: float32 when no resampling is needed, else float64, in
    which the filter runs so that no CPU-dependent float32 rounding reaches the features."""
    if orig_sr == sample_rate:
        return np.ascontiguousarray(wave, dtype=np.float32)
    import torch
    return _resampler(orig_sr, sample_rate)(torch.from_numpy(wave.astype(np.float64))).numpy()


@lru_cache(maxsize=16)
def _resampler(orig_sr: int, sample_rate: int):
    import torch
    return require_torchaudio().transforms.Resample(orig_sr, sample_rate, dtype=torch.float64)


def write_wav(path: str | Path, wave: np.ndarray, sample_rate: int) -> None:
    sf.write(str(path), np.clip(wave, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")


def _unreadable(path: str | Path, what: str, exc: Exception) -> DataError:
    # soundfile says "System error" for a missing file and for a folder alike.
    if not os.path.exists(path):
        return DataError(f"{path}: not found")
    if os.path.isdir(path):
        return DataError(f"{path}: is a folder, not an audio file")
    return DataError(f"{path}: cannot {what} ({_reason(exc)})")


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
