"""Calibration of scores to log-likelihood ratios and its measures, against independent
computations: the closed-form LLR of Gaussian scores, scikit-learn's LogisticRegression,
and the formulas of Cllr and the DCF written out."""

import math

import numpy as np
import pytest

from spkid.scoring.calibration import (Calibration, actual_dcf, bayes_threshold, cllr,
                                       min_cllr)
from spkid.scoring.evaluation import calibrate_on_speakers
from spkid.scoring.metrics import eer


def gaussian_scores(rng, n_tar=4000, n_non=12000, mu=(1.0, -0.5), sd=0.5):
    s = np.concatenate([rng.normal(mu[0], sd, n_tar), rng.normal(mu[1], sd, n_non)])
    y = np.concatenate([np.ones(n_tar, np.int64), np.zeros(n_non, np.int64)])
    return s, y


def test_the_fit_recovers_the_llr_of_equal_variance_gaussians():
    """LLR of N(m1, sd) against N(m0, sd) is (m1 - m0) / sd^2 * s - (m1^2 - m0^2) / (2 sd^2),
    whatever the share of targets (the fit weights both classes to a prior of 0.5)."""
    s, y = gaussian_scores(np.random.default_rng(0))
    c = Calibration.fit(s, y)
    assert c.slope == pytest.approx((1.0 + 0.5) / 0.25, rel=0.05)
    assert c.offset == pytest.approx(-(1.0 - 0.25) / 0.5, rel=0.1)


def test_the_fit_is_scikit_learns_prior_weighted_logistic_regression():
    from sklearn.linear_model import LogisticRegression
    s, y = gaussian_scores(np.random.default_rng(1), 300, 900)
    c = Calibration.fit(s, y)
    ref = LogisticRegression(C=1e12, max_iter=10000, tol=1e-12).fit(
        s[:, None], y, sample_weight=np.where(y == 1, 1.0 / 300, 1.0 / 900))
    assert c.slope == pytest.approx(ref.coef_[0, 0], rel=1e-3)
    assert c.offset == pytest.approx(ref.intercept_[0], rel=1e-3, abs=1e-4)


def test_cllr_and_actual_dcf_by_their_formulas():
    llr = np.array([2.0, -1.0, 0.5, -3.0, 0.0])
    y = np.array([1, 1, 0, 0, 0])
    want = 0.5 * ((math.log2(1 + math.exp(-2.0)) + math.log2(1 + math.exp(1.0))) / 2
                  + (math.log2(1 + math.exp(0.5)) + math.log2(1 + math.exp(-3.0)) + 1.0) / 3)
    assert cllr(llr, y) == pytest.approx(want, rel=1e-12)
    assert cllr(np.zeros(5), y) == pytest.approx(1.0)  # "I don't know" costs one bit
    p = 0.2  # Bayes threshold log(4): one target missed of 2; no non-target accepted of 3
    assert bayes_threshold(p) == pytest.approx(math.log(4))
    assert actual_dcf(llr, y, p) == pytest.approx((p * 0.5 + 0.8 * 0.0) / 0.2)
    assert actual_dcf(llr, y, 0.5) == pytest.approx((0.5 * 0.5 + 0.5 * 2 / 3) / 0.5)


def test_min_cllr_is_below_cllr_and_reached_by_a_calibrated_system():
    rng = np.random.default_rng(2)
    s, y = gaussian_scores(rng, 2000, 6000)
    true_llr = (1.5 / 0.25) * s - 0.75 / 0.5
    assert min_cllr(s, y) <= cllr(true_llr, y) + 1e-9
    assert cllr(true_llr, y) - min_cllr(s, y) < 0.02  # the true LLR is nearly optimal
    badly = 0.2 * true_llr + 3.0  # miscalibrated, same order: min_cllr does not move
    assert min_cllr(badly, y) == pytest.approx(min_cllr(s, y), abs=1e-12)
    assert cllr(badly, y) > cllr(true_llr, y) + 0.1


