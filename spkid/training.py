"""The training loop: AdamW, linear warmup then cosine decay, mixed precision on CUDA,
validation accuracy on full utterances, best checkpoint kept."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from spkid.device import autocast
from spkid.index import real_speakers
from spkid.inference import embed_views
from spkid.losses import margin_schedule
from spkid.shards import FeatureStore


def warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


def subset_views(views: dict, count: int, seed: int) -> dict:
    """A seeded subset of `count` views (all when count is 0 or not smaller), in order."""
    n = len(views["source_id"])
    if not count or count >= n:
        return views
    keep = np.sort(np.random.default_rng([seed, n]).choice(n, count, replace=False))
    return {k: [v[i] for i in keep] for k, v in views.items()}


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


@dataclass
class RunHooks:
    """What a run hands out (rank 0 only): the best weights, the resumable state, the
    metrics of each validation, and (for checkpoint averaging) the weights at each one."""
    save_best: Callable[[dict], None] = lambda weights: None
    save_checkpoint: Callable[[dict], None] = lambda snapshot: None
    log: Callable[[dict, int], None] = lambda metrics, step: None
    save_validated: Callable[[dict, int], None] | None = None


class RunState:
    """Everything a run must carry to continue exactly: model, AdamW, the LR schedule, the
    gradient scaler, the RNG states and the progress. It saves itself as one snapshot
    (a dict of tensors and numbers, loadable with weights_only=True) and restores from one."""

    def __init__(self, model, t, device: torch.device):
        self.model, self.device = model.to(device).train(), device
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, phase_schedule(t))
        use_scaler = device.type == "cuda" and not torch.cuda.is_bf16_supported()
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.progress = TrainResult()

    def restore(self, snapshot: dict) -> None:
        self.model.load_state_dict(snapshot["model"])
        self.optimizer.load_state_dict(snapshot["optimizer"])
        self.schedule.load_state_dict(snapshot["schedule"])
        self.scaler.load_state_dict(snapshot["scaler"])
        torch.set_rng_state(snapshot["rng_cpu"])
        if self.device.type == "cuda" and snapshot.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(snapshot["rng_cuda"], self.device)
        # Only the fields TrainResult has: a checkpoint of an older spkid may carry more.
        progress = {k: v for k, v in snapshot["progress"].items()
                    if k in TrainResult.__dataclass_fields__}
        self.progress = TrainResult(**{**progress, "window": Window(*progress["window"])})

    def snapshot(self) -> dict:
        progress = {k: v for k, v in self.progress.__dict__.items() if k != "validation_seconds"}
        progress["window"] = self.progress.window.as_list()
        return {"model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                "scaler": self.scaler.state_dict(), "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
                "progress": progress}

    def update(self, loss, clip_grad: float) -> None:
        """One optimizer step on `loss`: backward (scaled on fp16 CUDA), clipping, AdamW,
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


def train(model, batches, validation: Validation, p, *, device: torch.device,
          hooks: RunHooks = RunHooks(), resume: dict | None = None, rank: int = 0,
          world: int = 1, progress: bool = True) -> TrainResult:
    """Run optimizer steps up to `p.train.steps` (plus `p.train.finetune.steps` of
    large-margin fine-tuning) with the loss margin and augmentation the params ask for; `batches[k]` is batch k. With `world` > 1 the model is wrapped in
    DistributedDataParallel; rank 0 alone validates and hands out through `hooks`."""
    from tqdm import tqdm

    from spkid.augment import augmentation
    t, margin_at, augment = p.train, phase_margin(p), augmentation(p)
    total = t.steps + t.finetune.steps
    # With fine-tuning, data/model comes from its validations: that phase replaces the model.
    boundary = t.steps if t.finetune.steps else 0
    run = RunState(model, t, device)
    if resume is not None:
        run.restore(resume)
    forward = _parallel(model, device, world, t.compile)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(batches, range(run.progress.step, total)), batch_size=None,
        shuffle=False, num_workers=t.num_workers, pin_memory=device.type == "cuda",
        # Its own generator: creating the iterator must not draw from the global RNG that
        # dropout and augmentation use, or a resumed run would drift from an uninterrupted one.
        generator=torch.Generator().manual_seed(t.seed))

    bar = tqdm(total=total, initial=run.progress.step, desc="train", unit="step",
               disable=not progress or rank != 0)
    for step, (x, mask, y) in enumerate(loader, start=run.progress.step + 1):
        x, mask, y = (v.to(device, non_blocking=True) for v in (x, mask, y))
        with torch.no_grad():
            x = augment(x, mask)
        with autocast(device):
            emb, logits = forward(x, mask, y, margin=margin_at(step))
        loss = F.cross_entropy(logits.float(), y)
        run.update(loss, t.clip_grad)
        with torch.no_grad():  # accuracy without the training margin, as at test time
            correct = (model.head(emb.float()).argmax(1) == y).float().mean()
        run.progress.add_step(step, loss.detach(), correct)
        bar.update(1)
        if rank == 0 and (step % t.valid_every == 0 or step in (t.steps, total)):
            started = time.perf_counter()
            metrics = _validate(run, validation, hooks, margin=margin_at(step), boundary=boundary)
            run.progress.validation_seconds += time.perf_counter() - started
            bar.set_postfix(loss=f"{metrics['train/loss']:.3f}",
                            val=f"{metrics.get('val/accuracy', float('nan')):.3f}")
        if rank == 0 and (step % t.checkpoint_every == 0 or step == total):
            hooks.save_checkpoint(run.snapshot())
    bar.close()
    if validation.labels is None:
        run.progress.best_val_accuracy = float("nan")
    return run.progress


