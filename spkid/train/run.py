"""One training run around the loop of spkid.train.loop: what it resumes from, where its
curves and checkpoints go, and what it leaves when it ends (the model folder and its
metrics). The files are given by the caller (`RunFiles`); nothing here knows the
repository layout."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from spkid.core import distributed
from spkid.core.atomic import atomic_dir, write_json
from spkid.core.errors import DataError, WorldSizeChanged
from spkid.models.folder import (WEIGHTS, build_model, model_config, save_model_dir, save_torch,
                                 save_weights)
from spkid.report.training_curves import dvclive_curves, training_curves
from spkid.train.averaging import ValidationCheckpoints, average_checkpoints
from spkid.train.checkpoints import resumable
from spkid.train.curves import CurveLog, trim_curves
from spkid.train.loop import RunHooks
from spkid.train.state import lr_factor
from spkid.train.validation import Validation
from spkid.train.warm_start import InitModel


@dataclass(frozen=True)
class RunFiles:
    checkpoints: Path  # resumable state, kept validation states
    curves: Path  # dvclive folder
    model: Path  # the model folder the run leaves
    metrics: Path  # its summary JSON
    picture: Path  # the training curves as a PNG

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"


def new_model(p, n_mels: int, speakers: list[str], feature_meta: dict, rank: int):
    """(config, model, origin) of a fresh run: the same initial weights on every rank
    (random, or train.init_from's where it gives them), then a per-rank seed so dropout
    differs between ranks. `origin` says what train.init_from gave ("" without it)."""
    config = model_config(p, n_mels, speakers, {**feature_meta["features"],
                                                "precomputed": feature_meta["precomputed"]})
    torch.manual_seed(p.train.seed)
    model = build_model(config)
    origin = ""
    if p.train.init_from:
        origin = InitModel.read(p.train.init_from).load_into(model, config)
    if rank > 0:
        torch.manual_seed(p.train.seed + rank)
    return config, model, origin


@dataclass
class Start:
    """How a run begins: the state it resumes (None: afresh), the kept validation states,
    where the loop hands its states and metrics (`hooks`), the curve log (rank 0 only) and
    what to tell the user (why a checkpoint was not resumed, or from which step it is)."""
    resume: dict | None
    kept: ValidationCheckpoints
    hooks: RunHooks
    log: CurveLog | None
    notes: list[str]


def begin(files: RunFiles, fingerprint: str, average_last: int, model, config: dict,
          rank: int = 0, world: int = 1) -> Start:
    """Whether the run resumes, decided by rank 0 from its own checkpoint folder and sent to
    the other ranks with the snapshot itself (no shared file system needed). Rank 0 clears
    what a fresh run must not inherit and trims what a resumed run will log again; the
    other ranks write nothing. The model's model.json goes beside the checkpoints, so that
    a checkpoint can be loaded on its own (spkid.SpeakerModel.load) while the run goes on."""
    decision = None
    if rank == 0:
        try:
            decision = (*resumable(files.last, files.best, fingerprint, world, model), None)
        except WorldSizeChanged as exc:
            decision = (None, "", str(exc))
    resume, why, refused = distributed.broadcast(decision, world)
    if refused:
        raise WorldSizeChanged(refused)
    if rank != 0:
        return Start(resume, ValidationCheckpoints(files.checkpoints, 0), RunHooks(), None, [])
    if resume is None:
        shutil.rmtree(files.checkpoints, ignore_errors=True)
        shutil.rmtree(files.curves, ignore_errors=True)
    files.checkpoints.mkdir(parents=True, exist_ok=True)
    save_model_dir(files.checkpoints, None, config)
    kept = ValidationCheckpoints(files.checkpoints, average_last)
    notes = [why] if why else []
    if resume is not None:
        step = resume["progress"]["step"]
        notes.append(f"resuming from step {step} of {files.last}")
        # Validations logged after this checkpoint will be logged again: drop them.
        trim_curves(files.curves, step)
        kept.drop_after(step)
    log = CurveLog(files.curves, resume is not None)
    return Start(resume, kept, _hooks(files, fingerprint, config, log, kept), log, notes)


def _hooks(files: RunFiles, fingerprint: str, config: dict, log: CurveLog,
           kept: ValidationCheckpoints) -> RunHooks:
    """Where the loop of spkid.train.loop hands its states and metrics: the run's files.
    A checkpoint carries the model's config, so another run can start from it
    (train.init_from)."""
    return RunHooks(save_best=lambda weights: save_torch(files.best, weights),
                    save_checkpoint=lambda snap: save_torch(files.last, {
                        **snap, "fingerprint": fingerprint, "config": config}),
                    log=log, save_validated=kept.save if kept.enabled else None)


def finish(files: RunFiles, p, config: dict, model, result, start: Start,
           validation: Validation, device, world: int = 1) -> dict:
    """Close the curve log and draw the training curves; write the model folder (the best
    checkpoint, or the average of the kept validation states) and the metrics file; remove
    the resumable state. Returns the averaging summary ({} without averaging)."""
    start.log.end()
    kept = start.kept
    training_curves(dvclive_curves(files.curves / "plots" / "metrics"), files.picture,
                    margin=None if p.loss.name == "softmax" else p.loss.m)
    if not files.best.exists():
        raise DataError(f"{files.best}: training ended without a checkpoint")
    averaged, average = None, {}
    if kept.enabled:  # the model is the average of the kept states, not the best single one
        averaged, average = average_checkpoints(kept, model,
                                                lambda m: validation.accuracy(m, device))
    with atomic_dir(files.model) as tmp:
        if averaged is None:
            shutil.copyfile(files.best, tmp / WEIGHTS)
        else:
            save_weights(tmp, averaged)
        save_model_dir(tmp, None, {**config, "best_step": result.best_step, **average})
    write_json(files.metrics, {
        "best_val_accuracy": result.best_val_accuracy, "best_step": result.best_step,
        "final_train_loss": result.final_train_loss,
        "final_train_accuracy": result.final_train_accuracy, "steps": result.step,
        "parameters": sum(t.numel() for t in model.parameters()), **average,
        **batch_summary(p.train, world)})
    # A finished run leaves nothing to resume: a forced re-run trains again.
    files.last.unlink(missing_ok=True)
    files.best.unlink(missing_ok=True)
    kept.clear()
    return average


def batch_summary(t, world: int) -> dict:
    """How the run was spread (metrics/train.json): runs on different numbers of GPUs
    differ here in `dvc exp show`."""
    return {"world_size": world, "batch_per_rank": t.batch_size,
            "effective_batch": world * t.batch_size, "lr": t.lr * lr_factor(t, world)}


def summary_text(result, device, world: int, average: dict) -> str:
    text = (f"{result.step} steps on {device} x{world}, best val accuracy "
            f"{result.best_val_accuracy:.3f} at step {result.best_step}; validation took "
            f"{result.validation_seconds:.1f} s")
    if average:
        acc = average["averaged_val_accuracy"]
        text += (f"; the model averages the last {average['averaged_checkpoints']} validations"
                 + ("" if acc is None else f" (val accuracy {acc:.3f})"))
    return text
