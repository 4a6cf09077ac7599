"""Unseen-speaker verification (issue 9): each addition alone and all together, same budget.

    python bench/unseen.py ../shared/data/librispeech-125 --steps 600 --seeds 3
    python bench/unseen.py --table bench/unseen.json     # the table of a finished run

Splits the speakers of an audio_dir-style folder (one folder per speaker) into
`--train-speakers` for training and the rest held out, seeded by `--split-seed`; the held-out
recordings are cut into `--piece-seconds` pieces (a shorter recording stays one piece) that
become `data.verify_dir`. Each configuration is a set of param overrides; for each seed the
real `spkid` CLI runs download/features/index (when data/features/index overrides change),
train, and evaluate in a scratch copy of the project, and the table reports the verify
role's EER and minDCF (mean ± std over seeds) of the configuration's score (raw cosine,
`mean_sub` or `asnorm` in metrics/eval.json). Configurations that differ only in
`evaluate.*` share one training run per seed."""

from __future__ import annotations

import json
import os
import shutil
import statistics
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
from recipes import protocol_arguments, run  # noqa: E402

from spkid.core.params import defaults  # noqa: E402
from spkid.core.recipes import apply  # noqa: E402

ASNORM_TOP_N = 30  # of 100 training speakers (WeSpeaker: 300 of 5994)
AVERAGE_LAST = 5  # of the 10 validations each run makes (train.valid_every = steps / 10)
# WeSpeaker's recipe: speed copies at 0.9 and 1.1 as new speakers, and (on the fly there,
# stored here) reverberation or noise: two copies of each, one of each kind.
SPEED = {"features.augment.speed": [0.9, 1.1]}
COPIES = {"features.augment.copies": 2}
# Same step budget: the last FINETUNE_SHARE of the steps are the fine-tuning phase
# (`finetune: True` below is expanded by `_budget`).
FINETUNE_SHARE = 0.2
# name -> (param overrides, score read from metrics/eval.json's verify role)
CONFIGS = {
    "default": ({}, "raw"),
    "+ mean subtraction": ({"evaluate.subtract_mean": True}, "mean_sub"),
    "+ AS-norm": ({"evaluate.asnorm_top_n": ASNORM_TOP_N}, "asnorm"),
    "+ mean subtraction + AS-norm": ({"evaluate.subtract_mean": True,
                                      "evaluate.asnorm_top_n": ASNORM_TOP_N}, "asnorm"),
    "+ averaging": ({"train.average_last": AVERAGE_LAST}, "raw"),
    "+ speed copies": (SPEED, "raw"),
    "+ reverb/noise copies": (COPIES, "raw"),
    "+ augmentation (speed + reverb/noise)": ({**SPEED, **COPIES}, "raw"),
    "+ augmentation + AS-norm": ({**SPEED, **COPIES, "evaluate.asnorm_top_n": ASNORM_TOP_N},
                                 "asnorm"),
    "+ fine-tuning": ({"finetune": True}, "raw"),
    "all together": ({**SPEED, **COPIES, "finetune": True, "evaluate.subtract_mean": True,
                      "evaluate.asnorm_top_n": ASNORM_TOP_N, "train.average_last": AVERAGE_LAST},
                     "asnorm"),
}
PROTOCOL = {"data.source": "audio_dir", "index.split_by": "time", "index.val_fraction": 0.1,
            "index.test_fraction": 0.1, "index.trial_seconds": 1.0, "data.min_seconds": 0.5,
            # Every different-speaker pair of the held-out pieces up to the cap.
            "evaluate.nontarget_ratio": 100.0, "features.dtype": "float32"}
DATA_SECTIONS = ("data", "features", "index")  # overrides of these re-run the data stages


def split_speakers(data: Path, work: Path, n_train: int, seed: int, piece_seconds: float) -> dict:
    """Link the training speakers' folders under work/train and write the held-out speakers'
    recordings as pieces under work/verify; returns what was done."""
    speakers = sorted(p.name for p in data.iterdir() if p.is_dir())
    if n_train >= len(speakers):
        raise SystemExit(f"{data}: {len(speakers)} speakers, need more than --train-speakers {n_train}")
    order = np.random.default_rng(seed).permutation(len(speakers))
    train = sorted(speakers[k] for k in order[:n_train])
    held = sorted(speakers[k] for k in order[n_train:])
    (work / "train").mkdir(parents=True)
    for spk in train:
        os.symlink((data / spk).resolve(), work / "train" / spk)
    pieces = 0
    for spk in held:
        for path in sorted((data / spk).rglob("*")):
            if not path.is_file() or path.suffix.lower() not in (".flac", ".wav"):
                continue
            wave, rate = sf.read(path, dtype="float32")
            size = int(piece_seconds * rate)
            starts = range(0, max(1, len(wave) - size + 1), size)
            (work / "verify" / spk).mkdir(parents=True, exist_ok=True)
            for k, s in enumerate(starts):
                sf.write(work / "verify" / spk / f"{path.stem}-{k:03d}.wav", wave[s:s + size], rate)
                pieces += 1
    return {"train_speakers": len(train), "held_out_speakers": len(held), "verify_pieces": pieces,
            "held_out": held}


