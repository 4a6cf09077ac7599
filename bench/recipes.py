"""Compare model recipes on one data set with the same steps and batch size for all.

    python bench/recipes.py ../shared/data/librispeech-125 --steps 800 --out bench/recipes.json

Prepares features and a time split once (audio_dir source, index.split_by time), then for
each configuration runs the real `spkid train` and `spkid evaluate` in a scratch copy of the
project and collects test accuracy, EER and minDCF with the training wall time. Recipe (b),
spkid's default and the TUNING candidates for the default run with several seeds; the table
reports mean and spread (std). `--set KEY=VALUE` changes the shared protocol (SPLIT), e.g.
longer held-out pieces for a robustness check; write those results to another `--out`."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from spkid.core.params import defaults  # noqa: E402
from spkid.core.recipes import RECIPES, apply, parse_override  # noqa: E402

# Encoder x pooling x loss around the default (ECAPA-TDNN 128 + ASP + AAM-softmax); each row
# changes only the named parts. The grid ran with 48-frame crops, the shortest candidate.
# resnet34 costs ~1 s a step on 2 CPU cores: run it on a GPU.
_GRID_CROP = {"index.segment_len": 48}
GRID = {
    "transformer-sap-am": {"model.encoder": "transformer", "model.pooling": "sap",
                           "loss.name": "am_softmax", **_GRID_CROP},
    "transformer-asp-aam": {"model.encoder": "transformer", **_GRID_CROP},
    "conformer-sap-am": {"model.encoder": "conformer", "model.pooling": "sap",
                         "loss.name": "am_softmax", **_GRID_CROP},
    "conformer-asp-aam": {"model.encoder": "conformer", **_GRID_CROP},
    "ecapa-sap-aam": {"model.pooling": "sap", **_GRID_CROP},
    "ecapa-tstp-aam": {"model.pooling": "tstp", **_GRID_CROP},
    "ecapa-asp-am": {"loss.name": "am_softmax", **_GRID_CROP},
    "ecapa-asp-softmax": {"loss.name": "softmax", **_GRID_CROP},
    "resnet34-tstp-aam": {"model.encoder": "resnet34", "model.base_width": 4,
                          "model.pooling": "tstp", **_GRID_CROP},
}
# Training knobs around the default, as candidates for it (3 seeds each). The default crop
# went 128 -> 100 -> 64 frames; the rows that name a segment length keep it fixed.
TUNING = {
    "segment 128 (first default)": {"index.segment_len": 128},
    "segment 128, lr 4e-3": {"index.segment_len": 128, "train.lr": 4e-3},
    "segment 100 (previous default)": {"index.segment_len": 100},
    "segment 100 + lr 4e-3": {"index.segment_len": 100, "train.lr": 4e-3},
    "segment 100 + embedding 192": {"index.segment_len": 100, "model.embedding_dim": 192},
    "segment 100 + AM-softmax": {"index.segment_len": 100, "loss.name": "am_softmax"},
    "segment 100 + AM-softmax + embedding 192": {"index.segment_len": 100,
                                                 "loss.name": "am_softmax",
                                                 "model.embedding_dim": 192},
    "segment 80": {"index.segment_len": 80},
    "segment 48": {"index.segment_len": 48},
    "segment 32": {"index.segment_len": 32},
    "default + TSTP pooling": {"model.pooling": "tstp"},
    "default + SAP pooling": {"model.pooling": "sap"},
}
SPLIT = {"data.source": "audio_dir", "index.split_by": "time", "index.val_fraction": 0.2,
         "index.test_fraction": 0.2, "index.trial_seconds": 0.5, "data.min_seconds": 0.5,
         # Every different-speaker pair up to the cap: EER from ~1,200 same-speaker and
         # ~120,000 different-speaker trials instead of a small sample.
         "evaluate.nontarget_ratio": 100.0,
         # A protocol knob so the stored precision can be compared on the same split.
         "features.dtype": "float32"}


def run(cmd, cwd, env) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return out.stdout


def protocol_arguments(doc: str, out: Path) -> argparse.ArgumentParser:
    """The command line every training-comparison benchmark shares: data folder, budget,
    seeds, which configurations, where the JSON goes."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--only", nargs="*", help="run only these configuration names")
    ap.add_argument("--out", type=Path, default=out)
    return ap


