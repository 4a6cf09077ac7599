"""Decode speed by format: audio seconds per wall second of spkid.data.audio.read_audio.

    python bench/decode.py ../shared/data/librispeech-125 [--files 6] [--seconds 60]

Takes the first `--seconds` of `--files` recordings, writes each as WAV (16-bit), FLAC and
m4a (AAC, encoded with PyAV as VoxCeleb2's files are AAC) into a temporary folder, then
times read_audio on every copy, interleaved, one torch thread, and prints the median
audio-seconds-per-second per format (one core). It also times download's check of each
file (spkid.data.sources.audio_dir.check_audio: header, then the last frames decoded), in
milliseconds per file, which `download` pays once per recording."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from spkid.data.audio import read_audio  # noqa: E402
from spkid.data.sources.checks import check_audio  # noqa: E402
from test_sources_stage import write_audio  # noqa: E402  (the tests' PyAV encoder)

FORMATS = (".wav", ".flac", ".m4a")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--files", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    sources = sorted(p for p in args.data.rglob("*") if p.suffix in (".flac", ".wav"))[:args.files]
    speeds: dict[str, list[float]] = {f: [] for f in FORMATS}
    checks: dict[str, list[float]] = {f: [] for f in FORMATS}
    with tempfile.TemporaryDirectory() as tmp:
        copies = []
        for k, src in enumerate(sources):
            wave, sr = sf.read(src, dtype="float32", frames=int(args.seconds * 16000))
            for fmt in FORMATS:
                path = Path(tmp) / f"{k}{fmt}"
                write_audio(path, wave, sr)
                copies.append((fmt, path, len(wave) / sr))
        sizes = {fmt: sum(p.stat().st_size for f, p, _ in copies if f == fmt) for fmt in FORMATS}
        for _ in range(args.rounds):
            for fmt, path, seconds in copies:
                started = time.perf_counter()
                read_audio(path, 16000)
                speeds[fmt].append(seconds / (time.perf_counter() - started))
                started = time.perf_counter()
                check_audio(path)
                checks[fmt].append(1000 * (time.perf_counter() - started))
    total = sum(s for f, _, s in copies if f == FORMATS[0])
    print(f"{len(sources)} recordings, {total:.0f} s of audio each format")
    for fmt in FORMATS:
        print(f"{fmt:6s} {statistics.median(speeds[fmt]):8,.0f} audio s per s "
              f"(min {min(speeds[fmt]):,.0f}, max {max(speeds[fmt]):,.0f}); "
              f"{sizes[fmt] / total / 1000:.1f} kB per audio s; download's check "
              f"{statistics.median(checks[fmt]):.2f} ms per file")


if __name__ == "__main__":
    main()
