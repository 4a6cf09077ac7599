"""download: bring the utterances in and write data/raw/manifest.parquet.

The stage runs on every `dvc repro` (always_changed) so that changes inside folders outside
the repository are noticed; it does no work when its stamp shows the output is current.

    synthetic   generate the corpus into data/raw/ (skipped when source.json is current)
    hw4         a HW4 Kaggle folder (data.path): precomputed log-mel .pt files
    audio_dir   a folder of recordings, one subfolder per speaker (data.path)
    kaldi       a Kaldi-style folder: wav.scp, utt2spk, optional segments (data.path)
    url         download data.url into data/downloads/ (a cache outside every DVC out),
                unpack it there and continue as hw4 or audio_dir (data.layout)

A local folder is never copied: data/raw/manifest.parquet names its files by absolute
path with size/mtime fingerprints, so a changed file changes the manifest and DVC re-runs
`features`; an unchanged folder gives a byte-identical manifest and nothing re-runs.
data/raw/verify.parquet does the same for the verification audio (data.verify_dir,
evaluate.trials), which only `evaluate` reads.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from spkid.core.params import load_params
from spkid.data.sources.collect import (RawFiles, external_source, local_path, synthetic_corpus,
                                        unseen_summary)
from spkid.data.sources.unseen import scan_unseen_speakers
from stages.common import ParamsOption, exclusive, one_line_errors, summary
from stages.layout import DOWNLOADS, MANIFEST, RAW, SOURCE_STAMP, UNSEEN_MANIFEST

app = typer.Typer(add_completion=False)
FILES = RawFiles(RAW, MANIFEST, SOURCE_STAMP, UNSEEN_MANIFEST, DOWNLOADS)


@app.command()
@one_line_errors
@exclusive
def download(params: Path = ParamsOption):
    """Generate or fetch the corpus and write its manifest."""
    started = time.perf_counter()
    p = load_params(params)
    # Scan the verification audio first: a bad file there fails before anything is written.
    unseen = scan_unseen_speakers(
        local_path(p.data.verify_dir) if p.data.verify_dir is not None else None,
        local_path(p.evaluate.trials) if p.evaluate.trials is not None else None)
    source = synthetic_corpus if p.data.source == "synthetic" else external_source
    summary("download", source(p, FILES, unseen) + unseen_summary(unseen),
            time.perf_counter() - started)
