"""Unseen speakers: which recordings `evaluate` scores besides val/test, and the trials.

Two ways to name them (both may be given):

    verify_dir   an audio_dir-style folder (<speaker>/**/<audio>) or a Kaldi folder
                 (wav.scp, utt2spk, optional segments) of speakers the model never trained
                 on; `evaluate` scores all same-speaker pairs plus a seeded sample of
                 different-speaker pairs, as for val and test
    trials       a VoxCeleb-style list, one `label enroll test` per line, or Kaldi's
                 `enroll test target|nontarget`; the entries are paths relative to
                 verify_dir when it is given, else to the list's folder, and utterance ids
                 when verify_dir is a Kaldi folder (as Kaldi's own trial lists are)

`scan_unseen_speakers` turns either into manifest rows with size/mtime fingerprints (the
`download` stage writes them to data/raw/verify.parquet, so DVC re-runs `evaluate` when a
file changes); spkid.scoring.trials.unseen_trials turns the rows back into scored pairs.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath

from spkid.core.errors import DataError
from spkid.data.manifest import ManifestRow
from spkid.data.sources.audio_dir import audio_rows, scan_unseen_folder
from spkid.data.sources.checks import AudioChecks
from spkid.data.sources.kaldi import is_kaldi_dir, scan_kaldi
from spkid.data.sources.trials import read_trials_list, trial_lines

FORMAT = "verify"


def scan_unseen_speakers(verify_dir: str | Path | None, trials: str | Path | None,
                         checks: AudioChecks | None = None) -> tuple[list[ManifestRow], dict]:
    """(rows, meta) for the verification audio; no rows when neither is given.

    meta["kind"] is None, "dir" (all of verify_dir, trials sampled at evaluation) or
    "trials" (only the files the list names). With a trial list the list's SHA-256 is part
    of meta, so editing a label changes the manifest too."""
    if verify_dir is None and trials is None:
        return [], {"format": FORMAT, "kind": None}
    if verify_dir is not None and is_kaldi_dir(verify_dir):
        return _scan_kaldi_unseen(Path(os.path.abspath(verify_dir)), trials, checks)
    if trials is None:
        folder = Path(os.path.abspath(verify_dir))
        rows = scan_unseen_folder(folder, checks)
        return rows, {"format": FORMAT, "kind": "dir", "verify_dir": str(folder),
                      "speakers": sorted({r.speaker for r in rows})}

    trials = Path(os.path.abspath(trials))
    root = Path(os.path.abspath(verify_dir if verify_dir is not None else trials.parent))
    where = {"verify_dir": str(root)} if verify_dir is not None else {}
    if verify_dir is not None and not root.is_dir():
        raise DataError(f"{verify_dir}: verification folder not found" if not root.exists()
                        else f"{verify_dir}: verification folder is not a folder")
    pairs = read_trials_list(trials, root)
    files = sorted({f for _, a, b in pairs for f in (a, b)})
    rels = [PurePosixPath(Path(os.path.relpath(f, root)).as_posix()) for f in files]
    # Under verify_dir the first folder is the speaker, as in an audio_dir.
    speakers = [rel.parts[0] if verify_dir is not None and len(rel.parts) > 1 else None
                for rel in rels]
    rows = audio_rows(checks or AudioChecks(), root, [str(r) for r in rels],
                      [str(r) for r in rels], speakers)
    digest = hashlib.sha256(trials.read_bytes()).hexdigest()
    return rows, {"format": FORMAT, "kind": "trials", "trials": str(trials), **where,
                  "audio_root": str(root), "trials_sha256": digest, "pairs": len(pairs)}


def _scan_kaldi_unseen(folder: Path, trials: str | Path | None, checks: AudioChecks | None
                       ) -> tuple[list[ManifestRow], dict]:
    """A Kaldi folder of unseen speakers: every utterance (nothing left out for being
    short), or only those its trial list names by utterance id."""
    meta = {"format": FORMAT, "verify_dir": str(folder), "keys": "utterance_id"}
    if trials is None:
        rows, _ = scan_kaldi(folder, min_seconds=0.0, short="pad", checks=checks)
        return rows, {**meta, "kind": "dir", "speakers": sorted({r.speaker for r in rows})}
    trials = Path(os.path.abspath(trials))
    lines = trial_lines(trials)
    named = {utt for _, _, *ids in lines for utt in ids}
    rows, _ = scan_kaldi(folder, min_seconds=0.0, short="pad", only=named, checks=checks)
    known = {r.utterance_id for r in rows}
    for lineno, _, *ids in lines:
        for utt in ids:
            if utt not in known:
                raise DataError(f"{trials}:{lineno}: utterance {utt!r} is not in the Kaldi "
                                f"folder {folder} (wav.scp, segments)")
    digest = hashlib.sha256(trials.read_bytes()).hexdigest()
    return rows, {**meta, "kind": "trials", "trials": str(trials), "trials_sha256": digest,
                  "pairs": len(lines)}
