"""Voice activity detection: a recording cut down to its speech (`features.vad`), with
Silero VAD (the `vad` extra: pip install -e '.[vad]'; its TorchScript model ships inside
the silero-vad wheel, so nothing is downloaded).

Silero scores 32 ms windows at 16 kHz (or 8 kHz); other rates are resampled to 16 kHz for
the detection alone and the speech is cut from the wave as given. When no speech is found
the recording is kept whole, with a warning: a quiet or unusual recording should still be
embedded (and counted), not vanish from the data or fail a whole run.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import asdict, dataclass
from importlib.metadata import version

import numpy as np
import torch

from spkid.core.errors import ParamsError
from spkid.data.audio import resample

RATES = (8000, 16000)  # what Silero VAD scores natively
INSTALL = "pip install -e '.[vad]' (or pip install 'silero-vad>=5')"


@dataclass(frozen=True)
class SpeechDetector:
    """Speech segments by Silero VAD's get_speech_timestamps with these settings (its
    defaults): speech probability above `threshold`, segments shorter than
    `min_speech_ms` dropped, pauses shorter than `min_silence_ms` kept inside a segment,
    `pad_ms` of margin each side."""
    threshold: float = 0.5
    min_speech_ms: int = 250
    min_silence_ms: int = 100
    pad_ms: int = 30

    def config(self) -> dict:
        """What the features and model.json record (features.vad), with the model's version:
        another version may cut elsewhere."""
        return {"model": "silero-vad", "version": _silero()[0], **asdict(self)}

    @classmethod
    def from_config(cls, config: dict) -> "SpeechDetector":
        return cls(**{k: config[k] for k in cls.__dataclass_fields__ if k in config})

    def segments(self, wave: np.ndarray, sample_rate: int) -> list[tuple[int, int]]:
        """(start, end) sample indices of the speech in `wave` (mono, at `sample_rate`)."""
        _, get_speech_timestamps, model = _silero()
        rate = sample_rate if sample_rate in RATES else 16000
        probe = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
        if rate != sample_rate:
            probe = torch.from_numpy(resample(wave, sample_rate, rate).astype(np.float32))
        with torch.inference_mode():
            found = get_speech_timestamps(
                probe, model(), threshold=self.threshold, sampling_rate=rate,
                min_speech_duration_ms=self.min_speech_ms,
                min_silence_duration_ms=self.min_silence_ms, speech_pad_ms=self.pad_ms)
        scale = sample_rate / rate
        return [(int(round(s["start"] * scale)), min(len(wave), int(round(s["end"] * scale))))
                for s in found]

    def __call__(self, wave: np.ndarray, sample_rate: int, source: str = "a recording"
                 ) -> np.ndarray:
        """The speech of `wave`, its segments concatenated; the whole wave (and a warning
        naming `source`) when none is found."""
        spans = self.segments(wave, sample_rate)
        if not spans:
            warnings.warn(f"features.vad: no speech found in {source} "
                          f"({len(wave) / sample_rate:.1f} s): kept whole", stacklevel=2)
            return wave
        return np.concatenate([wave[a:b] for a, b in spans])


def vad_settings(enabled: bool) -> dict:
    """What features.vad adds to the feature settings (LogMelExtractor.config()) that
    shards and model.json record: nothing when off, so features made without it keep
    their keys."""
    return {"vad": SpeechDetector().config()} if enabled else {}


def detector_for(settings: dict) -> SpeechDetector | None:
    """The detector the feature settings (shard metadata, model.json["features"]) name."""
    return SpeechDetector.from_config(settings["vad"]) if settings.get("vad") else None


def speech_only(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """`wave` (mono float, at `sample_rate`) with its non-speech removed by the default
    SpeechDetector: what features.vad does to training audio."""
    return SpeechDetector()(wave, sample_rate)


_models = threading.local()  # Silero's model carries state between windows: one a thread


def _silero():
    """(silero-vad version, get_speech_timestamps, this thread's model), or a one-line
    error saying what to install."""
    try:
        from silero_vad import get_speech_timestamps, load_silero_vad  # the optional extra
    except ImportError:
        raise ParamsError(f"features.vad (or vad=True) needs silero-vad: {INSTALL}") from None

    def model():
        if getattr(_models, "vad", None) is None:
            with warnings.catch_warnings():  # deprecations in silero's loader, its to heed
                warnings.simplefilter("ignore", FutureWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                _models.vad = load_silero_vad(onnx=False)
        return _models.vad
    return version("silero-vad"), get_speech_timestamps, model
