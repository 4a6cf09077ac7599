"""One block of the manifest made into feature shards: decode, resample, keep the speech
where features.vad asks, log-mel (or load a data set's precomputed features), written by
ShardWriter. Everything that determines a block's bytes is here, in
spkid.features.logmel, vad and store and in spkid.data.audio: their
source is part of each block's key (spkid.features.blocks), so editing them makes every
block stale, and editing the scheduler makes none.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from spkid.core.errors import DataError
from spkid.data.audio import read_audio
from spkid.data.manifest import ManifestRoots, ManifestRow
from spkid.data.sources.hw4 import load_hw4_features
from spkid.features.logmel import LogMelExtractor, pad_to_min_length
from spkid.features.store import ShardWriter
from spkid.features.vad import detector_for


@dataclass(frozen=True)
class BlockJob:
    """Everything a worker needs to write the shards of blocks of the manifest."""
    manifest_path: str
    meta: dict
    extractor: dict  # LogMelExtractor.config(), plus spkid.features.vad's settings
    folder: str
    shard_meta: dict
    dtype: str
    batch_size: int
    min_seconds: float
    short: str
    threads: int = 1  # batches computed at once inside the block (each op single-threaded)

    @property
    def precomputed(self) -> bool:
        return self.meta.get("format") == "hw4"

    def check(self) -> None:
        """Refuse what no block could be written with."""
        if self.precomputed and self.meta.get("n_mels") != self.extractor["n_mels"]:
            raise DataError(f"{self.manifest_path}: the data set has {self.meta.get('n_mels')} "
                            f"mels but features.n_mels is {self.extractor['n_mels']}")
        if self.precomputed and detector_for(self.extractor):
            raise DataError(f"{self.manifest_path}: features.vad needs audio and the data set "
                            "holds precomputed features")


def write_block(job: BlockJob, name: str, rows: list[ManifestRow]) -> dict:
    """Features of one block's rows (decode + resample + log-mel, or load precomputed HW4
    tensors) written as the shards `shard-<name>-<part>.parquet`. Returns the block's
    counts, which its last part also records."""
    extractor = LogMelExtractor.from_config(job.extractor)
    detector = detector_for(job.extractor)
    writer = ShardWriter(job.folder, name, job.shard_meta, job.dtype)
    stats = {"utterances": 0, "padded": 0, "skipped_short": 0}
    min_samples = int(round(job.min_seconds * extractor.sample_rate))
    feats: dict[int, np.ndarray] = {}
    roots = ManifestRoots.read(job.manifest_path)
    if job.precomputed:
        def compute(ks: list[int]) -> tuple[list, int, int]:
            return [(k, load_hw4_features(roots.resolve(rows[k]), rows[k].num_frames,
                                          extractor.n_mels)) for k in ks], 0, 0
        tasks = [[k] for k in range(len(rows))]
    else:
        def compute(ks: list[int]) -> tuple[list, int, int]:
            """(index, log-mels) of a batch's usable rows, and how many were padded, skipped."""
            waves, kept, padded = [], [], 0
            for k in ks:
                r = rows[k]
                wave = read_audio(roots.resolve(r), extractor.sample_rate, r.start,
                                  r.end)
                if detector is not None:  # before the length check: what is left is speech
                    wave = detector(wave, extractor.sample_rate, r.utterance_id)
                if len(wave) < min_samples:
                    if job.short == "skip":
                        continue
                    wave = pad_to_min_length(wave, min_samples)
                    padded += 1
                waves.append(wave)
                kept.append(k)
            return (list(zip(kept, extractor(waves))) if waves else []), padded, len(ks) - len(kept)
        # Similar lengths batched together waste little on padding; each utterance's
        # features do not depend on its batch, so the order is free.
        order = sorted(range(len(rows)), key=lambda k: rows[k].duration or 0.0)
        tasks = [order[a:a + job.batch_size] for a in range(0, len(order), job.batch_size)]
    # Decoding and the FFTs release the GIL, so threads overlap them; which thread runs a
    # batch changes nothing in its numbers. Each thread runs torch single-threaded: the
    # process's setting does not reach a new thread's OpenMP, and two processes each
    # spinning OpenMP threads on every core ran features 5x slower.
    with ThreadPoolExecutor(max(1, job.threads), initializer=torch.set_num_threads,
                            initargs=(1,)) as pool:
        for done, padded, skipped in pool.map(compute, tasks):
            feats.update(done)
            stats["padded"] += padded
            stats["skipped_short"] += skipped
    for k, r in enumerate(rows):
        if k in feats:
            writer.add(r.utterance_id, r.speaker, r.role, feats.pop(k))
            stats["utterances"] += 1
    stats = {**stats, "frames": writer.frames}
    writer.finish(stats)
    return {**stats, "shards": writer.parts}
