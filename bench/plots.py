"""What the pictures and the report cost, at the embedded default's size.

    python bench/plots.py [--val 80 --speakers 40 --trials 1000 --rounds 5]

Times, in this process: importing matplotlib's pyplot and scikit-learn's t-SNE (paid once
per stage), spkid.report.evaluation_plots (DET, histograms, t-SNE map, confusions) on val,
test and verify roles of that size, training_curves on 5 validations, and the report
page. The `report` stage's own process start is not in here: time `spkid report` for it."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from spkid.report import evaluation_plots, training_curves  # noqa: E402
from spkid.report.page import render_report  # noqa: E402
from spkid.scoring.evaluation import verification  # noqa: E402

IMPORTS = "import time; t = time.perf_counter(); import matplotlib; matplotlib.use('Agg'); " \
          "import matplotlib.pyplot, sklearn.manifold; print(time.perf_counter() - t)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--val", type=int, default=80)
    ap.add_argument("--speakers", type=int, default=40)
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    curves, metrics = {}, {}
    for role in ("val", "test", "verify"):
        labels = (np.arange(args.trials) % 5 == 0).astype(np.int64)
        scores = np.where(labels == 1, rng.normal(0.6, 0.1, args.trials), rng.normal(0.1, 0.15, args.trials))
        metrics[role], curves[role] = verification(scores, labels)
    true = np.arange(args.val) % args.speakers
    predicted = np.where(np.arange(args.val) % 9 == 0, (true + 1) % args.speakers, true)
    emb = rng.normal(size=(args.val, 64))
    names = [f"spk{k}" for k in range(args.speakers)]
    steps = np.arange(1, 6) * 200.0
    times = {"imports (fresh process)": [], "evaluation_plots": [], "training_curves": [],
             "report page": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for _ in range(args.rounds):
            out = subprocess.run([sys.executable, "-c", IMPORTS], capture_output=True, text=True)
            times["imports (fresh process)"].append(float(out.stdout))
            t = time.perf_counter()
            pairs = evaluation_plots.evaluation_plots(folder, curves, metrics, val_embeddings=emb,
                                           val_true=true, val_predicted=predicted,
                                           speaker_names=names, seed=0)
            times["evaluation_plots"].append(time.perf_counter() - t)
            t = time.perf_counter()
            training_curves.training_curves({"train/loss": (steps, 1 / steps), "lr": (steps, 1e-3 / steps),
                                   "val/accuracy": (steps, 1 - 1 / steps)}, folder / "training.png",
                                  margin=0.2)
            times["training_curves"].append(time.perf_counter() - t)
            t = time.perf_counter()
            render_report(metrics=metrics, train={}, params={}, defaults={}, lock=None,
                          images=sorted((p, p.stem) for p in folder.glob("*.png")), confusions=pairs)
            times["report page"].append(time.perf_counter() - t)
    total = 0.0
    for name, values in times.items():
        total += statistics.median(values)
        print(f"{name}: median {statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})")
    print(f"total: {total:.2f} s")


if __name__ == "__main__":
    main()
