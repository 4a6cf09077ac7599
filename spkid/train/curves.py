"""The run's curves: per-validation metrics logged as dvclive's TSV files, and trimming
them back to a checkpoint's step when a run resumes."""

from __future__ import annotations

from pathlib import Path

from dvclive import Live

from spkid.core.atomic import write_text


class CurveLog:
    """Per-validation metrics to dvclive's TSV curves (rank 0 only)."""

    def __init__(self, folder: Path, resume: bool):
        # dvc.yaml is hand-written: dvclive must not rewrite it or create experiments itself.
        self.folder = Path(folder)
        self.live = Live(dir=str(folder), resume=resume, dvcyaml=None, save_dvc_exp=False,
                         report=None)

    def __call__(self, metrics: dict, step: int) -> None:
        self.live.step = step
        for name, value in metrics.items():
            self.live.log_metric(name, value)
        self.live.next_step()

    def end(self) -> None:
        self.live.end()
        # dvclive's own summary would duplicate the run's metrics file.
        (self.folder / "metrics.json").unlink(missing_ok=True)


def trim_curves(folder, step: int) -> None:
    """Drop the rows after `step` from dvclive's per-metric TSV curves under `folder`, so a
    run resumed from the checkpoint of `step` logs each step once."""
    for path in Path(folder).rglob("*.tsv"):
        lines = path.read_text().splitlines()
        if not lines or "step" not in lines[0].split("\t"):
            continue
        col = lines[0].split("\t").index("step")
        kept = [line for line in lines[1:] if int(line.split("\t")[col]) <= step]
        if len(kept) < len(lines) - 1:
            write_text(path, "\n".join([lines[0], *kept]) + "\n")
