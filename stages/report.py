"""report: one self-contained page of the run -> metrics/report.html.

Headline metrics, the params that differ from the defaults, the data version (dvc.lock),
and the pictures `train` and `evaluate` drew (metrics/plots/*.png), all inline: the page
needs no network to open."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
import yaml

from spkid.core.atomic import atomic_path
from spkid.core.errors import DataError
from spkid.core.params import defaults, load_params
from spkid.report.page import render_report
from stages.common import ParamsOption, exclusive, one_line_errors, summary
from stages.layout import CONFUSIONS, EVAL_METRICS, PLOTS, REPORT, TRAIN_METRICS, TRAINING_PLOT

app = typer.Typer(add_completion=False)
LOCK = Path("dvc.lock")
PICTURES = [(TRAINING_PLOT, "training: loss, accuracy, learning rate and margin by step"),
            (PLOTS / "det.png", "DET curves (normal-deviate axes), EER marked"),
            (PLOTS / "scores.png", "target and non-target scores, EER threshold dashed"),
            (PLOTS / "embeddings.png", "val embeddings, t-SNE, coloured by speaker"),
            (PLOTS / "confusions.png", "most confused speaker pairs on val")]


@app.command()
@one_line_errors
@exclusive
def report(params: Path = ParamsOption):
    """Write metrics/report.html from the metrics and pictures of the run."""
    started = time.perf_counter()
    p = load_params(params)
    page = render_report(
        metrics=_metrics(EVAL_METRICS, "evaluate"), train=_metrics(TRAIN_METRICS, "train"),
        params=p.to_dict(), defaults=defaults(),
        lock=yaml.safe_load(LOCK.read_text()) if LOCK.exists() else None,
        images=[(path, caption) for path, caption in PICTURES if path.exists()],
        confusions=json.loads(CONFUSIONS.read_text()) if CONFUSIONS.exists() else [])
    with atomic_path(REPORT) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    summary("report", f"{REPORT} ({len(page) / 1e3:.0f} kB, self-contained)",
            time.perf_counter() - started)


def _metrics(path: Path, stage: str) -> dict:
    """A metrics file the report is made from; a missing or unreadable one is one line."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: not found (run `spkid {stage}` or `dvc repro`)") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not readable JSON ({exc}); run `spkid {stage}` again") from None
