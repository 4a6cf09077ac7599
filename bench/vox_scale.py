"""The pipeline at VoxCeleb2-dev's cardinality: wall time, peak memory and disk per stage,
a no-change `dvc repro`, and a features run killed and resumed.

    python bench/vox_scale.py make DATA_DIR [--scale 1.0]   # ~2.3 GB of WAV at full scale
    python bench/vox_scale.py run DATA_DIR [--kill-features-after S] [--set KEY=VALUE]...

`make` writes two Kaldi-style folders. `train/`: VoxCeleb2-dev's 1,092,009 utterances of
5,994 speakers, as 0.5 s `segments` inside one 12 s WAV recording per speaker (segments
overlap), so that the catalog, the index, the manifest and the shards have VoxCeleb2's
row counts while the audio fits this disk and extracts in minutes: the figures that grow
with rows (memory, catalog, index, per-utterance overhead) are VoxCeleb2's, those that
grow with audio seconds (features, training) are not (VoxCeleb2 has 2,442 h, 8 s an
utterance; here 152 h). `verify/` has VoxCeleb1-O's shape: 4,708 utterances of 40
speakers (2 s segments of one 30 s recording each) and `trials` with 37,611 lines of
Kaldi's `enroll test target|nontarget`, half of them target. `--scale` shrinks both
(the baseline of "same stage on a tiny data set").

`run` copies the project into a temporary git repository, points data.source: kaldi at
train/ (data.verify_dir, evaluate.trials at verify/) with the figures' settings below, and
runs each stage with `dvc repro --single-item STAGE` through bench/measure.py: wall time,
peak anonymous memory of the spkid processes, disk of data/ and .dvc/cache, and the peak
size of data/features while `features` runs. With --kill-features-after S, the first
features run is SIGKILLed after S seconds and run again (the second line says how many
blocks it kept). Then a `dvc repro` with nothing changed. Run it with the project's
virtual environment active (`spkid` and `dvc` on PATH)."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.measure import make_and_run_parsers, measured_stage, scratch_repo  # noqa: E402
from bench.pipeline import STAGES  # noqa: E402
from spkid.core.recipes import parse_override  # noqa: E402

SR = 16000
UTTERANCES, SPEAKERS = 1_092_009, 5_994  # VoxCeleb2-dev
RECORDING_S, SEGMENT_S = 12.0, 0.5
VERIFY_UTTERANCES, VERIFY_SPEAKERS, TRIALS = 4_708, 40, 37_611  # VoxCeleb1-O (cleaned)
VERIFY_RECORDING_S, VERIFY_SEGMENT_S = 30.0, 2.0
SETTINGS = {  # what the figures ran with; --set changes them
    "data.source": "kaldi", "data.min_seconds": SEGMENT_S - 0.05, "features.dtype": "float16",
    "index.segment_len": 48, "index.val_fraction": 0.01, "index.test_fraction": 0.01,
    "train.steps": 40, "train.valid_every": 20, "train.checkpoint_every": 20,
}


def speaker_audio(rng: np.random.Generator, seconds: float, f0: float) -> np.ndarray:
    """Harmonics of a speaker's pitch, syllable-rate modulated, in noise (int16)."""
    t = np.arange(int(seconds * SR)) / SR
    wave = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6.3)) / h for h in range(1, 6))
    wave = wave * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(3, 6) * t)) + 0.3 * rng.standard_normal(len(t))
    return (wave / np.abs(wave).max() * 0.5 * 32767).astype(np.int16)


def kaldi_folder(folder: Path, names: list[str], per_speaker: list[int], recording_s: float,
                 segment_s: float, rng: np.random.Generator) -> list[tuple[str, str]]:
    """One recording per speaker, its utterances as overlapping segments. Returns
    (utterance, speaker) in order."""
    (folder / "wav").mkdir(parents=True, exist_ok=True)
    utts = []
    with open(folder / "wav.scp", "w") as scp, open(folder / "segments", "w") as seg, \
            open(folder / "utt2spk", "w") as u2s:
        for s, (name, count) in enumerate(zip(names, per_speaker)):
            sf.write(str(folder / "wav" / f"{name}.wav"),
                     speaker_audio(rng, recording_s, 90.0 + 200.0 * s / len(names)), SR,
                     subtype="PCM_16")
            scp.write(f"{name} wav/{name}.wav\n")
            for k in range(count):
                utt = f"{name}-{k:05d}"
                start = round((k * 0.37) % (recording_s - segment_s), 2)
                seg.write(f"{utt} {name} {start:.2f} {start + segment_s:.2f}\n")
                u2s.write(f"{utt} {name}\n")
                utts.append((utt, name))
    return utts


