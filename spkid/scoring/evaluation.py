"""Scoring a set of labelled utterances: closed-set accuracy from the classifier, and
open-set verification (EER, minDCF) from cosine scores of embedding pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spkid.core.atomic import write_json
from spkid.scoring.metrics import det_points, eer, min_dcf
from spkid.scoring.norm import cosine_scores
from spkid.scoring.trials import sample_trials, unseen_trials

ROLES = ("val", "test")


def verification(scores: np.ndarray, labels: np.ndarray) -> tuple[dict, dict]:
    """(metrics, DET curve) for trial scores; metrics hold eer, min_dcf_p01/p05, trials."""
    rate, threshold = eer(scores, labels)
    result = {"eer": rate, "eer_threshold": threshold,
              "min_dcf_p01": min_dcf(scores, labels, 0.01),
              "min_dcf_p05": min_dcf(scores, labels, 0.05),
              "trials": int(len(labels)), "target_trials": int(labels.sum())}
    return result, {**det_points(scores, labels), "hist": score_histogram(scores, labels)}


def score_histogram(scores: np.ndarray, labels: np.ndarray, bins: int = 80) -> dict:
    """Counts of target and non-target scores over [-1, 1] (cosine), for pictures."""
    edges = np.linspace(-1.0, 1.0, bins + 1)
    clipped = np.clip(scores, -1.0, 1.0)
    return {"bins": edges.tolist(),
            "target": np.histogram(clipped[labels == 1], edges)[0].tolist(),
            "nontarget": np.histogram(clipped[labels == 0], edges)[0].tolist()}


def score_role(emb: np.ndarray, true_rank: np.ndarray, speaker_ids: np.ndarray, *, seed: int,
               nontarget_ratio: float, max_trials: int, norm=None) -> tuple[dict, dict | None]:
    """Accuracy (from each view's rank of its true class) plus verification over all
    same-speaker pairs and sampled different ones. An empty role has null metrics.
    `norm` (a spkid.scoring.norm.ScoreNorm) adds the normalised scores' metrics beside."""
    n = len(speaker_ids)
    out = {"utterances": int(n),
           "accuracy_top1": float(np.mean(true_rank < 1)) if n else None,
           "accuracy_top5": float(np.mean(true_rank < 5)) if n else None}
    i, j, labels = sample_trials(list(speaker_ids), seed, nontarget_ratio, max_trials)
    result, det = score_trials(emb, i, j, labels, norm)
    out.update(result)
    return out, det


def score_trials(emb: np.ndarray, i: np.ndarray, j: np.ndarray, labels: np.ndarray, norm=None
                 ) -> tuple[dict, dict | None]:
    """Verification metrics of given trials; null metrics when one kind of trial is missing.
    With `norm` (spkid.scoring.norm.ScoreNorm), the metrics of each normalised score go
    beside the raw cosine ones, under its name ("mean_sub", "asnorm"); the DET curve is
    the raw one."""
    labels = np.asarray(labels, np.int64)
    result, det = _trial_metrics(cosine_scores(emb, i, j), labels)
    if norm is not None:
        for name, scores in norm.scores(emb, i, j).items():
            result[name] = _trial_metrics(scores, labels)[0]
    return result, det


def _trial_metrics(scores: np.ndarray, labels: np.ndarray) -> tuple[dict, dict | None]:
    if labels.sum() == 0 or labels.sum() == len(labels):
        # Verification needs both kinds of trial; say so instead of inventing a number.
        return {"eer": None, "min_dcf_p01": None, "min_dcf_p05": None,
                "trials": int(len(labels)), "target_trials": int(labels.sum())}, None
    return verification(scores, labels)


def score_roles(scoring, views: dict, e, norm) -> tuple[dict, dict, dict]:
    """(metrics, DET curves, ViewOutputs) by role of the labelled views `views[role]`, with
    `scoring` (spkid.scoring.embedding.Scoring), the evaluate params `e` and a ScoreNorm."""
    report, curves, outputs = {}, {}, {}
    for role, part in views.items():
        outputs[role] = scored = scoring.embed(part, e.batch_frames, labels=part["speaker_id"])
        report[role], curves[role] = score_role(
            scored.embeddings, scored.true_rank, np.asarray(part["speaker_id"]), seed=e.seed,
            nontarget_ratio=e.nontarget_ratio, max_trials=e.max_trials, norm=norm)
    return report, curves, outputs


def score_unseen(scoring, rows, meta: dict, e, norm, *, progress: bool = False
                 ) -> tuple[dict, dict | None]:
    """Verification metrics and DET curve of the unseen-speaker recordings `rows` (their
    manifest and meta from spkid.data.sources.unseen): decoded, turned into log-mels with the
    model's own feature params and embedded whole."""
    i, j, labels = unseen_trials(rows, meta, seed=e.seed, nontarget_ratio=e.nontarget_ratio,
                                 max_trials=e.max_trials)
    used = np.unique(np.concatenate([i, j]))
    emb = np.zeros((len(rows), scoring.model.embedding_dim), np.float32)
    emb[used] = scoring.embed_recordings([rows[k].path for k in used], e.batch_frames,
                                         spans=[(rows[k].start, rows[k].end) for k in used],
                                         progress=progress)
    result, curve = score_trials(emb, i, j, labels, norm)
    result["recordings"] = int(len(used))
    speakers = {rows[k].speaker for k in used if rows[k].speaker is not None}
    if speakers:
        result["speakers"] = len(speakers)
    return result, curve


def det_json(curve: dict | None) -> dict:
    """A role's DET operating points as metrics/det/<role>.json holds them."""
    return {"det": [{"fpr": a, "fnr": b} for a, b in zip(curve["fpr"], curve["fnr"])]
            if curve else []}


def write_det_curves(folder, curves: dict) -> None:
    """<folder>/<role>.json for every role scored; the unseen-speaker ("verify") curve of an
    earlier run goes when this one has none."""
    (Path(folder) / "verify.json").unlink(missing_ok=True)
    for role, curve in curves.items():
        write_json(Path(folder) / f"{role}.json", det_json(curve))


def summary_text(report: dict, norm_kind: str | None) -> str:
    """The evaluate stage's one-line summary."""
    num = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
    pct = lambda x: "n/a" if x is None else f"{100 * x:.2f}%"  # noqa: E731
    text = "; ".join(f"{r}: top1 {num(report[r]['accuracy_top1'])}, EER {pct(report[r]['eer'])}"
                     for r in ROLES)
    if "verify" in report:
        v = report["verify"]
        text += f"; verify: EER {pct(v['eer'])} over {v['trials']} trials"
        if norm_kind:
            text += f" ({norm_kind} {pct(v[norm_kind]['eer'])})"
    return text
