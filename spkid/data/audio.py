"""Audio files: finding them in folders, reading their headers and decoding them.

soundfile decodes what libsndfile reads (WAV, FLAC, Ogg, MP3), PyAV
(FFmpeg's libraries, shipped inside its wheel) decodes the compressed formats libsndfile
lacks, such as VoxCeleb2's m4a/AAC; torchaudio resamples. (torchaudio.load needs
torchcodec, which does not load everywhere.) Every failure names the file."""

from __future__ import annotations

import os
from collections.abc import Iterable
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path, PurePosixPath

import numpy as np
import soundfile as sf

from spkid.core.errors import DataError
from spkid.core.install import require_torchaudio

SOUNDFILE_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
PYAV_SUFFIXES = (".m4a", ".aac", ".mp4", ".opus", ".webm", ".wma")
AUDIO_SUFFIXES = SOUNDFILE_SUFFIXES + PYAV_SUFFIXES
# A compressed stream decodes to its header's length give or take the codec's priming and
# padding (AAC: 1024-2048 samples); more missing than this is a truncated file.
LENGTH_SLACK_SECONDS = 0.25
# Containers (FFmpeg demuxer names) that record their length: mp4/m4a sample tables, Ogg's
# last page, Matroska's and ASF's headers. A raw ADTS .aac stream records none and FFmpeg
# guesses one from the bitrate, seconds off, so such files are measured by decoding them.
LENGTH_IN_HEADER = frozenset({"mov", "mp4", "m4a", "ogg", "matroska", "webm", "asf"})

# Full scale is 1. Float files can hold anything, and samples this large push the mel power
# past float32's range (from about 1e18 at the default n_fft), so the log-mels would be inf;
# 1e12 keeps that from happening up to n_fft 65536 while still taking float files that
# hold integer-scale samples (+-32768, +-2**31).
MAX_AMPLITUDE = 1e12

def audio_info(path: str | Path) -> tuple[float, int]:
    """(duration in seconds, sample rate) without decoding the samples."""
    if decoded_by_pyav(path):
        with _pyav_stream(path, "read audio header") as (_, stream):
            duration, rate = _header_length(stream), stream.rate
        if duration is None:  # a raw stream: only decoding it tells its length
            data, rate = _pyav_read(path)
            duration = len(data) / rate
        return duration, rate
    try:
        info = sf.info(str(path))
    except Exception as exc:
        raise _unreadable(path, "read audio header", exc) from None
    if info.samplerate <= 0:
        raise DataError(f"{path}: invalid sample rate {info.samplerate}")
    return info.frames / info.samplerate, info.samplerate


def read_audio(path: str | Path, sample_rate: int, start: float | None = None,
               end: float | None = None) -> np.ndarray:
    """Decode a file (or its span from `start` to `end` seconds) to mono at `sample_rate`
    (channels are averaged)."""
    if decoded_by_pyav(path):
        data, sr = _pyav_read(path, until=end)
        first, last = _span(path, start, end, sr, len(data))
        data = data[first:last]
    else:
        try:
            if start is None and end is None:  # to the end, whatever the header says
                data, sr = sf.read(str(path), dtype="float32", always_2d=True)
            else:
                with sf.SoundFile(str(path)) as f:
                    sr = f.samplerate
                    first, last = _span(path, start, end, sr, f.frames)
                    f.seek(first)
                    data = f.read(last - first, dtype="float32", always_2d=True)
        except DataError:
            raise
        except Exception as exc:
            raise _unreadable(path, "decode audio", exc) from None
    if data.shape[0] == 0:
        raise DataError(f"{path}: audio is empty (0 samples)")
    check_samples(path, data)
    return resample(data.mean(axis=1), sr, sample_rate)


def check_pyav_audio(path: str | Path) -> float:
    """Duration in seconds of a file PyAV decodes, after checking that it decodes to the
    end: the last second is decoded and must reach the header's length (one seek, no full
    decode), so a truncated or corrupt file fails here, not hours later in feature
    extraction. A raw stream without a recorded length is decoded whole."""
    with _pyav_stream(path, "decode audio") as (container, stream):
        duration = _header_length(stream)
        if duration is not None:
            reached, samples = _decode_tail(path, container, stream, duration)
    if duration is None:
        data, rate = _pyav_read(path)
        check_samples(path, data)
        return len(data) / rate
    if reached < duration - LENGTH_SLACK_SECONDS:
        raise DataError(f"{path}: truncated audio (header says {duration:.2f} s, decoding "
                        f"ends at {reached:.2f} s)")
    if samples:
        check_samples(path, np.concatenate([s.reshape(-1) for s in samples]))
    return duration


def _decode_tail(path, container, stream, duration: float) -> tuple[float, list]:
    """(where decoding ends in seconds, the samples) of the last second of a stream."""
    try:
        container.seek(int(max(0.0, duration - 1.0) / stream.time_base), stream=stream,
                       backward=True)
        reached, samples = 0.0, []
        for frame in container.decode(stream):
            if frame.time is not None:
                reached = max(reached, frame.time + frame.samples / frame.sample_rate)
            samples.append(frame.to_ndarray())
    except Exception as exc:
        raise DataError(f"{path}: truncated or corrupt audio (cannot decode the end: "
                        f"{_reason(exc)})") from None
    return reached, samples


