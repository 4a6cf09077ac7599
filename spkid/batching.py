"""Turning the contiguous feature array into model batches.

Training batches are a pure function of (seed, step): resuming at step k replays exactly
the batches an uninterrupted run would have drawn, and worker processes need no state.
"""

from __future__ import annotations

import numpy as np
import torch

from spkid.shards import FeatureStore


class SegmentBatches(torch.utils.data.Dataset):
    """Item k is training batch k: random crops drawn from the segment index."""

    def __init__(self, store: FeatureStore, segments, batch_size: int, seed: int, steps: int,
                 rank: int = 0, world: int = 1):
        pos = store.position()
        # Each DDP rank draws from its own slice of the segment index.
        take = slice(rank, None, world)
        src = np.array([pos[s] for s in segments["source_id"]], dtype=np.int64)[take]
        self.base = store.offset[src] + np.asarray(segments["start_frame"], np.int64)[take]
        self.length = np.asarray(segments["num_frames"], np.int64)[take]
        self.jitter = np.asarray(segments["jitter"], np.int64)[take]
        self.label = np.asarray(segments["speaker_id"], np.int64)[take]
        if len(self.base) == 0:
            raise ValueError("the segment index is empty: nothing to train on")
        self.frames = store.frames
        # Crop lengths come from the segment index, which `index` builds from segment_len.
        self.batch_size = batch_size
        self.seed, self.steps, self.rank = seed, steps, rank

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int):
        rng = np.random.default_rng([self.seed, self.rank, step])
        pick = rng.integers(0, len(self.base), self.batch_size)
        start = self.base[pick] + (rng.random(self.batch_size) * (self.jitter[pick] + 1)).astype(np.int64)
        length = self.length[pick]
        width = int(length.max())
        cols = np.arange(width)
        mask = cols[None, :] < length[:, None]
        # Gather all crops at once; positions past a crop's end read its first frame
        # and are masked out.
        idx = start[:, None] + np.where(mask, cols[None, :], 0)
        x = self.frames[idx] * mask[..., None]
        return (torch.from_numpy(x.astype(np.float32, copy=False)), torch.from_numpy(mask),
                torch.from_numpy(self.label[pick]))


def view_batches(lengths: np.ndarray, batch_frames: int):
    """Indices of views grouped into batches of similar length, each with at most
    `batch_frames` padded frames (a longer view gets a batch of its own)."""
    order = np.argsort(lengths, kind="stable")
    batch: list[int] = []
    for i in order:
        if batch and (len(batch) + 1) * int(lengths[i]) > batch_frames:
            yield batch
            batch = []
        batch.append(int(i))
    if batch:
        yield batch


def pad_views(store: FeatureStore, source_pos: np.ndarray, starts: np.ndarray,
              lengths: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    width = int(lengths.max())
    x = np.zeros((len(lengths), width, store.frames.shape[1]), np.float32)
    mask = np.zeros((len(lengths), width), bool)
    for k, (p, s, n) in enumerate(zip(source_pos, starts, lengths)):
        x[k, :n] = store.frames[store.offset[p] + s: store.offset[p] + s + n]
        mask[k, :n] = True
    return torch.from_numpy(x), torch.from_numpy(mask)