def test_calibration_is_fitted_and_measured_on_disjoint_speakers():
    rng = np.random.default_rng(3)
    speakers = np.repeat([f"s{k}" for k in range(12)], 5)
    from spkid.scoring.trials import sample_trials
    i, j, y = sample_trials(list(speakers), 0, 3.0, 10 ** 6)
    scores = rng.normal(2.0 * y, 1.0)
    out = calibrate_on_speakers(scores, y, speakers[i], speakers[j], 0.5, seed=0)
    assert out["fit_speakers"] == 6 and out["speakers"] == 6
    # Fitted on the trials among the six fit speakers, measured on those among the others.
    fit = set(np.random.default_rng([0, 7]).permutation(sorted(set(speakers)))[:6].tolist())
    both = lambda keep: np.array([(a in fit) == keep and (b in fit) == keep  # noqa: E731
                                  for a, b in zip(speakers[i], speakers[j])])
    ref = Calibration.fit(scores[both(True)], y[both(True)])
    assert (out["slope"], out["offset"]) == (ref.slope, ref.offset)
    assert out["trials"] == both(False).sum() and out["fit_trials"] == both(True).sum()
    assert out["cllr"] == pytest.approx(cllr(ref.llr(scores[both(False)]), y[both(False)]))
    assert out["min_cllr"] <= out["cllr"]
    assert calibrate_on_speakers(scores, y, speakers[i], speakers[j], 0.5, 0) == out  # seeded
    assert calibrate_on_speakers(scores[:3], y[:3], speakers[i][:3], speakers[j][:3], 0.5, 0) is None


def duration_trials(rng, n=6000):
    """Trials whose same-speaker scores drop as the shorter side gets shorter (as cosines
    of short recordings do): mean 0.65 when both have 8 s, 0.35 at 0.5 s; different-speaker
    scores around 0.1 whatever the durations."""
    a, b = rng.uniform(0.5, 8.0, n), rng.uniform(0.5, 8.0, n)
    y = (rng.random(n) < 0.25).astype(np.int64)
    target_mean = 0.35 + 0.3 * np.log(np.minimum(a, b) / 0.5) / np.log(16.0)
    return rng.normal(np.where(y == 1, target_mean, 0.1), 0.12), y, a, b


def test_duration_quality_is_the_weighted_logistic_regression_on_score_and_log_durations():
    from sklearn.linear_model import LogisticRegression
    from spkid.scoring.calibration import duration_quality
    s, y, a, b = duration_trials(np.random.default_rng(5), 1500)
    q = duration_quality(a, b)
    assert q == pytest.approx(np.log(np.stack([np.minimum(a, b), np.maximum(a, b)], 1)))
    c = Calibration.fit(s, y, q, kind="duration")
    n1 = y.sum()
    ref = LogisticRegression(C=1e12, max_iter=10000, tol=1e-12).fit(
        np.column_stack([s, q]), y, sample_weight=np.where(y == 1, 1.0 / n1, 1.0 / (len(y) - n1)))
    assert (c.slope, *c.quality_weights) == pytest.approx(ref.coef_[0].tolist(), rel=1e-3)
    assert c.offset == pytest.approx(ref.intercept_[0], rel=1e-3)
    assert c.llr(s, q) == pytest.approx(ref.decision_function(np.column_stack([s, q])), abs=1e-3)
    assert Calibration.from_dict(c.as_dict()) == c
    with pytest.raises(ValueError, match="duration quality"):
        c.llr(s)


def test_a_duration_quality_measure_helps_where_short_recordings_score_lower():
    """Held-out trials: the calibration that knows durations costs fewer bits and ranks
    trials better (a short pair's middling score means more), which no score-only
    calibration can, since it keeps the scores' order."""
    from spkid.scoring.calibration import calibrated_metrics, duration_quality
    rng = np.random.default_rng(6)
    (s, y, a, b), (ts, ty, ta, tb) = duration_trials(rng), duration_trials(rng)
    plain = Calibration.fit(s, y)
    qmf = Calibration.fit(s, y, duration_quality(a, b), kind="duration")
    got_plain = calibrated_metrics(plain, ts, ty)
    got_qmf = calibrated_metrics(qmf, ts, ty, duration_quality(ta, tb))
    assert got_plain["eer"] == eer(ts, ty)[0] and got_qmf["eer"] < got_plain["eer"] - 0.005
    assert got_qmf["cllr"] < got_plain["cllr"] - 0.015
    assert got_qmf["min_cllr"] < got_plain["min_cllr"]  # a better order, not only a better map
