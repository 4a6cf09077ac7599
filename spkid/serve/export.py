"""The exported artefacts: the Kaggle submission, and what the model folder records
beside the weights (provenance, the threshold it decides with)."""

from __future__ import annotations

import csv
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from spkid.core.atomic import atomic_path


def write_submission(path: str | Path, utterance_ids: list[str], speakers: list[str]) -> None:
    """Kaggle HW4 format: header `Id,Category`, one row per submit utterance."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["Id", "Category"])
        out.writerows(zip(utterance_ids, speakers))


def provenance(repo: str | Path = ".") -> dict:
    """Package versions and the git revision, so a model can be traced to its code."""
    versions = {"python": platform.python_version()}
    for name in ("spkid", "torch", "torchaudio", "numpy", "pyarrow"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                             text=True, timeout=10).stdout.strip() or None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev, dirty = None, ""
    return {"versions": versions, "git_revision": rev, "git_dirty": bool(dirty)}
