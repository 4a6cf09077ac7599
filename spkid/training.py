"""The training loop: AdamW, linear warmup then cosine decay, mixed precision on CUDA,
validation accuracy on full utterances, best checkpoint kept."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from spkid.batching import pad_views, view_batches
from spkid.shards import FeatureStore


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        from spkid.errors import ParamsError
        raise ParamsError("params: train.device = 'cuda' but no CUDA device is available "
                          "(allowed: auto, cpu, cuda)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def autocast(device: torch.device):
    """bf16 autocast where the GPU supports it, fp16 otherwise; full fp32 on CPU."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


@torch.no_grad()
def embed_views(model, store: FeatureStore, views, batch_frames: int,
                device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and closed-set logits of whole views (no cropping), batched by length
    with padding masks. Returns arrays in the order of `views`."""
    was_training = model.training
    model.eval()
    pos = store.position()
    src = np.array([pos[s] for s in views["source_id"]], dtype=np.int64)
    starts = np.asarray(views["start_frame"], np.int64)
    lengths = np.asarray(views["num_frames"], np.int64)
    embs, logits = [None] * len(lengths), [None] * len(lengths)
    for batch in view_batches(lengths, batch_frames):
        x, mask = pad_views(store, src[batch], starts[batch], lengths[batch])
        with autocast(device):
            e, z = model(x.to(device), mask.to(device))
        for k, i in enumerate(batch):
            embs[i], logits[i] = e[k].float().cpu().numpy(), z[k].float().cpu().numpy()
    model.train(was_training)
    if not embs:
        return np.zeros((0, model.embedding.out_features), np.float32), np.zeros((0, 0), np.float32)
    return np.stack(embs), np.stack(logits)


@dataclass
class TrainResult:
    best_step: int = 0
    best_val_accuracy: float = -1.0
    final_train_loss: float = float("nan")
    final_train_accuracy: float = float("nan")
    steps: int = 0
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)


def train(model, batches, val_views, store: FeatureStore, t, *, device: torch.device,
          batch_frames: int, save_best: Callable[[dict], None],
          log: Callable[[dict, int], None] = lambda metrics, step: None,
          progress: bool = True) -> TrainResult:
    """Run `t.steps` optimizer steps (t: the train params). `batches[k]` is batch k."""
    from tqdm import tqdm

    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(t.warmup_steps, t.steps))
    use_scaler = device.type == "cuda" and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    loader = torch.utils.data.DataLoader(
        batches, batch_size=None, shuffle=False, num_workers=t.num_workers,
        pin_memory=device.type == "cuda", persistent_workers=False)
    val_labels = np.asarray(val_views["speaker_id"], np.int64) if len(val_views["speaker_id"]) else None

    result, started = TrainResult(), time.perf_counter()
    window_loss, window_acc, window_n = 0.0, 0.0, 0
    bar = tqdm(total=t.steps, desc="train", unit="step", disable=not progress)
    for step, (x, mask, y) in enumerate(loader, start=1):
        x, mask, y = (v.to(device, non_blocking=True) for v in (x, mask, y))
        with autocast(device):
            emb, logits = model(x, mask, y)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        schedule.step()

        with torch.no_grad():  # accuracy without the training margin, as at test time
            correct = (model.head(emb.float()).argmax(1) == y).float().mean()
        # Kept on the device: a .item() per step would stall the GPU.
        window_loss += loss.detach()
        window_acc += correct
        window_n += 1
        bar.update(1)
        if step % t.valid_every == 0 or step == t.steps:
            train_loss, train_acc = float(window_loss) / window_n, float(window_acc) / window_n
            window_loss, window_acc, window_n = 0.0, 0.0, 0
            metrics = {"train/loss": train_loss, "train/accuracy": train_acc,
                       "lr": optimizer.param_groups[0]["lr"]}
            if val_labels is not None:
                _, val_logits = embed_views(model, store, val_views, batch_frames, device)
                metrics["val/accuracy"] = float((val_logits.argmax(1) == val_labels).mean())
            log(metrics, step)
            result.history.append({"step": step, **metrics})
            result.final_train_loss, result.final_train_accuracy = train_loss, train_acc
            # Without a val split the last model is the best we can tell.
            score = metrics.get("val/accuracy", step)
            if score > result.best_val_accuracy:
                result.best_val_accuracy, result.best_step = score, step
                save_best({k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
            bar.set_postfix(loss=f"{train_loss:.3f}", val=f"{metrics.get('val/accuracy', float('nan')):.3f}")
    bar.close()
    result.steps = t.steps
    result.seconds = time.perf_counter() - started
    if val_labels is None:
        result.best_val_accuracy = float("nan")
    return result