def main() -> None:
    ap = protocol_arguments(__doc__, ROOT / "bench" / "recipes.json")
    ap.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                    help="change the shared protocol, e.g. index.trial_seconds=1.0")
    args = ap.parse_args()
    split = {**SPLIT, **dict(_override(s) for s in args.set)}

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    common = {**split, "data.path": str(args.data.resolve()), "train.steps": args.steps,
              "train.batch_size": args.batch_size,
              "train.valid_every": max(1, args.steps // 4)}
    configs = ([("hw4_sample (a)", RECIPES["hw4_sample"], 1),
                ("hw4_best (b)", RECIPES["hw4_best"], args.seeds),
                ("spkid default", {}, args.seeds)]
               + [(k, v, 1) for k, v in GRID.items()]
               # Candidates for the default get the default's seeds.
               + [(k, v, args.seeds) for k, v in TUNING.items()])
    if args.only:
        configs = [c for c in configs if c[0] in args.only]
    results = json.loads(args.out.read_text()) if args.out.exists() else {}

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in ("spkid", "stages"):
            shutil.copytree(ROOT / name, work / name)

        def write_params(overrides: dict) -> None:
            merged = apply(defaults(), {**overrides, **common})
            # A recipe's own batch size and warmup yield to the shared budget.
            merged["train"]["batch_size"] = args.batch_size
            merged["train"]["warmup_steps"] = min(merged["train"]["warmup_steps"], args.steps // 10)
            (work / "params.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))

        write_params({})
        for stage in ("download", "features", "index"):
            print(run(["spkid", stage], work, env).strip().splitlines()[-1], flush=True)
        for name, overrides, seeds in configs:
            runs = []
            for seed in range(seeds):
                write_params({**overrides, "train.seed": seed})
                run(["spkid", "index"], work, env)  # index.* overrides (segment_len) need it
                started = time.perf_counter()
                log = run(["spkid", "train"], work, env)
                wall = time.perf_counter() - started
                run(["spkid", "evaluate"], work, env)
                metrics = json.loads((work / "metrics" / "eval.json").read_text())
                params = json.loads((work / "metrics" / "train.json").read_text())["parameters"]
                runs.append({"seed": seed, "train_seconds": round(wall, 1), "parameters": params,
                             "val": metrics["val"], "test": metrics["test"]})
                print(f"{name} seed {seed}: test top1 {metrics['test']['accuracy_top1']:.3f} "
                      f"EER {metrics['test']['eer']:.4f} ({wall:.0f} s) "
                      f"{re.sub(r'.*best val', 'best val', log.strip().splitlines()[-1])}", flush=True)
            results[name] = {"overrides": overrides, "protocol": split, "steps": args.steps,
                             "batch_size": args.batch_size, "runs": runs}
            args.out.write_text(json.dumps(results, indent=1))
    print_table(results)


def _override(text: str) -> tuple[str, object]:
    try:
        key, value = parse_override(text)
    except ValueError as exc:
        raise SystemExit(f"--set {exc}")
    if key not in SPLIT:
        raise SystemExit(f"--set {text!r}: KEY must be one of {sorted(SPLIT)}")
    return key, value


def _agg(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def print_table(results: dict) -> None:
    print("| configuration | seeds | params | test top-1 | test EER | test minDCF p0.01 | "
          "test minDCF p0.05 | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        runs = r["runs"]
        get = lambda k: [x["test"][k] for x in runs]  # noqa: E731
        # Entries rebuilt from a printed table (see their "partial") keep its row as printed.
        row = r.get("table_row") or {"test_top1": _agg(get("accuracy_top1")),
                                     "test_eer": _agg(get("eer")),
                                     "test_min_dcf_p01": _agg(get("min_dcf_p01")),
                                     "test_min_dcf_p05": _agg(get("min_dcf_p05"))}
        print(f"| {name} | {len(runs)} | {runs[0]['parameters']:,} | {row['test_top1']} | "
              f"{row['test_eer']} | {row['test_min_dcf_p01']} | {row['test_min_dcf_p05']} | "
              f"{statistics.mean(x['train_seconds'] for x in runs):.0f} |")


if __name__ == "__main__":
    main()
