"""Weighted verification metrics and bootstrap resampling (spkid.scoring.bootstrap)."""

import numpy as np
import pytest

from spkid.scoring.bootstrap import interval, replicates, speaker_weights, trial_weights
from spkid.scoring.metrics import eer, error_rates, min_dcf


def trials(seed: int, n: int = 400):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.25).astype(int)
    return rng.normal(2.0 * labels, 1.0), labels


def test_integer_weights_count_a_trial_that_many_times():
    scores, labels = trials(0)
    w = np.random.default_rng(1).integers(0, 4, len(scores))
    copies = np.repeat(np.arange(len(scores)), w)
    assert eer(scores, labels, w) == pytest.approx(eer(scores[copies], labels[copies]), abs=1e-12)
    assert min_dcf(scores, labels, 0.01, weights=w) == pytest.approx(
        min_dcf(scores[copies], labels[copies], 0.01), abs=1e-12)
    assert eer(scores, labels, np.ones(len(scores))) == eer(scores, labels)


def test_weights_are_checked():
    scores, labels = trials(0, 10)
    with pytest.raises(ValueError, match="weights"):
        error_rates(scores, labels, -np.ones(10))
    with pytest.raises(ValueError, match="no target"):
        error_rates(scores, labels, np.where(labels == 1, 0.0, 1.0))


def test_speaker_weights_follow_the_drawn_speakers():
    a = np.array(["x", "x", "y", "x"])
    b = np.array(["x", "y", "z", "z"])
    rng = np.random.default_rng(3)
    w = speaker_weights(rng, a, b)
    drawn = np.random.default_rng(3).multinomial(3, np.full(3, 1 / 3))  # x, y, z sorted
    assert w.tolist() == [drawn[0], drawn[0] * drawn[1], drawn[1] * drawn[2],
                          drawn[0] * drawn[2]]
    assert trial_weights(rng, 5).sum() == 5


def test_replicates_are_seeded_and_the_interval_holds_the_estimate():
    scores, labels = trials(2)
    stat = lambda w: eer(scores, labels, w)[0]  # noqa: E731
    draw = lambda rng: trial_weights(rng, len(scores))  # noqa: E731
    first, again = replicates(stat, draw, 50, seed=7), replicates(stat, draw, 50, seed=7)
    assert np.array_equal(first, again)
    low, high = interval(first)
    assert low < eer(scores, labels)[0] < high
