"""download: bring the utterances in and write data/raw/manifest.parquet.

The stage runs on every `dvc repro` (always_changed) so that changes inside folders outside
the repository are noticed; it does no work when its stamp shows the output is current.

    synthetic   generate the corpus into data/raw/ (skipped when source.json is current)
    hw4         a HW4 Kaggle folder (data.path): precomputed log-mel .pt files
    audio_dir   a folder of recordings, one subfolder per speaker (data.path)
    kaldi       a Kaldi-style folder: wav.scp, utt2spk, optional segments (data.path)
    url         download data.url into data/downloads/ (a cache outside every DVC out),
                unpack it there and continue as hw4 or audio_dir (data.layout)

A local folder is never copied: data/raw/manifest.parquet names its files relative to
the folder (data/raw/manifest.roots.json says where it is) with size/mtime fingerprints,
so a changed file changes the manifest and DVC re-runs `features`; an unchanged folder,
or the same folder moved elsewhere, gives a byte-identical manifest and nothing re-runs.
data/raw/verify.parquet does the same for the verification audio (data.verify_dir,
evaluate.trials), which only `evaluate` reads, with absolute paths.

Each recording is checked to decode to its end once: data/downloads/audio-checks.parquet
remembers it by path, size and mtime, so a repro after which nothing changed opens no
audio file; the first check uses every core.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer

from spkid.core.params import load_params
from spkid.data.sources.checks import AudioChecks
from spkid.data.sources.collect import (RawFiles, external_source, local_path, synthetic_corpus,
                                        unseen_summary)
from spkid.data.sources.unseen import scan_unseen_speakers
from stages.common import ParamsOption, exclusive, one_line_errors, summary
from stages.layout import (AUDIO_CHECKS, DOWNLOADS, HELD_OUT, MANIFEST, RAW, SOURCE_STAMP,
                           UNSEEN_MANIFEST)

app = typer.Typer(add_completion=False)
FILES = RawFiles(RAW, MANIFEST, SOURCE_STAMP, UNSEEN_MANIFEST, DOWNLOADS, HELD_OUT)


@app.command()
@one_line_errors
@exclusive
def download(params: Path = ParamsOption):
    """Generate or fetch the corpus and write its manifest."""
    started = time.perf_counter()
    p = load_params(params)
    checks = AudioChecks(AUDIO_CHECKS, workers=os.cpu_count() or 1)
    try:
        # The verification audio first: a bad file there fails before anything is written.
        unseen = scan_unseen_speakers(
            local_path(p.data.verify_dir) if p.data.verify_dir is not None else None,
            [local_path(t) for t in p.evaluate.trials or []], checks,
            calibration=local_path(p.evaluate.calibration_trials)
            if p.evaluate.calibration_trials is not None else None)
        if p.data.source == "synthetic":
            text, unseen = synthetic_corpus(p, FILES, unseen)
        else:
            text = external_source(p, FILES, unseen, checks)
    finally:
        checks.save()  # what was checked before a failure need not be checked again
    opened = (f"; {checks.opened} of {checks.asked} recordings opened (the others unchanged "
              "since checked)" if checks.asked else "")
    summary("download", text + unseen_summary(unseen) + opened, time.perf_counter() - started)
