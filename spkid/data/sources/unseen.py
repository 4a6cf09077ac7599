"""Unseen speakers: which recordings `evaluate` scores besides val/test, and the trials.

Two ways to name them (both may be given):

    verify_dir   an audio_dir-style folder (<speaker>/**/<audio>) or a Kaldi folder
                 (wav.scp, utt2spk, optional segments) of speakers the model never trained
                 on; `evaluate` scores all same-speaker pairs plus a seeded sample of
                 different-speaker pairs, as for val and test
    trials       one or several VoxCeleb-style lists, one `label enroll test` per line, or
                 Kaldi's `enroll test target|nontarget`; the entries are paths relative to
                 verify_dir when it is given, else to each list's folder, and utterance ids
                 when verify_dir is a Kaldi folder (as Kaldi's own trial lists are)

A further list, `calibration`, names the trials the score calibration is fitted on instead.

`scan_unseen_speakers` turns them into manifest rows with size/mtime fingerprints (the
`download` stage writes them to data/raw/verify.parquet, so DVC re-runs `evaluate` when a
file changes): one row per recording, however many lists name it, so that each is embedded
once. spkid.scoring.trials.unseen_trial_lists turns the rows back into each list's pairs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from spkid.core.errors import DataError, ParamsError
from spkid.data.manifest import ManifestRow
from spkid.data.sources.audio_dir import audio_rows, scan_unseen_folder
from spkid.data.sources.checks import AudioChecks
from spkid.data.sources.kaldi import is_kaldi_dir, scan_kaldi
from spkid.data.sources.trials import read_trials_list, trial_list_digest, trial_lines

FORMAT = "verify"


def list_names(trials: list[Path], calibration: Path | None) -> list[dict]:
    """Each trial list's name (its file name without the suffix, what metrics/eval.json
    calls it), file and purpose ("score", or "calibration" for the calibration list). Two
    lists of one name, or one list named twice, are refused by the params that name them."""
    named = [(path, "score") for path in trials] + ([(calibration, "calibration")]
                                                    if calibration is not None else [])
    seen: dict[str, Path] = {}
    out = []
    for path, purpose in named:
        name = re.sub(r"[^A-Za-z0-9_-]", "_", path.stem) or "list"
        if name in seen:
            key = "evaluate.trials" if purpose == "score" else "evaluate.calibration_trials"
            same = "is given twice" if seen[name] == path else f"has the name of {seen[name]}"
            raise ParamsError(f"params: {key}: {path} {same} (lists are told apart by their "
                              "file names)")
        seen[name] = path
        out.append({"name": name, "trials": str(path), "purpose": purpose})
    return out


def scan_unseen_speakers(verify_dir: str | Path | None, trials, checks: AudioChecks | None = None,
                         *, calibration: str | Path | None = None) -> tuple[list[ManifestRow], dict]:
    """(rows, meta) for the verification audio; no rows when neither is given. `trials` is
    None, one list or a sequence of lists; `calibration` a list to fit the calibration on.

    meta["kind"] is None, "dir" (all of verify_dir, trials sampled at evaluation) or
    "trials" (only the files the lists name; meta["lists"] holds each list's name, file,
    purpose, pair count and SHA-256, so editing a label changes the manifest too)."""
    if isinstance(trials, (str, Path)):
        trials = [trials]
    trials = [Path(os.path.abspath(t)) for t in trials or []]
    if calibration is not None and not trials:
        raise ParamsError("params: evaluate.calibration_trials is given without evaluate.trials "
                          "(the calibration is measured on the lists evaluate.trials names)")
    lists = list_names(trials, Path(os.path.abspath(calibration)) if calibration else None)
    if verify_dir is None and not lists:
        return [], {"format": FORMAT, "kind": None}
    if verify_dir is not None and is_kaldi_dir(verify_dir):
        return _scan_kaldi_unseen(Path(os.path.abspath(verify_dir)), lists, checks)
    if not lists:
        folder = Path(os.path.abspath(verify_dir))
        rows = scan_unseen_folder(folder, checks)
        return rows, {"format": FORMAT, "kind": "dir", "verify_dir": str(folder),
                      "speakers": sorted({r.speaker for r in rows})}

    root = Path(os.path.abspath(verify_dir)) if verify_dir is not None else None
    if root is not None and not root.is_dir():
        raise DataError(f"{verify_dir}: verification folder not found" if not root.exists()
                        else f"{verify_dir}: verification folder is not a folder")
    files: set[Path] = set()
    for entry in lists:
        path = Path(entry["trials"])
        pairs = read_trials_list(path, root)
        files.update(f for _, a, b in pairs for f in (a, b))
        entry.update(pairs=len(pairs), trials_sha256=trial_list_digest(path))
    # One folder holds every list's audio: verify_dir, else the lists' common folder.
    base = root or Path(os.path.commonpath([f.parent for f in files]))
    rels = [PurePosixPath(Path(os.path.relpath(f, base)).as_posix()) for f in sorted(files)]
    # Under verify_dir the first folder is the speaker, as in an audio_dir.
    speakers = [rel.parts[0] if root is not None and len(rel.parts) > 1 else None
                for rel in rels]
    rows = audio_rows(checks or AudioChecks(), base, [str(r) for r in rels],
                      [str(r) for r in rels], speakers)
    where = {"verify_dir": str(root)} if root is not None else {}
    return rows, {"format": FORMAT, "kind": "trials", **where, "audio_root": str(base),
                  "lists": lists}


def _scan_kaldi_unseen(folder: Path, lists: list[dict], checks: AudioChecks | None
                       ) -> tuple[list[ManifestRow], dict]:
    """A Kaldi folder of unseen speakers: every utterance (nothing left out for being
    short), or only those its trial lists name by utterance id."""
    meta = {"format": FORMAT, "verify_dir": str(folder), "keys": "utterance_id"}
    if not lists:
        rows, _ = scan_kaldi(folder, min_seconds=0.0, short="pad", checks=checks)
        return rows, {**meta, "kind": "dir", "speakers": sorted({r.speaker for r in rows})}
    lines = {entry["name"]: trial_lines(entry["trials"]) for entry in lists}
    named = {utt for found in lines.values() for _, _, *ids in found for utt in ids}
    rows, _ = scan_kaldi(folder, min_seconds=0.0, short="pad", only=named, checks=checks)
    known = {r.utterance_id for r in rows}
    for entry in lists:
        for lineno, _, *ids in lines[entry["name"]]:
            for utt in ids:
                if utt not in known:
                    raise DataError(f"{entry['trials']}:{lineno}: utterance {utt!r} is not in "
                                    f"the Kaldi folder {folder} (wav.scp, segments)")
        entry.update(pairs=len(lines[entry["name"]]),
                     trials_sha256=trial_list_digest(entry["trials"]))
    return rows, {**meta, "kind": "trials", "lists": lists}
