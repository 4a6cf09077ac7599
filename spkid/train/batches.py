"""Turning the contiguous feature array into model batches.

Training batches are a pure function of (seed, step): resuming at step k replays exactly
the batches an uninterrupted run would have drawn, and worker processes need no state.
"""

from __future__ import annotations

import numpy as np
import torch

from spkid.features.store import FeatureStore
from spkid.train.mel_augment import CropAugment

# The augmentation of batch k draws from a stream of its own, so switching it on or off
# changes no crop's position; so does the order in which a shard window visits the shards.
AUGMENT_STREAM = 1
WINDOW_STREAM = 2


class ShardWindow:
    """Which shards training crops come from at each step when the features are bigger
    than the page cache: `size` shards at a time, in a seeded order that moves on by one
    shard every `steps` steps, so each shard is read while it is in the window (mostly
    from the page cache) and then left. Crops are drawn from the windows of the views in
    the window's shards, each window of them equally likely; every shard is in the window
    for size x steps steps per pass over the shards. A pure function of (seed, step)."""

    def __init__(self, shard_of_view: np.ndarray, windows: np.ndarray, size: int, steps: int,
                 stream: list[int]):
        self.order = np.argsort(shard_of_view, kind="stable")  # views grouped by shard
        counts = windows[self.order]
        self.first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self.shards, start = np.unique(shard_of_view[self.order], return_index=True)
        # windows of each shard group: [group_first, group_first + group_windows)
        self.group_first = self.first[start]
        self.group_windows = np.add.reduceat(counts, start) if len(counts) else counts
        self.size, self.steps, self.stream = min(size, len(self.shards)), steps, stream

    def active(self, step: int) -> np.ndarray:
        """Indices into self.shards of the shards in the window at `step`."""
        n = len(self.shards)
        if self.size == n:
            return np.arange(n)
        epoch, at = divmod(step // self.steps, n)
        order = np.random.default_rng([*self.stream, WINDOW_STREAM, epoch]).permutation(n)
        if at + self.size <= n:
            return order[at:at + self.size]
        # Across a pass's end the window runs on into the next pass's order, skipping the
        # shards it still holds.
        following = np.random.default_rng([*self.stream, WINDOW_STREAM, epoch + 1]).permutation(n)
        tail = order[at:]
        more = following[~np.isin(following, tail)][:self.size - len(tail)]
        return np.concatenate([tail, more])

    def draw(self, rng: np.random.Generator, step: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(view, window within the view) of `count` crops at `step`."""
        groups = self.active(step)
        cum = np.cumsum(self.group_windows[groups])
        u = rng.integers(0, cum[-1], count)
        g = np.searchsorted(cum, u, side="right")
        window = self.group_first[groups[g]] + u - (cum[g] - self.group_windows[groups[g]])
        k = np.searchsorted(self.first, window, side="right") - 1
        return self.order[k], window - self.first[k]


class SegmentBatches(torch.utils.data.Dataset):
    """Item k is training batch k: random crops drawn from the segment index.

    The index has one row per train view with `windows` crop windows `hop` frames apart;
    a draw picks one window of all (uniformly), then a start inside it. Nothing per window
    is materialised, so memory grows with the number of views, not frames."""

    def __init__(self, store: FeatureStore, segments, batch_size: int, seed: int, steps: int,
                 rank: int = 0, world: int = 1, crop_frames: int | None = None,
                 phase: int = 0, augment: CropAugment | None = None, speakers: int = 0,
                 shard_window: int = 0, window_steps: int = 1):
        """`crop_frames` overrides the index's segment length (large-margin fine-tuning's
        longer crops): the same windows, each crop as long as its view allows. A `phase`
        other than 0 draws from its own random stream. `augment` transforms each batch
        (spkid.train.mel_augment; `speakers`: how many speaker classes precede the speed
        classes). With `shard_window` > 0, crops come from a ShardWindow of that many
        shards moving every `window_steps` steps (each rank its own)."""
        self.store = store
        self.pos = store.positions(segments["source_id"])
        self.start = np.asarray(segments["start_frame"], np.int64)
        self.length = np.asarray(segments["num_frames"], np.int64)
        if crop_frames is not None:
            self.length = np.minimum(crop_frames, np.asarray(segments["view_frames"], np.int64))
        self.hop = np.asarray(segments["hop"], np.int64)
        self.end = self.start + np.asarray(segments["view_frames"], np.int64)
        self.last = self.end - self.start - self.length
        self.label = np.asarray(segments["speaker_id"], np.int64)
        windows = np.asarray(segments["windows"], np.int64)
        self.first_window = np.concatenate([[0], np.cumsum(windows)[:-1]]).astype(np.int64)
        # Each DDP rank draws from its own share of the windows: every world-th one.
        self.count = max(0, (int(windows.sum()) - rank + world - 1) // world)
        if self.count == 0:
            raise ValueError("the segment index is empty: nothing to train on")
        self.batch_size = batch_size
        self.seed, self.steps, self.rank, self.world = seed, steps, rank, world
        self.stream = [seed, rank] if phase == 0 else [seed, rank, phase]
        self.augment, self.speakers = augment, speakers
        self.window = (ShardWindow(store.shard[self.pos], windows, shard_window, window_steps,
                                   self.stream) if shard_window > 0 else None)

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int):
        rng = np.random.default_rng([*self.stream, step])
        if self.window is None:
            window = self.rank + self.world * rng.integers(0, self.count, self.batch_size)
            v = np.searchsorted(self.first_window, window, side="right") - 1
            k = window - self.first_window[v]
        else:
            v, k = self.window.draw(rng, step, self.batch_size)
        offset = k * self.hop[v]
        # A crop starts anywhere up to the next window, and never runs past its view (crops
        # longer than the index's segments start no later than their view's last start).
        offset = np.minimum(offset, self.last[v])
        jitter = np.minimum(self.hop[v] - 1, self.last[v] - offset)
        start = self.start[v] + offset + (rng.random(self.batch_size) * (jitter + 1)).astype(np.int64)
        if self.augment is None:
            x, mask = self.store.crops(self.pos[v], start, self.length[v])
            return torch.from_numpy(x), torch.from_numpy(mask), torch.from_numpy(self.label[v])
        aug = np.random.default_rng([*self.stream, step, AUGMENT_STREAM])
        speeds = self.augment.draw_speeds(aug, self.batch_size)
        # A faster crop reads more stored frames: moved back where its view ends too soon.
        need = self.augment.source_frames(speeds, self.length[v])
        start = np.maximum(self.start[v], np.minimum(start, self.end[v] - need))
        read = np.minimum(need, self.end[v] - start)
        x, _ = self.store.crops(self.pos[v], start, read)
        x, mask, label = self.augment(x, read, speeds, self.length[v], self.label[v],
                                      self.speakers, aug)
        return torch.from_numpy(x), torch.from_numpy(mask), torch.from_numpy(label)


class PhasedBatches(torch.utils.data.Dataset):
    """The main phase's batches, then large-margin fine-tuning's: item k is batch k of
    the whole run."""

    def __init__(self, main: SegmentBatches, finetune: SegmentBatches):
        self.main, self.finetune, self.count = main, finetune, main.count

    def __len__(self) -> int:
        return len(self.main) + len(self.finetune)

    def __getitem__(self, step: int):
        return self.main[step] if step < len(self.main) else self.finetune[step - len(self.main)]


def training_batches(store: FeatureStore, segments, t, rank: int = 0, world: int = 1, *,
                     augment: CropAugment | None = None, speakers: int = 0):
    """Batch k of a run with train params `t`: index-length crops for train.steps, then
    train.finetune.crop_frames crops for train.finetune.steps, each phase augmented by
    `augment` (`speakers`: the number of speaker classes)."""
    common = dict(augment=augment, speakers=speakers, shard_window=t.shard_window,
                  window_steps=t.window_steps)
    main = SegmentBatches(store, segments, t.batch_size, t.seed, t.steps, rank, world, **common)
    if not t.finetune.steps:
        return main
    return PhasedBatches(main, SegmentBatches(store, segments, t.batch_size, t.seed,
                                              t.finetune.steps, rank, world,
                                              crop_frames=t.finetune.crop_frames, phase=1,
                                              **common))
