"""Validation during training: closed-set accuracy on a seeded sample of the val views."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from spkid.core import distributed
from spkid.data.views import real_speakers, take_views
from spkid.features.store import FeatureStore
from spkid.models.embedding import embed_views


def subset_views(views: dict, count: int, seed: int) -> dict:
    """A seeded subset of `count` views (all when count is 0 or not smaller), in order."""
    n = len(views["source_id"])
    if not count or count >= n:
        return views
    keep = np.sort(np.random.default_rng([seed, n]).choice(n, count, replace=False))
    return take_views(views, keep)


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

    def accuracy(self, model, device: torch.device, rank: int = 0, world: int = 1
                 ) -> float | None:
        """Closed-set accuracy of `model`; None without a val split. Under torchrun each
        rank scores every world-th batch and every rank returns the same accuracy."""
        if self.labels is None:
            return None
        scored = embed_views(model, self.store, self.views, self.batch_frames, device,
                             max_frames=self.max_frames, classes=self.classes, share=(rank, world))
        return float((distributed.add_up(scored.predicted, world) == self.labels).mean())
