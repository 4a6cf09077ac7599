"""Unseen-speaker verification with every speaker held out once: k-fold speaker
cross-validation, a clean and a mismatched test, and bootstrap intervals.

    python bench/unseen_cv.py ../shared/data/librispeech-125 --steps 2400 --folds 5
    python bench/unseen_cv.py ../shared/data/librispeech-125 --steps 2400 --only "on the fly (spkid recipe verification)" \
        --out bench/unseen-cv.json          # adds rows to an earlier run's results
    python bench/unseen_cv.py --table bench/unseen-cv.json
    python bench/unseen_cv.py ../shared/data/librispeech-125 --steps 600 --only \
        "SpecAugment, zero fill" "SpecAugment, mean fill" --out bench/specaugment-fill.json
    python bench/unseen_cv.py --table bench/specaugment-fill.json --baseline "SpecAugment, zero fill"

The speakers of an audio_dir-style folder are shuffled (`--split-seed`) into `--folds`
folds; fold k's speakers are held out and the rest train. The held-out recordings are cut
into `--piece-seconds` pieces, scored twice as `data.verify_dir`: as they are ("clean"),
and "mismatched": each piece in a generated room (RT60 0.4-1.0 s, rooms no training run
draws: another seed stream) with pink or brown noise at 5-15 dB SNR (a kind of noise no
training run sees; training's noise is babble). Every same-speaker pair and every
different-speaker pair of a fold's pieces is a trial.

Each configuration is a set of param overrides, run with the real `spkid` CLI of the
checkout this script lies in (PYTHONPATH points there, so edits elsewhere do not leak into
a running benchmark). Per trial scores are kept (`.npz` beside the JSON) so the table can
give 95 % intervals by a seeded bootstrap over held-out speakers, fold by fold: for the
mean EER over folds, and for each configuration's difference from the default (paired:
the same resampled speakers for both)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from recipes import run  # noqa: E402

from spkid.core.params import defaults  # noqa: E402
from spkid.core.recipes import RECIPES, apply  # noqa: E402
from spkid.features.waveform import add_noise, reverberate, room_impulse_response  # noqa: E402
from spkid.scoring.bootstrap import interval, speaker_weights  # noqa: E402
from spkid.scoring.metrics import eer, min_dcf  # noqa: E402

# name -> param overrides. The stored-copies row (issue 9's verification recipe: speed
# copies at 0.9 and 1.1 as new speakers, a reverberant and a babble copy of each, stored by
# `features`) ran at commit 4103229, the last with stored copies, with these overrides:
# features.augment.speed [0.9, 1.1], features.augment.copies 2, kinds [reverb, noise].
CONFIGS = {
    "default": {},
    "on the fly (spkid recipe verification)": dict(RECIPES["verification"]),
    # Issue 21: what SpecAugment's bands hold on raw log-mels (compare with --baseline).
    "SpecAugment, zero fill": {"train.augment.specaugment": True,
                               "train.augment.mask_fill": "zero"},
    "SpecAugment, mean fill": {"train.augment.specaugment": True,
                               "train.augment.mask_fill": "mean"},
}
PROTOCOL = {"data.source": "audio_dir", "index.split_by": "time", "index.val_fraction": 0.1,
            "index.test_fraction": 0.1, "index.trial_seconds": 1.0, "data.min_seconds": 0.5,
            "evaluate.nontarget_ratio": 1000.0, "evaluate.max_trials": 10 ** 7,
            "features.dtype": "float32"}
DATA_SECTIONS = ("data", "features", "index")
CONDITIONS = ("clean", "mismatched")
MISMATCH_RT60 = (0.4, 1.0)
MISMATCH_SNR = (5.0, 15.0)
BOOTSTRAP_ROUNDS = 1000


def folds_of(speakers: list[str], folds: int, seed: int) -> list[list[str]]:
    order = np.random.default_rng(seed).permutation(len(speakers))
    return [sorted(speakers[k] for k in order[f::folds]) for f in range(folds)]


def colored_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Noise whose power falls as 1/f**exponent (1: pink, 2: brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0
    return np.fft.irfft(spectrum / f ** (exponent / 2), n)


def mismatched(wave: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    wet = reverberate(wave.astype(np.float64), room_impulse_response(rng, rate, MISMATCH_RT60))
    noise = colored_noise(rng, len(wet), rng.choice([1.0, 2.0]))
    out = add_noise(wet, noise, rng.uniform(*MISMATCH_SNR))
    return (out / max(1.0, np.abs(out).max())).astype(np.float32)


def prepare_fold(data: Path, work: Path, held: list[str], piece_seconds: float, fold: int) -> dict:
    """work/train: links to the training speakers; work/verify-<condition>: the pieces."""
    if work.exists():
        shutil.rmtree(work)
    (work / "train").mkdir(parents=True)
    speakers = sorted(p.name for p in data.iterdir() if p.is_dir())
    for spk in speakers:
        if spk not in held:
            os.symlink((data / spk).resolve(), work / "train" / spk)
    pieces = 0
    for spk in held:
        for path in sorted((data / spk).rglob("*")):
            if not path.is_file() or path.suffix.lower() not in (".flac", ".wav"):
                continue
            wave, rate = sf.read(path, dtype="float32")
            size = int(piece_seconds * rate)
            for k, s in enumerate(range(0, max(1, len(wave) - size + 1), size)):
                name = f"{path.stem}-{k:03d}.wav"
                # A room and noise per piece from its own stream (fold, name), none of which
                # training's generators ever draw.
                rng = np.random.default_rng([1_000_003, fold, *name.encode()])
                for condition, piece in (("clean", wave[s:s + size]),
                                         ("mismatched", mismatched(wave[s:s + size], rate, rng))):
                    (work / f"verify-{condition}" / spk).mkdir(parents=True, exist_ok=True)
                    sf.write(work / f"verify-{condition}" / spk / name, piece, rate)
                pieces += 1
    return {"held_out": held, "pieces": pieces}


def held_out_arguments(doc: str, out: Path) -> argparse.ArgumentParser:
    """The command line of the benchmarks that train the default on each fold and study
    its held-out speakers (bench/threshold_transfer.py, bench/qmf.py)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("data", type=Path, nargs="?")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=out)
    ap.add_argument("--table", type=Path, help="print the table of an earlier run")
    return ap