def main() -> None:
    ap = protocol_arguments(__doc__, ROOT / "bench" / "unseen.json")
    ap.add_argument("--train-speakers", type=int, default=100)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--piece-seconds", type=float, default=3.0)
    args = ap.parse_args()
    configs = {k: v for k, v in CONFIGS.items() if not args.only or k in args.only}
    # One training run per seed for the configurations that differ only in evaluate.*.
    groups: dict[str, list[str]] = {}
    for name, (overrides, _) in configs.items():
        groups.setdefault(json.dumps(_training(overrides), sort_keys=True), []).append(name)

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    results = {name: {"overrides": o, "score": s, "steps": args.steps,
                      "batch_size": args.batch_size, "runs": []} for name, (o, s) in configs.items()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in ("spkid", "stages"):
            shutil.copytree(ROOT / name, work / name)
        split = split_speakers(args.data.resolve(), work / "audio", args.train_speakers,
                               args.split_seed, args.piece_seconds)
        print(f"split: {split['train_speakers']} training speakers, {split['held_out_speakers']} "
              f"held out as {split['verify_pieces']} pieces of {args.piece_seconds} s", flush=True)
        common = {**PROTOCOL, "data.path": str(work / "audio" / "train"),
                  "data.verify_dir": str(work / "audio" / "verify"), "train.steps": args.steps,
                  "train.batch_size": args.batch_size, "train.valid_every": max(1, args.steps // 10),
                  "train.warmup_steps": max(1, args.steps // 10)}

        def write_params(overrides: dict, seed: int) -> None:
            merged = apply(defaults(), {**common, **_budget(overrides, args.steps), "train.seed": seed})
            (work / "params.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))

        prepared = None
        for seed in range(args.seeds):
            for key, names in groups.items():
                train_overrides = json.loads(key)
                write_params(train_overrides, seed)
                data_key = json.dumps({k: v for k, v in train_overrides.items()
                                       if k.split(".")[0] in DATA_SECTIONS}, sort_keys=True)
                if data_key != prepared:
                    for stage in ("download", "features", "index"):
                        run(["spkid", stage], work, env)
                    prepared = data_key
                started = time.perf_counter()
                run(["spkid", "train"], work, env)
                wall = time.perf_counter() - started
                for name in names:
                    overrides, score = configs[name]
                    write_params(overrides, seed)
                    run(["spkid", "evaluate"], work, env)
                    verify = json.loads((work / "metrics" / "eval.json").read_text())["verify"]
                    got = verify if score == "raw" else verify[score]
                    results[name]["runs"].append({
                        "seed": seed, "train_seconds": round(wall, 1),
                        "verify": {k: got[k] for k in ("eer", "min_dcf_p01", "min_dcf_p05",
                                                       "trials", "target_trials")}})
                    print(f"{name} seed {seed}: verify EER {got['eer']:.4f} minDCF p0.01 "
                          f"{got['min_dcf_p01']:.3f} (train {wall:.0f} s)", flush=True)
                    args.out.write_text(json.dumps({"split": split, "protocol": PROTOCOL,
                                                    "results": results}, indent=1))
    print_table(results)


def _budget(overrides: dict, steps: int) -> dict:
    """Param overrides, with `finetune: True` made into the last FINETUNE_SHARE of `steps`
    as the fine-tuning phase (train.finetune's other params keep their defaults)."""
    out = {k: v for k, v in overrides.items() if k != "finetune"}
    if overrides.get("finetune"):
        tune = max(1, int(round(steps * FINETUNE_SHARE)))
        out.update({"train.steps": steps - tune, "train.finetune.steps": tune})
    return out


def _training(overrides: dict) -> dict:
    """The overrides a training run depends on (all but evaluate.*)."""
    return {k: v for k, v in overrides.items() if not k.startswith("evaluate.")}


def _stat(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    values = [scale * v for v in values]
    spread = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.{digits}f}{spread}"


def print_table(results: dict) -> None:
    """Markdown: unseen-speaker EER in % and minDCF, mean ± std over seeds."""
    print("| configuration | score | seeds | unseen EER % | per seed | minDCF p0.01 | minDCF p0.05 "
          "| train s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        if r["runs"]:
            cols = [[x["verify"][k] for x in r["runs"]] for k in ("eer", "min_dcf_p01", "min_dcf_p05")]
            wall = statistics.mean(x["train_seconds"] for x in r["runs"])
            per_seed = " / ".join(f"{100 * v:.2f}" for v in cols[0])
            print(f"| {name} | {r['score']} | {len(r['runs'])} | {_stat(cols[0], 100, 2)} | "
                  f"{per_seed} | {_stat(cols[1])} | {_stat(cols[2])} | {wall:.0f} |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--table"]:  # the table of an earlier run's JSON
        print_table(json.loads(Path(sys.argv[2]).read_text())["results"])
    else:
        main()