def spread(total: int, parts: int) -> list[int]:
    return [total // parts + (k < total % parts) for k in range(parts)]


def make(folder: Path, scale: float, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    speakers = max(2, round(SPEAKERS * scale))
    names = [f"id{10000 + k:05d}" for k in range(speakers)]
    started = time.perf_counter()
    kaldi_folder(folder / "train", names, spread(max(speakers, round(UTTERANCES * scale)), speakers),
                 RECORDING_S, SEGMENT_S, rng)
    vspeakers = max(4, round(VERIFY_SPEAKERS * min(1.0, scale * 10)))
    vnames = [f"id{90000 + k:05d}" for k in range(vspeakers)]
    vutts = kaldi_folder(folder / "verify", vnames,
                         spread(max(4 * vspeakers, round(VERIFY_UTTERANCES * min(1.0, scale * 10))),
                                vspeakers), VERIFY_RECORDING_S, VERIFY_SEGMENT_S, rng)
    n_trials = max(40, round(TRIALS * min(1.0, scale * 10)))
    by_speaker: dict[str, list[str]] = {}
    for utt, spk in vutts:
        by_speaker.setdefault(spk, []).append(utt)
    lines = set()
    while len(lines) < n_trials:
        a, b = rng.choice(len(vnames), 2, replace=False)
        target = len(lines) % 2 == 0
        enroll = rng.choice(by_speaker[vnames[a]])
        test = rng.choice(by_speaker[vnames[a] if target else vnames[b]])
        if enroll != test:
            lines.add(f"{enroll} {test} {'target' if target else 'nontarget'}")
    (folder / "trials").write_text("\n".join(sorted(lines)) + "\n")
    print(f"{folder}: {sum(1 for _ in open(folder / 'train/utt2spk'))} utterances of {speakers} "
          f"speakers; verify {len(vutts)} utterances of {vspeakers} speakers, {n_trials} trials "
          f"({time.perf_counter() - started:.0f} s)")


def run(folder: Path, overrides: list[str], kill_features_after: float | None,
        workdir: Path | None, out: Path | None, keep: bool = False) -> int:
    settings = {**SETTINGS, "data.path": str(folder / "train"),
                "data.verify_dir": str(folder / "verify"), "evaluate.trials": str(folder / "trials")}
    with scratch_repo(ROOT, settings, overrides, workdir, "spkid-voxscale-",
                      keep) as (repo, env):
        rows = []
        total = time.perf_counter()
        for stage in STAGES:
            watch = repo / "data/features" if stage == "features" else None
            if stage == "features" and kill_features_after:
                rows.append(measured_stage(repo, env, stage, watch=watch,
                                           kill_after=kill_features_after))
                rows[-1]["stage"] = "features (killed)"
            rows.append(measured_stage(repo, env, stage, watch=watch))
        print(f"total     {time.perf_counter() - total:7.1f} s", flush=True)
        rows.append(measured_stage(repo, env, "download", cmd=["dvc", "repro"]))
        rows[-1]["stage"] = "dvc repro, nothing changed"
        print("eval.json", (repo / "metrics/eval.json").read_text())
    if out is not None:
        out.write_text(json.dumps({"settings": {**SETTINGS, **dict(
            parse_override(item) for item in overrides)}, "rows": rows}, indent=1) + "\n")
    return 0


def main() -> int:
    ap, mk, rn = make_and_run_parsers(__doc__, "write the Kaldi folders")
    mk.add_argument("--scale", type=float, default=1.0)
    rn.add_argument("--kill-features-after", type=float, metavar="S")
    rn.add_argument("--out", type=Path, help="write the rows as JSON here")
    rn.add_argument("--keep", action="store_true", help="keep the temporary repository")
    args = ap.parse_args()
    if args.cmd == "make":
        make(args.folder, args.scale)
        return 0
    if shutil.which("dvc") is None or shutil.which("spkid") is None:
        raise SystemExit("dvc and spkid must be on PATH (activate the project's virtual environment)")
    return run(args.folder.absolute(), args.overrides, args.kill_features_after, args.workdir,
               args.out, args.keep)


if __name__ == "__main__":
    sys.exit(main())
