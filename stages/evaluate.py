"""evaluate: accuracy, EER and minDCF on val and test (full utterances) -> metrics/eval.json,
the pictures in metrics/plots/ and the DET points in metrics/det/.

With data.verify_dir or evaluate.trials it also scores verification on unseen speakers
("verify" in metrics/eval.json, and "verify_<name>" for each further trial list): the
recordings download listed in data/raw/verify.parquet.

Under torchrun every rank embeds its share of every set and rank 0 writes; the metrics are
those of one process."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import typer

from spkid.core import distributed
from spkid.core.atomic import atomic_dir, write_json
from spkid.core.params import load_params
from spkid.data.manifest import read_manifest
from spkid.data.views import read_views
from spkid.report.evaluation_plots import evaluation_plots
from spkid.scoring.embedding import Scoring
from spkid.scoring.evaluation import (ROLES, score_roles, score_unseen, shipped_threshold,
                                      summary_text, write_det_curves)
from spkid.scoring.norm import ScoreNorm
from stages.common import ParamsOption, exclusive, one_line_errors, summary
from stages.layout import (CONFUSIONS, DET_DIR, EVAL_METRICS, FEATURES, MODEL, PLOTS, SCORE_NORM,
                           UNSEEN_MANIFEST, VIEWS)

app = typer.Typer(add_completion=False)


@app.command()
@one_line_errors
@exclusive
def evaluate(params: Path = ParamsOption):
    """Score val and test (and unseen speakers); write metrics/eval.json and the pictures."""
    started = time.perf_counter()
    p = load_params(params)
    rank, world, device = distributed.start(p.train.device)
    scoring = Scoring.open(MODEL, FEATURES, device, rank, world)
    views = read_views(VIEWS, (*ROLES, "train"))
    # Training mean and AS-norm cohort (from training views), kept for export.
    norm = ScoreNorm.from_views(p.evaluate, views.pop("train"), lambda v: scoring.embed(
        v, p.evaluate.batch_frames).embeddings)
    report, curves, outputs = score_roles(scoring, views, p.evaluate, norm)
    rows, meta = read_manifest(UNSEEN_MANIFEST) if UNSEEN_MANIFEST.exists() else ([], {})
    if meta.get("kind") is not None:
        if scoring.precomputed and rank == 0:
            print("spkid: warning: the model was trained on precomputed (HW4) features; spkid's "
                  "log-mels of the verification audio cannot reproduce the data set's own "
                  "extraction exactly, so the verification EER is pessimistic", file=sys.stderr)
        unseen, unseen_curves = score_unseen(scoring, rows, meta, p.evaluate, norm,
                                             progress=sys.stderr.isatty())
        report.update(unseen)
        curves.update(unseen_curves)
    report["shipped"] = shipped_threshold(report, norm.kind)
    distributed.finish(world)
    if rank != 0:
        return
    with atomic_dir(SCORE_NORM) as tmp:
        norm.save(tmp)
    write_det_curves(DET_DIR, curves)
    write_json(EVAL_METRICS, report)
    write_json(CONFUSIONS, evaluation_plots(
        PLOTS, curves, report, val_embeddings=outputs["val"].embeddings,
        val_true=np.asarray(views["val"]["speaker_id"]), val_predicted=outputs["val"].predicted,
        speaker_names=scoring.config["speakers"], seed=p.evaluate.seed))
    summary("evaluate", summary_text(report, norm.kind), time.perf_counter() - started)
