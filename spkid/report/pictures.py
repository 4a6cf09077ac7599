"""Drawing a picture of a run as a PNG file (spkid.report.training_curves and
evaluation_plots draw with it).

PNGs carry no timestamp or software tag, so the same data gives the same bytes and DVC
sees no change where there is none."""

from __future__ import annotations

from pathlib import Path

from spkid.core.atomic import atomic_path

FIGSIZE = (6.4, 4.0)
DPI = 100


def pyplot():
    # Imported here: the Agg backend must be chosen before pyplot loads (no screen on a
    # cluster node, no GUI toolkit), and only drawing pays matplotlib's start-up.
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # only after use("Agg")
    return plt


def save(fig, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})
    pyplot().close(fig)
