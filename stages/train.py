"""train: fit the configured speaker model; keep the best checkpoint by val accuracy.

Resumable: every `train.checkpoint_every` steps the full training state goes to
data/checkpoints/ (no DVC output); run again with the same params and data, training ends
exactly where an uninterrupted run would (on CPU). Multi-GPU / multi-node: launch under
`torchrun`; each rank trains on its own slice of the segment index and rank 0 writes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow.parquet as pq
import typer

from spkid.core import distributed
from spkid.core.memory import check_batch_fits
from spkid.core.params import load_params
from spkid.data.views import read_views
from spkid.features.store import open_features, read_meta
from spkid.train import run as train_run
from spkid.train.batches import training_batches
from spkid.train.checkpoints import fingerprint
from spkid.train.loop import train as fit
from spkid.train.mel_augment import CropAugment
from spkid.train.validation import Validation
from stages.common import ParamsOption, exclusive, one_line_errors, summary
from stages.layout import (CHECKPOINTS, FEATURES, MODEL, SEGMENTS, SPEAKERS, TRAIN_LIVE,
                           TRAIN_METRICS, TRAINING_PLOT, VIEWS)

app = typer.Typer(add_completion=False)
FILES = train_run.RunFiles(CHECKPOINTS, TRAIN_LIVE, MODEL, TRAIN_METRICS, TRAINING_PLOT)


@app.command()
@one_line_errors
@exclusive
def train(params: Path = ParamsOption):
    """Train and write data/model/ and metrics/train.json."""
    started = time.perf_counter()
    p = load_params(params)
    rank, world, device = distributed.start(p.train.device)
    store, meta = open_features(FEATURES), read_meta(FEATURES)
    check_batch_fits(p, store.n_mels, device)
    speakers = json.loads(SPEAKERS.read_text())["speakers"]
    augment = CropAugment.from_params(p.train.augment, meta["features"])
    classes = augment.classes(speakers) if augment else speakers
    validation = Validation.sample(store, read_views(VIEWS, ["val"])["val"], p.train,
                                   p.evaluate.batch_frames, classes)
    config, model = train_run.new_model(p, store.n_mels, classes, meta, rank)
    batches = training_batches(store, pq.read_table(SEGMENTS), p.train, rank, world,
                               augment=augment, speakers=len(speakers))
    start = train_run.begin(FILES, fingerprint(p, meta, [SEGMENTS, SPEAKERS, VIEWS]),
                            p.train.average_last, model, config, rank, world)
    for note in start.notes:
        print(f"[train] {note}", flush=True)
    if world > 1:
        print(f"[train] rank {rank} of {world} on {device}: {batches.count} crop windows", flush=True)
    result = fit(model, batches, validation, p, device=device, resume=start.resume,
                 hooks=start.hooks, rank=rank, world=world)
    distributed.finish(world)
    if rank != 0:
        return
    average = train_run.finish(FILES, p, config, model, result, start, validation, device, world)
    summary("train", train_run.summary_text(result, device, world, average),
            time.perf_counter() - started)
