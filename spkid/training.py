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
from spkid.inference import embed_views
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
class TrainResult:
    """Progress so far; saved in every checkpoint so a resumed run ends where an
    uninterrupted one would."""
    step: int = 0
    best_step: int = 0
    best_val_accuracy: float = -1.0
    final_train_loss: float = float("nan")
    final_train_accuracy: float = float("nan")
    window: list = field(default_factory=lambda: [0.0, 0.0, 0])  # loss sum, accuracy sum, steps
    history: list[dict] = field(default_factory=list)
    # Wall time, for the summary line only: never in a checkpoint, so those stay reproducible.
    validation_seconds: float = 0.0


def train(model, batches, val_views, store: FeatureStore, t, *, device: torch.device,
          batch_frames: int, save_best: Callable[[dict], None],
          save_checkpoint: Callable[[dict], None] = lambda snapshot: None,
          resume: dict | None = None, margin_at: Callable[[int], float | None] = lambda step: None,
          augment: Callable = lambda x, mask: x, log: Callable[[dict, int], None] = lambda m, s: None,
          save_validated: Callable[[dict, int], None] | None = None,
          rank: int = 0, world: int = 1, progress: bool = True) -> TrainResult:
    """Run optimizer steps up to `t.steps` (t: the train params); `batches[k]` is batch k.
    `save_validated(state_dict, step)`, when given, receives the weights at each validation.

    With `world` > 1 the model is wrapped in DistributedDataParallel; rank 0 alone
    validates, logs and saves."""
    from tqdm import tqdm

    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(t.warmup_steps, t.steps))
    use_scaler = device.type == "cuda" and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    state = TrainResult()
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        schedule.load_state_dict(resume["schedule"])
        scaler.load_state_dict(resume["scaler"])
        torch.set_rng_state(resume["rng_cpu"])
        if device.type == "cuda" and resume.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(resume["rng_cuda"], device)
        state = TrainResult(**resume["progress"])
    forward = model
    if world > 1:
        forward = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if t.compile and device.type == "cuda":
        forward = torch.compile(forward)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(batches, range(state.step, t.steps)), batch_size=None,
        shuffle=False, num_workers=t.num_workers, pin_memory=device.type == "cuda",
        # Its own generator: creating the iterator must not draw from the global RNG that
        # dropout and augmentation use, or a resumed run would drift from an uninterrupted one.
        generator=torch.Generator().manual_seed(t.seed))
    # Validation during training scores a bounded sample; `evaluate` scores every view.
    val_views, val_labels = validation_views(val_views, t)

    bar = tqdm(total=t.steps, initial=state.step, desc="train", unit="step",
               disable=not progress or rank != 0)
    for step, (x, mask, y) in enumerate(loader, start=state.step + 1):
        x, mask, y = (v.to(device, non_blocking=True) for v in (x, mask, y))
        with torch.no_grad():
            x = augment(x, mask)
        with autocast(device):
            emb, logits = forward(x, mask, y, margin=margin_at(step))
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if t.clip_grad > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.clip_grad)
        scaler.step(optimizer)
        scaler.update()
        schedule.step()

        with torch.no_grad():  # accuracy without the training margin, as at test time
            correct = (model.head(emb.float()).argmax(1) == y).float().mean()
        # Sums stay on the device: a .item() per step would stall the GPU.
        state.window = [state.window[0] + loss.detach(), state.window[1] + correct, state.window[2] + 1]
        state.step = step
        bar.update(1)
        if rank == 0 and (step % t.valid_every == 0 or step == t.steps):
            started = time.perf_counter()
            _validate(model, state, store, val_views, val_labels, batch_frames,
                      t.valid_max_frames, device, optimizer, save_best, log, save_validated,
                      margin=margin_at(step))
            state.validation_seconds += time.perf_counter() - started
            bar.set_postfix(loss=f"{state.final_train_loss:.3f}",
                            val=f"{state.history[-1].get('val/accuracy', float('nan')):.3f}")
        if rank == 0 and (step % t.checkpoint_every == 0 or step == t.steps):
            save_checkpoint(_snapshot(model, optimizer, schedule, scaler, state, device))
    bar.close()
    if val_labels is None:
        state.best_val_accuracy = float("nan")
    return state


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


def validation_views(val_views: dict, t) -> tuple[dict, np.ndarray | None]:
    """(views, labels) scored at each validation: the seeded subset `t.valid_utterances`;
    labels None when there is no val split."""
    val_views = subset_views(val_views, t.valid_utterances, t.seed)
    labels = np.asarray(val_views["speaker_id"], np.int64) if len(val_views["speaker_id"]) else None
    return val_views, labels


def validation_accuracy(model, store, val_views, val_labels, batch_frames, max_frames, device
                        ) -> float:
    """Closed-set accuracy on the views of validation_views, as training measures it."""
    scored = embed_views(model, store, val_views, batch_frames, device, max_frames=max_frames)
    return float((scored.predicted == val_labels).mean())


def _validate(model, state: TrainResult, store, val_views, val_labels, batch_frames, max_frames,
              device, optimizer, save_best, log, save_validated=None, margin=None) -> None:
    loss_sum, acc_sum, n = state.window
    state.window = [0.0, 0.0, 0]
    metrics = {"train/loss": float(loss_sum) / n, "train/accuracy": float(acc_sum) / n,
               "lr": optimizer.param_groups[0]["lr"]}
    if margin is not None:  # a scheduled margin (loss.margin_warmup); else it is loss.m
        metrics["margin"] = float(margin)
    if val_labels is not None:
        metrics["val/accuracy"] = validation_accuracy(model, store, val_views, val_labels,
                                                      batch_frames, max_frames, device)
    log(metrics, state.step)
    state.history.append({"step": state.step, **metrics})
    state.final_train_loss, state.final_train_accuracy = metrics["train/loss"], metrics["train/accuracy"]
    # Without a val split the last model is the best we can tell.
    score = metrics.get("val/accuracy", state.step)
    weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    if score > state.best_val_accuracy:
        state.best_val_accuracy, state.best_step = score, state.step
        save_best(weights)
    if save_validated is not None:
        save_validated(weights, state.step)


def _snapshot(model, optimizer, schedule, scaler, state: TrainResult, device) -> dict:
    progress = {k: v for k, v in state.__dict__.items() if k != "validation_seconds"}
    progress["window"] = [float(state.window[0]), float(state.window[1]), int(state.window[2])]
    return {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
            "scaler": scaler.state_dict(), "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "progress": progress}
