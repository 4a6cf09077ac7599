"""Score normalisation for cosine verification, as in WeSpeaker (wespeaker/bin/score_norm.py):

* mean subtraction: the mean embedding of training utterances is subtracted from every
  embedding before the cosine; it removes the direction all speakers share.
* adaptive s-norm (AS-norm, Matejka et al. 2017): each side of a trial is compared with a
  cohort of training-speaker embeddings (one per speaker: the mean of its utterances'
  embeddings, as WeSpeaker's cohort); the mean and standard deviation of its `top_n`
  highest cohort scores normalise the trial score,
      s' = ((s - mu_e) / sd_e + (s - mu_t) / sd_t) / 2.
  With top_n at least the cohort size it is plain s-norm. The cohort is centred with the
  same training mean when mean subtraction is on.

Numpy only, on plain arrays; spkid.scoring.evaluation scores with it. The evaluate stage embeds
the training utterances, and the exported model folder carries `score_norm.npz`, so that
`spkid verify` scores as evaluate measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spkid.core.atomic import atomic_path
from spkid.core.errors import DataError
from spkid.data.views import take_views

FILE = "score_norm.npz"
# Cohort scores are computed this many embeddings at a time: memory O(rows x cohort).
_ROWS = 4096
# A standard deviation of the top cohort scores below this is treated as this (ties).
_MIN_STD = 1e-6


def cohort_sample(speaker_ids, per_speaker: int, seed: int) -> np.ndarray:
    """Sorted indices of at most `per_speaker` utterances of each speaker (all when 0),
    chosen with `seed`: the training utterances whose embeddings give the mean and cohort."""
    ids = np.asarray(speaker_ids)
    if not per_speaker:
        return np.arange(len(ids))
    rng = np.random.default_rng(seed)
    # Each speaker's rows in ascending order, speakers in sorted order, in one pass.
    order = np.argsort(ids, kind="stable")
    cuts = np.flatnonzero(ids[order][1:] != ids[order][:-1]) + 1
    keep = [rows if len(rows) <= per_speaker else rng.choice(rows, per_speaker, replace=False)
            for rows in np.split(order, cuts)] if len(ids) else []
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


def speaker_means(emb: np.ndarray, speaker_ids) -> np.ndarray:
    """(speakers, D): the mean embedding of each speaker, speakers in sorted order."""
    _, codes = np.unique(np.asarray(speaker_ids), return_inverse=True)
    codes = codes.ravel()
    sums = np.zeros((codes.max() + 1 if len(codes) else 0, emb.shape[1]), np.float64)
    np.add.at(sums, codes, emb)
    return (sums / np.bincount(codes)[:, None]).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def cosine_scores(emb: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Raw cosine scores of trials (i[k], j[k]) over embeddings `emb`."""
    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return np.einsum("nd,nd->n", unit[i], unit[j])


def cohort_stats(emb: np.ndarray, cohort: np.ndarray, top_n: int,
                 leave_out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) over the `top_n` highest cosine scores of each embedding against the
    cohort (top_n clipped to the cohort size; population std, as WeSpeaker).
    `leave_out[k]` >= 0 is a cohort entry embedding k must not be compared with: its own
    speaker's, whose score would be the top one (-1: none)."""
    skip = leave_out is not None and (np.asarray(leave_out) >= 0).any()
    top_n = min(top_n, len(cohort))
    c = _unit(cohort).T
    mean, std = np.zeros(len(emb)), np.zeros(len(emb))
    for s in range(0, len(emb), _ROWS):
        scores = _unit(emb[s:s + _ROWS]) @ c
        if skip:  # a left-out entry becomes NaN if it is still among the top (a whole cohort)
            rows = np.flatnonzero(leave_out[s:s + _ROWS] >= 0)
            scores[rows, leave_out[s:s + _ROWS][rows]] = -np.inf
        top = -np.partition(-scores, top_n - 1, axis=1)[:, :top_n]
        if skip:
            top[np.isinf(top)] = np.nan
            mean[s:s + _ROWS], std[s:s + _ROWS] = np.nanmean(top, 1), np.nanstd(top, 1)
        else:
            mean[s:s + _ROWS], std[s:s + _ROWS] = top.mean(1), top.std(1)
    return mean, np.maximum(std, _MIN_STD)


