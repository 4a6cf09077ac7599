"""Does a duration quality measure (QMF) make the calibration better on unseen speakers?

    python bench/qmf.py ../shared/data/librispeech-125 --steps 600
    python bench/qmf.py --table bench/qmf.json

Folds as bench/unseen_cv.py (every speaker held out once). Each held-out recording is cut
into consecutive pieces whose lengths cycle through PIECE_SECONDS in a seeded order per
recording, so trials pair short and long pieces. Each fold trains the default model on the
other speakers, embeds the pieces as `evaluate` does and scores every pair. Then, for
SPLITS seeded halvings of the held-out speakers, `evaluate`'s own calibrate_on_speakers
fits the calibration on the trials among one half and measures it on those among the other,
once on the score alone (evaluate.calibration_quality none) and once with the durations
(duration): the same trials both ways, so the differences are paired. The interval is a
t-interval over the folds' mean differences (the splits of one fold share its model)."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from unseen_cv import (PROTOCOL, folds_of, held_out_arguments, prepare_fold,  # noqa: E402
                       train_on_fold)

from spkid.data.manifest import read_manifest  # noqa: E402
from spkid.scoring.embedding import Scoring  # noqa: E402
from spkid.scoring.evaluation import calibrate_on_speakers, trial_quality  # noqa: E402
from spkid.scoring.metrics import eer  # noqa: E402
from spkid.scoring.norm import cosine_scores  # noqa: E402
from spkid.scoring.trials import sample_trials  # noqa: E402

PIECE_SECONDS = (1.0, 1.5, 2.0, 3.0, 5.0)
SPLITS = 10
MEASURES = ("cllr", "min_cllr", "act_dcf_p01", "eer")


def cut_varied(data: Path, held: list[str], out: Path, fold: int) -> int:
    """out/<speaker>/<piece>.wav: each held-out recording cut into pieces of PIECE_SECONDS
    in a seeded order (the last, shorter remainder dropped)."""
    count = 0
    for spk in held:
        for path in sorted(p for p in (data / spk).rglob("*") if p.suffix.lower() in (".flac", ".wav")):
            wave, rate = sf.read(path, dtype="float32")
            rng = np.random.default_rng([fold, *path.stem.encode()])
            start, k = 0, 0
            while True:
                size = int(PIECE_SECONDS[rng.integers(len(PIECE_SECONDS))] * rate)
                if start + size > len(wave):
                    break
                (out / spk).mkdir(parents=True, exist_ok=True)
                sf.write(out / spk / f"{path.stem}-{k:03d}.wav", wave[start:start + size], rate)
                start, k, count = start + size, k + 1, count + 1
    return count


def fold_result(project: Path) -> dict:
    p = yaml.safe_load((project / "params.yaml").read_text())["evaluate"]
    rows, _ = read_manifest(project / "data/raw/verify.parquet")
    scoring = Scoring.open(project / "data/model", project / "data/features", "cpu")
    emb = scoring.embed_recordings([r.path for r in rows], p["batch_frames"])
    speakers = np.asarray([r.speaker for r in rows], object)
    i, j, labels = sample_trials(list(speakers), 0, 1000.0, 10 ** 7)
    scores = cosine_scores(emb, i, j)
    quality = trial_quality(rows, "duration")(i, j)
    splits = []
    for seed in range(SPLITS):
        got = {kind: calibrate_on_speakers(scores, labels, speakers[i], speakers[j], 0.5, seed,
                                           quality=q, quality_kind=kind)
               for kind, q in (("none", None), ("duration", quality))}
        if None not in got.values():
            splits.append({kind: {m: out[m] for m in (*MEASURES, "trials", "target_trials")}
                           for kind, out in got.items()})
    return {"pieces": len(rows), "trials": int(len(labels)), "target_trials": int(labels.sum()),
            "eer_all_trials": eer(scores, labels)[0], "splits": splits}


def print_table(path: Path) -> None:
    state = json.loads(path.read_text())
    folds = state["folds"]
    print(f"| measure | score only | with durations | difference (95 % CI over {len(folds)} "
          "folds) |")
    print("|---|---|---|---|")
    for m in MEASURES:
        per_fold = {k: np.array([np.mean([s[k][m] for s in f["splits"]]) for f in folds])
                    for k in ("none", "duration")}
        diff = per_fold["duration"] - per_fold["none"]
        half = stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))
        scale = 100 if m == "eer" else 1
        print(f"| {m}{' %' if m == 'eer' else ''} | {scale * per_fold['none'].mean():.3f} | "
              f"{scale * per_fold['duration'].mean():.3f} | {scale * diff.mean():+.3f} "
              f"({scale * (diff.mean() - half):+.3f} to {scale * (diff.mean() + half):+.3f}) |")
    split = folds[0]["splits"][0]["none"]
    print(f"\nper split: about {split['trials']:,} measured trials "
          f"({split['target_trials']} target); {sum(len(f['splits']) for f in folds)} splits, "
          f"{sum(f['target_trials'] for f in folds)} target trials in all folds")


def main() -> None:
    args = held_out_arguments(__doc__, ROOT / "bench" / "qmf.json").parse_args()
    if args.table:
        return print_table(args.table)
    speakers = sorted(p.name for p in args.data.iterdir() if p.is_dir())
    state = {"protocol": {**PROTOCOL, "steps": args.steps, "folds": args.folds,
                          "split_seed": args.split_seed, "piece_seconds": PIECE_SECONDS,
                          "splits": SPLITS}, "folds": []}
    with tempfile.TemporaryDirectory() as tmp:
        project, audio = Path(tmp) / "project", Path(tmp) / "audio"
        for f, held in enumerate(folds_of(speakers, args.folds, args.split_seed)):
            prepare_fold(args.data.resolve(), audio, held, 3.0, f)  # the training links
            pieces = cut_varied(args.data.resolve(), held, audio / "verify-varied", f)
            train_on_fold(project, audio / "train", audio / "verify-varied", args.steps)
            state["folds"].append(fold_result(project))
            print(f"fold {f}: {pieces} pieces, {len(state['folds'][-1]['splits'])} splits",
                  flush=True)
            args.out.write_text(json.dumps(state, indent=1))
    print_table(args.out)


if __name__ == "__main__":
    main()
