"""What the bootstrap intervals cost evaluate: one metrics block's 95 % intervals (EER,
minDCF p0.01 and p0.05) over simulated trials, resampling speakers.

    python bench/bootstrap_cost.py [--trials 200000] [--speakers 600] [--rounds 200]

evaluate computes one such block per role and per score (raw, mean_sub, asnorm); at HW4's
size val and test each hold evaluate.max_trials = 200,000 trials among 600 speakers."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from spkid.scoring.bootstrap import Bootstrap  # noqa: E402
from spkid.scoring.metrics import RankedTrials  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=200_000)
    ap.add_argument("--speakers", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=200)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    labels = (rng.random(args.trials) < 0.2).astype(np.int64)
    scores = rng.normal(1.5 * labels, 1.0)
    a, b = rng.integers(0, args.speakers, (2, args.trials)).astype(str)
    started = time.perf_counter()
    out = Bootstrap(args.rounds, 0, "speakers").intervals(RankedTrials(scores, labels).summary,
                                                          args.trials, a, b)
    took = time.perf_counter() - started
    print(f"bootstrap_cost: {args.trials:,} trials, {args.speakers} speakers, {args.rounds} "
          f"rounds: {took:.2f} s ({1000 * took / args.rounds:.1f} ms a round); EER interval "
          f"{out['eer_ci95']['low']:.4f}-{out['eer_ci95']['high']:.4f}")


if __name__ == "__main__":
    main()
