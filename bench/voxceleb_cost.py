"""Training cost of the voxceleb recipes: optimizer steps per second of each recipe's model
on its crops, and the time per VoxCeleb2 epoch that implies.

    python bench/voxceleb_cost.py [--device cpu|cuda] [--batch N] [--frames N] [--steps N]
                                  [--warmup N] [--json FILE] [RECIPE ...]

A step is what spkid.train.loop does with a batch on the device: the forward under
train.precision's autocast with the scheduled margin, cross-entropy over VoxCeleb2-dev's
5,994 speakers times 3 (the recipes' speed perturbation trains each speed as a class),
then RunState.update (backward, gradient clipping, AdamW, the LR schedule). Left out: batch
assembly and augmentation (the loader's work), validation and checkpoints. The log-mels
are random: the cost does not depend on their values.

An epoch is counted as WeSpeaker counts it (sample_num_per_epoch 0): one crop per
utterance of VoxCeleb2-dev, 1,092,009 utterances, i.e. 8,531 steps of the recipes' 128
crops. With --batch N below the recipe's (on a CPU), the recipe's step time is extrapolated
from steps of N and 2N crops (a fixed part per step plus a part per crop): an extrapolation,
and the output says so. --frames times other crop lengths (fine-tuning's 600).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spkid.core.atomic import write_json  # noqa: E402
from spkid.core.params import defaults, validate_params  # noqa: E402
from spkid.core.recipes import (RECIPES, VOXCELEB2_SPEAKERS, VOXCELEB2_UTTERANCES,  # noqa: E402
                                apply)
from spkid.core.device import autocast  # noqa: E402
from spkid.models import SpeakerNet  # noqa: E402
from spkid.train.state import RunState  # noqa: E402

VOXCELEB_RECIPES = [name for name in RECIPES if name.startswith("voxceleb_")]


def time_recipe(name: str, device: torch.device, batch: int = 0, frames: int = 0,
                steps: int = 5, warmup: int = 1) -> dict:
    """Seconds per optimizer step of recipe `name` on its batch (frames 0: its crops), the
    median of `steps` timed steps after `warmup` untimed ones. With `batch` below the
    recipe's, steps of `batch` and 2 x `batch` crops are timed and the recipe's step is
    extrapolated on the line through them: a fixed part (the optimizer over the weights,
    the classifier's 17,982 classes) plus a part per crop."""
    p = validate_params(apply(defaults(), RECIPES[name]))
    full, frames = p.train.batch_size, frames or p.index.segment_len
    classes = VOXCELEB2_SPEAKERS * (1 + len(p.train.augment.speed))
    torch.manual_seed(0)
    model = SpeakerNet(p.model, p.loss, p.features.n_mels, classes).to(device).train()
    run = RunState(model, p.train, device, 1)

    def median_step(n: int) -> tuple[float, list[float]]:
        x = torch.randn(n, frames, p.features.n_mels, device=device)
        mask = torch.ones(n, frames, dtype=torch.bool, device=device)
        y = torch.randint(0, classes, (n,), device=device)
        times = []
        for step in range(warmup + steps):
            started = time.perf_counter()
            with autocast(device, run.dtype):
                _, logits = model(x, mask, y, margin=p.loss.m)
            run.update(F.cross_entropy(logits.float(), y), p.train.clip_grad)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if step >= warmup:
                times.append(time.perf_counter() - started)
        return sorted(times)[len(times) // 2], times

    measured = {}
    for n in ([batch, 2 * batch] if 0 < batch < full else [full]):
        measured[n] = median_step(n)
    if len(measured) == 2:
        (t1, _), (t2, _) = measured[batch], measured[2 * batch]
        per_crop = (t2 - t1) / batch
        step_s = t1 + (full - batch) * per_crop
    else:
        step_s = measured[full][0]
    epoch_steps = VOXCELEB2_UTTERANCES // full
    return {
        "recipe": name, "device": device_name(device), "precision": str(run.dtype).split(".")[-1],
        "parameters": sum(w.numel() for k, w in model.named_parameters()
                          if not k.startswith("head.")),
        "classes": classes, "frames": frames, "recipe_batch": full, "steps_timed": steps,
        "measured": {n: {"median_step_s": m, "step_seconds": times}
                     for n, (m, times) in measured.items()},
        "extrapolated": len(measured) == 2, "step_s": step_s, "crops_per_s": full / step_s,
        "epoch_steps": epoch_steps, "epoch_hours": step_s * epoch_steps / 3600,
        "peak_allocated": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def line(r: dict) -> str:
    timed = ", ".join(f"batch {n}: {m['median_step_s']:.3f} s" for n, m in r["measured"].items())
    how = (f"extrapolated to batch {r['recipe_batch']} from {timed}" if r["extrapolated"]
           else timed)
    peak = (f", peak {r['peak_allocated'] / 2**30:.1f} GiB" if r["peak_allocated"] else "")
    return (f"{r['recipe']}: {r['parameters'] / 1e6:.2f} M parameters, {r['precision']}, "
            f"{r['frames']}-frame crops: {r['step_s']:.3f} s a step ({how}; medians of "
            f"{r['steps_timed']}), {r['crops_per_s']:.1f} crops/s{peak}; a VoxCeleb2 epoch "
            f"({r['epoch_steps']:,} steps) {r['epoch_hours']:.2f} h")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recipes", nargs="*", default=VOXCELEB_RECIPES)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=0, help="crops a step (0: the recipe's)")
    ap.add_argument("--frames", type=int, default=0, help="frames a crop (0: the recipe's)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    unknown = [n for n in args.recipes if n not in VOXCELEB_RECIPES]
    if unknown:
        print(f"voxceleb_cost: unknown recipe {unknown[0]!r} (known: {', '.join(VOXCELEB_RECIPES)})")
        return 2
    device = torch.device(args.device)
    results, failed = [], []
    for name in args.recipes:
        try:
            results.append(time_recipe(name, device, args.batch, args.frames, args.steps,
                                       args.warmup))
            print(f"voxceleb_cost: {line(results[-1])}", flush=True)
        except Exception as exc:  # e.g. out of memory: the next recipe still runs
            failed.append(name)
            print(f"voxceleb_cost: {name}: FAILED: {type(exc).__name__}: {exc}", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        if args.json:  # after each recipe, so a run cut short keeps what it measured
            write_json(Path(args.json), results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
