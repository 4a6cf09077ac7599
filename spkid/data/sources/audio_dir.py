"""A folder of recordings, one subfolder per speaker:

    <folder>/<speaker>/**/*.wav|flac|ogg|mp3|m4a|aac|mp4|opus|webm|wma  (suffix in any case)

The speaker is the first folder level, so LibriSpeech (<speaker>/<chapter>/<file>.flac)
and VoxCeleb (<speaker>/<video>/<file>.wav) work unchanged. Hidden files and folders
(".DS_Store", "._x.wav" AppleDouble copies, ".git") are never data and are skipped.

Every recording is opened once here, so a corrupt file fails the `download` step in one
line naming it, instead of failing feature extraction an hour later.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import soundfile as sf

from spkid.core.errors import DataError
from spkid.data.audio import (AUDIO_SUFFIXES, audio_info, check_pyav_audio, check_samples,
                              decoded_by_pyav, find_audio)
from spkid.data.manifest import ManifestRow

SHORT_CHOICES = ("skip", "pad")
SUBMIT_PREFIX = "submit/"
TAIL_FRAMES = 1024


def scan_audio_dir(folder: str | Path, *, min_seconds: float, short: str,
                   submit_dir: str | Path | None = None,
                   exclude: Iterable[str | Path] = ()) -> tuple[list[ManifestRow], dict]:
    """Rows for every labelled recording (sorted by utterance id = path relative to
    `folder`), then every recording under `submit_dir` as role "submit".

    Recordings shorter than `min_seconds` are left out and counted with short="skip",
    kept with short="pad" (the features step pads them). Submit recordings are never
    left out: the submission needs an answer for each one.

    `submit_dir` (and any folder in `exclude`, e.g. a verification folder) may lie inside
    `folder`; it is then not mistaken for a speaker.
    """
    if short not in SHORT_CHOICES:
        raise ValueError(f"short must be one of {SHORT_CHOICES}, got {short!r}")
    folder = existing_dir(folder, "audio folder")
    skip_dirs = [Path(p) for p in (submit_dir, *exclude) if p is not None]
    rels = find_audio(folder, skip_dirs=skip_dirs)
    loose = [rel for rel in rels if "/" not in rel]
    if loose:
        raise DataError(f"{folder / loose[0]}: audio file directly in {folder} has no speaker "
                        "folder (expected <speaker>/<file>)")
    if not rels:
        raise DataError(f"{folder}: no audio files ({', '.join(AUDIO_SUFFIXES)}) in speaker "
                        "subfolders (expected <speaker>/**/<file>)")

    base = Path(os.path.abspath(folder))
    rows, skipped = [], 0
    for rel in rels:
        row = audio_row(base / rel, rel, speaker=rel.split("/", 1)[0], role=None)
        if row.duration < min_seconds and short == "skip":
            skipped += 1
            continue
        rows.append(row)
    if not rows:
        raise DataError(f"{folder}: all {len(rels)} recordings are shorter than "
                        f"min_seconds = {min_seconds:g} (use short: pad to keep them)")
    speakers = sorted({row.speaker for row in rows})

    if submit_dir is not None:
        rows += submit_rows(Path(submit_dir))
    _check_unique_ids(rows)
    return rows, {"format": "audio", "skipped_short": skipped, "speakers": speakers}


def scan_unseen_folder(folder: str | Path) -> list[ManifestRow]:
    """Rows (role None) for a verification folder of unseen speakers, same layout as
    scan_audio_dir. Nothing is left out for being short: a trial list may name any file,
    and a missing trial would silently change the reported EER."""
    rows, _ = scan_audio_dir(folder, min_seconds=0.0, short="pad")
    return rows


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


def audio_row(path: Path, utterance_id: str, speaker: str | None,
               role: str | None) -> ManifestRow:
    duration = check_audio(path)
    st = os.stat(path)
    return ManifestRow(utterance_id=utterance_id, speaker=speaker, path=str(path),
                       duration=duration, role=role, size=st.st_size, mtime_ns=st.st_mtime_ns)


def submit_rows(submit_dir: Path) -> list[ManifestRow]:
    submit_dir = existing_dir(submit_dir, "submit folder")
    rels = find_audio(submit_dir)
    if not rels:
        raise DataError(f"{submit_dir}: submit folder holds no audio files "
                        f"({', '.join(AUDIO_SUFFIXES)})")
    base = Path(os.path.abspath(submit_dir))
    return [audio_row(base / rel, SUBMIT_PREFIX + rel, speaker=None, role="submit")
            for rel in rels]


def existing_dir(folder: str | Path, what: str) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: {what} not found" if not folder.exists()
                        else f"{folder}: {what} is not a folder")
    return folder


def _check_unique_ids(rows: list[ManifestRow]) -> None:
    # Only possible when a speaker folder is itself called "submit"; say so here rather
    # than let write_manifest report a bare duplicate id.
    seen: dict[str, str] = {}
    for row in rows:
        if row.utterance_id in seen:
            raise DataError(f"{row.path}: utterance id {row.utterance_id!r} is also used by "
                            f"{seen[row.utterance_id]} (rename the speaker folder 'submit')")
        seen[row.utterance_id] = row.path
