"""The training loop: AdamW, linear warmup then cosine decay, mixed precision on CUDA,
validation accuracy on full utterances, best checkpoint kept."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from spkid.core import distributed
from spkid.core.device import autocast
from spkid.train.augment import augmentation
from spkid.train.schedule import phase_margin
from spkid.train.state import RunState, TrainResult
from spkid.train.validation import Validation
from spkid.train.warm_start import freeze_body


@dataclass
class RunHooks:
    """What a run hands out (rank 0 only): the best weights, the resumable state, the
    metrics of each validation, and (for checkpoint averaging) the weights at each one."""
    save_best: Callable[[dict], None] = lambda weights: None
    save_checkpoint: Callable[[dict], None] = lambda snapshot: None
    log: Callable[[dict, int], None] = lambda metrics, step: None
    save_validated: Callable[[dict, int], None] | None = None


def train(model, batches, validation: Validation, p, *, device: torch.device,
          hooks: RunHooks = RunHooks(), resume: dict | None = None, rank: int = 0,
          world: int = 1, progress: bool = True) -> TrainResult:
    """Run optimizer steps up to `p.train.steps` (plus `p.train.finetune.steps` of
    large-margin fine-tuning), the first `p.train.freeze_steps` of them on the head alone,
    with the loss margin and augmentation the params ask for;
    `batches[k]` is batch k. With `world` > 1 the model is wrapped in
    DistributedDataParallel: every rank validates a part of the val sample and resumes rank
    0's snapshot with its own RNG state; rank 0 alone hands out through `hooks`."""
    t, margin_at, augment = p.train, phase_margin(p), augmentation(p)
    total = t.steps + t.finetune.steps
    # With fine-tuning, data/model comes from its validations (best and averaged alike):
    # that phase replaces the model.
    boundary = t.steps if t.finetune.steps else 0
    run = RunState(model, t, device, world)
    if resume is not None:
        run.restore(resume, rank)
    frozen, forward = None, None
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(batches, range(run.progress.step, total)), batch_size=None,
        shuffle=False, num_workers=t.num_workers, pin_memory=device.type == "cuda",
        # Its own generator: creating the iterator must not draw from the global RNG that
        # dropout and augmentation use, or a resumed run would drift from an uninterrupted one.
        generator=torch.Generator().manual_seed(t.seed))

    bar = tqdm(total=total, initial=run.progress.step, desc="train", unit="step",
               disable=not progress or rank != 0)
    for step, (x, mask, y) in enumerate(loader, start=run.progress.step + 1):
        if frozen != (step <= t.freeze_steps):
            frozen = step <= t.freeze_steps
            freeze_body(model, frozen)
            # DDP reduces the gradients of the parameters that train when it is built.
            forward = _parallel(model, device, world, t.compile)
        elif frozen:  # validation put the whole model back in train mode
            freeze_body(model, True)
        x, mask, y = (v.to(device, non_blocking=True) for v in (x, mask, y))
        with torch.no_grad():
            x = augment(x, mask)
        with autocast(device, run.dtype):
            emb, logits = forward(x, mask, y, margin=margin_at(step))
        loss = F.cross_entropy(logits.float(), y)
        run.update(loss, t.clip_grad)
        with torch.no_grad():  # accuracy without the training margin, as at test time
            correct = (model.head(emb.float()).argmax(1) == y).float().mean()
        run.progress.add_step(step, loss.detach(), correct)
        bar.update(1)
        if step % t.valid_every == 0 or step in (t.steps, total):
            # Every rank scores its part of the sample: no rank waits alone in the next
            # all-reduce while rank 0 validates (NCCL's timeout).
            started = time.perf_counter()
            distributed.share_buffers(model, world)
            metrics = _validate(run, validation, hooks, margin=margin_at(step), boundary=boundary,
                                rank=rank, world=world)
            run.progress.validation_seconds += time.perf_counter() - started
            bar.set_postfix(loss=f"{metrics['train/loss']:.3f}",
                            val=f"{metrics.get('val/accuracy', float('nan')):.3f}")
        if step % t.checkpoint_every == 0 or step == total:
            rngs = distributed.gather(run.rng_state(), world)
            if rank == 0:
                hooks.save_checkpoint(run.snapshot(rngs))
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


def _validate(run: RunState, validation: Validation, hooks: RunHooks, margin=None,
              boundary: int = 0, rank: int = 0, world: int = 1) -> dict:
    """Log the metrics since the last validation; save the best weights among the
    validations after step `boundary` (rank 0; the others keep the same best step)."""
    state = run.progress
    metrics = {**state.close_window(), "lr": run.optimizer.param_groups[0]["lr"]}
    if margin is not None:  # a scheduled margin (loss.margin_warmup); else it is loss.m
        metrics["margin"] = float(margin)
    if validation.labels is not None:
        metrics["val/accuracy"] = validation.accuracy(run.model, run.device, rank, world)
    hooks.log(metrics, state.step)
    # Without a val split the last model is the best we can tell.
    score = metrics.get("val/accuracy", state.step)
    weights = run.weights() if rank == 0 else None
    if state.step > boundary and (score > state.best_val_accuracy or state.best_step <= boundary):
        state.best_val_accuracy, state.best_step = score, state.step
        hooks.save_best(weights)
    if hooks.save_validated is not None and state.step > boundary:
        hooks.save_validated(weights, state.step)
    return metrics
