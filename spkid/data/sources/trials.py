"""Verification trial lists: which pairs of recordings to score and whether each pair is
the same speaker. Two formats, told apart per line:

    1 enroll_path test_path                   VoxCeleb (1 = same speaker, 0 = different)
    enroll_path test_path target|nontarget    Kaldi, WeSpeaker
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from spkid.core.errors import DataError

KALDI_LABELS = {"target": "1", "nontarget": "0"}


def read_trials_list(path: str | Path, audio_root: str | Path | None = None
                     ) -> list[tuple[int, Path, Path]]:
    """Verification trials of a list whose entries are audio paths (trial_lines' formats).
    Paths are relative to `audio_root`, by default the list file's folder, and come back
    absolute and normalised (symlinks are not resolved, so they compare equal to the `path`
    of scan_unseen_folder's rows when both are given the same folder); paths cannot
    contain spaces."""
    path = Path(path)
    base = Path(os.path.abspath(path.parent if audio_root is None else audio_root))
    trials, checked = [], set()
    for lineno, label, *names in trial_lines(path):
        pair = []
        for field in names:
            audio = Path(os.path.normpath(base / field))
            if audio not in checked:  # trial lists name each file many times
                if not audio.is_file():
                    raise DataError(f"{audio}: audio file not found (trial list {path} "
                                    f"line {lineno})")
                checked.add(audio)
            pair.append(audio)
        trials.append((label, pair[0], pair[1]))
    return trials


def trial_lines(path: str | Path) -> list[tuple[int, int, str, str]]:
    """(line number, label, enroll, test) of each trial of a list: one `label enroll test`
    per line (VoxCeleb's lists: label 1 = same speaker, 0 = different) or `enroll test
    target|nontarget` (Kaldi's and WeSpeaker's). Blank lines and lines starting with # are
    ignored; an empty list, a malformed line or another label is one line naming the file
    and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: trial list not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read trial list ({exc})") from None
    trials = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) != 3:
            raise DataError(f"{path}:{lineno}: expected 'label enroll_path test_path' or "
                            f"'enroll_path test_path target|nontarget', got {line.strip()!r:.100}")
        if fields[2] in KALDI_LABELS:  # Kaldi / WeSpeaker order
            fields = [KALDI_LABELS[fields[2]], fields[0], fields[1]]
        if fields[0] not in ("0", "1"):
            raise DataError(f"{path}:{lineno}: label must be 0 or 1, got {fields[0]!r:.20}")
        trials.append((lineno, int(fields[0]), fields[1], fields[2]))
    if not trials:
        raise DataError(f"{path}: trial list has no trials")
    return trials


def trial_list_digest(path: str | Path) -> str:
    """The SHA-256 of a trial list's bytes, kept in the verification manifest: editing a
    label changes it."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