@dataclass
class ScoreNorm:
    """What normalises scores: the training mean (None = not subtracted) and the AS-norm
    cohort (None = no AS-norm; centred with `mean` when that is set)."""
    mean: np.ndarray | None = None
    cohort: np.ndarray | None = None
    top_n: int = 0
    cohort_speakers: np.ndarray | None = None  # the training speaker of each cohort entry

    @classmethod
    def fit(cls, train_emb: np.ndarray, train_speakers, subtract_mean: bool,
            top_n: int) -> "ScoreNorm":
        """From embeddings of training utterances and their speakers."""
        if len(train_emb) == 0 and (subtract_mean or top_n):
            raise DataError("score normalisation needs training utterances, and there are none")
        mean = train_emb.mean(0).astype(np.float32) if subtract_mean else None
        cohort = speakers = None
        if top_n:
            cohort = speaker_means(train_emb, train_speakers)
            speakers = np.unique(np.asarray(train_speakers))
            if mean is not None:
                cohort = cohort - mean
        return cls(mean, cohort, top_n, speakers)

    @classmethod
    def from_views(cls, e, train_views: dict, embed) -> "ScoreNorm":
        """What the evaluate params `e` (subtract_mean, asnorm_top_n, cohort_per_speaker,
        seed) ask for, from the training views (column dict with speaker_id) and
        `embed(views) -> (N, D)` embeddings; nothing is embedded when both are off."""
        if not (e.subtract_mean or e.asnorm_top_n):
            return cls()
        keep = cohort_sample(train_views["speaker_id"], e.cohort_per_speaker, e.seed)
        views = take_views(train_views, keep)
        return cls.fit(embed(views), views["speaker_id"], e.subtract_mean, e.asnorm_top_n)

    @property
    def kind(self) -> str | None:
        """Name of the normalised score in metrics/eval.json: the most normalised one,
        which a model exported with this normalisation decides with."""
        return "asnorm" if self.cohort is not None else "mean_sub" if self.mean is not None else None

    def center(self, emb: np.ndarray) -> np.ndarray:
        return emb if self.mean is None else emb - self.mean

    def own_entries(self, speakers) -> np.ndarray | None:
        """The cohort entry of each embedding's speaker (`speakers`, one per embedding; -1
        where it is not a training speaker or unknown); None when none is."""
        if self.cohort_speakers is None or speakers is None:
            return None
        entry = {speaker: k for k, speaker in enumerate(self.cohort_speakers.tolist())}
        at = np.array([entry.get(s, -1) for s in np.asarray(speakers, object).tolist()], np.int64)
        return at if (at >= 0).any() else None

    def scores(self, emb: np.ndarray, i: np.ndarray, j: np.ndarray, *,
               centred: bool = False, speakers=None) -> dict[str, np.ndarray]:
        """Normalised scores of trials (i, j) over `emb` (raw embeddings, or already centred
        when `centred`): {"mean_sub": ..., "asnorm": ...}, each only when switched on.
        `speakers` (one per embedding): AS-norm leaves each training speaker's own entry
        out of its cohort, so seen-speaker trials normalise as unseen ones do."""
        emb = emb if centred else self.center(emb)
        out = {}
        s = cosine_scores(emb, i, j)
        if self.mean is not None:
            out["mean_sub"] = s
        if self.cohort is not None:
            if len(i) == 0:
                out["asnorm"] = s
                return out
            used, inverse = np.unique(np.concatenate([i, j]), return_inverse=True)
            own = self.own_entries(speakers)
            mu, sd = cohort_stats(emb[used], self.cohort, self.top_n,
                                  None if own is None else own[used])
            a, b = inverse[:len(i)], inverse[len(i):]
            out["asnorm"] = 0.5 * ((s - mu[a]) / sd[a] + (s - mu[b]) / sd[b])
        return out

    def decision_scores(self, emb: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """The scores a model exported with this normalisation decides with, for trials over
        centred embeddings: AS-norm when there is a cohort, else the cosine."""
        if self.cohort is None:
            return cosine_scores(emb, i, j)
        return self.scores(emb, i, j, centred=True)["asnorm"]

    def save(self, folder: str | Path) -> None:
        arrays = {"top_n": np.int64(self.top_n)}
        if self.mean is not None:
            arrays["mean"] = self.mean
        if self.cohort is not None:
            arrays["cohort"] = self.cohort
        if self.cohort_speakers is not None and self.cohort_speakers.dtype.kind in "iu":
            arrays["cohort_speakers"] = self.cohort_speakers
        with atomic_path(Path(folder) / FILE) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

    @classmethod
    def load(cls, folder: str | Path) -> "ScoreNorm":
        """The normalisation saved in `folder`; none (raw cosine) when it has no file."""
        path = Path(folder) / FILE
        if not path.exists():
            return cls()
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(z["mean"] if "mean" in z else None,
                           z["cohort"] if "cohort" in z else None, int(z["top_n"]),
                           z["cohort_speakers"] if "cohort_speakers" in z else None)
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"{path}: not a score normalisation file ({exc})") from None
