"""The training curves: dvclive's per-metric TSV files read back and drawn in four panels."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from spkid.report.pictures import pyplot, save


def read_curve(tsv: Path) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one dvclive metric file (columns timestamp, step, <name>)."""
    with open(tsv, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows:
        return np.empty(0), np.empty(0)
    name = [k for k in rows[0] if k not in ("timestamp", "step")][0]
    return (np.array([float(r["step"]) for r in rows]),
            np.array([float(r[name]) for r in rows]))


def dvclive_curves(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every metric dvclive logged under `folder` (its plots/metrics), by name."""
    folder = Path(folder)
    return {tsv.relative_to(folder).with_suffix("").as_posix(): read_curve(tsv)
            for tsv in sorted(folder.rglob("*.tsv"))}


def training_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, *,
                    margin: float | None = None) -> None:
    """Loss, accuracy (train and val), learning rate and margin by step, in four panels;
    `curves` maps dvclive names ("train/loss", "val/accuracy", "lr", "margin", ...) to
    (steps, values). A margin that was not scheduled (no "margin" curve) is drawn flat at
    `margin`. Missing curves leave their panel empty."""
    plt = pyplot()
    if "margin" not in curves and margin is not None and "lr" in curves:
        curves = {**curves, "margin": (curves["lr"][0], np.full(len(curves["lr"][0]), margin))}
    fig, axes = plt.subplots(2, 2, figsize=(9.6, 6.0), sharex=True)
    panels = [("loss", ["train/loss"]), ("accuracy", ["train/accuracy", "val/accuracy"]),
              ("learning rate", ["lr"]), ("margin", ["margin"])]
    for ax, (title, names) in zip(axes.flat, panels):
        for name in names:
            if name in curves and len(curves[name][0]):
                steps, values = curves[name]
                ax.plot(steps, values, marker="o" if name.startswith("val") else None,
                        markersize=3, label=name)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if len(names) > 1:
            ax.legend(fontsize=8)
    for ax in axes[1]:
        ax.set_xlabel("step")
    fig.tight_layout()
    save(fig, path)
