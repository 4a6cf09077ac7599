"""The one loop that applies a model to stored log-mels: whole views (or crops) batched by
length with padding masks, so an embedding does not depend on what it is batched with.
Training's validation, evaluate, export and the audio-file embedders all go through it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from spkid.features.store import FeatureStore


@dataclass
class ViewOutputs:
    """What scoring needs of each view, O(views) whatever the number of classes."""
    embeddings: np.ndarray  # (N, embedding_dim)
    predicted: np.ndarray | None  # (N,) class with the highest logit (None: not asked)
    true_rank: np.ndarray | None  # (N,) classes scored strictly above the true one


def view_batches(lengths: np.ndarray, batch_frames: int):
    """Indices of views grouped into batches of similar length, each with at most
    `batch_frames` padded frames (a longer view gets a batch of its own)."""
    order = np.argsort(lengths, kind="stable")
    batch: list[int] = []
    for i in order:
        if batch and (len(batch) + 1) * int(lengths[i]) > batch_frames:
            yield batch
            batch = []
        batch.append(int(i))
    if batch:
        yield batch


def real_class_logits(logits: torch.Tensor, classes: np.ndarray | None) -> torch.Tensor:
    """float32 logits with every class not marked True in `classes` at -inf, so that neither
    an argmax nor a softmax names one (a speed copy's class is only a training target;
    None: every class is a speaker)."""
    logits = logits.float()
    if classes is None or classes.all():
        return logits
    return logits.masked_fill(torch.from_numpy(~classes).to(logits.device), float("-inf"))


@torch.no_grad()
def embed_crops(model, store: FeatureStore, pos: np.ndarray, starts: np.ndarray,
                lengths: np.ndarray, batch_frames: int, device: torch.device, *,
                predict: bool = True, labels=None, classes: np.ndarray | None = None,
                share: tuple[int, int] = (0, 1)) -> ViewOutputs:
    """Embeddings of frames starts[k] .. starts[k] + lengths[k] of store position pos[k],
    in order. With `predict`, also the closed-set prediction (and with `labels` the rank of
    the true class) among the `classes` marked True (spkid.data.views.real_speakers; None =
    all); without, only `model.embed` is called (an ONNX graph has nothing else).

    `share` = (rank, world): only every world-th batch from the rank-th is embedded, the
    other rows stay zero. Ranks that split the work so compute each row in the batch one
    process would, so their sum (spkid.core.distributed.add_up) is its output bit for bit."""
    was_training = model.training
    model.eval()
    n = len(lengths)
    out = ViewOutputs(np.zeros((n, model.embedding_dim), np.float32),
                      np.zeros(n, np.int64) if predict else None,
                      np.zeros(n, np.int64) if predict and labels is not None else None)
    try:
        rank, world = share
        for b, batch in enumerate(view_batches(lengths, batch_frames)):
            if b % world != rank:
                continue
            batch = np.asarray(batch, np.int64)
            x, mask = store.crops(pos[batch], starts[batch], lengths[batch])
            x, mask = torch.from_numpy(x).to(device), torch.from_numpy(mask).to(device)
            # float32 whatever training used: the numerics of `verify` and ONNX, so the
            # shipped threshold is measured on the scores users will compute.
            e, z = model(x, mask) if predict else (model.embed(x, mask), None)
            out.embeddings[batch] = e.float().cpu().numpy()
            if z is None:
                continue
            z = real_class_logits(z, classes)
            out.predicted[batch] = z.argmax(1).cpu().numpy()
            if labels is not None:
                y = torch.as_tensor(np.asarray(labels, np.int64)[batch], device=z.device)
                out.true_rank[batch] = (z > z.gather(1, y[:, None])).sum(1).cpu().numpy()
    finally:
        model.train(was_training)
    return out


def embed_views(model, store: FeatureStore, views, batch_frames: int, device: torch.device,
                *, labels=None, max_frames: int = 0, classes: np.ndarray | None = None,
                share: tuple[int, int] = (0, 1)) -> ViewOutputs:
    """Embeddings and closed-set predictions of whole views (column dict with source_id,
    start_frame, num_frames), or of their middle `max_frames` frames, in order (`share`:
    as embed_crops)."""
    starts = np.asarray(views["start_frame"], np.int64)
    lengths = np.asarray(views["num_frames"], np.int64)
    if max_frames:
        starts = starts + np.maximum(0, lengths - max_frames) // 2
        lengths = np.minimum(lengths, max_frames)
    return embed_crops(model, store, store.positions(views["source_id"]), starts, lengths,
                       batch_frames, device, labels=labels, classes=classes, share=share)