def train_on_fold(project: Path, train_dir: Path, verify_dir: Path, steps: int,
                  overrides: dict | None = None) -> None:
    """A fresh project at `project` trained (download, features, index, train) on the
    speakers of `train_dir` with the protocol's params, `verify_dir` as its unseen role."""
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir()
    params = apply(defaults(), {
        **PROTOCOL, **(overrides or {}), "data.path": str(train_dir),
        "data.verify_dir": str(verify_dir), "train.steps": steps,
        "train.valid_every": max(1, steps // 10), "train.warmup_steps": max(1, steps // 10)})
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for stage in ("download", "features", "index", "train"):
        run(["spkid", stage], project, env)


def trial_scores(project: Path) -> dict:
    """Per-trial raw cosine scores of the verify role, computed as `spkid evaluate` does."""
    from spkid.data.manifest import read_manifest
    from spkid.scoring.embedding import Scoring
    from spkid.scoring.norm import cosine_scores
    from spkid.scoring.trials import unseen_trial_lists
    p = yaml.safe_load((project / "params.yaml").read_text())["evaluate"]
    rows, meta = read_manifest(project / "data/raw/verify.parquet")
    scoring = Scoring.open(project / "data/model", project / "data/features", "cpu")
    i, j, labels = unseen_trial_lists(rows, meta, seed=p["seed"],
                                      nontarget_ratio=p["nontarget_ratio"],
                                      max_trials=p["max_trials"])["verify"]
    emb = scoring.embed_recordings([r.path for r in rows], p["batch_frames"])
    speakers = np.array([r.speaker for r in rows])
    return {"scores": cosine_scores(emb, i, j).astype(np.float32), "labels": labels.astype(np.int8),
            "a": speakers[i], "b": speakers[j]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--steps", type=int, default=2400)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--piece-seconds", type=float, default=3.0)
    ap.add_argument("--only", nargs="*", help="run only these configuration names")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "unseen-cv.json")
    args = ap.parse_args()
    configs = {k: v for k, v in CONFIGS.items() if not args.only or k in args.only}
    state = json.loads(args.out.read_text()) if args.out.exists() else {"results": {}}
    scores_file = args.out.with_suffix(".npz")
    kept = dict(np.load(scores_file, allow_pickle=False)) if scores_file.exists() else {}
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    speakers = sorted(p.name for p in args.data.iterdir() if p.is_dir())
    folds = folds_of(speakers, args.folds, args.split_seed)
    state["protocol"] = {**PROTOCOL, "steps": args.steps, "batch_size": args.batch_size,
                         "folds": args.folds, "split_seed": args.split_seed,
                         "piece_seconds": args.piece_seconds}
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "project"
        project.mkdir()
        for f, held in enumerate(folds):
            audio = prepare_fold(args.data.resolve(), Path(tmp) / "audio", held,
                                 args.piece_seconds, f)
            print(f"fold {f}: {len(speakers) - len(held)} training speakers, {len(held)} held "
                  f"out as {audio['pieces']} pieces", flush=True)
            prepared = None
            for name, overrides in configs.items():
                common = {**PROTOCOL, "data.path": str(Path(tmp) / "audio" / "train"),
                          "train.steps": args.steps, "train.batch_size": args.batch_size,
                          "train.valid_every": max(1, args.steps // 10),
                          "train.warmup_steps": max(1, args.steps // 10), **overrides}
                data_key = json.dumps({k: v for k, v in common.items()
                                       if k.split(".")[0] in DATA_SECTIONS}, sort_keys=True)
                if data_key != prepared:  # a fresh project: nothing cached from other data
                    shutil.rmtree(project / "data", ignore_errors=True)
                started = time.perf_counter()
                for c, condition in enumerate(CONDITIONS):
                    params = apply(defaults(), {**common, "data.verify_dir": str(
                        Path(tmp) / "audio" / f"verify-{condition}")})
                    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
                    stages = ["download", "features", "index", "train"] if c == 0 else ["download"]
                    if c == 0 and data_key == prepared:
                        stages = ["download", "train"]
                    for stage in stages + ["evaluate"]:
                        run(["spkid", stage], project, env)
                    if c == 0:
                        wall = time.perf_counter() - started
                    verify = json.loads((project / "metrics/eval.json").read_text())["verify"]
                    got = trial_scores(project)
                    assert abs(eer(got["scores"], got["labels"])[0] - verify["eer"]) < 1e-6, \
                        "the bench's scores are not evaluate's"
                    for key, value in got.items():
                        kept[f"{name}|{condition}|{f}|{key}"] = value
                    result = state["results"].setdefault(name, {"overrides": overrides, "folds": {}})
                    result["folds"].setdefault(str(f), {})[condition] = {
                        **{k: verify[k] for k in ("eer", "min_dcf_p01", "min_dcf_p05", "trials",
                                                  "target_trials")}, "train_seconds": round(wall, 1)}
                    print(f"{name} fold {f} {condition}: EER {100 * verify['eer']:.2f} % "
                          f"minDCF p0.01 {verify['min_dcf_p01']:.3f} (train+data {wall:.0f} s)",
                          flush=True)
                prepared = data_key
                args.out.write_text(json.dumps(state, indent=1))
                np.savez_compressed(scores_file, **kept)
    print_table(args.out)


def _fold_trials(kept, name: str, condition: str, folds: int) -> list[dict] | None:
    keys = ("scores", "labels", "a", "b")
    if any(f"{name}|{condition}|{f}|scores" not in kept for f in range(folds)):
        return None
    return [{k: kept[f"{name}|{condition}|{f}|{k}"] for k in keys} for f in range(folds)]


def print_table(out: Path, baseline: str = "default") -> None:
    """Markdown: per configuration and condition, the mean over folds of EER and minDCF
    with 95 % intervals (bootstrap over held-out speakers within each fold), and the
    paired difference from `baseline` (the default configuration unless named)."""
    state = json.loads(out.read_text())
    kept = dict(np.load(out.with_suffix(".npz"), allow_pickle=False))
    folds = state["protocol"]["folds"]
    print("| configuration | test | EER % (95 % CI) | per fold | minDCF p0.01 (95 % CI) | "
          f"EER − {baseline}, points (95 % CI) | target trials | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for condition in CONDITIONS:
        base = _fold_trials(kept, baseline, condition, folds)
        for name, result in state["results"].items():
            trials = _fold_trials(kept, name, condition, folds)
            if trials is None:
                continue
            rng = np.random.default_rng(12345)
            eers, dcfs, diffs = [], [], []
            for _ in range(BOOTSTRAP_ROUNDS):
                w = [speaker_weights(rng, t["a"], t["b"]) for t in trials]
                try:
                    e = np.mean([eer(t["scores"], t["labels"], wf)[0] for t, wf in zip(trials, w)])
                    d = np.mean([min_dcf(t["scores"], t["labels"], 0.01, weights=wf)
                                 for t, wf in zip(trials, w)])
                    b = (np.mean([eer(t["scores"], t["labels"], wf)[0] for t, wf in zip(base, w)])
                         if base is not None else np.nan)
                except ValueError:  # a resampling without a target trial in some fold
                    continue
                eers.append(e)
                dcfs.append(d)
                diffs.append(e - b)
            point = [eer(t["scores"], t["labels"])[0] for t in trials]
            dcf = [min_dcf(t["scores"], t["labels"], 0.01) for t in trials]
            lo, hi = interval(np.array(eers))
            dlo, dhi = interval(np.array(dcfs))
            diff = ("–" if name == baseline or base is None else
                    "{:+.2f} ({:+.2f}, {:+.2f})".format(
                        100 * (np.mean(point) - np.mean([eer(t["scores"], t["labels"])[0]
                                                         for t in base])),
                        *(100 * np.array(interval(np.array(diffs))))))
            walls = [v["clean"]["train_seconds"] for v in result["folds"].values()]
            print(f"| {name} | {condition} | {100 * np.mean(point):.2f} ({100 * lo:.2f}–"
                  f"{100 * hi:.2f}) | {' / '.join(f'{100 * x:.2f}' for x in point)} | "
                  f"{np.mean(dcf):.3f} ({dlo:.3f}–{dhi:.3f}) | {diff} | "
                  f"{sum(int(t['labels'].sum()) for t in trials)} | {np.mean(walls):.0f} |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--table"]:  # --table FILE [--baseline NAME]
        print_table(Path(sys.argv[2]), *sys.argv[4:5])
    else:
        main()
