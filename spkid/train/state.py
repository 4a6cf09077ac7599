"""What a training run carries from step to step, and what a checkpoint holds of it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from spkid.core.device import needs_loss_scaling, training_dtype
from spkid.train.schedule import phase_schedule


@dataclass
class Window:
    """The steps since the last validation: sums of loss and accuracy (tensors on the
    device while training: a .item() per step would stall a GPU) and their count."""
    loss: object = 0.0
    accuracy: object = 0.0
    steps: int = 0

    def as_list(self) -> list:  # as checkpoints keep it
        return [float(self.loss), float(self.accuracy), int(self.steps)]


@dataclass
class TrainResult:
    """Progress so far; saved in every checkpoint so a resumed run ends where an
    uninterrupted one would."""
    step: int = 0
    best_step: int = 0
    best_val_accuracy: float = -1.0
    final_train_loss: float = float("nan")
    final_train_accuracy: float = float("nan")
    window: Window = field(default_factory=Window)
    # Wall time, for the summary line only: never in a checkpoint, so those stay reproducible.
    validation_seconds: float = 0.0

    def add_step(self, step: int, loss, accuracy) -> None:
        self.step = step
        w = self.window
        self.window = Window(w.loss + loss, w.accuracy + accuracy, w.steps + 1)

    def close_window(self) -> dict:
        """The train loss and accuracy of the steps since the last validation."""
        w, self.window = self.window, Window()
        self.final_train_loss = float(w.loss) / w.steps
        self.final_train_accuracy = float(w.accuracy) / w.steps
        return {"train/loss": self.final_train_loss, "train/accuracy": self.final_train_accuracy}


def lr_factor(t, world: int) -> float:
    """What `train.lr_scaling` multiplies the learning rates by with `world` ranks, whose
    effective batch is world x train.batch_size."""
    return {"none": 1.0, "linear": float(world), "sqrt": math.sqrt(world)}[t.lr_scaling]


class RunState:
    """Everything a run must carry to continue exactly: model, AdamW, the LR schedule, the
    gradient scaler, the RNG states and the progress. It saves itself as one snapshot
    (a dict of tensors and numbers, loadable with weights_only=True) and restores from one."""

    def __init__(self, model, t, device: torch.device, world: int = 1):
        self.model, self.device = model.to(device).train(), device
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr * lr_factor(t, world),
                                           weight_decay=t.weight_decay)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, phase_schedule(t))
        self.dtype = training_dtype(device, t.precision)
        self.scaler = torch.amp.GradScaler(device.type, enabled=needs_loss_scaling(self.dtype))
        self.progress = TrainResult()

    def restore(self, snapshot: dict, rank: int = 0) -> None:
        """Continue from `snapshot` (rank 0's, on every rank), with this rank's RNG state."""
        self.model.load_state_dict(snapshot["model"])
        self.optimizer.load_state_dict(snapshot["optimizer"])
        self.schedule.load_state_dict(snapshot["schedule"])
        if self.scaler.is_enabled() and snapshot["scaler"]:  # {} from a run without scaling
            self.scaler.load_state_dict(snapshot["scaler"])
        rng = snapshot["rng"][rank]
        torch.set_rng_state(rng["cpu"])
        if self.device.type == "cuda" and rng.get("cuda") is not None:
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        # Only the fields TrainResult has: a checkpoint of an older spkid may carry more.
        progress = {k: v for k, v in snapshot["progress"].items()
                    if k in TrainResult.__dataclass_fields__}
        self.progress = TrainResult(**{**progress, "window": Window(*progress["window"])})

    def rng_state(self) -> dict:
        """This rank's RNG states (dropout, augmentation), for `snapshot`."""
        return {"cpu": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}

    def snapshot(self, rngs: list[dict]) -> dict:
        """The state to resume from, with every rank's `rng_state()` in rank order (their
        number is the world size the snapshot resumes under)."""
        progress = {k: v for k, v in self.progress.__dict__.items() if k != "validation_seconds"}
        progress["window"] = self.progress.window.as_list()
        return {"model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": rngs, "progress": progress}

    def update(self, loss, clip_grad: float) -> None:
        """One optimizer step on `loss`: backward (scaled under fp16), clipping, AdamW,
        the schedule."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if clip_grad > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.schedule.step()

    def weights(self) -> dict:
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
