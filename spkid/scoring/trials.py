"""Which pairs are scored: all same-speaker pairs of a set of utterances plus a seeded
sample of different-speaker ones, or the pairs a trial list names."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spkid.core.errors import DataError, StaleInputError
from spkid.data.manifest import ManifestRow
from spkid.data.sources.trials import read_trials_list, trial_list_digest, trial_lines

# Below this many item pairs, sample non-targets from the full pair list (exact and simple);
# above it, draw random pairs and reject bad ones, so memory stays O(trials), not O(n^2).
_ENUMERATE_PAIRS_MAX = 1_000_000


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


def unseen_trial_lists(rows: list[ManifestRow], meta: dict, *, seed: int,
                       nontarget_ratio: float, max_trials: int) -> dict[str, tuple]:
    """{list name: (i, j, label) int64 arrays} of trials over the unseen-speaker recordings
    `rows` and their meta (spkid.data.sources.unseen), in the order the params gave the
    lists (the calibration list last): for a folder, {"verify": all same-speaker pairs plus
    sampled different ones}; else the pairs each trial list names (label 1 = same speaker)."""
    kind = meta.get("kind")
    if kind == "dir":
        return {"verify": sample_trials([r.speaker for r in rows], seed, nontarget_ratio,
                                        max_trials)}
    if kind != "trials":
        raise ValueError(f"no verification trials (kind {kind!r})")
    by_id = meta.get("keys") == "utterance_id"  # a Kaldi folder's lists name utterances
    where = {(r.utterance_id if by_id else r.path): k for k, r in enumerate(rows)}
    return {entry["name"]: _listed_pairs(entry, where, by_id, meta.get("verify_dir"))
            for entry in meta["lists"]}


def _listed_pairs(entry: dict, where: dict, by_id: bool, verify_dir: str | None):
    trials = Path(entry["trials"])
    if not trials.is_file():
        raise DataError(f"{trials}: trial list not found")
    if trial_list_digest(trials) != entry.get("trials_sha256"):
        raise StaleInputError(f"{trials}: trial list changed since it was scanned")
    if by_id:
        pairs = [(label, a, b) for _, label, a, b in trial_lines(trials)]
    else:
        pairs = [(label, str(a), str(b)) for label, a, b in read_trials_list(trials, verify_dir)]
    index = []
    for label, a, b in pairs:
        if a not in where or b not in where:
            raise StaleInputError(f"{a if a not in where else b}: named by {trials} but not "
                                  "in the verification manifest")
        index.append((where[a], where[b], label))
    arr = np.asarray(index, dtype=np.int64).reshape(-1, 3)
    return arr[:, 0], arr[:, 1], arr[:, 2]
