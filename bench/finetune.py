"""Fine-tuning onto new speakers (train.init_from) against training from scratch on them.

    python bench/finetune.py ../shared/data/librispeech-125 --out bench/finetune.json

The speakers of an audio_dir-style folder are shuffled (`--split-seed`) into a source set
(`--source` speakers), a target set (`--target`) and the rest, held out. A model is
trained on the source speakers for `--source-steps`; then models are trained on the target
speakers for `--steps` each: from scratch, and from the source model (its encoder, pooling
and embedding; the head starts fresh, the speakers being others) with the same schedule,
and with `train.freeze_steps` and a lower learning rate. Every model is scored on

* closed-set accuracy on the target speakers' test pieces (index.split_by time: held-out
  1 s pieces of each recording; the source model has no head for them), and
* verification on the held-out speakers' 3 s pieces (bench/unseen_cv.py's clean pieces,
  every pair a trial), which no model trained on.

95 % intervals from 1000 seeded bootstrap resamplings: of the test pieces for accuracy, of
the held-out speakers for EER (spkid.scoring.bootstrap); the differences from scratch are
paired (the same resampling for both models)."""

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
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from recipes import run  # noqa: E402
from unseen_cv import PROTOCOL, prepare_fold, trial_scores  # noqa: E402

from spkid.core.params import defaults  # noqa: E402
from spkid.core.recipes import apply  # noqa: E402
from spkid.data.views import read_views  # noqa: E402
from spkid.scoring.bootstrap import interval, replicates, speaker_weights, trial_weights  # noqa: E402
from spkid.scoring.metrics import eer  # noqa: E402

# A fifth of each recording for test (two or three 1 s pieces a speaker), a fifth for val.
SPLIT = {**PROTOCOL, "index.val_fraction": 0.2, "index.test_fraction": 0.2}
ROUNDS = 1000
SCRATCH = "from scratch"


def configs(source_model: Path, steps: int) -> dict:
    return {SCRATCH: {},
            "fine-tuned (same schedule)": {"train.init_from": str(source_model)},
            "fine-tuned, head alone first, lr / 4": {
                "train.init_from": str(source_model), "train.freeze_steps": steps // 6,
                "train.lr": defaults()["train"]["lr"] / 4}}


def speaker_folder(data: Path, speakers: list[str], dest: Path) -> Path:
    """An audio_dir-style folder of links to some of `data`'s speakers."""
    dest.mkdir(parents=True)
    for spk in speakers:
        os.symlink((data / spk).resolve(), dest / spk)
    return dest


def train_and_score(project: Path, overrides: dict, stages: list[str], env) -> dict:
    """Run `stages` then train and evaluate under params `overrides`; per-piece closed-set
    hits (None without a test role) and per-trial verification scores."""
    (project / "params.yaml").write_text(yaml.safe_dump(apply(defaults(), overrides),
                                                        sort_keys=False))
    started = time.perf_counter()
    for stage in [*stages, "train"]:
        run(["spkid", stage], project, env)
    wall = time.perf_counter() - started
    run(["spkid", "evaluate"], project, env)
    return {"hits": closed_set_hits(project), "trials": trial_scores(project),
            "train_seconds": wall, "eval": json.loads((project / "metrics/eval.json").read_text())}


def closed_set_hits(project: Path) -> np.ndarray:
    from spkid.scoring.embedding import Scoring
    test = read_views(project / "data/index/utterances.parquet", ["test"])["test"]
    scoring = Scoring.open(project / "data/model", project / "data/features", "cpu")
    return scoring.embed(test, 20000, labels=test["speaker_id"]).true_rank < 1


def summary(got: dict, base: dict | None) -> dict:
    """Accuracy and EER with 95 % intervals, and their paired differences from `base`."""
    t = got["trials"]
    out = {"eer": eer(t["scores"], t["labels"])[0], "target_trials": int(t["labels"].sum()),
           "trials": len(t["labels"]), "train_seconds": round(got["train_seconds"], 1)}
    draw = lambda rng: speaker_weights(rng, t["a"], t["b"])  # noqa: E731
    out["eer_ci95"] = interval(replicates(lambda w: eer(t["scores"], t["labels"], w)[0], draw,
                                          ROUNDS, 0))
    if base is not None:
        b = base["trials"]
        assert np.array_equal(b["a"], t["a"]) and np.array_equal(b["b"], t["b"])
        out["eer_minus_scratch_ci95"] = interval(replicates(
            lambda w: eer(t["scores"], t["labels"], w)[0] - eer(b["scores"], b["labels"], w)[0],
            draw, ROUNDS, 0))
    hits = got["hits"]
    if hits is not None:
        acc = lambda w, h=hits: float(np.average(h, weights=w))  # noqa: E731
        pieces = lambda rng: trial_weights(rng, len(hits))  # noqa: E731
        out.update(accuracy=acc(None), test_pieces=len(hits),
                   accuracy_ci95=interval(replicates(acc, pieces, ROUNDS, 0)))
        if base is not None:
            out["accuracy_minus_scratch_ci95"] = interval(replicates(
                lambda w: acc(w) - acc(w, base["hits"]), pieces, ROUNDS, 0))
    return out


