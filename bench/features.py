"""Throughput of the features stage: audio seconds turned into log-mel shards per wall second.

    python bench/features.py ../shared/data/librispeech-125 [--batch-size 32] [--repeat 3]

Runs the same code path as `spkid features` (decode with soundfile, resample if needed,
batched log-mel with torch, Parquet shards written through ShardWriter) into a temporary
folder, and prints one line per repeat plus the median."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from spkid.audio import audio_info
from spkid.features import LogMelExtractor, manifest_to_shards
from spkid.manifest import ManifestRow
from spkid.shards import ShardWriter
from spkid.sources.audio_dir import find_audio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--shard-size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    files = [args.folder / f for f in find_audio(args.folder)]
    if not files:
        raise SystemExit(f"no audio files under {args.folder}")
    rows = [ManifestRow(str(p.relative_to(args.folder)), p.parent.name, str(p.resolve()),
                        duration=audio_info(p)[0]) for p in files]
    audio_seconds = sum(r.duration for r in rows)
    extractor = LogMelExtractor()
    print(f"{len(rows)} files, {audio_seconds / 60:.1f} min of audio, torch threads "
          f"{torch.get_num_threads()}, batch {args.batch_size}")
    rates = []
    for k in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            writer = ShardWriter(tmp, args.shard_size, {"features": extractor.config()})
            manifest_to_shards(rows, Path(tmp) / "manifest.parquet", {"format": "audio"},
                               extractor, writer, batch_size=args.batch_size, min_seconds=0.0,
                               short="pad", progress=False)
            wall = time.perf_counter() - started
        rates.append(audio_seconds / wall)
        print(f"run {k + 1}: {wall:.2f} s wall, {rates[-1]:.0f} audio s / wall s")
    print(f"median: {statistics.median(rates):.0f} audio seconds per wall second "
          f"({statistics.median(rates) / 3600:.2f} h of audio per second)")


if __name__ == "__main__":
    main()
