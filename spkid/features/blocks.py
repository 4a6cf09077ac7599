"""The block scheduler of `features`: the manifest cut into blocks whose shards are named by
what determines them, kept in place between runs, so a run writes only the blocks that
are missing or stale and a killed run resumes where it stopped.

Blocks. Manifest rows (in manifest order) are cut after each row whose utterance id
hashes to 0 modulo `shard_size`, and after 2 * shard_size rows at the latest
(content-defined chunking): blocks hold shard_size rows on average, and adding or removing
utterances changes only the blocks they fall in, not every block after them.

Names. A block's key is the SHA-256 of its manifest rows, the feature params and the
source of the code that computes features (spkid.features.extract and what it runs). Its
shards are `shard-<ordinal>-<key>-<part>.parquet`, the ordinal being its position in the
manifest, so sorted names list utterances in manifest order; when rows come or go before
a block, its files are renamed, not rewritten. A block is complete once its last part is
there (spkid.features.store.ShardWriter marks it).

A run (FeatureFolder): marks the folder incomplete, removes every shard no wanted block
needs (so the folder never holds much more than its final size), renames kept blocks to
their ordinals, writes the missing blocks over worker processes (and torchrun ranks),
then writes summary.json from the blocks' own counts and removes the mark. Readers refuse
a marked folder. Any way the work is spread, or interrupted and resumed, the same params
give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from spkid.core.atomic import remove_dead_temporaries, write_json
from spkid.core.errors import DataError
from spkid.core.provenance import source_digest
from spkid.core.seeding import name_seed
from spkid.data import audio
from spkid.data.manifest import ManifestRow
from spkid.data.sources import hw4
from spkid.features import extract, logmel, store, vad
from spkid.features.extract import BlockJob, write_block
from spkid.features.store import INCOMPLETE, PATTERN

SUMMARY = "summary.json"
_SHARD = re.compile(r"shard-(\d{5,})-([0-9a-f]{16})-(\d{3})\.parquet")
# The code whose edits change features: part of every block's key.
COMPUTING = (extract, logmel, store, vad, audio, hw4)


def cut_blocks(ids, shard_size: int) -> list[tuple[int, int]]:
    """(start, stop) rows of each block of a manifest with utterance ids `ids`."""
    n = len(ids)
    cut = np.fromiter((name_seed(i) % shard_size == 0 for i in ids), bool, n)
    bounds, start = [], 0
    for end in np.flatnonzero(cut) + 1:
        while end - start > 2 * shard_size:  # no cut for long: one at the cap
            bounds.append((start, start + 2 * shard_size))
            start += 2 * shard_size
        bounds.append((start, int(end)))
        start = int(end)
    while start < n:
        bounds.append((start, min(n, start + 2 * shard_size)))
        start = bounds[-1][1]
    return bounds


@dataclass(frozen=True)
class Block:
    ordinal: int
    start: int
    stop: int
    key: str

    @property
    def name(self) -> str:
        return f"{self.ordinal:05d}-{self.key[:16]}"


def plan_blocks(manifest: pa.Table, shard_size: int, settings: dict) -> list[Block]:
    """The blocks of `manifest` (a table of manifest rows) under `settings`, everything
    besides the rows that determines their bytes."""
    head = json.dumps({**settings, "code": source_digest(*COMPUTING)}, sort_keys=True).encode()
    ids = manifest.column("utterance_id").to_pylist()
    out = []
    for k, (a, b) in enumerate(cut_blocks(ids, shard_size)):
        h = hashlib.sha256(head)
        for row in manifest.slice(a, b - a).to_pylist():
            h.update(json.dumps(row, sort_keys=True).encode())
        out.append(Block(k, a, b, h.hexdigest()))
    return out


class FeatureFolder:
    """The features folder of one run over `blocks` (see the module's docstring)."""

    def __init__(self, folder: str | Path, blocks: list[Block]):
        self.folder, self.blocks = Path(folder), blocks

    def _parts(self) -> dict[str, dict[int, Path]]:
        """Shards already there: key prefix -> {part: path}, whatever their ordinal."""
        found: dict[str, dict[int, Path]] = {}
        for path in self.folder.glob(PATTERN):
            m = _SHARD.fullmatch(path.name)
            if m is None:  # a shard of an older spkid's layout: stale
                path.unlink()
                continue
            found.setdefault(m[2], {})[int(m[3])] = path
        return found

    def prepare(self) -> list[Block]:
        """Mark the folder incomplete, remove what no wanted block needs, give kept blocks
        their ordinals; returns the blocks left to write."""
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(self.folder / INCOMPLETE, {"host": socket.gethostname(), "pid": os.getpid(),
                                              "started": time.strftime("%Y-%m-%d %H:%M:%S")})
        (self.folder / SUMMARY).unlink(missing_ok=True)
        remove_dead_temporaries(self.folder)
        found = self._parts()
        missing = []
        for block in self.blocks:
            parts = found.pop(block.key[:16], {})
            if parts and _complete(parts):
                for part, path in parts.items():
                    want = self.folder / store.shard_name(block.name, part)
                    if path != want:
                        os.replace(path, want)
            else:
                for path in parts.values():
                    path.unlink()
                missing.append(block)
        for parts in found.values():  # blocks no longer wanted
            for path in parts.values():
                path.unlink()
        return missing

    def finish(self) -> dict:
        """Check that every block is complete, write summary.json from their counts and
        remove the mark; returns the totals."""
        found = self._parts()
        totals = {"utterances": 0, "padded": 0, "skipped_short": 0, "frames": 0, "shards": 0}
        for block in self.blocks:
            parts = found.get(block.key[:16], {})
            if not parts or not _complete(parts):
                raise DataError(f"{self.folder}: block {block.name} was not written")
            for key, value in _last_meta(parts)["stats"].items():
                totals[key] += value
            totals["shards"] += len(parts)
        return totals

    def seal(self, summary: dict) -> None:
        write_json(self.folder / SUMMARY, summary)
        (self.folder / INCOMPLETE).unlink()


def _last_meta(parts: dict[int, Path]) -> dict:
    path = parts[max(parts)]
    return json.loads((pq.read_schema(path).metadata or {}).get(b"spkid", b"{}"))


def _complete(parts: dict[int, Path]) -> bool:
    """Parts 0..k all there and readable, the last one saying it is the last."""
    if sorted(parts) != list(range(len(parts))):
        return False
    try:
        for part in range(len(parts) - 1):  # the footers only: a damaged copy has none
            pq.read_schema(parts[part])
        return bool(_last_meta(parts).get("last"))
    except Exception:  # a part cut short by a crash outside spkid's atomic rename, or damaged
        return False


def _run_block(args) -> dict:
    job, name, rows = args
    return write_block(job, name, [ManifestRow(**r) for r in rows])


def _one_thread() -> None:
    torch.set_num_threads(1)


def write_blocks(manifest: pa.Table, job: BlockJob, blocks: list[Block], *, workers: int = 1,
                 progress: bool = True) -> dict:
    """Write `blocks` of the manifest table, spread over `workers`: one process per block
    while there are blocks enough, the rest as threads inside each process (so one big
    block still uses every core). Every torch op runs single-threaded, so the bytes written
    do not depend on how the work was spread. Memory per process: one block's features
    plus a batch of audio per thread."""
    processes = max(1, min(workers, len(blocks)))
    job = replace(job, threads=max(1, workers // processes))
    # Each block's rows travel as plain dicts: a slice of the whole table would be
    # pickled with the whole table's buffers.
    work = ((job, b.name, manifest.slice(b.start, b.stop - b.start).to_pylist()) for b in blocks)
    totals = {"utterances": 0, "frames": 0}
    bar = tqdm(total=sum(b.stop - b.start for b in blocks), desc="features", unit="utt",
               disable=not progress)
    try:
        if processes == 1:
            threads = torch.get_num_threads()
            _one_thread()
            try:
                results = map(_run_block, work)
                for b, stats in zip(blocks, results):
                    _add(totals, stats)
                    bar.update(b.stop - b.start)
            finally:
                torch.set_num_threads(threads)
        else:
            # forkserver: workers start from a clean process, not a fork of one whose
            # OpenMP threads may already be running (a forked OpenMP runtime can hang).
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["spkid.features.blocks"])
            try:
                with ctx.Pool(processes, initializer=_one_thread) as pool:
                    for b, stats in zip(blocks, pool.imap(_run_block, work)):
                        _add(totals, stats)
                        bar.update(b.stop - b.start)
            except BaseException:
                # Leaving the pool terminates (and reaps) workers that may be mid-write on
                # other blocks: their temporaries would stay behind until the next run.
                remove_dead_temporaries(job.folder)
                raise
    finally:
        bar.close()  # so an error message starts on a line of its own
    return totals


def _add(totals: dict, stats: dict) -> None:
    for key in totals:
        totals[key] += stats[key]
