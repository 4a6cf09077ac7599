"""Seeded bootstrap intervals for verification metrics.

A test set of a few dozen speakers gives an EER that moves by tenths of a point when one
target trial flips; an interval says how far. Resampling is done by weighting trials, so
no score is copied: a speaker drawn m times counts each of its same-speaker trials m times
and each trial against a speaker drawn n times m * n times (the speakers are what was
sampled from the world, so resampling them is the honest default); resampling the trials
themselves gives each trial a multinomial count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


def speaker_weights(rng: np.random.Generator, speaker_a, speaker_b) -> np.ndarray:
    """Trial weights of one resampling of the speakers that trials (speaker_a[k],
    speaker_b[k]) are between."""
    return SpeakerCodes.of(speaker_a, speaker_b).weights(rng)


class SpeakerCodes:
    """The trials' two sides as speaker numbers, found once for every resampling."""

    def __init__(self, i: np.ndarray, j: np.ndarray, speakers: int):
        self.i, self.j, self.speakers = i, j, speakers

    @classmethod
    def of(cls, speaker_a, speaker_b) -> "SpeakerCodes":
        a, b = np.asarray(speaker_a), np.asarray(speaker_b)
        _, codes = np.unique(np.concatenate([a, b]), return_inverse=True)
        codes = codes.ravel()
        return cls(codes[:len(a)], codes[len(a):], int(codes.max()) + 1 if len(codes) else 0)

    def weights(self, rng: np.random.Generator) -> np.ndarray:
        """Trial weights of one resampling of the speakers with replacement: a trial between
        speakers drawn m and n times counts m * n times (m within one speaker)."""
        n = self.speakers
        drawn = rng.multinomial(n, np.full(n, 1.0 / n)) if n else np.zeros(0, np.int64)
        return np.where(self.i == self.j, drawn[self.i],
                        drawn[self.i] * drawn[self.j]).astype(np.float64)


def trial_weights(rng: np.random.Generator, count: int) -> np.ndarray:
    """Trial weights of one resampling of `count` trials with replacement."""
    return rng.multinomial(count, np.full(count, 1.0 / count)).astype(np.float64)


def replicates(statistic: Callable[[np.ndarray], float], draw: Callable[[np.random.Generator],
               np.ndarray], rounds: int, seed: int) -> np.ndarray:
    """statistic(weights) over `rounds` resamplings drawn with `draw(rng)`; a resampling the
    statistic cannot be computed on (no target trial drawn) is drawn again."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < rounds:
        try:
            out.append(statistic(draw(rng)))
        except ValueError:  # every target (or every non-target) trial left out
            continue
    return np.asarray(out, np.float64)


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central `level` percentile interval of bootstrap replicates."""
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(np.asarray(values, np.float64), [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class Bootstrap:
    """How evaluate draws its intervals (evaluate.bootstrap_*): `rounds` resamplings
    (0 = none) with `seed`, of the speakers when the trials' speakers are known, else of
    the trials."""
    rounds: int
    seed: int
    by: str = "speakers"  # "speakers" | "trials"
    level: float = 0.95

    def intervals(self, statistics: Callable[[np.ndarray | None], dict[str, float]],
                  count: int, speaker_a=None, speaker_b=None) -> dict:
        """{name + "_ci95": {"low", "high"}} for each of `statistics(weights)` (a dict of
        numbers computed with trial weights), plus what was resampled; {} when off."""
        if not self.rounds:
            return {}
        by = self.by if speaker_a is not None and speaker_b is not None else "trials"
        draw = (SpeakerCodes.of(speaker_a, speaker_b).weights if by == "speakers"
                else (lambda rng: trial_weights(rng, count)))
        names = list(statistics(None))
        values = replicates(lambda w: [statistics(w)[k] for k in names], draw, self.rounds,
                            self.seed)
        tag = f"_ci{round(100 * self.level)}"
        out = {}
        for k, name in enumerate(names):
            low, high = interval(values[:, k], self.level)
            out[name + tag] = {"low": low, "high": high}
        out["bootstrap"] = {"by": by, "rounds": self.rounds}
        return out
