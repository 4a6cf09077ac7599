"""train: fit the configured speaker model; keep the best checkpoint by val accuracy.

Resumable: every `train.checkpoint_every` steps the full training state goes to
data/checkpoints/ (a DVC out marked persist, so DVC leaves it in place). Killed and run
again with the same params and data, training continues from there and ends exactly
where an uninterrupted run would (on CPU). Multi-GPU / multi-node: launch under
`torchrun`; each rank trains on its own slice of the segment index and rank 0 writes."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch
import typer

from spkid import distributed
from spkid.atomic import atomic_dir, write_json
from spkid.augment import NoiseAugment, SpecAugment, load_noise
from spkid.averaging import ValidationCheckpoints, average_checkpoints
from spkid.batching import SegmentBatches
from spkid.checkpoint import (WEIGHTS, build_model, model_config, resumable, save_model_dir,
                              save_torch, save_weights)
from spkid.errors import DataError
from spkid.features import LogMelExtractor
from spkid.index import read_views
from spkid.losses import margin_schedule
from spkid.params import load_params
from spkid.plots import dvclive_curves, training_curves
from spkid.shards import open_features, read_meta
from spkid.training import (train as fit, trim_curves, validation_accuracy,
                            validation_views)
from stages.common import ParamsOption, exclusive, one_line_errors, summary
from stages.layout import (CHECKPOINTS, FEATURES, MODEL, SEGMENTS, SPEAKERS, TRAIN_LIVE,
                           TRAIN_METRICS, TRAINING_PLOT, VIEWS)

app = typer.Typer(add_completion=False)
LAST, BEST = CHECKPOINTS / "last.pt", CHECKPOINTS / "best.pt"


def _fingerprint(p) -> str:
    """What a checkpoint must match to be resumed: the training params and the data."""
    h = hashlib.sha256(json.dumps([p.model.to_dict(), p.loss.to_dict(), p.train.to_dict(),
                                   p.index.segment_len], sort_keys=True).encode())
    for f in (SEGMENTS, SPEAKERS, VIEWS):
        h.update(f.read_bytes())
    return h.hexdigest()


def _augmenter(p, device):
    a = p.train.augment
    steps = []
    if a.specaugment:
        steps.append(lambda x, mask, f=SpecAugment(a.time_masks, a.time_mask_width, a.freq_masks,
                                                   a.freq_mask_width): f(x))
    if a.noise_dir:
        noise = NoiseAugment(load_noise(a.noise_dir, LogMelExtractor.from_params(p.features)),
                             tuple(a.snr_db), a.noise_prob)
        steps.append(noise)

    def augment(x, mask):
        for step in steps:
            x = step(x, mask)
        return x
    return augment


@app.command()
@one_line_errors
@exclusive
def train(params: Path = ParamsOption):
    """Train and write data/model/ and metrics/train.json."""
    started = time.perf_counter()
    p = load_params(params)
    rank, world, device = distributed.start(p.train.device)
    speakers = json.loads(SPEAKERS.read_text())["speakers"]
    val = read_views(VIEWS, ["val"])["val"]
    segments = pq.read_table(SEGMENTS)
    store = open_features(FEATURES)
    feature_meta = read_meta(FEATURES)
    config = model_config(p, store.n_mels, speakers,
                          {**feature_meta["features"], "precomputed": feature_meta["precomputed"]})

    torch.manual_seed(p.train.seed)
    model = build_model(config)
    if rank > 0:
        torch.manual_seed(p.train.seed + rank)  # same initial weights, different dropout
    batches = SegmentBatches(store, segments, p.train.batch_size, p.train.seed, p.train.steps,
                             rank=rank, world=world)
    fingerprint = _fingerprint(p)
    resume, why = resumable(LAST, BEST, fingerprint)
    if why and rank == 0:
        print(f"[train] {why}", flush=True)
    if rank == 0 and resume is None:
        shutil.rmtree(CHECKPOINTS, ignore_errors=True)
        shutil.rmtree(TRAIN_LIVE, ignore_errors=True)
    CHECKPOINTS.mkdir(parents=True, exist_ok=True)
    if resume is not None:
        print(f"[train] resuming from step {resume['progress']['step']} of {LAST}", flush=True)
    if world > 1:
        print(f"[train] rank {rank} of {world} on {device}: {batches.count} crop windows", flush=True)
    if rank == 0 and resume is not None:
        # Validations logged after this checkpoint will be logged again: drop them.
        trim_curves(TRAIN_LIVE, resume["progress"]["step"])
    live = _live(resume is not None) if rank == 0 else None
    kept = ValidationCheckpoints(CHECKPOINTS, p.train.average_last)  # checkpoint averaging
    if resume is not None and rank == 0:
        kept.drop_after(resume["progress"]["step"])

    result = fit(model, batches, val, store, p.train, device=device,
                 batch_frames=p.evaluate.batch_frames, save_best=lambda state: save_torch(BEST, state),
                 save_checkpoint=lambda snap: save_torch(LAST, {**snap, "fingerprint": fingerprint}),
                 resume=resume,
                 margin_at=margin_schedule(p.loss), augment=_augmenter(p, device),
                 log=lambda metrics, step: _log(live, metrics, step), rank=rank, world=world,
                 save_validated=kept.save if kept.enabled else None)
    distributed.finish(world)
    if rank != 0:
        return
    live.end()
    # dvclive's own summary would duplicate metrics/train.json; the curves are what we want.
    (TRAIN_LIVE / "metrics.json").unlink(missing_ok=True)
    training_curves(dvclive_curves(TRAIN_LIVE / "plots" / "metrics"), TRAINING_PLOT,
                    margin=None if p.loss.name == "softmax" else p.loss.m)
    if not BEST.exists():
        raise DataError(f"{BEST}: training ended without a checkpoint")
    averaged, average = None, {}
    if kept.enabled:  # data/model is the average of the kept states, not the best single one
        averaged, average = average_checkpoints(
            kept, model, lambda m: _val_accuracy(p, m, val, store, device))
    with atomic_dir(MODEL) as tmp:
        if averaged is None:
            shutil.copyfile(BEST, tmp / WEIGHTS)
        else:
            save_weights(tmp, averaged)
        save_model_dir(tmp, None, {**config, "best_step": result.best_step, **average})
    write_json(TRAIN_METRICS, {
        "best_val_accuracy": result.best_val_accuracy, "best_step": result.best_step,
        "final_train_loss": result.final_train_loss,
        "final_train_accuracy": result.final_train_accuracy, "steps": result.step,
        "parameters": sum(t.numel() for t in model.parameters()), **average})
    # A finished run leaves nothing to resume: a forced re-run trains again.
    LAST.unlink(missing_ok=True)
    BEST.unlink(missing_ok=True)
    kept.clear()
    summary("train", f"{result.step} steps on {device} x{world}, best val accuracy "
            f"{result.best_val_accuracy:.3f} at step {result.best_step}; validation took "
            f"{result.validation_seconds:.1f} s" + _averaged_text(average), time.perf_counter() - started)


def _averaged_text(average: dict) -> str:
    if not average:
        return ""
    acc = average["averaged_val_accuracy"]
    return (f"; data/model averages the last {average['averaged_checkpoints']} validations"
            + ("" if acc is None else f" (val accuracy {acc:.3f})"))


def _val_accuracy(p, model, val, store, device) -> float | None:
    views, labels = validation_views(val, p.train)
    return None if labels is None else validation_accuracy(
        model, store, views, labels, p.evaluate.batch_frames, p.train.valid_max_frames, device)


def _live(resume: bool):
    from dvclive import Live
    # dvc.yaml is hand-written: dvclive must not rewrite it or create experiments itself.
    return Live(dir=str(TRAIN_LIVE), resume=resume, dvcyaml=None, save_dvc_exp=False, report=None)


def _log(live, metrics: dict, step: int) -> None:
    live.step = step
    for name, value in metrics.items():
        live.log_metric(name, value)
    live.next_step()
