"""evaluate: accuracy, EER and minDCF on val and test (full utterances) -> metrics/eval.json."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import typer

from spkid.atomic import write_json
from spkid.checkpoint import load_model_dir
from spkid.evaluation import score_role
from spkid.params import load_params
from spkid.shards import load_features
from spkid.training import embed_views, pick_device
from stages.common import ParamsOption, one_line_errors, summary
from stages.layout import DET_DIR, EVAL_METRICS, FEATURES, MODEL, VIEWS

app = typer.Typer(add_completion=False)
ROLES = ("val", "test")


@app.command()
@one_line_errors
def evaluate(params: Path = ParamsOption):
    """Score val and test; write metrics/eval.json and the DET curve."""
    started = time.perf_counter()
    p = load_params(params)
    device = pick_device(p.train.device)
    model, _ = load_model_dir(MODEL, device)
    views = pq.read_table(VIEWS)
    views = views.filter(pc.is_in(views["role"], value_set=pa.array(ROLES)))
    store = load_features(FEATURES, keep=set(views["source_id"].to_pylist()))
    report = {}
    for role in ROLES:
        part = views.filter(pc.equal(views["role"], role)).to_pydict()
        emb, logits = embed_views(model, store, part, p.evaluate.batch_frames, device)
        report[role], curve = score_role(
            emb, logits, np.asarray(part["speaker_id"]), seed=p.evaluate.seed,
            nontarget_ratio=p.evaluate.nontarget_ratio, max_trials=p.evaluate.max_trials)
        write_json(DET_DIR / f"{role}.json", {"det": [
            {"fpr": a, "fnr": b} for a, b in zip(curve["fpr"], curve["fnr"])] if curve else []})
    write_json(EVAL_METRICS, report)
    summary("evaluate", "; ".join(
        f"{r}: top1 {report[r]['accuracy_top1']:.3f}, EER {_pct(report[r]['eer'])}"
        for r in ROLES), time.perf_counter() - started)


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


if __name__ == "__main__":
    app()
