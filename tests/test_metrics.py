"""Tests for spkid.scoring.metrics and trials: checked against scikit-learn, brute force
and hand-worked answers."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_curve, top_k_accuracy_score

from spkid.scoring import trials
from spkid.scoring.metrics import det_points, eer, error_rates, min_dcf
from spkid.scoring.trials import sample_trials


def gaussian_trials(seed: int, n_tar: int = 300, n_non: int = 1500, shift: float = 2.0):
    rng = np.random.default_rng(seed)
    scores = np.concatenate([rng.normal(shift, 1.0, n_tar), rng.normal(0.0, 1.0, n_non)])
    labels = np.r_[np.ones(n_tar, int), np.zeros(n_non, int)]
    perm = rng.permutation(scores.size)
    return scores[perm], labels[perm]


def sklearn_eer(scores, labels) -> float:
    """Crossing of fpr and fnr = 1 - tpr, linearly interpolated between ROC points."""
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    fnr = 1.0 - tpr
    k = int(np.argmax(fnr <= fpr))  # fpr rises, fnr falls along sklearn's (descending) thresholds
    d0, d1 = fnr[k - 1] - fpr[k - 1], fnr[k] - fpr[k]
    a = d0 / (d0 - d1)
    return float(fpr[k - 1] + a * (fpr[k] - fpr[k - 1]))


def brute_min_dcf(scores, labels, p_target, c_miss=1.0, c_fa=1.0) -> float:
    scores, labels = np.asarray(scores), np.asarray(labels).astype(bool)
    tar, non = scores[labels], scores[~labels]
    best = np.inf
    for t in np.r_[scores, np.inf]:  # accept score >= t; inf rejects all
        p_miss = np.mean(tar < t)
        p_fa = np.mean(non >= t)
        best = min(best, c_miss * p_target * p_miss + c_fa * (1 - p_target) * p_fa)
    return best / min(c_miss * p_target, c_fa * (1 - p_target))


# ---------------------------------------------------------------- EER


@pytest.mark.parametrize("seed", range(6))
def test_eer_matches_sklearn_on_gaussian_scores(seed):
    shift = [0.5, 1.0, 2.0, 3.0, 1.5, 0.2][seed]
    scores, labels = gaussian_trials(seed, n_tar=100 + 37 * seed, n_non=800 - 50 * seed, shift=shift)
    rate, thr = eer(scores, labels)
    assert rate == pytest.approx(sklearn_eer(scores, labels), abs=1e-9)
    # At the returned threshold, the empirical miss and false-alarm rates bracket the EER.
    assert scores.min() <= thr <= scores.max()
    p_miss = np.mean(scores[labels == 1] < thr)
    p_fa = np.mean(scores[labels == 0] >= thr)
    assert min(p_miss, p_fa) - 0.02 <= rate <= max(p_miss, p_fa) + 0.02


def test_eer_matches_sklearn_with_heavy_ties():
    scores, labels = gaussian_trials(11, shift=1.0)
    scores = np.round(scores * 2) / 2  # only a handful of distinct values
    assert eer(scores, labels)[0] == pytest.approx(sklearn_eer(scores, labels), abs=1e-9)


def test_eer_hand_worked_example():
    # targets 0.9, 0.6, 0.4; non-targets 0.5, 0.1.
    # threshold 0.5: miss 1/3, fa 1/2; threshold 0.6: miss 1/3, fa 0.
    # fa - miss goes 1/6 -> -1/3, so the crossing is 1/3 of the way: fa = 1/2 - 1/6 = 1/3.
    rate, thr = eer([0.9, 0.6, 0.4, 0.5, 0.1], [1, 1, 1, 0, 0])
    assert rate == pytest.approx(1 / 3, abs=1e-12)
    assert thr == pytest.approx(0.5 + 0.1 / 3, abs=1e-12)


def test_eer_perfect_separation_is_zero():
    rate, thr = eer([0.9, 0.8, 0.7, 0.3, 0.2], [1, 1, 1, 0, 0])
    assert rate == 0.0
    assert 0.3 < thr <= 0.7


def test_eer_fully_reversed_scores_is_one():
    assert eer([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0])[0] == pytest.approx(1.0)


def test_eer_identical_distributions_is_about_half():
    rng = np.random.default_rng(5)
    scores = rng.normal(size=40000)
    labels = rng.integers(0, 2, size=scores.size)
    assert eer(scores, labels)[0] == pytest.approx(0.5, abs=0.015)


def test_eer_invariant_to_trial_order_with_ties():
    scores = np.array([1, 1, 0, 1, 0, 0, 2, 2, -1], float)
    labels = np.array([1, 1, 1, 0, 0, 0, 1, 0, 0])
    perm = np.random.default_rng(0).permutation(scores.size)
    assert eer(scores, labels) == eer(scores[perm], labels[perm])


@pytest.mark.parametrize(
    "scores, labels",
    [
        ([0.1, 0.2], [1, 1]),
        ([0.1, 0.2], [0, 0]),
        ([0.1, np.nan, 0.3], [1, 0, 0]),
        ([0.1, np.inf, 0.3], [1, 0, 0]),
        ([0.1, 0.2], [1, 2]),
        ([0.1, 0.2, 0.3], [1, 0]),
    ],
)
def test_invalid_input_raises(scores, labels):
    with pytest.raises(ValueError):
        eer(scores, labels)
    with pytest.raises(ValueError):
        min_dcf(scores, labels, 0.01)


# ---------------------------------------------------------------- error_rates


def test_error_rates_ties_move_together():
    # targets 1, 1, 0; non-targets 1, 0, 0: thresholds 0, 1, then reject-all.
    miss, fa, thr = error_rates([1, 1, 0, 1, 0, 0], [1, 1, 1, 0, 0, 0])
    np.testing.assert_allclose(miss, [0, 1 / 3, 1])
    np.testing.assert_allclose(fa, [1, 1 / 3, 0])
    assert thr[0] == 0 and thr[1] == 1 and thr[2] > 1
    assert eer([1, 1, 0, 1, 0, 0], [1, 1, 1, 0, 0, 0])[0] == pytest.approx(1 / 3)


def test_error_rates_monotone_and_complete():
    scores, labels = gaussian_trials(3)
    miss, fa, thr = error_rates(scores, labels)
    assert thr.size == np.unique(scores).size + 1
    assert np.all(np.diff(thr) > 0)
    assert np.all(np.diff(miss) >= 0) and np.all(np.diff(fa) <= 0)
    assert (miss[0], fa[0], miss[-1], fa[-1]) == (0.0, 1.0, 1.0, 0.0)
    # Same operating points as sklearn's ROC (sklearn lists them from the top threshold down).
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fa[::-1], fpr, atol=1e-12)
    np.testing.assert_allclose(miss[::-1], 1 - tpr, atol=1e-12)


# ---------------------------------------------------------------- minDCF


@pytest.mark.parametrize("p_target", [0.01, 0.05])
@pytest.mark.parametrize("seed", range(3))
def test_min_dcf_matches_brute_force(p_target, seed):
    scores, labels = gaussian_trials(seed, n_tar=150, n_non=400, shift=1.0 + seed)
    scores = np.round(scores, 1)  # include ties
    assert min_dcf(scores, labels, p_target) == pytest.approx(
        brute_min_dcf(scores, labels, p_target), abs=1e-12
    )


def test_min_dcf_with_costs_matches_brute_force():
    scores, labels = gaussian_trials(9, n_tar=100, n_non=300, shift=1.5)
    got = min_dcf(scores, labels, 0.05, c_miss=10.0, c_fa=1.0)
    assert got == pytest.approx(brute_min_dcf(scores, labels, 0.05, 10.0, 1.0), abs=1e-12)
    assert 0.0 < got <= 1.0


def test_min_dcf_perfect_separation_is_zero():
    assert min_dcf([0.9, 0.8, 0.3, 0.2], [1, 1, 0, 0], 0.01) == 0.0


@pytest.mark.parametrize("p_target", [0.01, 0.05])
def test_min_dcf_identical_distributions_is_about_one(p_target):
    rng = np.random.default_rng(7)
    scores = rng.normal(size=20000)
    labels = rng.integers(0, 2, size=scores.size)
    got = min_dcf(scores, labels, p_target)
    assert 0.95 <= got <= 1.0


def test_min_dcf_never_exceeds_one_even_for_reversed_scores():
    assert min_dcf([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0], 0.05) == pytest.approx(1.0)


def test_min_dcf_rejects_bad_p_target():
    with pytest.raises(ValueError):
        min_dcf([0.1, 0.2], [1, 0], 0.0)


# ---------------------------------------------------------------- DET points


def test_det_points_downsampled_keeps_ends_and_eer_region():
    scores, labels = gaussian_trials(4, n_tar=500, n_non=2000)
    miss, fa, thr = error_rates(scores, labels)
    det = det_points(scores, labels, max_points=50)
    assert set(det) == {"fpr", "fnr", "threshold"}
    assert 2 < len(det["fpr"]) <= 50
    assert len(det["fpr"]) == len(det["fnr"]) == len(det["threshold"])
    assert all(type(v) is float for key in det for v in det[key])
    assert (det["fpr"][0], det["fnr"][0]) == (1.0, 0.0)
    assert (det["fpr"][-1], det["fnr"][-1]) == (0.0, 1.0)
    assert det["threshold"][0] == thr[0] and det["threshold"][-1] == thr[-1]
    assert np.all(np.diff(det["threshold"]) > 0)
    # The two operating points around the EER crossing are kept, so interpolating the
    # downsampled curve gives the same EER.
    k = int(np.argmax(miss >= fa))
    assert thr[k - 1] in det["threshold"] and thr[k] in det["threshold"]
    i = det["threshold"].index(thr[k])
    f0, f1 = det["fpr"][i - 1], det["fpr"][i]
    m0, m1 = det["fnr"][i - 1], det["fnr"][i]
    a = (f0 - m0) / ((f0 - m0) - (f1 - m1))
    assert f0 + a * (f1 - f0) == pytest.approx(eer(scores, labels)[0], abs=1e-12)


def test_det_points_small_curve_returned_whole():
    det = det_points([0.9, 0.6, 0.4, 0.5, 0.1], [1, 1, 1, 0, 0])
    assert len(det["fpr"]) == 6
    with pytest.raises(ValueError):
        det_points([0.9, 0.1], [1, 0], max_points=3)


# ---------------------------------------------------------------- sample_trials


def check_trials(speakers, i, j, label):
    spk = np.asarray(speakers)
    assert i.dtype.kind == j.dtype.kind == label.dtype.kind == "i"
    assert i.shape == j.shape == label.shape
    assert np.all(i < j), "self-pairs or unordered pairs"
    assert np.all(j < len(speakers)) and np.all(i >= 0)
    keys = i * len(speakers) + j
    assert np.unique(keys).size == keys.size, "duplicate pairs"
    assert np.all(np.diff(keys) > 0), "not sorted by (i, j)"
    np.testing.assert_array_equal(label, (spk[i] == spk[j]).astype(int))


def all_target_pairs(speakers):
    n = len(speakers)
    return {(a, b) for a in range(n) for b in range(a + 1, n) if speakers[a] == speakers[b]}


def small_speakers(seed=0, n=120):
    rng = np.random.default_rng(seed)
    return [f"spk{s}" for s in rng.integers(0, 15, size=n)]


def test_sample_trials_small_all_targets_and_ratio():
    speakers = small_speakers()
    i, j, label = sample_trials(speakers, seed=1, nontarget_ratio=3.0, max_trials=10**6)
    check_trials(speakers, i, j, label)
    targets = all_target_pairs(speakers)
    assert set(zip(i[label == 1].tolist(), j[label == 1].tolist())) == targets
    assert (label == 0).sum() == round(3.0 * len(targets))


def test_sample_trials_deterministic_by_seed():
    speakers = small_speakers()
    a = sample_trials(speakers, seed=3, nontarget_ratio=2.0, max_trials=10**6)
    b = sample_trials(speakers, seed=3, nontarget_ratio=2.0, max_trials=10**6)
    c = sample_trials(speakers, seed=4, nontarget_ratio=2.0, max_trials=10**6)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not (a[0].size == c[0].size and np.array_equal(a[0], c[0]) and np.array_equal(a[1], c[1]))


def test_sample_trials_ratio_capped_by_existing_pairs():
    speakers = ["a", "a", "a", "b"]  # 3 target pairs, only 3 non-target pairs exist
    i, j, label = sample_trials(speakers, seed=0, nontarget_ratio=10.0, max_trials=100)
    check_trials(speakers, i, j, label)
    assert label.sum() == 3 and (label == 0).sum() == 3


def test_sample_trials_at_least_one_nontarget():
    speakers = ["a"] * 30 + ["b"]  # 435 target pairs; ratio rounds to 0 non-targets
    i, j, label = sample_trials(speakers, seed=0, nontarget_ratio=1e-4, max_trials=10**6)
    check_trials(speakers, i, j, label)
    assert (label == 0).sum() == 1 and label.sum() == 435


def test_sample_trials_max_trials_cap_is_proportional():
    speakers = small_speakers(seed=2)
    n_targets = len(all_target_pairs(speakers))
    i, j, label = sample_trials(speakers, seed=5, nontarget_ratio=4.0, max_trials=500)
    check_trials(speakers, i, j, label)
    assert label.size == 500
    assert label.sum() == round(500 * n_targets / (n_targets + 4 * n_targets))
    # Capping subsamples targets deterministically from the full set.
    again = sample_trials(speakers, seed=5, nontarget_ratio=4.0, max_trials=500)
    np.testing.assert_array_equal(i, again[0])


def test_sample_trials_tiny_cap_keeps_both_classes():
    speakers = small_speakers(seed=2)
    i, j, label = sample_trials(speakers, seed=0, nontarget_ratio=50.0, max_trials=2)
    assert sorted(label.tolist()) == [0, 1]


@pytest.mark.parametrize("enumerate_max", [10**6, 0], ids=["enumerated", "rejection"])
def test_sample_trials_nontargets_roughly_uniform(monkeypatch, enumerate_max):
    # 3 speakers with 2 items each: 12 non-target pairs; draw 6 of them many times, with both
    # the small-n (enumerate all pairs) and the large-n (rejection sampling) code paths.
    monkeypatch.setattr(trials, "_ENUMERATE_PAIRS_MAX", enumerate_max)
    speakers = ["a", "a", "b", "b", "c", "c"]
    counts = {}
    for seed in range(400):
        i, j, label = sample_trials(speakers, seed=seed, nontarget_ratio=2.0, max_trials=100)
        for pair in zip(i[label == 0].tolist(), j[label == 0].tolist()):
            counts[pair] = counts.get(pair, 0) + 1
    assert len(counts) == 12
    assert min(counts.values()) > 140 and max(counts.values()) < 260  # expected 200 each


def test_sample_trials_large_n_uses_rejection_sampling():
    # 20000 items (2e8 possible pairs): must not enumerate them; check the sample is valid.
    rng = np.random.default_rng(0)
    speakers = rng.integers(0, 2000, size=20000).tolist()
    i, j, label = sample_trials(speakers, seed=0, nontarget_ratio=2.0, max_trials=10**6)
    check_trials(speakers, i, j, label)
    counts = np.bincount(speakers)
    n_targets = int((counts * (counts - 1) // 2).sum())
    assert label.sum() == n_targets
    assert (label == 0).sum() == 2 * n_targets
    a = sample_trials(speakers, seed=0, nontarget_ratio=2.0, max_trials=10**6)
    np.testing.assert_array_equal(a[1], j)


def test_sample_trials_no_pairs_possible():
    i, j, label = sample_trials(["a"], seed=0, nontarget_ratio=1.0, max_trials=10)
    assert i.size == j.size == label.size == 0


def test_score_role_without_same_speaker_pairs_reports_null_verification():
    from spkid.scoring.evaluation import score_role
    rng = np.random.default_rng(0)
    speakers = np.arange(6)  # one utterance per speaker: no same-speaker trial exists
    logits = rng.normal(size=(6, 6))
    true_rank = (logits > logits[np.arange(6), speakers][:, None]).sum(1)
    report, det = score_role(rng.normal(size=(6, 8)).astype(np.float32), true_rank, speakers,
                             seed=0, nontarget_ratio=4.0, max_trials=1000)
    assert det is None
    assert report["eer"] is None and report["min_dcf_p01"] is None
    # nontarget_ratio times zero, but sample_trials keeps one different-speaker pair
    assert report["target_trials"] == 0 and report["trials"] == 1
    assert report["accuracy_top1"] == float(np.mean(logits.argmax(1) == speakers))
    assert report["accuracy_top5"] == top_k_accuracy_score(speakers, logits, k=5,
                                                           labels=np.arange(6))


def test_score_role_of_an_empty_role_is_null_not_a_crash():
    from spkid.scoring.evaluation import score_role
    report, det = score_role(np.zeros((0, 8), np.float32), np.zeros(0, np.int64),
                             np.zeros(0, np.int64), seed=0, nontarget_ratio=4.0, max_trials=1000)
    assert det is None and report["utterances"] == 0
    assert report["accuracy_top1"] is None and report["eer"] is None


def test_the_shipped_threshold_comes_from_unseen_speakers_when_there_are_some():
    from spkid.scoring.evaluation import shipped_threshold
    report = {"val": {"eer_threshold": 0.6, "asnorm": {"eer_threshold": 2.0}},
              "test": {"eer_threshold": 0.65},
              "verify": {"eer_threshold": 0.4, "asnorm": {"eer_threshold": 1.1}}}
    assert shipped_threshold(report, None) == {"eer_threshold": 0.4, "role": "verify",
                                               "score": "cosine", "seen_speakers": False}
    assert shipped_threshold(report, "asnorm")["eer_threshold"] == 1.1
    report["verify"] = {"eer_threshold": None}  # no same-speaker trial among the unseen
    assert shipped_threshold(report, None) == {"eer_threshold": 0.6, "role": "val",
                                               "score": "cosine", "seen_speakers": True}
    del report["val"]
    assert shipped_threshold(report, None)["role"] == "test"
    assert shipped_threshold({}, "asnorm")["eer_threshold"] is None
