"""Log-mel features, computed in batches with torch.

Each waveform is reflect-padded on its own before the batch is zero-padded to a common
length (the STFT runs with center=False), so an utterance's features never depend on
which other utterances share its batch.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import torch

from spkid.audio import read_audio, require_torchaudio

LOG_FLOOR = 1e-6  # keeps digital silence finite; about -138 dB re full scale
# Log-mels are computed in float64 and rounded to this step before the float32 cast. Which
# code path a CPU takes (plain, AVX2, AVX-512; FMA or not) moves float32 results by an ulp
# and so the stored bytes; in float64 the paths differ by ~1e-15, and a value that close to
# a rounding boundary of a 2**-12 grid turns up about once in 10**11 values. The step is
# 0.001 dB, a hundred times finer than float16 storage.
LOG_STEP = 2.0 ** -12
CHUNK_FRAMES = 512


class LogMelExtractor:
    def __init__(self, sample_rate: int = 16000, n_mels: int = 40, n_fft: int = 400,
                 hop_length: int = 160, f_min: float = 0.0, f_max: float | None = None):
        self.sample_rate, self.n_mels, self.n_fft = sample_rate, n_mels, n_fft
        self.hop_length, self.f_min = hop_length, f_min
        self.f_max = f_max if f_max is not None else sample_rate / 2
        # The filterbank and window are made in float64 too: made in float32 they would
        # differ by an ulp between CPUs like everything else.
        audio = require_torchaudio().transforms
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            self._stft = audio.Spectrogram(n_fft=n_fft, win_length=n_fft, hop_length=hop_length,
                                           center=False, window_fn=torch.hann_window, power=None)
            self._mel = audio.MelScale(n_mels=n_mels, sample_rate=sample_rate, f_min=f_min,
                                       f_max=self.f_max, n_stft=n_fft // 2 + 1, norm=None,
                                       mel_scale="htk")
        finally:
            torch.set_default_dtype(default)

    @classmethod
    def from_params(cls, features) -> "LogMelExtractor":
        return cls(features.sample_rate, features.n_mels, features.n_fft, features.hop_length,
                   features.f_min, features.f_max)

    def config(self) -> dict:
        return {"sample_rate": self.sample_rate, "n_mels": self.n_mels, "n_fft": self.n_fft,
                "hop_length": self.hop_length, "f_min": self.f_min, "f_max": self.f_max,
                "window": "hann", "mel_scale": "htk", "log_floor": LOG_FLOOR,
                # What happens, in torchaudio's words: the STFT runs uncentred on a wave
                # reflect-padded by n_fft // 2 on its own (frames as a centred STFT's).
                "center": False, "pad": "reflect n_fft // 2",
                # Identical bytes on every x86 CPU (see LOG_STEP).
                "precision": "float64", "log_step": LOG_STEP}

    def num_frames(self, num_samples: int) -> int:
        return 1 + num_samples // self.hop_length

    def _pad(self, wave: np.ndarray) -> np.ndarray:
        half = self.n_fft // 2
        # Reflection needs more samples than the pad; very short clips are zero-padded.
        mode = "reflect" if len(wave) > half else "constant"
        return np.pad(wave, (half, half), mode=mode)

    @torch.no_grad()
    def __call__(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        """(T_i, n_mels) float32 log-mel matrices for a batch of mono waveforms."""
        padded = [self._pad(np.asarray(w, dtype=np.float64)) for w in waves]
        if len(padded) == 1:
            batch = torch.from_numpy(padded[0])[None]
        else:
            batch = torch.zeros(len(padded), max(len(p) for p in padded), dtype=torch.float64)
            for i, p in enumerate(padded):
                batch[i, :len(p)] = torch.from_numpy(p)
        frames = 1 + (batch.shape[1] - self.n_fft) // self.hop_length
        # A few hundred frames at a time keep the float64 STFT's buffers in cache and reused
        # (whole recordings ran 20 % slower); every frame's numbers are the same either way.
        mel = torch.cat([self._log_mel(batch[:, a * self.hop_length:
                                             (min(frames, a + CHUNK_FRAMES) - 1) * self.hop_length
                                             + self.n_fft])
                         for a in range(0, frames, CHUNK_FRAMES)], dim=1)
        # Scaling by a power of two and rounding are exact, and the grid values are exact
        # in float32 (|log-mel| < 2**11), so the cast adds no rounding of its own.
        mel = mel.div_(LOG_STEP).round_().mul_(LOG_STEP).float()
        return [mel[i, :self.num_frames(len(w))].numpy().copy() for i, w in enumerate(waves)]

    def _log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, T, n_mels) float64 log-mels of an already padded (B, samples) float64 batch."""
        spec = self._stft(wave)
        # re² + im² as exact elementwise operations: several times faster than |z|² through
        # the complex abs (a hypot), with no CPU-specific fused multiply-add in it.
        parts = torch.view_as_real(spec).square_()
        power = parts[..., 0].add(parts[..., 1])
        return self._mel(power).clamp_min_(LOG_FLOOR).log_().transpose(1, 2)


def pad_to_min_length(wave: np.ndarray, min_samples: int) -> np.ndarray:
    """Repeat a short recording until it is long enough (silence would add no speaker cues)."""
    if len(wave) >= min_samples:
        return wave
    return np.resize(wave, min_samples)


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
    levels: object = None  # spkid.wave_augment.Levels when the rows are augmented copies


def load_wave(job: BlockJob, row, sample_rate: int) -> np.ndarray:
    """A manifest row's audio, or an augmented copy (spkid.wave_augment) rendered from it."""
    from spkid.manifest import resolve
    from spkid.wave_augment import AugmentedCopy, render

    def read(r):
        return read_audio(resolve(job.manifest_path, r), sample_rate, r.start, r.end)
    if isinstance(row, AugmentedCopy):
        return render(row, read, job.levels, sample_rate)
    return read(row)


def write_block(job: BlockJob, block: int, rows) -> dict:
    """Features of one block's rows (decode + resample + log-mel, or load precomputed
    HW4 tensors; manifest rows or augmented copies) written as that block's shards.
    Returns the block's counts."""
    from spkid.manifest import resolve
    from spkid.shards import ShardWriter

    extractor = LogMelExtractor(**{k: job.extractor[k] for k in (
        "sample_rate", "n_mels", "n_fft", "hop_length", "f_min", "f_max")})
    writer = ShardWriter(job.folder, block, job.shard_meta, job.dtype)
    stats = {"utterances": 0, "padded": 0, "skipped_short": 0}
    min_samples = int(round(job.min_seconds * extractor.sample_rate))
    feats: dict[int, np.ndarray] = {}
    if job.meta.get("format") == "hw4":
        from spkid.sources.hw4 import load_hw4_features

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
    from tqdm import tqdm

    precomputed = job.meta.get("format") == "hw4"
    if precomputed and job.meta.get("n_mels") != job.extractor["n_mels"]:
        from spkid.errors import DataError
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
            import multiprocessing
            # forkserver: workers start from a clean process, not a fork of one whose
            # OpenMP threads may already be running (a forked OpenMP runtime can hang).
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["spkid.features"])
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
