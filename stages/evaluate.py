"""evaluate: accuracy, EER and minDCF on val and test (full utterances) -> metrics/eval.json.

With data.verify_dir or evaluate.trials it also scores verification on unseen speakers
("verify" in metrics/eval.json): their audio (listed in data/raw/verify.parquet by the
download stage) is decoded, turned into log-mels with the model's feature params and
embedded by the trained model."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import typer

from spkid.atomic import atomic_dir, write_json
from spkid.checkpoint import load_model_dir
from spkid.index import read_views
from spkid.evaluation import embed_audio_files, extractor_for_model, score_role, score_trials
from spkid.manifest import read_manifest
from spkid.params import load_params
from spkid.plots import evaluation_plots
from spkid.score_norm import ScoreNorm
from spkid.shards import open_features
from spkid.sources.unseen import unseen_trials
from spkid.device import pick_device
from spkid.training import embed_views
from stages.common import ParamsOption, exclusive, one_line_errors, summary
from stages.layout import (CONFUSIONS, DET_DIR, EVAL_METRICS, FEATURES, MODEL, PLOTS, SCORE_NORM,
                           UNSEEN_MANIFEST, VIEWS)

app = typer.Typer(add_completion=False)
ROLES = ("val", "test")


@app.command()
@one_line_errors
@exclusive
def evaluate(params: Path = ParamsOption):
    """Score val and test; write metrics/eval.json and the DET curve."""
    started = time.perf_counter()
    p = load_params(params)
    device = pick_device(p.train.device)
    model, config = load_model_dir(MODEL, device)
    views = read_views(VIEWS, ROLES)
    store = open_features(FEATURES)
    report = {}
    # Score normalisation (issue 9): training mean / AS-norm cohort, kept for export.
    train = read_views(VIEWS, ["train"])["train"]
    norm = ScoreNorm.from_views(p.evaluate, train, lambda v: embed_views(
        model, store, v, p.evaluate.batch_frames, device).embeddings)
    with atomic_dir(SCORE_NORM) as tmp:
        norm.save(tmp)
    curves, outputs = {}, {}
    for role, part in views.items():
        outputs[role] = scored = embed_views(model, store, part, p.evaluate.batch_frames, device,
                                             labels=part["speaker_id"])
        report[role], curves[role] = score_role(
            scored.embeddings, scored.true_rank, np.asarray(part["speaker_id"]), seed=p.evaluate.seed,
            nontarget_ratio=p.evaluate.nontarget_ratio, max_trials=p.evaluate.max_trials, norm=norm)
        _write_det(role, curves[role])
    verify = _score_unseen(p, model, config, device, norm)
    if verify is not None:
        report["verify"], curves["verify"] = verify
        _write_det("verify", curves["verify"])
    else:
        (DET_DIR / "verify.json").unlink(missing_ok=True)
    write_json(EVAL_METRICS, report)
    val = outputs["val"]
    write_json(CONFUSIONS, evaluation_plots(
        PLOTS, curves, report, val_embeddings=val.embeddings, val_true=np.asarray(views["val"]["speaker_id"]),
        val_predicted=val.predicted, speaker_names=config["speakers"], seed=p.evaluate.seed))
    text = "; ".join(f"{r}: top1 {_num(report[r]['accuracy_top1'])}, EER {_pct(report[r]['eer'])}"
                     for r in ROLES)
    if verify is not None:
        v = report["verify"]
        text += f"; verify: EER {_pct(v['eer'])} over {v['trials']} trials"
        if norm.kind:
            text += f" ({norm.kind} {_pct(v[norm.kind]['eer'])})"
    summary("evaluate", text, time.perf_counter() - started)


def _write_det(name: str, curve: dict | None) -> None:
    write_json(DET_DIR / f"{name}.json", {"det": [
        {"fpr": a, "fnr": b} for a, b in zip(curve["fpr"], curve["fnr"])] if curve else []})


def _score_unseen(p, model, config: dict, device, norm) -> tuple[dict, dict | None] | None:
    """Verification metrics on the unseen-speaker audio, or None when none is configured."""
    if not UNSEEN_MANIFEST.exists():
        return None
    rows, meta = read_manifest(UNSEEN_MANIFEST)
    if meta.get("kind") is None:
        return None
    if config["features"].get("precomputed"):
        print("spkid: warning: the model was trained on precomputed (HW4) features; "
              "verification audio is turned into log-mels by spkid, which cannot reproduce "
              "the data set's own extraction exactly, so the verification EER is pessimistic",
              file=sys.stderr)
    i, j, labels = unseen_trials(rows, meta, seed=p.evaluate.seed,
                                       nontarget_ratio=p.evaluate.nontarget_ratio,
                                       max_trials=p.evaluate.max_trials)
    used = np.unique(np.concatenate([i, j]))
    emb = np.zeros((len(rows), model.embedding_dim), np.float32)
    emb[used] = embed_audio_files(model, extractor_for_model(config["features"]),
                                  [rows[k].path for k in used], p.evaluate.batch_frames,
                                  device, progress=sys.stderr.isatty())
    result, curve = score_trials(emb, i, j, labels, norm)
    result["recordings"] = int(len(used))
    speakers = {rows[k].speaker for k in used if rows[k].speaker is not None}
    if speakers:
        result["speakers"] = len(speakers)
    return result, curve


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"
