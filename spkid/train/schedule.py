"""What changes with the step: the learning rate (warmup, cosine decay, then fine-tuning's
constant rate) and the loss margin (loss.m's schedule, then fine-tuning's margin)."""

from __future__ import annotations

import math
from typing import Callable

from spkid.models.heads import margin_schedule


def warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


def phase_schedule(t) -> Callable[[int], float]:
    """LR factor per completed step: warmup and cosine over train.steps, then fine-tuning's
    constant rate (as a factor of train.lr)."""
    main, finetune = warmup_cosine(t.warmup_steps, t.steps), t.finetune.lr / t.lr
    return lambda step: main(step) if step < t.steps or not t.finetune.steps else finetune


def phase_margin(p) -> Callable[[int], float]:
    """The margin at 1-based step `step`: loss.m's schedule, then train.finetune.margin."""
    main, t = margin_schedule(p.loss), p.train
    return lambda step: main(step) if step <= t.steps else t.finetune.margin