def print_table(state: dict) -> None:
    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    span = lambda ci, sign="": f"({100 * ci[0]:{sign}.1f}, {100 * ci[1]:{sign}.1f})"  # noqa: E731
    print("| model | target accuracy % (95 % CI) | − scratch, points | unseen EER % (95 % CI) "
          "| − scratch, points | target / all trials | train s |")
    print("|---|---|---|---|---|---|---|")
    base = state["results"][SCRATCH]

    def diff(r, key):
        if f"{key}_minus_scratch_ci95" not in r:
            return "–"
        return f"{100 * (r[key] - base[key]):+.1f} {span(r[f'{key}_minus_scratch_ci95'], '+')}"
    for name, r in state["results"].items():
        acc = (f"{pct(r['accuracy'])} {span(r['accuracy_ci95'])}" if "accuracy" in r else "–")
        dacc, deer = diff(r, "accuracy"), diff(r, "eer")
        print(f"| {name} | {acc} | {dacc} | {pct(r['eer'])} {span(r['eer_ci95'])} | {deer} | "
              f"{r['target_trials']} / {r['trials']} | {r['train_seconds']:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, nargs="?")
    ap.add_argument("--source", type=int, default=60)
    ap.add_argument("--target", type=int, default=40)
    ap.add_argument("--source-steps", type=int, default=600)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "finetune.json")
    ap.add_argument("--table", type=Path, help="print the table of an earlier run")
    args = ap.parse_args()
    if args.table:
        return print_table(json.loads(args.table.read_text()))
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    data = args.data.resolve()
    speakers = sorted(p.name for p in data.iterdir() if p.is_dir())
    order = [speakers[k] for k in np.random.default_rng(args.split_seed).permutation(len(speakers))]
    source, target = order[:args.source], order[args.source:args.source + args.target]
    held = sorted(order[args.source + args.target:])
    state = {"protocol": {**SPLIT, "source_speakers": len(source), "target_speakers": len(target),
                          "held_out_speakers": len(held), "source_steps": args.source_steps,
                          "steps": args.steps, "split_seed": args.split_seed,
                          "bootstrap_rounds": ROUNDS}, "results": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # Source speakers as work/train, the held-out speakers' pieces as work/verify-clean.
        prepare_fold(speaker_folder(data, source + held, tmp / "source+held"), tmp / "work",
                     held, 3.0, 0)
        target_audio = speaker_folder(data, target, tmp / "target")
        common = {**SPLIT, "data.verify_dir": str(tmp / "work" / "verify-clean"),
                  "train.warmup_steps": max(1, args.steps // 10)}
        source_project = tmp / "source"
        source_project.mkdir()
        first = train_and_score(source_project, {
            **common, "data.path": str(tmp / "work" / "train"), "train.steps": args.source_steps,
            "train.valid_every": max(1, args.source_steps // 5),
            "train.warmup_steps": max(1, args.source_steps // 10)},
            ["download", "features", "index"], env)
        first["hits"] = None  # its test pieces are the source speakers'
        source_model = tmp / "source-model"
        shutil.copytree(source_project / "data" / "model", source_model)
        project = tmp / "target-project"
        project.mkdir()
        results = {}
        for k, (name, overrides) in enumerate(configs(source_model, args.steps).items()):
            results[name] = train_and_score(project, {
                **common, "data.path": str(target_audio), "train.steps": args.steps,
                "train.valid_every": max(1, args.steps // 5), **overrides},
                ["download", "features", "index"] if k == 0 else [], env)
            print(f"{name}: test accuracy {results[name]['eval']['test']['accuracy_top1']:.3f}, "
                  f"unseen EER {results[name]['eval']['verify']['eer']:.4f}", flush=True)
        state["results"][f"source model ({len(source)} speakers, {args.source_steps} steps)"] = \
            summary(first, results[SCRATCH])
        for name, got in results.items():
            state["results"][name] = summary(got, None if name == SCRATCH else results[SCRATCH])
    args.out.write_text(json.dumps(state, indent=1))
    print_table(state)


if __name__ == "__main__":
    main()
