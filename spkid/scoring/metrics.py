"""Speaker-verification metrics: EER, minDCF and the DET curve.

Numpy only, so evaluation does not depend on scikit-learn's version (the tests check against it).
Convention throughout: labels 1 = target (same speaker), 0 = non-target; a trial is accepted
as target when its score >= threshold, so a higher score means "more likely the same speaker".
"""

from __future__ import annotations

import numpy as np


def _check_trials(scores, labels, weights=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length: {s.size} vs {y.size}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (non-target) or 1 (target)")
    w = np.ones(s.size) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if w.shape != s.shape or not (np.isfinite(w) & (w >= 0)).all():
        raise ValueError("weights must be one finite non-negative number per trial")
    keep = w > 0  # a trial of weight 0 is not there at all (a bootstrap sample left it out)
    s, y, w = s[keep], y[keep].astype(bool), w[keep]
    if not y.any():
        raise ValueError("no target trials (label 1)")
    if y.all():
        raise ValueError("no non-target trials (label 0)")
    return s, y, w


def error_rates(scores, labels, weights=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(miss_rate, false_alarm_rate, thresholds) at every distinct score, ascending.

    Threshold t accepts every trial with score >= t, so tied scores are always accepted or
    rejected together (no operating point splits a tie). The first threshold (the lowest
    score) accepts everything (miss 0, false alarm 1); one extra final threshold just above
    the highest score rejects everything (miss 1, false alarm 0), so the curve is complete.
    `weights` (one per trial, default 1) count a trial that many times, as a bootstrap
    sample does (spkid.scoring.bootstrap).
    """
    s, y, w = _check_trials(scores, labels, weights)
    return RankedTrials(s, y).error_rates(w)


class RankedTrials:
    """Trials sorted by score once, so that each weighting of them (a bootstrap round)
    costs two cumulative sums instead of a sort. A trial of weight 0 keeps its place and
    moves no rate, so every rate is the one error_rates gives without it (its score only
    adds a threshold with its neighbour's rates)."""

    def __init__(self, scores, labels):
        s, y, _ = _check_trials(scores, labels)
        self.order = np.argsort(s, kind="stable")
        s = s[self.order]
        self.y = y[self.order]
        self.thr = np.unique(s)
        # Trials strictly below each threshold.
        self.below = np.searchsorted(s, self.thr, side="left")

    def error_rates(self, weights=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """error_rates' (miss, false alarm, thresholds) with trial weights (default 1)."""
        w = np.ones(self.y.size) if weights is None else np.asarray(weights, np.float64)[self.order]
        tar = np.concatenate([[0.0], np.cumsum(np.where(self.y, w, 0.0))])
        non = np.concatenate([[0.0], np.cumsum(np.where(self.y, 0.0, w))])
        if tar[-1] == 0:
            raise ValueError("no target trials (label 1)")
        if non[-1] == 0:
            raise ValueError("no non-target trials (label 0)")
        miss = tar[self.below] / tar[-1]
        fa = (non[-1] - non[self.below]) / non[-1]
        reject_all = np.nextafter(self.thr[-1], np.inf)
        return np.append(miss, 1.0), np.append(fa, 0.0), np.append(self.thr, reject_all)

    def summary(self, weights=None) -> dict[str, float]:
        """verification_summary of the trials with `weights`."""
        miss, fa, thr = self.error_rates(weights)
        return {"eer": _eer_at(miss, fa, thr)[0], "min_dcf_p01": _min_dcf_at(miss, fa, 0.01),
                "min_dcf_p05": _min_dcf_at(miss, fa, 0.05)}


def _eer_index(miss: np.ndarray, fa: np.ndarray) -> int:
    """First operating point with miss >= false alarm (always >= 1: point 0 has miss 0, fa 1)."""
    return int(np.argmax(miss >= fa))


def eer(scores, labels, weights=None) -> tuple[float, float]:
    """(equal error rate as a fraction, threshold where miss == false alarm).

    Miss rises and false alarm falls with the threshold, so they cross once; the crossing is
    found by linear interpolation between the two operating points around it (the ROC convex
    segment), which is what interpolating sklearn's roc_curve gives as well.
    """
    return _eer_at(*error_rates(scores, labels, weights))


def _eer_at(miss: np.ndarray, fa: np.ndarray, thr: np.ndarray) -> tuple[float, float]:
    k = _eer_index(miss, fa)
    d0, d1 = fa[k - 1] - miss[k - 1], fa[k] - miss[k]  # d0 > 0 >= d1
    alpha = d0 / (d0 - d1)
    rate = miss[k - 1] + alpha * (miss[k] - miss[k - 1])
    threshold = thr[k - 1] + alpha * (thr[k] - thr[k - 1])
    return float(rate), float(threshold)


def min_dcf(scores, labels, p_target: float, c_miss: float = 1.0, c_fa: float = 1.0,
            weights=None) -> float:
    """Normalised minimum detection cost function (NIST SRE).

    min over thresholds of c_miss*p_target*P_miss + c_fa*(1-p_target)*P_fa, divided by the cost
    of the better trivial system, min(c_miss*p_target, c_fa*(1-p_target)). error_rates includes
    accept-all and reject-all, so the result is <= 1; 0 means perfectly separated scores.
    """
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    if c_miss <= 0 or c_fa <= 0:
        raise ValueError("c_miss and c_fa must be positive")
    miss, fa, _ = error_rates(scores, labels, weights)
    return _min_dcf_at(miss, fa, p_target, c_miss, c_fa)


def _min_dcf_at(miss: np.ndarray, fa: np.ndarray, p_target: float, c_miss: float = 1.0,
                c_fa: float = 1.0) -> float:
    cost = c_miss * p_target * miss + c_fa * (1.0 - p_target) * fa
    return float(cost.min() / min(c_miss * p_target, c_fa * (1.0 - p_target)))


def det_points(scores, labels, max_points: int = 200) -> dict:
    """DET/ROC curve downsampled for plotting: {"fpr", "fnr", "threshold"} lists of floats.

    Keeps at most max_points operating points (thresholds ascending): evenly spaced ones, which
    include both ends, plus the two points either side of the EER crossing.
    """
    if max_points < 4:
        raise ValueError(f"max_points must be >= 4 (two ends + EER region), got {max_points}")
    miss, fa, thr = error_rates(scores, labels)
    n = thr.size
    if n > max_points:
        k = _eer_index(miss, fa)
        spaced = np.linspace(0, n - 1, max_points - 2).round().astype(np.int64)
        keep = np.unique(np.concatenate([spaced, [k - 1, k]]))
        miss, fa, thr = miss[keep], fa[keep], thr[keep]
    return {"fpr": fa.tolist(), "fnr": miss.tolist(), "threshold": thr.tolist()}


def verification_summary(scores, labels, weights=None) -> dict[str, float]:
    """eer, min_dcf_p01 and min_dcf_p05 of trials from one sort (RankedTrials.summary for
    many weightings of the same trials)."""
    s, y, w = _check_trials(scores, labels, weights)
    return RankedTrials(s, y).summary(w)