def decoded_by_pyav(path: str | Path) -> bool:
    return str(path).lower().endswith(PYAV_SUFFIXES)


@contextmanager
def _pyav_stream(path: str | Path, what: str):
    """(container, first audio stream) of a file PyAV opens, or one line naming it."""
    import av  # here: FFmpeg's libraries load for these formats only, not in training
    try:
        container = av.open(str(path))
    except Exception as exc:
        raise _unreadable(path, what, exc) from None
    try:
        if not container.streams.audio:
            raise DataError(f"{path}: no audio stream")
        stream = container.streams.audio[0]
        if not stream.rate or stream.rate <= 0:
            raise DataError(f"{path}: invalid sample rate {stream.rate}")
        yield container, stream
    finally:
        container.close()


def _header_length(stream) -> float | None:
    """The length in seconds the container records, or None for a raw stream (whose
    'duration' FFmpeg only estimates from the bitrate)."""
    container = stream.container
    if not LENGTH_IN_HEADER & set(container.format.name.split(",")):
        return None
    if stream.duration is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        import av  # as in _pyav_stream
        return container.duration / av.time_base
    return None


def _pyav_read(path: str | Path, until: float | None = None) -> tuple[np.ndarray, int]:
    """(samples, channels) float32 and the sample rate: every frame, converted to planar
    float at the first frame's rate, so the numbers are the decoder's. Decoding stops at the
    length the container records: what the last frame holds beyond it is codec padding.
    With `until` (seconds) it stops once past that time: a segment early in a long
    recording decodes only its beginning, to the same samples as a whole decode."""
    import av  # as in _pyav_stream
    with _pyav_stream(path, "decode audio") as (container, stream):
        expected = _header_length(stream)
        chunks, rate, decoded, stopped, to_planar = [], None, 0, False, None
        try:
            for frame in container.decode(stream):
                rate = rate or frame.sample_rate
                if frame.format.name != "fltp" or frame.sample_rate != rate:
                    # One converter for the stream, not one per frame.
                    to_planar = to_planar or av.AudioResampler(
                        format="fltp", layout=frame.layout, rate=rate)
                    frame = to_planar.resample(frame)[0]
                chunks.append(frame.to_ndarray())
                decoded += chunks[-1].shape[1]
                if until is not None and decoded > until * rate + 1:
                    stopped = True
                    break
        except Exception as exc:
            raise DataError(f"{path}: truncated or corrupt audio (decoding failed: "
                            f"{_reason(exc)})") from None
        rate = rate or stream.rate
    data = (np.concatenate(chunks, axis=1).T if chunks else np.zeros((0, 1), np.float32))
    if expected is not None:
        if not stopped and len(data) / rate < expected - LENGTH_SLACK_SECONDS:
            raise DataError(f"{path}: truncated audio (header says {expected:.2f} s, "
                            f"{len(data) / rate:.2f} s decode)")
        data = data[:int(round(expected * rate))]
    return np.ascontiguousarray(data, dtype=np.float32), rate


def _span(path, start: float | None, end: float | None, sr: int, frames: int) -> tuple[int, int]:
    """First and last sample of [start, end) seconds; the whole recording by default."""
    first = 0 if start is None else int(round(start * sr))
    last = frames if end is None else min(frames, int(round(end * sr)))
    if first >= frames or last <= first:
        raise DataError(f"{path}: segment {start}-{end} s lies outside the recording "
                        f"({frames / sr:.2f} s)")
    return first, last


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
    import torch  # here: scanning folders (download) must not pay torch's second of start-up
    return _resampler(orig_sr, sample_rate)(torch.from_numpy(wave.astype(np.float64))).numpy()


@lru_cache(maxsize=16)
def _resampler(orig_sr: int, sample_rate: int):
    import torch  # as in resample
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
    if getattr(exc, "strerror", None):  # OSError, and PyAV's errors (which repeat errno, path)
        return exc.strerror
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def find_audio(folder: str | Path, skip_dirs: Iterable[str | Path] = ()) -> list[str]:
    """Posix paths, relative to `folder`, of every audio file below it, sorted.

    Symlinked folders are followed (datasets are often assembled from links) but each
    real folder is visited once, so a link loop cannot hang the scan."""
    folder = Path(folder)
    skip = {os.path.realpath(p) for p in skip_dirs}
    seen: set[str] = set()
    found = []

    def fail(exc: OSError):
        raise DataError(f"{exc.filename}: cannot list folder ({exc.strerror})")

    for dirpath, dirnames, filenames in os.walk(folder, onerror=fail, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen or real in skip:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel_dir = PurePosixPath(Path(dirpath).relative_to(folder).as_posix())
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(AUDIO_SUFFIXES):
                found.append(str(rel_dir / name))
    return sorted(found)


def find_noise(folder: str | Path, key: str) -> list[str]:
    """Absolute paths of the recordings in the noise folder that param `key` names."""
    path = Path(folder)
    if not path.is_dir():
        raise DataError(f"{key}: folder not found: {folder}")
    files = [str((path / f).resolve()) for f in find_audio(path)]
    if not files:
        raise DataError(f"{key}: no audio files in {folder}")
    return files
