"""features: manifest -> log-mel Parquet shards (data/features/shard-*.parquet + summary.json).

`features.workers` processes share the work on one machine; under `torchrun` each rank
(on any machine sharing the repository's file system) writes the shards of its own blocks
of the manifest, and the result is byte for byte what one process writes."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import typer

from spkid.core import distributed
from spkid.core.atomic import atomic_dir, write_json
from spkid.core.errors import DataError
from spkid.core.params import load_params
from spkid.data.manifest import read_manifest
from spkid.features import copies
from spkid.features.blocks import BlockJob, manifest_to_shards, write_copies
from spkid.features.logmel import LogMelExtractor
from stages.common import ParamsOption, exclusive, one_line_errors, summary
from stages.layout import FEATURES, MANIFEST

app = typer.Typer(add_completion=False)


@app.command()
@one_line_errors
@exclusive
def features(params: Path = ParamsOption):
    """Compute log-mel features (or check precomputed ones) into Parquet shards."""
    started = time.perf_counter()
    p = load_params(params)
    rank, world, _ = distributed.start("cpu")
    rows, meta = read_manifest(MANIFEST)
    extractor = LogMelExtractor.from_params(p.features)
    precomputed = meta.get("format") == "hw4"
    shard_meta = {"features": extractor.config(), "precomputed": precomputed,
                  "dtype": p.features.dtype, "source": meta}
    augment = copies.enabled(p.features.augment)
    if augment:
        if precomputed:
            raise DataError("features.augment: the hw4 data are precomputed log-mels, so there "
                            "is no audio to augment (set copies: 0 and speed: [])")
        shard_meta["augment"] = p.features.augment.to_dict()
    workers = p.features.workers or os.cpu_count() or 1
    with (atomic_dir(FEATURES) if rank == 0 else contextlib.nullcontext()) as tmp:
        folder = distributed.broadcast(str(tmp), world)
        job = BlockJob(str(MANIFEST), meta, extractor.config(), folder, shard_meta,
                       p.features.dtype, p.features.batch_size, p.data.min_seconds, p.data.short)
        mine = manifest_to_shards(rows, job, shard_size=p.features.shard_size, workers=workers,
                                  rank=rank, world=world, progress=rank == 0)
        stats = {k: sum(s[k] for s in distributed.gather(mine, world)) for k in mine}
        if augment:  # every rank's clean shards are written: split them as `index` will
            mine = write_copies(rows, job, p, workers=workers, rank=rank,
                                             world=world, progress=rank == 0)
            extra = {k: sum(s[k] for s in distributed.gather(mine, world)) for k in mine}
            stats.update(augmented=extra["utterances"], augmented_frames=extra["frames"],
                         shards=stats["shards"] + extra["shards"])
        if rank == 0:
            write_json(Path(folder) / "summary.json", {
                **stats, "hours": stats["frames"] * extractor.hop_length / extractor.sample_rate / 3600,
                **shard_meta})
        distributed.finish(world)  # every rank's shards are written before the rename
    if rank == 0:
        summary("features", f"{stats['utterances']} utterances, {stats['frames']} frames"
                + (f" + {stats['augmented']} augmented copies" if augment else "")
                + f" in {stats['shards']} shards ({p.features.dtype}; short: {stats['skipped_short']} "
                f"skipped, {stats['padded']} padded; {min(workers, stats['shards']) or 1} "
                f"workers x {world} ranks)", time.perf_counter() - started)
