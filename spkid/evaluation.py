"""Scoring a set of labelled utterances: closed-set accuracy from the classifier, and
open-set verification (EER, minDCF) from cosine scores of embedding pairs."""

from __future__ import annotations

import numpy as np

from spkid import metrics


def cosine_scores(emb: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return np.einsum("nd,nd->n", unit[i], unit[j])


def verification(scores: np.ndarray, labels: np.ndarray) -> tuple[dict, dict]:
    """(metrics, DET curve) for trial scores; metrics hold eer, min_dcf_p01/p05, trials."""
    eer, threshold = metrics.eer(scores, labels)
    result = {"eer": eer, "eer_threshold": threshold,
              "min_dcf_p01": metrics.min_dcf(scores, labels, 0.01),
              "min_dcf_p05": metrics.min_dcf(scores, labels, 0.05),
              "trials": int(len(labels)), "target_trials": int(labels.sum())}
    return result, metrics.det_points(scores, labels)


def score_role(emb: np.ndarray, logits: np.ndarray, speaker_ids: np.ndarray, *, seed: int,
               nontarget_ratio: float, max_trials: int) -> tuple[dict, dict | None]:
    """Accuracy plus verification over all same-speaker pairs and sampled different ones."""
    out = {"utterances": int(len(speaker_ids)),
           "accuracy_top1": metrics.top_k_accuracy(logits, speaker_ids, 1),
           "accuracy_top5": metrics.top_k_accuracy(logits, speaker_ids, 5)}
    i, j, labels = metrics.sample_trials(list(speaker_ids), seed, nontarget_ratio, max_trials)
    if labels.sum() == 0 or labels.sum() == len(labels):
        # Verification needs both kinds of trial; say so instead of inventing a number.
        out.update({"eer": None, "min_dcf_p01": None, "min_dcf_p05": None, "trials": int(len(labels))})
        return out, None
    result, det = verification(cosine_scores(emb, i, j), labels)
    out.update(result)
    return out, det
