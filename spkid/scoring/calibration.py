"""Scores as log-likelihood ratios: linear logistic-regression calibration (as BOSARIS and
WeSpeaker's score_calibration.py), and the measures that judge it.

A calibrated score is an LLR, log p(score | same speaker) / p(score | different): the
Bayes decision for a prior P_target (with unit costs) accepts when LLR >= log((1 - P) / P),
whatever the model. `cllr` is the cost of such decisions over every prior at once (0 is
perfect, 1 is a system that always says LLR 0); `min_cllr` is the cllr of the best
monotone recalibration (pool adjacent violators), so `cllr - min_cllr` is what
miscalibration costs. `actual_dcf` is the DCF of Bayes decisions at P_target, beside the
min_dcf of the best threshold chosen after the fact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spkid.scoring.metrics import eer, min_dcf


@dataclass(frozen=True)
class Calibration:
    """llr = slope * score + offset (+ quality_weights . quality, with a quality measure).

    With `quality` "duration" (WeSpeaker's quality measure functions, QMF) the fit also
    weighs each trial's `duration_quality`: a short recording's scores spread wider, so
    the same cosine says less about a 1 s pair than about a 10 s one."""
    slope: float
    offset: float
    quality: str | None = None
    quality_weights: tuple[float, ...] = ()

    @classmethod
    def fit(cls, scores, labels, quality: np.ndarray | None = None, *,
            kind: str | None = None) -> "Calibration":
        """Logistic regression of labels on scores (and the (N, k) `quality` measures of
        kind `kind`), targets and non-targets weighted to an effective prior of 0.5, so the
        log-odds it fits is the LLR itself."""
        from sklearn.linear_model import LogisticRegression  # `spkid verify` only applies one
        s, y = np.asarray(scores, np.float64).reshape(-1, 1), np.asarray(labels, np.int64)
        if y.min() == y.max():
            raise ValueError("calibration needs target and non-target trials")
        if quality is not None:
            if kind is None:
                raise ValueError("quality measures need their kind")
            s = np.hstack([s, np.asarray(quality, np.float64).reshape(len(y), -1)])
        weights = np.where(y == 1, 0.5 / y.sum(), 0.5 / (len(y) - y.sum())) * len(y)
        model = LogisticRegression(C=np.inf, solver="lbfgs", tol=1e-10, max_iter=1000)
        model.fit(s, y, sample_weight=weights)
        coef = model.coef_[0].tolist()
        return cls(coef[0], float(model.intercept_[0]),
                   kind if quality is not None else None, tuple(coef[1:]))

    def llr(self, scores, quality: np.ndarray | None = None) -> np.ndarray:
        out = self.slope * np.asarray(scores, np.float64) + self.offset
        if self.quality is None:
            return out
        if quality is None:
            raise ValueError(f"this calibration needs the trials' {self.quality} quality measures")
        return out + np.asarray(quality, np.float64).reshape(len(out), -1) @ np.asarray(
            self.quality_weights)

    def as_dict(self) -> dict:
        """What metrics/eval.json and model.json keep of it."""
        return {"slope": self.slope, "offset": self.offset, **(
            {"quality": self.quality, "quality_weights": list(self.quality_weights)}
            if self.quality else {})}

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        return cls(d["slope"], d["offset"], d.get("quality"), tuple(d.get("quality_weights", ())))


def duration_quality(seconds_a, seconds_b) -> np.ndarray:
    """(N, 2) quality measures of trials from the two sides' speech durations (seconds):
    log of the shorter and log of the longer, as WeSpeaker's QMF takes them (durations
    under 0.1 s count as 0.1 s)."""
    a = np.maximum(np.asarray(seconds_a, np.float64), 0.1)
    b = np.maximum(np.asarray(seconds_b, np.float64), 0.1)
    return np.log(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1))


def bayes_threshold(p_target: float) -> float:
    """The LLR above which a Bayes decision with unit costs says "same speaker"."""
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    return float(np.log((1.0 - p_target) / p_target))


def cllr(llr, labels) -> float:
    """Log-likelihood-ratio cost in bits (Brümmer and du Preez 2006)."""
    llr, y = np.asarray(llr, np.float64), np.asarray(labels).astype(bool)
    return float(0.5 * (np.mean(np.logaddexp(0.0, -llr[y])) + np.mean(np.logaddexp(0.0, llr[~y])))
                 / np.log(2.0))


def min_cllr(scores, labels) -> float:
    """cllr after the best monotone map of scores to LLRs (pool adjacent violators)."""
    from sklearn.isotonic import IsotonicRegression  # as in Calibration.fit
    s, y = np.asarray(scores, np.float64), np.asarray(labels, np.float64)
    posterior = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True).fit_transform(s, y)
    prior = y.mean()
    with np.errstate(divide="ignore"):
        llr = (np.log(posterior) - np.log1p(-posterior)) - np.log(prior / (1.0 - prior))
    # A block of non-targets alone gets posterior 0 (LLR -inf): it costs them nothing, and
    # no target is in it, so the cost stays finite.
    return cllr(llr, y)


def actual_dcf(llr, labels, p_target: float) -> float:
    """Normalised DCF of Bayes decisions at `p_target` (unit costs), as min_dcf normalises."""
    llr, y = np.asarray(llr, np.float64), np.asarray(labels).astype(bool)
    accept = llr >= bayes_threshold(p_target)
    cost = p_target * np.mean(~accept[y]) + (1.0 - p_target) * np.mean(accept[~y])
    return float(cost / min(p_target, 1.0 - p_target))


def calibrated_metrics(calibration: Calibration, scores, labels,
                       quality: np.ndarray | None = None) -> dict:
    """What the calibrated scores of held-out trials give: cllr, min_cllr, actual beside
    minimum DCF at P_target 0.01 and 0.05, and the EER of these trials. The minimum
    measures and the EER are those of the LLRs, which order the trials as the scores do
    unless a quality measure reorders them."""
    llr = calibration.llr(scores, quality)
    ranked = llr if calibration.quality else scores
    out = {"cllr": cllr(llr, labels), "min_cllr": min_cllr(ranked, labels)}
    for p, name in ((0.01, "p01"), (0.05, "p05")):
        out[f"act_dcf_{name}"] = actual_dcf(llr, labels, p)
        out[f"min_dcf_{name}"] = min_dcf(ranked, labels, p)
    out["eer"] = eer(ranked, labels)[0]
    return out
