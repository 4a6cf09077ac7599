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


def test_verification_summary_is_eer_and_min_dcf_from_one_sort():
    from spkid.scoring.metrics import verification_summary
    scores, labels = trials(3)
    w = np.random.default_rng(2).integers(0, 3, len(scores))
    assert verification_summary(scores, labels, w) == {
        "eer": eer(scores, labels, w)[0], "min_dcf_p01": min_dcf(scores, labels, 0.01, weights=w),
        "min_dcf_p05": min_dcf(scores, labels, 0.05, weights=w)}


def test_trials_ranked_once_give_each_weighting_the_rates_of_its_own_sort():
    """RankedTrials keeps the trials a resampling leaves out (weight 0) in its order: every
    round's EER and minDCF equal those of the drawn trials sorted afresh, bit for bit."""
    from spkid.scoring.metrics import RankedTrials
    scores, labels = trials(5)
    scores = np.round(scores, 1)  # ties, whose thresholds must not split
    ranked = RankedTrials(scores, labels)
    rng = np.random.default_rng(4)
    for _ in range(20):
        w = rng.integers(0, 3, len(scores)).astype(float)
        keep = w > 0
        alone = (scores[keep], labels[keep], w[keep])
        assert ranked.summary(w) == {
            "eer": eer(*alone[:2], alone[2])[0],
            "min_dcf_p01": min_dcf(*alone[:2], 0.01, weights=alone[2]),
            "min_dcf_p05": min_dcf(*alone[:2], 0.05, weights=alone[2])}
    with pytest.raises(ValueError, match="no target"):
        ranked.summary(np.where(labels == 1, 0.0, 1.0))


def _speaker_trials(rng, speakers=30, per=6, offset_sd=0.6):
    """Scores with speaker effects: every trial of speaker s is shifted by its own offset, so
    trials of one speaker are not independent (what resampling speakers is for)."""
    from spkid.scoring.trials import sample_trials
    ids = np.repeat(np.arange(speakers), per)
    i, j, labels = sample_trials(list(ids), int(rng.integers(1 << 30)), 3.0, 10 ** 6)
    offset = rng.normal(0, offset_sd, speakers)
    scores = rng.normal(2.0 * labels + offset[ids[i]] + offset[ids[j]], 1.0)
    return scores, labels, ids[i], ids[j]


@pytest.mark.parametrize("by,offset_sd", [("speakers", 0.6), ("trials", 0.0)])
def test_intervals_cover_the_true_eer_at_about_the_stated_rate(by, offset_sd):
    """Simulated test sets from one population: the 95 % interval should hold the
    population's EER in about 95 % of them: resampling speakers where trials of one speaker
    share its offset, resampling trials where they are independent. Where they are not,
    trial intervals come out narrower than speaker intervals: too narrow."""
    from spkid.scoring.bootstrap import Bootstrap
    from spkid.scoring.metrics import verification_summary
    rng = np.random.default_rng(11)
    big = [_speaker_trials(rng, speakers=400, offset_sd=offset_sd) for _ in range(5)]
    truth = np.mean([eer(s, lab)[0] for s, lab, *_ in big])
    covered, sets, widths = 0, 40, {"speakers": [], "trials": []}
    for k in range(sets):
        scores, labels, a, b = _speaker_trials(rng, offset_sd=offset_sd)
        stat = lambda w: verification_summary(scores, labels, w)  # noqa: E731
        ci = Bootstrap(150, k, by).intervals(stat, len(labels), a, b)
        assert ci["bootstrap"] == {"by": by, "rounds": 150}
        covered += ci["eer_ci95"]["low"] <= truth <= ci["eer_ci95"]["high"]
        if by == "speakers" and k < 6:
            for way in widths:
                got = Bootstrap(150, k, way).intervals(stat, len(labels), a, b)["eer_ci95"]
                widths[way].append(got["high"] - got["low"])
    assert 0.85 <= covered / sets <= 1.0, covered / sets
    if by == "speakers":
        assert np.mean(widths["trials"]) < 0.8 * np.mean(widths["speakers"]), widths


def test_no_rounds_no_intervals_and_unknown_speakers_resample_trials():
    from spkid.scoring.bootstrap import Bootstrap
    from spkid.scoring.metrics import verification_summary
    scores, labels = trials(4)
    stat = lambda w: verification_summary(scores, labels, w)  # noqa: E731
    assert Bootstrap(0, 0).intervals(stat, len(labels)) == {}
    ci = Bootstrap(50, 0, "speakers").intervals(stat, len(labels))
    assert ci["bootstrap"]["by"] == "trials"
    assert ci["eer_ci95"]["low"] <= eer(scores, labels)[0] <= ci["eer_ci95"]["high"]
