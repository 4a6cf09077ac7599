"""Training steps per second: recipe hw4_best in spkid against the students' own model.

    python bench/hw4_best_speed.py [--rounds 7] [--steps 10] [--threads 2] \
        [--variant model.dropout=0.1]

Both models start from the same weights (tests/hw4_homework.py holds the students' model as
they wrote it and maps it onto spkid's recipe net) and train on the same batches: random
features of the recipe's batch size and crop length (32 x 128 x 40) with random labels over
600 speakers, made before timing. A step is a whole training step as each code base runs it:
spkid's as spkid.train.loop.train does (forward with mask and labels, cross-entropy on float32
logits, backward, AdamW and LR-schedule steps, the accuracy from the head), the students'
as the sample code's loop does (model_fn: forward, cross-entropy, accuracy, .item(); then
backward, optimizer and scheduler steps, zero_grad). Both use the recipe's schedule. Data
loading, validation and checkpoints are left out: this compares the models and their steps.

The contenders alternate in rounds of --steps steps, so drifts in machine load hit all of
them; each one's figure is the median over rounds of its steps/s, and the ratio to the
students' model is the median of the per-round ratios. `--variant KEY=VALUE` adds spkid's
recipe with that override (e.g. the earlier recipe's model.dropout=0.1). Before timing, the
first step's losses are compared: the same weights and batch must give the same loss."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from spkid.core.device import autocast, pick_device, training_dtype  # noqa: E402
from spkid.core.recipes import parse_override  # noqa: E402
from spkid.train.schedule import warmup_cosine  # noqa: E402
from tests.hw4_homework import (HW4_SPEAKERS, HomeworkBest, load_homework_weights,  # noqa: E402
                                recipe_net, recipe_params)

RECIPE = "hw4_best"


class Contender:
    """A model, its optimizer and schedule, and one training step as its code base runs it."""

    def __init__(self, label: str, model, t, homework: bool):
        self.label, self.model, self.homework = label, model, homework
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr,
                                           weight_decay=t.weight_decay)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(t.warmup_steps, t.steps))
        self.rates: list[float] = []

    def forward(self, x, mask, y, device):
        """The loss as the training loop computes it, after the students' logits or spkid's
        embeddings (what the rest of the step uses)."""
        if self.homework:
            outs = self.model(x)
            return outs, F.cross_entropy(outs, y)
        with autocast(device, training_dtype(device)):
            emb, logits = self.model(x, mask, y)
        return emb, F.cross_entropy(logits.float(), y)

    def step(self, x, mask, y, device) -> None:
        out, loss = self.forward(x, mask, y, device)
        if self.homework:
            accuracy = torch.mean((out.argmax(1) == y).float())
            loss.item(), accuracy.item()
            loss.backward()
            self.optimizer.step()
            self.schedule.step()
            self.optimizer.zero_grad()
            return
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.schedule.step()
        with torch.no_grad():
            (self.model.head(out.float()).argmax(1) == y).float().mean()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=10, help="steps per contender per round")
    ap.add_argument("--batches", type=int, default=8, help="distinct batches, cycled")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--variant", nargs="+", action="extend", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    p = recipe_params(RECIPE)
    t = p.train
    torch.manual_seed(0)
    students = HomeworkBest(n_spks=HW4_SPEAKERS)

    def ours(label: str, overrides: dict) -> Contender:
        net = recipe_net(RECIPE, overrides)
        load_homework_weights(RECIPE, students, net)
        return Contender(label, net.to(device).train(), t, homework=False)

    contenders = [Contender("students' model", students.to(device).train(), t, homework=True),
                  ours(f"spkid recipe {RECIPE}", {})]
    contenders += [ours(f"spkid {RECIPE} + {v}", dict([parse_override(v)]))
                   for v in args.variant]

    g = torch.Generator().manual_seed(1)
    shape = (t.batch_size, p.index.segment_len, 40)
    batches = [(torch.randn(shape, generator=g).to(device),
                torch.ones(shape[:2], dtype=torch.bool, device=device),
                torch.randint(0, HW4_SPEAKERS, shape[:1], generator=g).to(device))
               for _ in range(args.batches)]
    first = [c.forward(*batches[0], device)[1].item() for c in contenders[:2]]
    if abs(first[0] - first[1]) > 1e-4 * abs(first[0]):
        raise SystemExit(f"first-step losses differ: {first}: not the same model")
    print(f"first-step loss {first[0]:.5f} (students) vs {first[1]:.5f} (spkid); "
          f"{sum(w.numel() for w in students.parameters()):,} parameters; batch {shape}; "
          f"{torch.get_num_threads()} threads, {device}", flush=True)

    def timed(c: Contender, start: int, n: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        began = time.perf_counter()
        for k in range(start, start + n):
            c.step(*batches[k % len(batches)], device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return n / (time.perf_counter() - began)

    for c in contenders:  # warm-up: allocator, kernels, optimizer state
        timed(c, 0, 2)
    for r in range(args.rounds):
        for c in contenders:
            c.rates.append(timed(c, r * args.steps, args.steps))
        print(f"round {r + 1}: " + ", ".join(f"{c.label} {c.rates[-1]:.2f}" for c in contenders)
              + " steps/s", flush=True)

    base = contenders[0].rates
    print("| model | steps/s (median) | ratio to the students' model |")
    print("|---|---|---|")
    for c in contenders:
        ratio = statistics.median(a / b for a, b in zip(c.rates, base))
        print(f"| {c.label} | {statistics.median(c.rates):.2f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
