"""Speaker-verification metrics (EER, minDCF, DET curve), trial-list sampling and top-k accuracy.

Numpy only, so evaluation does not depend on scikit-learn's version (the tests check against it).
Convention throughout: labels 1 = target (same speaker), 0 = non-target; a trial is accepted
as target when its score >= threshold, so a higher score means "more likely the same speaker".
"""

from __future__ import annotations

import numpy as np

# Below this many item pairs, sample non-targets from the full pair list (exact and simple);
# above it, draw random pairs and reject bad ones, so memory stays O(trials), not O(n^2).
_ENUMERATE_PAIRS_MAX = 1_000_000


def _check_trials(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length: {s.size} vs {y.size}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (non-target) or 1 (target)")
    y = y.astype(bool)
    if not y.any():
        raise ValueError("no target trials (label 1)")
    if y.all():
        raise ValueError("no non-target trials (label 0)")
    return s, y


def error_rates(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(miss_rate, false_alarm_rate, thresholds) at every distinct score, ascending.

    Threshold t accepts every trial with score >= t, so tied scores are always accepted or
    rejected together (no operating point splits a tie). The first threshold (the lowest
    score) accepts everything (miss 0, false alarm 1); one extra final threshold just above
    the highest score rejects everything (miss 1, false alarm 0), so the curve is complete.
    """
    s, y = _check_trials(scores, labels)
    tar, non = np.sort(s[y]), np.sort(s[~y])
    thr = np.unique(s)
    # searchsorted(side="left") counts the scores strictly below each threshold.
    miss = np.searchsorted(tar, thr, side="left") / tar.size
    fa = (non.size - np.searchsorted(non, thr, side="left")) / non.size
    reject_all = np.nextafter(thr[-1], np.inf)
    return np.append(miss, 1.0), np.append(fa, 0.0), np.append(thr, reject_all)


def _eer_index(miss: np.ndarray, fa: np.ndarray) -> int:
    """First operating point with miss >= false alarm (always >= 1: point 0 has miss 0, fa 1)."""
    return int(np.argmax(miss >= fa))


def eer(scores, labels) -> tuple[float, float]:
    """(equal error rate as a fraction, threshold where miss == false alarm).

    Miss rises and false alarm falls with the threshold, so they cross once; the crossing is
    found by linear interpolation between the two operating points around it (the ROC convex
    segment), which is what interpolating sklearn's roc_curve gives as well.
    """
    miss, fa, thr = error_rates(scores, labels)
    k = _eer_index(miss, fa)
    d0, d1 = fa[k - 1] - miss[k - 1], fa[k] - miss[k]  # d0 > 0 >= d1
    alpha = d0 / (d0 - d1)
    rate = miss[k - 1] + alpha * (miss[k] - miss[k - 1])
    threshold = thr[k - 1] + alpha * (thr[k] - thr[k - 1])
    return float(rate), float(threshold)


def min_dcf(scores, labels, p_target: float, c_miss: float = 1.0, c_fa: float = 1.0) -> float:
    """Normalised minimum detection cost function (NIST SRE).

    min over thresholds of c_miss*p_target*P_miss + c_fa*(1-p_target)*P_fa, divided by the cost
    of the better trivial system, min(c_miss*p_target, c_fa*(1-p_target)). error_rates includes
    accept-all and reject-all, so the result is <= 1; 0 means perfectly separated scores.
    """
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    if c_miss <= 0 or c_fa <= 0:
        raise ValueError("c_miss and c_fa must be positive")
    miss, fa, _ = error_rates(scores, labels)
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


def _target_pairs(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (i, j), i < j, with codes[i] == codes[j]."""
    order = np.argsort(codes, kind="stable")  # items grouped by speaker, ascending within a group
    starts = np.flatnonzero(np.r_[True, np.diff(codes[order]) != 0])
    ends = np.r_[starts[1:], codes.size]
    pi, pj = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for a, b in zip(starts, ends):
        if b - a > 1:
            u, v = np.triu_indices(b - a, 1)
            pi.append(order[a + u])
            pj.append(order[a + v])
    return np.concatenate(pi), np.concatenate(pj)


def _nontarget_pairs(codes: np.ndarray, count: int, rng: np.random.Generator):
    """`count` distinct (i, j), i < j, with codes[i] != codes[j], uniformly without replacement."""
    n = codes.size
    if count == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    if n * (n - 1) // 2 <= _ENUMERATE_PAIRS_MAX:
        i, j = np.triu_indices(n, 1)
        ok = codes[i] != codes[j]
        i, j = i[ok], j[ok]
        pick = rng.choice(i.size, size=count, replace=False)
        return i[pick].astype(np.int64), j[pick].astype(np.int64)
    # Rejection sampling: draw pairs uniformly, drop self/same-speaker pairs and repeats. The first
    # `count` distinct pairs in draw order are a uniform sample without replacement.
    keys = np.empty(0, np.int64)
    while True:
        draw = rng.integers(0, n, size=(2, int(1.2 * count) + 1000))
        i, j = draw.min(axis=0), draw.max(axis=0)
        ok = codes[i] != codes[j]  # also drops i == j
        keys = np.concatenate([keys, i[ok] * n + j[ok]])
        _, first = np.unique(keys, return_index=True)
        keys = keys[np.sort(first)]
        if keys.size >= count:
            keys = keys[:count]
            return keys // n, keys % n


def sample_trials(
    speakers: list, seed: int, nontarget_ratio: float, max_trials: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Verification trials over items, item k spoken by speakers[k]: (i, j, label) int64 arrays.

    All same-speaker pairs (label 1) plus nontarget_ratio times as many distinct different-speaker
    pairs (label 0; at least 1 if any exist, at most as many as exist), drawn with `seed`. If that
    exceeds max_trials, both kinds are subsampled proportionally (keeping >= 1 of each when
    possible, so EER stays defined). Pairs have i < j and are sorted by (i, j).
    Same-speaker pairs are enumerated (sum of squared per-speaker counts); different-speaker
    pairs are not, for large n, so n of tens of thousands of items is fine.
    """
    if nontarget_ratio <= 0:
        raise ValueError(f"nontarget_ratio must be > 0, got {nontarget_ratio}")
    if max_trials < 1:
        raise ValueError(f"max_trials must be >= 1, got {max_trials}")
    _, codes = np.unique(np.asarray(speakers), return_inverse=True)
    codes = codes.astype(np.int64).ravel()
    n = codes.size
    rng = np.random.default_rng(seed)

    ti, tj = _target_pairs(codes)
    n_tar = ti.size
    n_non_exist = n * (n - 1) // 2 - n_tar
    n_non = min(max(1, round(nontarget_ratio * n_tar)), n_non_exist)

    total = n_tar + n_non
    if total > max_trials:
        keep_tar = round(max_trials * n_tar / total)
        if n_tar and n_non and max_trials >= 2:
            keep_tar = min(max(keep_tar, 1), max_trials - 1)
        n_non = max_trials - keep_tar
        pick = np.sort(rng.choice(n_tar, size=keep_tar, replace=False))
        ti, tj = ti[pick], tj[pick]

    ni, nj = _nontarget_pairs(codes, n_non, rng)
    i = np.concatenate([ti, ni]).astype(np.int64)
    j = np.concatenate([tj, nj]).astype(np.int64)
    label = np.concatenate([np.ones(ti.size, np.int64), np.zeros(ni.size, np.int64)])
    order = np.lexsort((j, i))
    return i[order], j[order], label[order]


def top_k_accuracy(logits, labels, k: int) -> float:
    """Fraction of rows whose true class is among the k highest logits (k clipped to #classes).

    A row counts as a hit when fewer than k logits are strictly greater than the true class's,
    so ties at the boundary are resolved in the model's favour, independent of class order.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels).ravel()
    if z.ndim != 2 or z.shape[0] != y.size or y.size == 0:
        raise ValueError(f"need logits (N, C) and N labels with N > 0, got {z.shape} and {y.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if y.min() < 0 or y.max() >= z.shape[1]:
        raise ValueError("labels out of range for the number of classes")
    k = min(k, z.shape[1])
    true = z[np.arange(y.size), y][:, None]
    return float(np.mean((z > true).sum(axis=1) < k))
