"""A folder of recordings, one subfolder per speaker:

    <folder>/<speaker>/**/*.wav|flac|ogg|mp3|m4a|aac|mp4|opus|webm|wma  (suffix in any case)

The speaker is the first folder level, so LibriSpeech (<speaker>/<chapter>/<file>.flac)
and VoxCeleb (<speaker>/<video>/<file>.wav) work unchanged. Hidden files and folders
(".DS_Store", "._x.wav" AppleDouble copies, ".git") are never data and are skipped.

Every recording is checked to decode to its end here (spkid.data.sources.checks, which
remembers what it checked), so a corrupt file fails the `download` step in one line
naming it, instead of failing feature extraction an hour later.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from spkid.core.errors import DataError
from spkid.data.audio import AUDIO_SUFFIXES, find_audio
from spkid.data.manifest import ManifestRow
from spkid.data.sources.checks import AudioChecks

SHORT_CHOICES = ("skip", "pad")
SUBMIT_PREFIX = "submit/"


def scan_audio_dir(folder: str | Path, *, min_seconds: float, short: str,
                   submit_dir: str | Path | None = None,
                   exclude: Iterable[str | Path] = (), checks: AudioChecks | None = None
                   ) -> tuple[list[ManifestRow], dict]:
    """Rows for every labelled recording (sorted by utterance id = path relative to
    `folder`), then every recording under `submit_dir` as role "submit".

    Recordings shorter than `min_seconds` are left out and counted with short="skip",
    kept with short="pad" (the features step pads them). Submit recordings are never
    left out: the submission needs an answer for each one.

    `submit_dir` (and any folder in `exclude`, e.g. a verification folder) may lie inside
    `folder`; it is then not mistaken for a speaker. `checks` remembers which files were
    already checked (default: check every file).
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
    checks = checks or AudioChecks()
    rows, skipped = [], 0
    for row in audio_rows(checks, base, rels, rels, [rel.split("/", 1)[0] for rel in rels]):
        if row.duration < min_seconds and short == "skip":
            skipped += 1
            continue
        rows.append(row)
    if not rows:
        raise DataError(f"{folder}: all {len(rels)} recordings are shorter than "
                        f"min_seconds = {min_seconds:g} (use short: pad to keep them)")
    speakers = sorted({row.speaker for row in rows})

    if submit_dir is not None:
        rows += submit_rows(Path(submit_dir), checks)
    _check_unique_ids(rows)
    return rows, {"format": "audio", "skipped_short": skipped, "speakers": speakers}


def scan_unseen_folder(folder: str | Path, checks: AudioChecks | None = None
                       ) -> list[ManifestRow]:
    """Rows (role None) for a verification folder of unseen speakers, same layout as
    scan_audio_dir. Nothing is left out for being short: a trial list may name any file,
    and a missing trial would silently change the reported EER."""
    rows, _ = scan_audio_dir(folder, min_seconds=0.0, short="pad", checks=checks)
    return rows


def audio_rows(checks: AudioChecks, base: Path, rels: list[str], ids: list[str],
               speakers: list[str | None], role: str | None = None) -> list[ManifestRow]:
    """Rows for the files `base/rel`, each checked to decode (by `checks`)."""
    paths = [base / rel for rel in rels]
    return [ManifestRow(utterance_id=uid, speaker=spk, path=str(path), duration=c.duration,
                        role=role, size=c.size, mtime_ns=c.mtime_ns)
            for path, uid, spk, c in zip(paths, ids, speakers, checks.check(paths))]


def submit_rows(submit_dir: Path, checks: AudioChecks | None = None) -> list[ManifestRow]:
    submit_dir = existing_dir(submit_dir, "submit folder")
    rels = find_audio(submit_dir)
    if not rels:
        raise DataError(f"{submit_dir}: submit folder holds no audio files "
                        f"({', '.join(AUDIO_SUFFIXES)})")
    base = Path(os.path.abspath(submit_dir))
    return audio_rows(checks or AudioChecks(), base, rels, [SUBMIT_PREFIX + rel for rel in rels],
                      [None] * len(rels), role="submit")


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
