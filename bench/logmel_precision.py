"""What the float64 log-mel path costs against a float32 one, and whether its bytes depend
on the CPU code path.

    python bench/logmel_precision.py ../shared/data/librispeech-125 [--files 8] [--seconds 120]

Times spkid's LogMelExtractor (float64, 512-frame chunks, rounded to LOG_STEP) against the
float32 torchaudio MelSpectrogram call spkid used before (the homework's call too), one
torch thread, interleaved A B A B in one process on the first `--seconds` of each file, and
reports the median per file. Then hashes spkid's and the float32 path's log-mels under each
torch kernel level (ATEN_CPU_CAPABILITY) and MKL instruction set (MKL_ENABLE_INSTRUCTIONS)
this CPU can run, which is what differs between x86 machines."""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from spkid.features.logmel import LogMelExtractor  # noqa: E402

PATHS = [("default", "SSE4_2"), ("avx2", "AVX2"), ("avx512", "AVX512")]


def float32_log_mel():
    import torchaudio
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=16000, n_fft=400, win_length=400, hop_length=160, n_mels=40, power=2.0,
        center=False, window_fn=torch.hann_window, norm=None, mel_scale="htk")

    @torch.no_grad()
    def run(wave: np.ndarray) -> np.ndarray:
        padded = torch.from_numpy(np.pad(wave, (200, 200), mode="reflect"))[None]
        return mel(padded).clamp_min_(1e-6).log_()[0].T.numpy().copy()
    return run


def waves(folder: Path, files: int, seconds: float) -> list[np.ndarray]:
    found = sorted(p for p in folder.rglob("*") if p.suffix in (".flac", ".wav"))[:files]
    return [sf.read(p, dtype="float32", frames=int(seconds * 16000))[0] for p in found]


def digest(folder: Path) -> None:
    torch.set_num_threads(1)
    w = waves(folder, 2, 60)
    ours = b"".join(m.tobytes() for m in LogMelExtractor()(w[:1]) + LogMelExtractor()(w[1:]))
    theirs = b"".join(float32_log_mel()(x).tobytes() for x in w)
    print(torch.backends.cpu.get_cpu_capability(), hashlib.sha256(ours).hexdigest()[:16],
          hashlib.sha256(theirs).hexdigest()[:16])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--digest", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.digest:
        return digest(args.data)
    torch.set_num_threads(1)
    ours, theirs = LogMelExtractor(), float32_log_mel()
    times = {"spkid float64": [], "float32": []}
    for wave in waves(args.data, args.files, args.seconds):
        for _ in range(5):
            for name, fn in (("spkid float64", lambda: ours([wave])), ("float32", lambda: theirs(wave))):
                started = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - started)
    audio = args.seconds
    for name, t in times.items():
        print(f"{name}: median {1000 * statistics.median(t):.1f} ms per {audio:.0f} s of audio "
              f"({audio / statistics.median(t):,.0f}x real time)")
    print(f"ratio spkid/float32: {statistics.median(times['spkid float64']) / statistics.median(times['float32']):.2f}")
    print("kernel path, MKL path: spkid digest, float32 digest")
    for aten, mkl in PATHS:
        env = {**os.environ, "ATEN_CPU_CAPABILITY": aten, "MKL_ENABLE_INSTRUCTIONS": mkl}
        out = subprocess.run([sys.executable, __file__, str(args.data), "--digest"], env=env,
                             capture_output=True, text=True, check=True).stdout.strip()
        print(f"{aten}, {mkl}: {out}")


if __name__ == "__main__":
    main()
