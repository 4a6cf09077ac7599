"""train: fit the configured speaker model; keep the best checkpoint by val accuracy."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
import typer

from spkid.atomic import atomic_dir, write_json
from spkid.batching import SegmentBatches
from spkid.checkpoint import build_model, model_config, save_model_dir, save_weights
from spkid.params import load_params
from spkid.shards import load_features, read_meta
from spkid.training import pick_device, train as fit
from stages.common import ParamsOption, one_line_errors, summary
from stages.layout import FEATURES, MODEL, SEGMENTS, SPEAKERS, TRAIN_LIVE, TRAIN_METRICS, VIEWS

app = typer.Typer(add_completion=False)


def _live():
    from dvclive import Live
    # dvc.yaml is hand-written: dvclive must not rewrite it or create experiments itself.
    return Live(dir=str(TRAIN_LIVE), dvcyaml=None, save_dvc_exp=False, report=None)


@app.command()
@one_line_errors
def train(params: Path = ParamsOption):
    """Train and write data/model/ and metrics/train.json."""
    started = time.perf_counter()
    p = load_params(params)
    device = pick_device(p.train.device)
    speakers = json.loads(SPEAKERS.read_text())["speakers"]
    views = pq.read_table(VIEWS)
    val = views.filter(pc.equal(views["role"], "val")).to_pydict()
    segments = pq.read_table(SEGMENTS).to_pydict()
    store = load_features(FEATURES, keep=set(segments["source_id"]) | set(val["source_id"]))
    feature_meta = read_meta(FEATURES)
    config = model_config(p, store.frames.shape[1], speakers,
                          {**feature_meta["features"], "precomputed": feature_meta["precomputed"]})

    torch.manual_seed(p.train.seed)
    model = build_model(config)
    batches = SegmentBatches(store, segments, p.train.batch_size, p.index.segment_len,
                             p.train.seed, p.train.steps)
    live = _live()
    with atomic_dir(MODEL) as tmp:
        result = fit(model, batches, val, store, p.train, device=device,
                     batch_frames=p.evaluate.batch_frames,
                     save_best=lambda state: save_weights(tmp, state),
                     log=lambda metrics, step: _log(live, metrics, step))
        save_model_dir(tmp, None, {**config, "best_step": result.best_step})
    live.end()
    # dvclive's own summary would duplicate metrics/train.json; the curves are what we want.
    (TRAIN_LIVE / "metrics.json").unlink(missing_ok=True)
    write_json(TRAIN_METRICS, {
        "best_val_accuracy": result.best_val_accuracy, "best_step": result.best_step,
        "final_train_loss": result.final_train_loss,
        "final_train_accuracy": result.final_train_accuracy, "steps": result.steps,
        "parameters": sum(t.numel() for t in model.parameters())})
    summary("train", f"{result.steps} steps on {device}, best val accuracy "
            f"{result.best_val_accuracy:.3f} at step {result.best_step}",
            time.perf_counter() - started)


def _log(live, metrics: dict, step: int) -> None:
    live.step = step
    for name, value in metrics.items():
        live.log_metric(name, value)
    live.next_step()


if __name__ == "__main__":
    app()
