"""features: manifest -> log-mel Parquet shards (data/features/shard-*.parquet + summary.json)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from spkid.atomic import atomic_dir, write_json
from spkid.features import LogMelExtractor, manifest_to_shards
from spkid.manifest import read_manifest
from spkid.params import load_params
from spkid.shards import ShardWriter
from stages.common import ParamsOption, one_line_errors, summary
from stages.layout import FEATURES, MANIFEST

app = typer.Typer(add_completion=False)


@app.command()
@one_line_errors
def features(params: Path = ParamsOption):
    """Compute log-mel features (or check precomputed ones) into Parquet shards."""
    started = time.perf_counter()
    p = load_params(params)
    rows, meta = read_manifest(MANIFEST)
    extractor = LogMelExtractor.from_params(p.features)
    precomputed = meta.get("format") == "hw4"
    shard_meta = {"features": extractor.config(), "precomputed": precomputed, "source": meta}
    with atomic_dir(FEATURES) as tmp:
        writer = ShardWriter(tmp, p.features.shard_size, shard_meta)
        stats = manifest_to_shards(rows, MANIFEST, meta, extractor, writer,
                                   batch_size=p.features.batch_size,
                                   min_seconds=p.data.min_seconds, short=p.data.short)
        write_json(tmp / "summary.json", {
            **stats, "shards": writer.shards, "frames": writer.frames,
            "hours": writer.frames * extractor.hop_length / extractor.sample_rate / 3600,
            **shard_meta})
    summary("features", f"{stats['utterances']} utterances, {writer.frames} frames in "
            f"{writer.shards} shards (short: {stats['skipped_short']} skipped, "
            f"{stats['padded']} padded)", time.perf_counter() - started)


if __name__ == "__main__":
    app()
