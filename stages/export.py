"""export: data/export/submission.csv (Kaggle HW4 format) and data/export/model/."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from spkid.core import distributed
from spkid.core.atomic import atomic_dir
from spkid.core.errors import StaleInputError
from spkid.core.install import onnx_missing
from spkid.core.params import load_params
from spkid.data.views import read_views
from spkid.models.folder import save_model_dir
from spkid.scoring.embedding import Scoring
from spkid.scoring.norm import ScoreNorm
from spkid.serve.export import provenance, write_submission
from spkid.serve.onnx import ONNX_FILE, export_onnx
from stages.common import ParamsOption, exclusive, one_line_errors, summary
from stages.layout import (EVAL_METRICS, EXPORT, EXPORT_MODEL, FEATURES, MODEL, SCORE_NORM,
                           SUBMISSION, VIEWS)

app = typer.Typer(add_completion=False)


@app.command()
@one_line_errors
@exclusive
def export(params: Path = ParamsOption):
    """Predict the submit utterances and package the model with its threshold."""
    started = time.perf_counter()
    p = load_params(params)
    rank, world, device = distributed.start(p.train.device)
    scoring = Scoring.open(MODEL, FEATURES, device, rank, world)
    model, config = scoring.model, scoring.config
    submit = read_views(VIEWS, ["submit"])["submit"]
    predicted = [config["speakers"][k] for k in scoring.embed(submit, p.evaluate.batch_frames).predicted]
    distributed.finish(world)  # under torchrun the ranks shared the embedding; rank 0 writes
    if rank != 0:
        return
    scores = json.loads(EVAL_METRICS.read_text())
    norm = ScoreNorm.load(SCORE_NORM)
    if "shipped" not in scores:
        raise StaleInputError(f"{EVAL_METRICS} has no shipped threshold (from an older spkid)",
                              EVAL_METRICS)
    shipped = scores["shipped"]  # evaluate's choice, of the score normalised as it measured
    threshold = shipped["eer_threshold"]
    source = f"{shipped['role']} EER" + (" (seen speakers)" if shipped["seen_speakers"] else "")
    with atomic_dir(EXPORT) as tmp:
        write_submission(tmp / SUBMISSION.name, submit["utterance_id"].to_pylist(), predicted)
        state = {k: v.cpu() for k, v in model.state_dict().items()}
        save_model_dir(tmp / EXPORT_MODEL.name, state, {
            **config, "eer_threshold": threshold, "threshold_from": source,
            **({"calibration": shipped["calibration"]} if "calibration" in shipped else {}),
            "score": norm.kind or "cosine", **provenance()})
        if norm.kind:
            norm.save(tmp / EXPORT_MODEL.name)
        if p.export.onnx and onnx_missing() is None:  # the embedding graph for ONNX Runtime
            export_onnx(model, tmp / EXPORT_MODEL.name / ONNX_FILE, config["n_mels"], norm.mean)
        elif p.export.onnx:
            print(f"[export] no {ONNX_FILE}: {onnx_missing()}")
    summary("export", f"{len(predicted)} submission rows, model with threshold "
            f"{threshold if threshold is None else round(threshold, 4)} (from {source})",
            time.perf_counter() - started)
