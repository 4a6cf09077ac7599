"""download: bring the utterances in and write data/raw/manifest.parquet.

The stage runs on every `dvc repro` (always_changed) so that changes inside folders outside
the repository are noticed; it does no work when its stamp shows the output is current."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import typer

import spkid.synthetic
from spkid.atomic import atomic_dir, write_json
from spkid.manifest import write_manifest
from spkid.params import load_params
from stages.common import ParamsOption, one_line_errors, summary
from stages.layout import MANIFEST, RAW, SOURCE_STAMP

app = typer.Typer(add_completion=False)


def _stamp(p) -> dict:
    code = hashlib.sha256(Path(spkid.synthetic.__file__).read_bytes()).hexdigest()
    return {"data": p.data.to_dict(), "sample_rate": p.features.sample_rate, "code": code}


def _synthetic(p) -> str:
    stamp = _stamp(p)
    if SOURCE_STAMP.exists() and MANIFEST.exists() and json.loads(SOURCE_STAMP.read_text()) == stamp:
        return "synthetic corpus is current"
    s = p.data.synthetic
    with atomic_dir(RAW) as tmp:
        rows = spkid.synthetic.generate_corpus(
            tmp, speakers=s.speakers, utterances_per_speaker=s.utterances_per_speaker,
            submit_per_speaker=s.submit_per_speaker, min_seconds=s.min_seconds,
            max_seconds=s.max_seconds, snr_db=s.snr_db, spread=s.spread,
            sample_rate=p.features.sample_rate, seed=p.data.seed)
        write_manifest(tmp / MANIFEST.name, rows, {"format": "audio", "source": "synthetic"})
        write_json(tmp / SOURCE_STAMP.name, stamp)
    seconds = sum(r.duration for r in rows)
    return f"synthetic corpus: {len(rows)} utterances, {s.speakers} speakers, {seconds / 60:.1f} min of audio"


@app.command()
@one_line_errors
def download(params: Path = ParamsOption):
    """Generate or fetch the corpus and write its manifest."""
    started = time.perf_counter()
    p = load_params(params)
    text = _synthetic(p)
    summary("download", text, time.perf_counter() - started)


if __name__ == "__main__":
    app()
