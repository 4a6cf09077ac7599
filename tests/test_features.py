import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from spkid.features.logmel import (CHUNK_FRAMES, LOG_FLOOR, LOG_STEP, LogMelExtractor,
                                   pad_to_min_length)


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10 ** (np.asarray(m) / 2595.0) - 1.0)


def numpy_log_mel(wave, sr, n_fft, hop, n_mels, f_min, f_max):
    """Textbook log-mel: reflect padding, periodic Hann, |FFT|^2, triangular HTK filters."""
    half = n_fft // 2
    padded = np.pad(wave.astype(np.float64), (half, half), mode="reflect")
    n_frames = 1 + (len(padded) - n_fft) // hop
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = np.stack([padded[t * hop:t * hop + n_fft] * window for t in range(n_frames)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    bank = np.zeros((len(freqs), n_mels))
    for k in range(n_mels):
        lo, mid, hi = edges[k:k + 3]
        bank[:, k] = np.maximum(0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
    return np.log(np.maximum(power @ bank, LOG_FLOOR))


@pytest.mark.parametrize("n_mels,f_min,f_max", [(40, 0.0, None), (64, 50.0, 7000.0)])
def test_log_mel_matches_numpy_reference(n_mels, f_min, f_max):
    sr = 16000
    t = np.arange(int(0.01 * (CHUNK_FRAMES + 211) * sr)) / sr  # more than one chunk
    rng = np.random.default_rng(1)
    wave = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 2500 * t)
            + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
    ext = LogMelExtractor(sr, n_mels, 400, 160, f_min, f_max)
    ours = ext([wave])[0]
    ref = numpy_log_mel(wave, sr, 400, 160, n_mels, f_min, f_max or sr / 2)
    assert ours.shape == ref.shape == (1 + len(wave) // 160, n_mels)
    # Computed in float64 and rounded to the LOG_STEP grid: within half a step of the
    # float64 reference, and on the grid.
    np.testing.assert_allclose(ours, ref, atol=LOG_STEP / 2 + 1e-9, rtol=0)
    np.testing.assert_array_equal(ours / LOG_STEP, np.round(ours / LOG_STEP))
    # The loudest band is the one holding 440 Hz.
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max or sr / 2), n_mels + 2))
    band = int(np.argmax(ours[5:-5].mean(axis=0)))
    assert edges[band] < 440 < edges[band + 2]


def test_batch_does_not_change_features():
    rng = np.random.default_rng(0)
    long, short = rng.standard_normal(16000).astype(np.float32), rng.standard_normal(5000).astype(np.float32)
    ext = LogMelExtractor()
    together = ext([long, short])
    alone = ext([short])
    assert together[1].shape == (1 + 5000 // 160, 40)
    np.testing.assert_array_equal(together[1], alone[0])


_DIGEST = """
import hashlib, sys, numpy as np, torch
torch.set_num_threads(int(sys.argv[1]))
from spkid.data.audio import resample
from spkid.features.logmel import LogMelExtractor
rng = np.random.default_rng(7)
t = np.arange(22050 * 9) / 22050
wave = (0.3 * np.sin(2 * np.pi * 180 * t * (1 + 0.1 * np.sin(t))) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
feats = LogMelExtractor()([resample(wave, 22050, 16000), wave[:5000]])
print(torch.backends.cpu.get_cpu_capability(), hashlib.sha256(b"".join(f.tobytes() for f in feats)).hexdigest())
"""


def test_features_are_the_same_bytes_on_every_code_path():
    """What differs between x86 CPUs is which kernels run: torch's plain or vectorised
    (AVX2, AVX-512) ones and MKL's FFT and matrix code for the instruction set found. Both
    can be forced here, so a machine runs every path another CPU would take."""
    runs = []
    for threads, env in [(1, {}), (2, {"ATEN_CPU_CAPABILITY": "default",
                                       "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}),
                         (1, {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"})]:
        out = subprocess.run([sys.executable, "-c", _DIGEST, str(threads)], capture_output=True,
                             text=True, env={**os.environ, **env}, check=True).stdout.split()
        runs.append(out)
    assert runs[1][0] == "DEFAULT" and runs[0][0] != "DEFAULT"  # the paths really differed
    assert len({digest for _, digest in runs}) == 1, runs


def test_silence_stays_finite_and_tiny_clip_works():
    ext = LogMelExtractor()
    out = ext([np.zeros(100, np.float32)])[0]
    assert np.isfinite(out).all() and out.shape == (1, 40)
    assert np.allclose(out, np.log(LOG_FLOOR))


def test_pad_to_min_length_repeats_audio():
    wave = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(pad_to_min_length(wave, 12), [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1])
    assert pad_to_min_length(wave, 3) is wave


def test_broken_torchaudio_is_one_clear_line(monkeypatch):
    import sys

    from spkid.core.errors import SpkidError
    from spkid.core.install import require_torchaudio
    monkeypatch.setitem(sys.modules, "torchaudio", None)  # import now raises ImportError
    with pytest.raises(SpkidError) as err:
        require_torchaudio()
    message = str(err.value)
    assert "\n" not in message and "torchaudio failed to import" in message
    assert "pip install 'torch>=2.11,<2.15' 'torchaudio==2.11.*'" in message


@pytest.mark.parametrize("suffix", [".wav", ".m4a"])
def test_threads_inside_a_block_write_the_same_bytes(tmp_path, suffix):
    """One block, 1 or 3 workers (threads then): byte-identical shards, rows in manifest
    order, short recordings skipped and counted the same; m4a (decoded by PyAV) and a
    span of a recording (a Kaldi segment) as well as whole WAV files."""
    from dataclasses import asdict

    import pyarrow as pa

    from spkid.data.manifest import SCHEMA, ManifestRow
    from spkid.features.blocks import Block, write_blocks
    from spkid.features.extract import BlockJob
    from test_sources_stage import write_audio
    if suffix == ".m4a":
        pytest.importorskip("av")
    rng = np.random.default_rng(3)
    rows = []
    for k, seconds in enumerate([1.3, 0.2, 0.7, 2.1, 0.9, 1.6, 0.4]):
        path = tmp_path / f"{k}{suffix}"
        write_audio(path, (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32), 16000)
        rows.append(ManifestRow(f"u{k}", "s", str(path), duration=seconds))
    rows.append(ManifestRow("u3-span", "s", rows[3].path, duration=1.0, start=0.6, end=1.6))
    manifest = pa.Table.from_pylist([asdict(r) for r in rows], schema=SCHEMA)
    ext = LogMelExtractor()
    out = {}
    for workers in (1, 3):
        job = BlockJob(str(tmp_path / "manifest.parquet"), {"format": "audio"}, ext.config(),
                       str(tmp_path / f"w{workers}"), {}, "float32", 2, 0.5, "skip")
        out[workers] = write_blocks(manifest, job, [Block(0, 0, len(rows), "0" * 64)],
                                    workers=workers, progress=False)
    assert out[1] == out[3] and out[1]["utterances"] == 6
    a, b = (next((tmp_path / f"w{w}").glob("shard-*.parquet")) for w in (1, 3))
    assert a.read_bytes() == b.read_bytes()
    meta = json.loads(pq.read_schema(a).metadata[b"spkid"])
    assert meta["last"] and meta["stats"]["skipped_short"] == 2 and meta["stats"]["utterances"] == 6
