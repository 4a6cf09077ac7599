"""Scoring a set of labelled utterances: closed-set accuracy from the classifier, and
open-set verification (EER, minDCF) from cosine scores of embedding pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spkid.core.atomic import write_json
from spkid.core.errors import DataError
from spkid.scoring.bootstrap import Bootstrap
from spkid.scoring.calibration import Calibration, calibrated_metrics, duration_quality
from spkid.scoring.metrics import RankedTrials, det_points, eer, min_dcf
from spkid.scoring.norm import ScoreNorm, cosine_scores
from spkid.core.roles import ROLES, unseen_roles
from spkid.scoring.trials import sample_trials, unseen_trial_lists



def verification(scores: np.ndarray, labels: np.ndarray, bootstrap: Bootstrap | None = None,
                 speakers: tuple | None = None) -> tuple[dict, dict]:
    """(metrics, DET curve) for trial scores; metrics hold eer, min_dcf_p01/p05, trials and,
    with `bootstrap`, their 95 % intervals (resampling the speakers (speaker_a, speaker_b)
    of the trials when given, else the trials)."""
    rate, threshold = eer(scores, labels)
    result = {"eer": rate, "eer_threshold": threshold,
              "min_dcf_p01": min_dcf(scores, labels, 0.01),
              "min_dcf_p05": min_dcf(scores, labels, 0.05),
              "trials": int(len(labels)), "target_trials": int(labels.sum())}
    if bootstrap is not None:
        result.update(bootstrap.intervals(RankedTrials(scores, labels).summary,
                                          len(labels), *(speakers or (None, None))))
    return result, {**det_points(scores, labels), "hist": score_histogram(scores, labels)}


def bootstrap_of(e) -> Bootstrap:
    """The intervals the evaluate params `e` ask for."""
    return Bootstrap(e.bootstrap_rounds, e.seed, e.bootstrap_by)


def score_histogram(scores: np.ndarray, labels: np.ndarray, bins: int = 80) -> dict:
    """Counts of target and non-target scores over [-1, 1] (cosine), for pictures."""
    edges = np.linspace(-1.0, 1.0, bins + 1)
    clipped = np.clip(scores, -1.0, 1.0)
    return {"bins": edges.tolist(),
            "target": np.histogram(clipped[labels == 1], edges)[0].tolist(),
            "nontarget": np.histogram(clipped[labels == 0], edges)[0].tolist()}


def score_role(emb: np.ndarray, true_rank: np.ndarray, speaker_ids: np.ndarray, *, seed: int,
               nontarget_ratio: float, max_trials: int, norm=None,
               bootstrap: Bootstrap | None = None) -> tuple[dict, dict | None]:
    """Accuracy (from each view's rank of its true class) plus verification over all
    same-speaker pairs and sampled different ones. An empty role has null metrics.
    `norm` (a spkid.scoring.norm.ScoreNorm) adds the normalised scores' metrics beside."""
    n = len(speaker_ids)
    out = {"utterances": int(n),
           "accuracy_top1": float(np.mean(true_rank < 1)) if n else None,
           "accuracy_top5": float(np.mean(true_rank < 5)) if n else None}
    i, j, labels = sample_trials(list(speaker_ids), seed, nontarget_ratio, max_trials)
    result, det = score_trials(emb, i, j, labels, norm, speakers=speaker_ids,
                               bootstrap=bootstrap)
    out.update(result)
    return out, det


def score_trials(emb: np.ndarray, i: np.ndarray, j: np.ndarray, labels: np.ndarray, norm=None,
                 *, speakers=None, bootstrap: Bootstrap | None = None
                 ) -> tuple[dict, dict | None]:
    """Verification metrics of given trials; null metrics when one kind of trial is missing.
    With `norm` (spkid.scoring.norm.ScoreNorm), the metrics of each normalised score go
    beside the raw cosine ones, under its name ("mean_sub", "asnorm"); the DET curve is
    the raw one. `speakers` (one per embedding, None where unknown) are what the bootstrap
    resamples, and, for training speakers, what AS-norm leaves out of each side's cohort."""
    labels = np.asarray(labels, np.int64)
    sides = None
    if speakers is not None:
        speakers = np.asarray(speakers, object)
        if not any(s is None for s in speakers[np.concatenate([i, j])]):
            sides = (speakers[i], speakers[j])
    result, det = _trial_metrics(cosine_scores(emb, i, j), labels, bootstrap, sides)
    if norm is not None:
        for name, scores in norm.scores(emb, i, j, speakers=speakers).items():
            result[name] = _trial_metrics(scores, labels, bootstrap, sides)[0]
    return result, det


def _trial_metrics(scores: np.ndarray, labels: np.ndarray, bootstrap=None, sides=None
                   ) -> tuple[dict, dict | None]:
    if labels.sum() == 0 or labels.sum() == len(labels):
        # Verification needs both kinds of trial; say so instead of inventing a number.
        return {"eer": None, "min_dcf_p01": None, "min_dcf_p05": None,
                "trials": int(len(labels)), "target_trials": int(labels.sum())}, None
    return verification(scores, labels, bootstrap, sides)


def score_roles(scoring, views: dict, e, norm) -> tuple[dict, dict, dict]:
    """(metrics, DET curves, ViewOutputs) by role of the labelled views `views[role]`, with
    `scoring` (spkid.scoring.embedding.Scoring), the evaluate params `e` and a ScoreNorm."""
    report, curves, outputs = {}, {}, {}
    for role, part in views.items():
        outputs[role] = scored = scoring.embed(part, e.batch_frames, labels=part["speaker_id"])
        report[role], curves[role] = score_role(
            scored.embeddings, scored.true_rank, np.asarray(part["speaker_id"]), seed=e.seed,
            nontarget_ratio=e.nontarget_ratio, max_trials=e.max_trials, norm=norm,
            bootstrap=bootstrap_of(e))
    return report, curves, outputs


def score_unseen(scoring, rows, meta: dict, e, norm, *, progress: bool = False
                 ) -> tuple[dict, dict]:
    """(metrics, DET curves) by role of the unseen-speaker recordings `rows` (their manifest
    and meta from spkid.data.sources.unseen), decoded, turned into log-mels with the model's
    own feature params and embedded whole, each once however many lists name it. The first
    list (or a folder's sampled trials) is the role "verify", whose threshold export ships;
    each further list is "verify_<name>". The calibration to LLRs is fitted on the
    calibration list when the params name one, else on a seeded part of each list's speakers."""
    lists = unseen_trial_lists(rows, meta, seed=e.seed, nontarget_ratio=e.nontarget_ratio,
                               max_trials=e.max_trials)
    used = np.unique(np.concatenate([k for i, j, _ in lists.values() for k in (i, j)]))
    emb = np.zeros((len(rows), scoring.model.embedding_dim), np.float32)
    emb[used] = scoring.embed_recordings([rows[k].path for k in used], e.batch_frames,
                                         spans=[(rows[k].start, rows[k].end) for k in used],
                                         progress=progress)
    spoken_by = np.asarray([r.speaker for r in rows], object)
    shipped = norm or ScoreNorm()
    # The scores an exported model decides with, the ones `spkid verify` calibrates.
    centred = shipped.center(emb)
    decision = lambda i, j: shipped.decision_scores(centred, i, j)  # noqa: E731
    quality = trial_quality(rows, e.calibration_quality)
    purpose = {entry["name"]: entry["purpose"] for entry in meta.get("lists", [])}
    fitted = None
    for name in [n for n in lists if purpose.get(n) == "calibration"]:
        fitted = _fit_calibration(decision, quality, *lists.pop(name), meta, name,
                                  e.calibration_quality)
    report, curves = {}, {}
    for k, (name, (i, j, labels)) in enumerate(lists.items()):
        role = "verify" if k == 0 else f"verify_{name}"
        report[role], curves[role] = score_trials(emb, i, j, labels, norm,
                                                  bootstrap=bootstrap_of(e), speakers=spoken_by)
        side = np.concatenate([i, j])
        report[role]["recordings"] = int(len(np.unique(side)))
        speakers = {s for s in spoken_by[side] if s is not None}
        if speakers:
            report[role]["speakers"] = len(speakers)
        if meta.get("kind") == "trials":
            report[role]["list"] = name
        if fitted is not None:
            calibrated = _measured_calibration(fitted, decision(i, j), labels, quality(i, j))
        elif e.calibration_speakers and None not in spoken_by[side]:
            calibrated = calibrate_on_speakers(decision(i, j), labels, spoken_by[i],
                                               spoken_by[j], e.calibration_speakers, e.seed,
                                               quality=quality(i, j),
                                               quality_kind=e.calibration_quality)
        else:
            calibrated = None
        if calibrated is not None:
            report[role]["calibration"] = {"score": shipped.kind or "cosine", **calibrated}
    return report, curves


def trial_quality(rows, kind: str):
    """quality(i, j): the (N, k) quality measures of trials (i, j) over the unseen-speaker
    `rows` that evaluate.calibration_quality `kind` asks for (None for "none")."""
    if kind == "none":
        return lambda i, j: None
    seconds = np.array([np.nan if r.duration is None and r.end is None else
                        (r.end if r.end is not None else r.duration) - (r.start or 0.0)
                        for r in rows])
    if np.isnan(seconds).any():
        raise DataError(f"{rows[int(np.flatnonzero(np.isnan(seconds))[0])].path}: no duration "
                        "in the verification manifest for evaluate.calibration_quality "
                        "(run download again)")
    return lambda i, j: duration_quality(seconds[i], seconds[j])


def _fit_calibration(decision, quality, i, j, labels, meta: dict, name: str, kind: str
                     ) -> tuple[Calibration, dict]:
    """The calibration fitted on every trial of the calibration list `name`."""
    if labels.min() == labels.max():
        file = next(e["trials"] for e in meta["lists"] if e["name"] == name)
        raise DataError(f"{file}: the calibration list (evaluate.calibration_trials) needs "
                        "both same-speaker and different-speaker trials")
    return Calibration.fit(decision(i, j), labels, quality(i, j), kind=kind), {
        "fit_list": name, "fit_trials": int(len(labels))}


def _measured_calibration(fitted, scores: np.ndarray, labels: np.ndarray, quality
                          ) -> dict | None:
    """A list's calibration block when a calibration list was fitted: measured on all its
    trials (None when they lack a kind)."""
    calibration, about = fitted
    if labels.min() == labels.max():
        return None
    return {**calibration.as_dict(), **about, "trials": int(len(labels)),
            "target_trials": int(labels.sum()),
            **calibrated_metrics(calibration, scores, labels, quality)}


def calibrate_on_speakers(scores: np.ndarray, labels: np.ndarray, speaker_a, speaker_b,
                          fraction: float, seed: int, *, quality: np.ndarray | None = None,
                          quality_kind: str | None = None) -> dict | None:
    """Calibration fitted on the trials among a seeded `fraction` of the speakers and
    measured on the trials among the others (trials across the two parts are left out):
    speaker-disjoint, as a calibration must be to say anything about new speakers. None
    when either part lacks a kind of trial."""
    names = sorted(set(speaker_a) | set(speaker_b))
    count = min(len(names) - 2, max(2, round(fraction * len(names))))
    if count < 2:
        return None
    fit = set(np.random.default_rng([seed, 7]).permutation(names)[:count].tolist())
    in_a = np.array([s in fit for s in speaker_a])
    in_b = np.array([s in fit for s in speaker_b])
    parts = {"fit": in_a & in_b, "test": ~in_a & ~in_b}
    if any(labels[k].min() == labels[k].max() for k in parts.values() if k.any()) or \
            not all(k.any() for k in parts.values()):
        return None
    part = lambda x, k: None if x is None else x[parts[k]]  # noqa: E731
    calibration = Calibration.fit(part(scores, "fit"), part(labels, "fit"),
                                  part(quality, "fit"), kind=quality_kind)
    test = parts["test"]
    return {**calibration.as_dict(),
            "fit_speakers": count, "fit_trials": int(parts["fit"].sum()),
            "speakers": len(names) - count, "trials": int(test.sum()),
            "target_trials": int(labels[test].sum()),
            **calibrated_metrics(calibration, scores[test], labels[test], part(quality, "test"))}


def det_json(curve: dict | None) -> dict:
    """A role's DET operating points as metrics/det/<role>.json holds them."""
    return {"det": [{"fpr": a, "fnr": b} for a, b in zip(curve["fpr"], curve["fnr"])]
            if curve else []}


def write_det_curves(folder, curves: dict) -> None:
    """<folder>/<role>.json for every role scored. The unseen-speaker curves ("verify*") of
    an earlier run are removed first, so a list no longer scored leaves no curve behind."""
    for stale in Path(folder).glob("verify*.json"):
        stale.unlink()
    for role, curve in curves.items():
        write_json(Path(folder) / f"{role}.json", det_json(curve))


def summary_text(report: dict, norm_kind: str | None) -> str:
    """The evaluate stage's one-line summary."""
    num = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
    pct = lambda x: "n/a" if x is None else f"{100 * x:.2f}%"  # noqa: E731
    text = "; ".join(f"{r}: top1 {num(report[r]['accuracy_top1'])}, EER {pct(report[r]['eer'])}"
                     for r in ROLES)
    for role in unseen_roles(report):
        v = report[role]
        text += f"; {role}: EER {pct(v['eer'])} over {v['trials']} trials"
        if norm_kind:
            text += f" ({norm_kind} {pct(v[norm_kind]['eer'])})"
    return text


def shipped_threshold(report: dict, kind: str | None) -> dict:
    """The operating point a model is exported with ("shipped" in metrics/eval.json): the
    EER threshold of the score `kind` (None = raw cosine) of the unseen-speaker role
    ("verify") when there is one, since `verify` is used on speakers the model never saw;
    else val's, else test's. Those come from trials between training speakers, whose EER
    point need not be new speakers' (BENCHMARKS: on held-out speakers val's threshold gave
    6.6 % false accepts for 0.7 % false rejects), and `seen_speakers` says so."""
    for role in ("verify", "val", "test"):
        scores = report.get(role, {})
        scores = scores.get(kind, {}) if kind else scores
        if scores.get("eer_threshold") is not None:
            out = {"eer_threshold": scores["eer_threshold"], "role": role,
                   "score": kind or "cosine", "seen_speakers": role != "verify"}
            calibration = report[role].get("calibration") or {}
            if calibration.get("score") == out["score"]:  # scores to LLRs, for `spkid verify`
                out["calibration"] = Calibration.from_dict(calibration).as_dict()
            return out
    return {"eer_threshold": None, "role": None, "score": kind or "cosine", "seen_speakers": None}
