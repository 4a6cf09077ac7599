"""The block scheduler of `features`: manifest rows (or augmented copies) cut into blocks
of `features.shard_size`, each block decoded, turned into log-mels and written as its own
shards, the blocks spread over worker processes and torchrun ranks.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import torch
from tqdm import tqdm

from spkid.core.errors import DataError
from spkid.data.audio import read_audio
from spkid.data.manifest import resolve
from spkid.data.sources.hw4 import load_hw4_features
from spkid.features.copies import AugmentedCopy, Levels, plan_for_split, render
from spkid.features.logmel import LogMelExtractor, pad_to_min_length
from spkid.features.store import ShardWriter, read_catalog


def shard_blocks(n_rows: int, shard_size: int) -> list[range]:
    """Manifest rows of each shard block (block k: rows k*shard_size .. (k+1)*shard_size)."""
    return [range(a, min(a + shard_size, n_rows)) for a in range(0, n_rows, shard_size)]


@dataclass(frozen=True)
class BlockJob:
    """Everything a worker needs to write the shards of blocks of the manifest."""
    manifest_path: str
    meta: dict
    extractor: dict  # LogMelExtractor.config()
    folder: str
    shard_meta: dict
    dtype: str
    batch_size: int
    min_seconds: float
    short: str
    threads: int = 1  # batches computed at once inside the block (each op single-threaded)
    levels: Levels | None = None  # when the rows are augmented copies


def load_wave(job: BlockJob, row, sample_rate: int) -> np.ndarray:
    """A manifest row's audio, or an augmented copy (spkid.features.copies) rendered from it."""
    def read(r):
        return read_audio(resolve(job.manifest_path, r), sample_rate, r.start, r.end)
    if isinstance(row, AugmentedCopy):
        return render(row, read, job.levels, sample_rate)
    return read(row)


def write_block(job: BlockJob, block: int, rows) -> dict:
    """Features of one block's rows (decode + resample + log-mel, or load precomputed
    HW4 tensors; manifest rows or augmented copies) written as that block's shards.
    Returns the block's counts."""
    extractor = LogMelExtractor.from_config(job.extractor)
    writer = ShardWriter(job.folder, block, job.shard_meta, job.dtype)
    stats = {"utterances": 0, "padded": 0, "skipped_short": 0}
    min_samples = int(round(job.min_seconds * extractor.sample_rate))
    feats: dict[int, np.ndarray] = {}
    if job.meta.get("format") == "hw4":
        def compute(ks: list[int]) -> tuple[list, int, int]:
            return [(k, load_hw4_features(resolve(job.manifest_path, rows[k]), rows[k].num_frames,
                                          extractor.n_mels)) for k in ks], 0, 0
        tasks = [[k] for k in range(len(rows))]
    else:
        def compute(ks: list[int]) -> tuple[list, int, int]:
            """(index, log-mels) of a batch's usable rows, and how many were padded, skipped."""
            waves, kept, padded = [], [], 0
            for k in ks:
                wave = load_wave(job, rows[k], extractor.sample_rate)
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
    # batch changes nothing in its numbers.
    with ThreadPoolExecutor(max(1, job.threads)) as pool:
        for done, padded, skipped in pool.map(compute, tasks):
            feats.update(done)
            stats["padded"] += padded
            stats["skipped_short"] += skipped
    for k, r in enumerate(rows):
        if k in feats:
            writer.add(r.utterance_id, r.speaker, r.role, feats.pop(k))
            stats["utterances"] += 1
    writer.flush()
    return {**stats, "frames": writer.frames, "shards": writer.parts}


def _run_block(args) -> dict:
    job, block, rows = args
    return write_block(job, block, rows)


def _one_thread() -> None:
    torch.set_num_threads(1)


def manifest_to_shards(rows, job: BlockJob, *, shard_size: int, workers: int = 1,
                       rank: int = 0, world: int = 1, progress: bool = True,
                       first_block: int = 0, desc: str = "features") -> dict:
    """Write the shards of every block this rank owns (blocks rank, rank + world, ...;
    numbered from `first_block`, so augmented copies follow the clean blocks),
    spread over `workers`: one process per block while there are blocks enough, the rest as
    threads inside each process (so one big block still uses every core). Every torch op
    runs single-threaded, so the bytes written do not depend on how the work was spread.
    Memory per process: one block's features plus a batch of audio per thread."""
    precomputed = job.meta.get("format") == "hw4"
    if precomputed and job.meta.get("n_mels") != job.extractor["n_mels"]:
        raise DataError(f"{job.manifest_path}: the data set has {job.meta.get('n_mels')} mels "
                        f"but features.n_mels is {job.extractor['n_mels']}")
    owned = [(k, r) for k, r in enumerate(shard_blocks(len(rows), shard_size), first_block)
             if k % world == rank]
    processes = max(1, min(workers, len(owned)))
    job = replace(job, threads=max(1, workers // processes))
    mine = [(job, k, [rows[i] for i in r]) for k, r in owned]
    totals = {"utterances": 0, "padded": 0, "skipped_short": 0, "frames": 0, "shards": 0}
    bar = tqdm(total=sum(len(m[2]) for m in mine), desc=desc, unit="utt",
               disable=not progress)
    try:
        if processes == 1:
            threads = torch.get_num_threads()
            _one_thread()
            try:
                results = (_run_block(m) for m in mine)
                for m, stats in zip(mine, results):
                    _add(totals, stats)
                    bar.update(len(m[2]))
            finally:
                torch.set_num_threads(threads)
        else:
            # forkserver: workers start from a clean process, not a fork of one whose
            # OpenMP threads may already be running (a forked OpenMP runtime can hang).
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["spkid.features.blocks"])
            with ctx.Pool(processes, initializer=_one_thread) as pool:
                for m, stats in zip(mine, pool.imap(_run_block, mine)):
                    _add(totals, stats)
                    bar.update(len(m[2]))
    finally:
        bar.close()  # so an error message starts on a line of its own
    return totals


def _add(totals: dict, stats: dict) -> None:
    for key, value in stats.items():
        totals[key] += value


def write_copies(manifest_rows, job, p, **spread) -> dict:
    """Plan the copies for the clean shards in `job.folder` and write them as the blocks
    after the clean ones (manifest_to_shards; `spread`: workers, rank,
    world, progress). Returns this rank's counts."""
    copies = plan_for_split(read_catalog(job.folder).to_pylist(), manifest_rows, p)
    size = p.features.shard_size
    return manifest_to_shards(copies, replace(job, levels=Levels.from_params(p.features.augment)),
                              shard_size=size, first_block=len(shard_blocks(len(manifest_rows), size)),
                              desc="augment", **spread)
