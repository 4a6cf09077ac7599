"""Checkpoint averaging (`train.average_last`): the weights at the last N validations, kept
on disk while training runs, averaged at the end (as WeSpeaker's average_model.py).

Each kept state lives in the training checkpoint folder as `val-<step>.pt`, so a killed run
resumes with them: a file is deleted only once N later validations exist, and those are
redone after a resume, so a deleted state is never one the final average needs."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from spkid.models.folder import save_torch

_NAME = re.compile(r"^val-(\d+)\.pt$")


def average_state_dicts(states: list[dict]) -> dict:
    """Entry-wise mean of state dicts with the same keys. Floating-point tensors (weights and
    BatchNorm running statistics) are averaged in float64 and cast back; integer tensors
    (BatchNorm's num_batches_tracked) take the last state's value, the count of batches
    the final statistics have seen."""
    if not states:
        raise ValueError("no state dicts to average")
    keys = list(states[-1])
    if any(list(s) != keys for s in states):
        raise ValueError("state dicts to average have different keys")
    out = {}
    for k in keys:
        last = states[-1][k]
        if last.is_floating_point():
            out[k] = torch.stack([s[k].double() for s in states]).mean(0).to(last.dtype)
        else:
            out[k] = last.clone()
    return out


class ValidationCheckpoints:
    """The model states at the last `keep` validations, in `folder` (keep <= 1: off)."""

    def __init__(self, folder: str | Path, keep: int):
        self.folder, self.keep = Path(folder), keep

    @property
    def enabled(self) -> bool:
        return self.keep > 1

    def steps(self) -> list[int]:
        found = (_NAME.match(p.name) for p in self.folder.glob("val-*.pt"))
        return sorted(int(m.group(1)) for m in found if m)

    def path(self, step: int) -> Path:
        return self.folder / f"val-{step:08d}.pt"

    def save(self, state: dict, step: int) -> None:
        """Keep `state` as the one of `step` and delete those beyond the last `keep`."""
        save_torch(self.path(step), state)
        for old in self.steps()[:-self.keep]:
            self.path(old).unlink(missing_ok=True)

    def drop_after(self, step: int) -> None:
        """A run resumed from `step` redoes the later validations: forget their states."""
        for s in self.steps():
            if s > step:
                self.path(s).unlink(missing_ok=True)

    def average(self) -> tuple[dict, list[int]]:
        """(averaged state, the steps averaged)."""
        steps = self.steps()[-self.keep:]
        states = [torch.load(self.path(s), map_location="cpu", weights_only=True) for s in steps]
        return average_state_dicts(states), steps

    def clear(self) -> None:
        for s in self.steps():
            self.path(s).unlink(missing_ok=True)


def average_checkpoints(kept: ValidationCheckpoints, model, accuracy) -> tuple[dict, dict]:
    """(averaged state, what to report of it): the kept states averaged and loaded into
    `model`, whose val accuracy `accuracy(model)` (None without a val split) is reported
    beside the best single checkpoint's."""
    state, steps = kept.average()
    model.load_state_dict(state)
    return state, {"averaged_val_accuracy": accuracy(model), "averaged_checkpoints": len(steps),
                   "averaged_from_step": steps[0], "averaged_to_step": steps[-1]}