def _parallel(model, device: torch.device, world: int, compile_model: bool):
    """What the loop calls forward on: DDP across ranks, compiled on CUDA when asked."""
    forward = model
    if world > 1:
        forward = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if compile_model and device.type == "cuda":
        forward = torch.compile(forward)
    return forward


def trim_curves(folder, step: int) -> None:
    """Drop the rows after `step` from dvclive's per-metric TSV curves under `folder`, so a
    run resumed from the checkpoint of `step` logs each step once."""
    from pathlib import Path

    from spkid.atomic import write_text
    for path in Path(folder).rglob("*.tsv"):
        lines = path.read_text().splitlines()
        if not lines or "step" not in lines[0].split("\t"):
            continue
        col = lines[0].split("\t").index("step")
        kept = [line for line in lines[1:] if int(line.split("\t")[col]) <= step]
        if len(kept) < len(lines) - 1:
            write_text(path, "\n".join([lines[0], *kept]) + "\n")


@dataclass
class Validation:
    """What each validation scores: a seeded sample of the val views (`valid_utterances`),
    the middle `valid_max_frames` frames of each. Training's own, bounded measure;
    `evaluate` scores every view whole."""
    store: FeatureStore
    views: dict
    labels: np.ndarray | None  # None when there is no val split
    batch_frames: int
    max_frames: int
    classes: np.ndarray | None = None  # which classes a prediction may name (real speakers)

    @classmethod
    def sample(cls, store: FeatureStore, val_views: dict, t, batch_frames: int,
               speakers: list[str] | None = None) -> "Validation":
        """From the val views and the train params `t` (speakers: the class names)."""
        views = subset_views(val_views, t.valid_utterances, t.seed)
        labels = np.asarray(views["speaker_id"], np.int64) if len(views["speaker_id"]) else None
        return cls(store, views, labels, batch_frames, t.valid_max_frames,
                   None if speakers is None else real_speakers(speakers))

    def accuracy(self, model, device: torch.device) -> float | None:
        """Closed-set accuracy of `model`; None without a val split."""
        if self.labels is None:
            return None
        scored = embed_views(model, self.store, self.views, self.batch_frames, device,
                             max_frames=self.max_frames, classes=self.classes)
        return float((scored.predicted == self.labels).mean())


def phase_schedule(t) -> Callable[[int], float]:
    """LR factor per completed step: warmup and cosine over train.steps, then fine-tuning's
    constant rate (as a factor of train.lr)."""
    main, finetune = warmup_cosine(t.warmup_steps, t.steps), t.finetune.lr / t.lr
    return lambda step: main(step) if step < t.steps or not t.finetune.steps else finetune


def phase_margin(p) -> Callable[[int], float]:
    """The margin at 1-based step `step`: loss.m's schedule, then train.finetune.margin."""
    main, t = margin_schedule(p.loss), p.train
    return lambda step: main(step) if step <= t.steps else t.finetune.margin


def _validate(run: RunState, validation: Validation, hooks: RunHooks, margin=None,
              boundary: int = 0) -> dict:
    """Log the metrics since the last validation; save the best weights among the
    validations after step `boundary`."""
    state = run.progress
    metrics = {**state.close_window(), "lr": run.optimizer.param_groups[0]["lr"]}
    if margin is not None:  # a scheduled margin (loss.margin_warmup); else it is loss.m
        metrics["margin"] = float(margin)
    if validation.labels is not None:
        metrics["val/accuracy"] = validation.accuracy(run.model, run.device)
    hooks.log(metrics, state.step)
    # Without a val split the last model is the best we can tell.
    score = metrics.get("val/accuracy", state.step)
    weights = run.weights()
    if state.step > boundary and (score > state.best_val_accuracy or state.best_step <= boundary):
        state.best_val_accuracy, state.best_step = score, state.step
        hooks.save_best(weights)
    if hooks.save_validated is not None:
        hooks.save_validated(weights, state.step)
    return metrics
