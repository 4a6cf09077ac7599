"""Checking that recordings decode to their end, and remembering what was checked.

`download` runs on every `dvc repro`. Decoding the end of a million files each time
would take most of an hour, so `AudioChecks` keeps what it found per file, keyed by
(absolute path, size, mtime_ns), in a Parquet file the caller names (the stage keeps it
in data/downloads/, outside every DVC output, so no stage depends on it). A file whose
size or mtime changed is checked again; so is every file when the checking code
changes (its source is part of the cache). The first check is spread over processes.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from spkid.core.atomic import atomic_path
from spkid.core.errors import DataError
from spkid.core.provenance import source_digest
from spkid.data import audio
from spkid.data.audio import audio_info, check_pyav_audio, check_samples, decoded_by_pyav

TAIL_FRAMES = 1024
CACHE_SCHEMA = pa.schema([("path", pa.string()), ("size", pa.int64()),
                          ("mtime_ns", pa.int64()), ("duration", pa.float64())])
PARALLEL_FROM = 64  # fewer files than this are checked in-process: a pool costs more


@dataclass(frozen=True)
class CheckedAudio:
    """A recording that decodes to its end: its length and the fingerprint it had."""
    duration: float
    size: int
    mtime_ns: int


class CheckFailed(DataError):
    """check_audio refused `path` (the message names it)."""

    def __init__(self, message: str, path: Path):
        super().__init__(message)
        self.path = path


def check_audio(path: str | Path) -> float:
    """Duration in seconds of a recording that decodes to its end.

    The header alone is not enough: a truncated FLAC or MP3 still reports its full length,
    and a truncated WAV quietly reports a shorter one. Reading the last frames (one seek,
    no full decode) catches the first two; the WAV data-chunk size catches the third."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DataError(f"{path}: not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    if size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    if decoded_by_pyav(path):
        return check_pyav_audio(path)
    duration, _ = audio_info(path)
    if _wav_is_truncated(path, size):
        raise DataError(f"{path}: truncated WAV (the data chunk is longer than the file)")
    frames = _decodable_tail(path)
    if frames == 0:
        raise DataError(f"{path}: audio is empty (0 samples)")
    return duration


def _decodable_tail(path: Path) -> int:
    """Frame count, after checking the last frames decode."""
    try:
        with sf.SoundFile(str(path)) as f:
            frames = f.frames
            if frames == 0 or not f.seekable():
                return frames
            want = min(frames, TAIL_FRAMES)
            f.seek(frames - want)
            tail = f.read(want, dtype="float32", always_2d=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: truncated or corrupt audio (cannot decode the end: "
                        f"{reason})") from None
    if len(tail) < want:
        raise DataError(f"{path}: truncated audio (header says {frames} frames, the end "
                        "cannot be decoded)")
    check_samples(path, tail)
    return frames


def _wav_is_truncated(path: Path, size: int) -> bool:
    with open(path, "rb") as f:
        head = f.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return False
        pos = 12
        for _ in range(64):  # a handful of chunks (fmt, LIST, fact) precede the data
            f.seek(pos)
            chunk = f.read(8)
            if len(chunk) < 8:
                return False
            size_field = int.from_bytes(chunk[4:], "little")
            if chunk[:4] == b"data":
                # Streaming writers (ffmpeg to a pipe) leave the size 0 or 0xFFFFFFFF:
                # unknown, not truncated.
                return size_field not in (0, 0xFFFFFFFF) and pos + 8 + size_field > size
            pos += 8 + size_field + (size_field & 1)
    return False


def _code_digest() -> str:
    return source_digest(sys.modules[__name__], audio)


def _check_one(path: str) -> tuple[float | None, str | None]:
    try:
        return check_audio(path), None
    except DataError as exc:
        return None, str(exc)


class AudioChecks:
    """check_audio over many files, each checked once while its size and mtime hold.

    Without a `file` nothing is remembered between runs (tests, one-off scans)."""

    def __init__(self, file: str | Path | None = None, workers: int = 1):
        self.file = Path(file) if file is not None else None
        self.workers = max(1, workers)
        self.digest = _code_digest()
        self.known: dict[tuple[str, int, int], float] = {}
        self.asked = self.opened = 0  # files looked up, and those opened to check them
        if self.file is not None and self.file.is_file():
            self._load()

    def _load(self) -> None:
        try:
            table = pq.read_table(self.file)
        except Exception:  # a cache we cannot read is a cache we do not have
            return
        meta = (table.schema.metadata or {}).get(b"spkid_check_code", b"").decode()
        if meta != self.digest or table.schema.remove_metadata() != CACHE_SCHEMA:
            return
        cols = table.to_pydict()
        self.known = {(p, s, m): d for p, s, m, d in
                      zip(cols["path"], cols["size"], cols["mtime_ns"], cols["duration"])}

    def check(self, paths: Sequence[str | Path]) -> list[CheckedAudio]:
        """Each file's CheckedAudio, in order. Raises CheckFailed for the first file (in
        order) that is missing, unreadable or does not decode to its end."""
        stats, todo = [], []
        for k, path in enumerate(paths):
            path = Path(path)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                raise CheckFailed(f"{path}: not found", path) from None
            except OSError as exc:
                raise CheckFailed(f"{path}: cannot read ({exc.strerror})", path) from None
            key = (str(path), st.st_size, st.st_mtime_ns)
            stats.append(key)
            if key not in self.known:
                todo.append(k)
        found = self._run([str(paths[k]) for k in todo])
        for k, (duration, error) in zip(todo, found):
            if error is not None:
                raise CheckFailed(error, Path(paths[k]))
            self.known[stats[k]] = duration
            self.opened += 1
        self.asked += len(paths)
        return [CheckedAudio(self.known[key], key[1], key[2]) for key in stats]

    def _run(self, paths: list[str]) -> list[tuple[float | None, str | None]]:
        processes = min(self.workers, len(paths) // PARALLEL_FROM)
        if processes <= 1:
            out = []
            for path in paths:
                out.append(_check_one(path))
                if out[-1][1] is not None:  # the first failure is the one reported
                    break
            return out
        # forkserver: a fork of a process that may hold running threads can hang.
        ctx = multiprocessing.get_context("forkserver")
        with ctx.Pool(processes) as pool:
            return pool.map(_check_one, paths, chunksize=16)

    def save(self) -> None:
        """Write what is known (no-op without a file): atomically, so a killed run leaves
        the previous cache whole."""
        if self.file is None or not self.opened:
            return
        keys = sorted(self.known)
        table = pa.table({"path": [k[0] for k in keys], "size": [k[1] for k in keys],
                          "mtime_ns": [k[2] for k in keys],
                          "duration": [self.known[k] for k in keys]}, schema=CACHE_SCHEMA)
        table = table.replace_schema_metadata({"spkid_check_code": self.digest})
        with atomic_path(self.file) as tmp:
            pq.write_table(table, tmp)
