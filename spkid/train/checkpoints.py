"""The resumable state of a training run: whether a checkpoint left by an earlier run may
be resumed, by its fingerprint of what the run trains on and how."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from spkid.core.errors import WorldSizeChanged
from spkid.train.warm_start import source_files

# train.* keys that change how a run computes, never what it computes: a checkpoint stays
# resumable when they change (a run moved to a GPU, more loader workers).
HOW_NOT_WHAT = ("device", "num_workers", "compile", "checkpoint_every")


def fingerprint(p, feature_meta: dict, data_files: list[Path]) -> str:
    """What a checkpoint must match to be resumed: everything that changes the model's
    input or meaning (the feature params and dtype, the model, the loss, the training
    schedule and augmentation, the crop length), the index files and the model training
    starts from (train.init_from: its files' bytes, as DVC does not track them), nothing
    else."""
    train = {k: v for k, v in p.train.to_dict().items() if k not in HOW_NOT_WHAT}
    features = {k: feature_meta.get(k) for k in ("features", "dtype", "precomputed")}
    h = hashlib.sha256(json.dumps([features, p.model.to_dict(), p.loss.to_dict(), train,
                                   p.index.segment_len], sort_keys=True).encode())
    init = source_files(p.train.init_from) if p.train.init_from else []
    for f in [*data_files, *init]:
        h.update(Path(f).read_bytes())
    return h.hexdigest()


def resumable(last: Path, best: Path, fingerprint: str, world: int = 1,
              model: torch.nn.Module | None = None) -> tuple[dict | None, str]:
    """(snapshot to resume from, None) or (None, why not) for a training checkpoint; why is
    empty when there is simply none. A snapshot taken before the first validation has no
    best model yet and is resumable on its own. A snapshot of another number of ranks
    raises WorldSizeChanged: its crops and RNG states are cut for that many."""
    if not last.exists():
        return None, ""
    try:
        snapshot = torch.load(last, map_location="cpu", weights_only=True)
    except Exception as exc:
        return None, f"ignoring unreadable checkpoint {last} ({str(exc).splitlines()[0]})"
    if snapshot.get("fingerprint") != fingerprint:
        return None, f"{last} is from other params or data: starting afresh"
    if model is not None and not _same_shapes(snapshot.get("model", {}), model.state_dict()):
        # The fingerprint holds what shapes the model; this catches a checkpoint whose
        # fingerprint was computed by an older spkid from less.
        return None, f"{last} holds a model of other shapes: starting afresh"
    if snapshot.get("progress", {}).get("best_step", 0) > 0 and not best.exists():
        return None, f"{best} (the best model so far) is missing: starting afresh"
    saved = len(snapshot.get("rng", [None]))
    if saved != world:
        raise WorldSizeChanged(
            f"{last} was written by a run of {saved} rank{'s' * (saved > 1)} and this run has "
            f"{world}: run it with {saved} rank{'s' * (saved > 1)} again, or delete {last.parent} to "
            "start afresh")
    return snapshot, ""


def _same_shapes(saved: dict, wanted: dict) -> bool:
    return saved.keys() == wanted.keys() and all(
        tuple(saved[k].shape) == tuple(v.shape) for k, v in wanted.items())
