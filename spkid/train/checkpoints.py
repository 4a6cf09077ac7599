"""The resumable state of a training run: whether a checkpoint left by an earlier run may
be resumed, by its fingerprint of what the run trains on and how."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch


def fingerprint(p, data_files: list[Path]) -> str:
    """What a checkpoint must match to be resumed: the training params and the data."""
    h = hashlib.sha256(json.dumps([p.model.to_dict(), p.loss.to_dict(), p.train.to_dict(),
                                   p.index.segment_len], sort_keys=True).encode())
    for f in data_files:
        h.update(Path(f).read_bytes())
    return h.hexdigest()


def resumable(last: Path, best: Path, fingerprint: str) -> tuple[dict | None, str]:
    """(snapshot to resume from, None) or (None, why not) for a training checkpoint; why is
    empty when there is simply none. A snapshot taken before the first validation has no
    best model yet and is resumable on its own."""
    if not last.exists():
        return None, ""
    try:
        snapshot = torch.load(last, map_location="cpu", weights_only=True)
    except Exception as exc:
        return None, f"ignoring unreadable checkpoint {last} ({str(exc).splitlines()[0]})"
    if snapshot.get("fingerprint") != fingerprint:
        return None, f"{last} is from other params or data: starting afresh"
    if snapshot.get("progress", {}).get("best_step", 0) > 0 and not best.exists():
        return None, f"{best} (the best model so far) is missing: starting afresh"
    return snapshot, ""
