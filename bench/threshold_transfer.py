"""Does the shipped threshold transfer to speakers the model never saw?

    python bench/threshold_transfer.py ../shared/data/librispeech-125 --steps 600
    python bench/threshold_transfer.py --table bench/threshold-transfer.json

Folds as bench/unseen_cv.py (every speaker held out once, its recordings cut into 3 s
pieces, clean), with a third of each training recording as val (VAL below). Each fold trains the default model on the other speakers, then scores the
held-out pieces (every same- and different-speaker pair) at each candidate threshold and
counts false accepts (FA) and false rejects (FR) there:

* val (seen speakers): the EER threshold of val trials, which are between training
  speakers: what spkid shipped before issue 21, for the raw cosine and for AS-norm (its
  cohort holding the trial's own speakers, as before, and leaving them out, as now);
* unseen speakers: the EER threshold of the other half of the fold's held-out speakers
  (a seeded split; each half scored at the other half's threshold), what spkid ships
  now when an unseen-speaker role exists. Speaker-disjoint, so no trial chooses the
  threshold it is scored at.

At an EER threshold FA and FR are equal by construction on the trials that chose it; a
threshold that transfers keeps them close on new speakers."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from unseen_cv import (PROTOCOL, folds_of, held_out_arguments, prepare_fold,  # noqa: E402
                       train_on_fold)

from spkid.data.manifest import read_manifest  # noqa: E402
from spkid.data.views import read_views  # noqa: E402
from spkid.scoring.embedding import Scoring  # noqa: E402
from spkid.scoring.metrics import eer  # noqa: E402
from spkid.scoring.norm import ScoreNorm, cosine_scores  # noqa: E402
from spkid.scoring.trials import sample_trials  # noqa: E402

ASNORM_TOP_N = 30
# librispeech-125 has about 11 s per speaker: unseen_cv's 10 % val part is one 1 s piece, no
# same-speaker val trial, so no val threshold. A third of each recording as val (three
# 1 s pieces: three target trials per speaker) and no test part.
VAL = {"index.val_fraction": 0.3, "index.test_fraction": 0.0}


def rates(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    accept = scores >= threshold
    return {"fa": float(accept[labels == 0].mean()), "fr": float((~accept)[labels == 1].mean()),
            "target_trials": int(labels.sum()), "nontarget_trials": int((labels == 0).sum())}


def fold_result(project: Path, seed: int) -> dict:
    """FA and FR on the fold's held-out trials at each candidate threshold."""
    p = yaml.safe_load((project / "params.yaml").read_text())["evaluate"]
    scoring = Scoring.open(project / "data/model", project / "data/features", "cpu")
    views = read_views(project / "data/index/utterances.parquet", ["val", "train"])
    embed = lambda v: scoring.embed(v, p["batch_frames"]).embeddings  # noqa: E731
    norm = ScoreNorm.from_views(_params(p), views["train"], embed)
    val = views["val"]
    val_speakers = np.asarray(val["speaker_id"])
    val_emb = embed(val)
    i, j, labels = sample_trials(list(val_speakers), p["seed"], p["nontarget_ratio"],
                                 p["max_trials"])
    thresholds = {
        "cosine": {"val (seen speakers)": eer(cosine_scores(val_emb, i, j), labels)[1]},
        "asnorm": {
            "val, cohort holds the trial's speakers (before)":
                eer(norm.scores(val_emb, i, j)["asnorm"], labels)[1],
            "val, own speakers left out of the cohort (now)":
                eer(norm.scores(val_emb, i, j, speakers=val_speakers)["asnorm"], labels)[1]}}

    rows, _ = read_manifest(project / "data/raw/verify.parquet")
    speakers = np.asarray([r.speaker for r in rows])
    emb = scoring.embed_recordings([r.path for r in rows], p["batch_frames"])
    held = sorted(set(speakers))
    half = set(np.random.default_rng(seed).permutation(held)[:len(held) // 2])
    out = {}
    for score in ("cosine", "asnorm"):
        per_half = []
        for side in (True, False):  # score one half at each threshold, incl. the other half's
            mine = np.flatnonzero([(s in half) == side for s in speakers])
            other = np.flatnonzero([(s in half) != side for s in speakers])
            got = {}
            for name, members in (("mine", mine), ("other", other)):
                a, b, lab = sample_trials(list(speakers[members]), p["seed"], 1000.0, 10 ** 7)
                a, b = members[a], members[b]
                s = (cosine_scores(emb, a, b) if score == "cosine"
                     else norm.scores(emb, a, b)["asnorm"])
                got[name] = (s, lab)
            cands = {**thresholds[score],
                     "unseen speakers (other half)": eer(*got["other"])[1]}
            per_half.append({name: rates(*got["mine"], t) for name, t in cands.items()})
        out[score] = {name: _pool([h[name] for h in per_half]) for name in per_half[0]}
    return out


def _params(p: dict):
    """The evaluate params of `p` with AS-norm on, as the object ScoreNorm reads."""
    from spkid.core.params import validate_params
    return validate_params({"evaluate": {**p, "asnorm_top_n": ASNORM_TOP_N}}).evaluate


def _pool(parts: list[dict]) -> dict:
    """FA and FR over both halves' trials together."""
    tar = sum(h["target_trials"] for h in parts)
    non = sum(h["nontarget_trials"] for h in parts)
    return {"fa": sum(h["fa"] * h["nontarget_trials"] for h in parts) / non,
            "fr": sum(h["fr"] * h["target_trials"] for h in parts) / tar,
            "target_trials": tar, "nontarget_trials": non}


def print_table(path: Path) -> None:
    state = json.loads(path.read_text())
    folds = state["folds"]
    print(f"| score | threshold from | FA % (mean over {len(folds)} folds) | FR % | per fold FA / FR "
          "| target trials |")
    print("|---|---|---|---|---|---|")
    for score in ("cosine", "asnorm"):
        for name in folds[0][score]:
            cells = [f[score][name] for f in folds]
            fa = np.mean([c["fa"] for c in cells])
            fr = np.mean([c["fr"] for c in cells])
            per = " · ".join(f"{100 * c['fa']:.1f}/{100 * c['fr']:.1f}" for c in cells)
            print(f"| {score} | {name} | {100 * fa:.2f} | {100 * fr:.2f} | {per} | "
                  f"{sum(c['target_trials'] for c in cells)} |")


def main() -> None:
    args = held_out_arguments(__doc__, ROOT / "bench" / "threshold-transfer.json").parse_args()
    if args.table:
        return print_table(args.table)
    speakers = sorted(p.name for p in args.data.iterdir() if p.is_dir())
    state = {"protocol": {**PROTOCOL, **VAL, "steps": args.steps, "folds": args.folds,
                          "split_seed": args.split_seed, "asnorm_top_n": ASNORM_TOP_N},
             "folds": []}
    with tempfile.TemporaryDirectory() as tmp:
        project, audio = Path(tmp) / "project", Path(tmp) / "audio"
        for f, held in enumerate(folds_of(speakers, args.folds, args.split_seed)):
            prepare_fold(args.data.resolve(), audio, held, 3.0, f)
            train_on_fold(project, audio / "train", audio / "verify-clean", args.steps, VAL)
            state["folds"].append(fold_result(project, f))
            print(f"fold {f}: " + json.dumps(state["folds"][-1]), flush=True)
            args.out.write_text(json.dumps(state, indent=1))
    print_table(args.out)


if __name__ == "__main__":
    main()
