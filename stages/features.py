"""features: manifest -> log-mel Parquet shards (data/features/shard-*.parquet + summary.json).

The folder is kept between runs (DVC `persist`): a run writes only the blocks that are
missing or stale and removes the ones no longer wanted (spkid.features.blocks), so a run
that was killed resumes, and one after a change to some utterances redoes their blocks
alone. `features.workers` processes share the work on one machine; under `torchrun` each
rank (on any machine sharing the repository's file system) writes its share of the
blocks, and the result is byte for byte what one process writes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer

from spkid.core import distributed
from spkid.core.params import load_params
from spkid.data.manifest import read_manifest_table
from spkid.features.blocks import FeatureFolder, plan_blocks, write_blocks
from spkid.features.extract import BlockJob
from spkid.features.logmel import LogMelExtractor
from spkid.features.vad import vad_settings
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
    manifest, meta = read_manifest_table(MANIFEST)
    extractor = LogMelExtractor.from_params(p.features)
    settings = {**extractor.config(), **vad_settings(p.features.vad)}
    shard_meta = {"features": settings, "precomputed": meta.get("format") == "hw4",
                  "dtype": p.features.dtype, "source": meta}
    job = BlockJob(str(MANIFEST), meta, settings, str(FEATURES), shard_meta,
                   p.features.dtype, p.features.batch_size, p.data.min_seconds, p.data.short)
    job.check()
    blocks = plan_blocks(manifest, p.features.shard_size, {
        **shard_meta, "min_seconds": p.data.min_seconds, "short": p.data.short})
    folder = FeatureFolder(FEATURES, blocks)
    missing = distributed.broadcast(folder.prepare() if rank == 0 else None, world)
    workers = p.features.workers or os.cpu_count() or 1
    write_blocks(manifest, job, missing[rank::world], workers=workers, progress=rank == 0)
    distributed.finish(world)  # every rank's blocks are written before the folder is sealed
    if rank == 0:
        stats = folder.finish()
        folder.seal({**stats, "blocks": len(blocks), "hours": stats["frames"]
                     * extractor.hop_length / extractor.sample_rate / 3600, **shard_meta})
        summary("features", f"{stats['utterances']} utterances, {stats['frames']} frames in "
                f"{stats['shards']} shards of {len(blocks)} blocks, {len(missing)} written, "
                f"{len(blocks) - len(missing)} kept ({p.features.dtype}; short: "
                f"{stats['skipped_short']} skipped, {stats['padded']} padded; "
                f"{min(workers, max(1, len(missing)))} workers x {world} ranks)",
                time.perf_counter() - started)
