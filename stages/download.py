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

import filecmp
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import typer

import spkid.synthetic
from spkid.atomic import atomic_dir, atomic_path, remove_stale_temporaries, write_json
from spkid.errors import DataError
from spkid.manifest import write_manifest
from spkid.params import load_params
from spkid.sources.unseen import scan_unseen_speakers
from stages.common import ParamsOption, exclusive, one_line_errors, summary
from stages.layout import DOWNLOADS, MANIFEST, RAW, SOURCE_STAMP, UNSEEN_MANIFEST

app = typer.Typer(add_completion=False)


def _stamp(p) -> dict:
    code = hashlib.sha256(Path(spkid.synthetic.__file__).read_bytes()).hexdigest()
    # Only what the generator reads: changing data.verify_dir or data.min_seconds must not
    # regenerate the corpus.
    data = {"seed": p.data.seed, "synthetic": p.data.synthetic.to_dict()}
    return {"data": data, "sample_rate": p.features.sample_rate, "code": code}


def _synthetic(p, verify: tuple[list, dict]) -> str:
    stamp = _stamp(p)
    if SOURCE_STAMP.exists() and MANIFEST.exists() and json.loads(SOURCE_STAMP.read_text()) == stamp:
        # atomic_dir(RAW) cleans up after a killed regeneration, but it does not run here.
        remove_stale_temporaries(RAW)
        _write_unseen(UNSEEN_MANIFEST, verify, only_if_changed=True)
        return "synthetic corpus is current"
    s = p.data.synthetic
    with atomic_dir(RAW) as tmp:
        rows = spkid.synthetic.generate_corpus(
            tmp, speakers=s.speakers, utterances_per_speaker=s.utterances_per_speaker,
            submit_per_speaker=s.submit_per_speaker, min_seconds=s.min_seconds,
            max_seconds=s.max_seconds, snr_db=s.snr_db, spread=s.spread,
            sample_rate=p.features.sample_rate, seed=p.data.seed)
        # The stamp's digest makes the manifest change whenever the audio may have, so a
        # stage may depend on the manifest alone.
        digest = hashlib.sha256(json.dumps(stamp, sort_keys=True).encode()).hexdigest()
        write_manifest(tmp / MANIFEST.name, rows, {"format": "audio", "source": "synthetic",
                                                   "generator": digest})
        write_json(tmp / SOURCE_STAMP.name, stamp)
        _write_unseen(tmp / UNSEEN_MANIFEST.name, verify)
    seconds = sum(r.duration for r in rows)
    return f"synthetic corpus: {len(rows)} utterances, {s.speakers} speakers, {seconds / 60:.1f} min of audio"


# --- external data: hw4, audio_dir, url --------------------------------------------------

def _local(path: str) -> Path:
    """A params path: relative ones resolve against the repository root (the cwd of the
    stage). Absolute, not resolved: symlinked data folders keep their names."""
    return Path(os.path.abspath(path))


def _fetch(p) -> tuple[str, Path, str]:
    """(layout, data folder, description) of the unpacked data.url archive."""
    from spkid.sources.fetch import fetch, locate_layout

    urls = [p.data.url] if isinstance(p.data.url, str) else list(p.data.url)
    key = hashlib.sha256("\n".join(urls).encode()).hexdigest()[:12]
    root = fetch(urls, DOWNLOADS / f"extracted-{key}", sha256=p.data.sha256,
                 cache_dir=DOWNLOADS, progress=sys.stderr.isatty())
    layout = p.data.layout
    try:
        found, folder = locate_layout(root)
    except DataError:
        if layout == "auto":
            raise
        found, folder = layout, root  # the scanner below names what is missing
    if layout not in ("auto", found):
        folder = root
    else:
        layout = found
    origin = urls[0] if len(urls) == 1 else f"{urls[0]} (+{len(urls) - 1} parts)"
    return layout, folder.absolute(), origin


def _scan(p, layout: str, folder: Path, verify_meta: dict, submit_base: Path | None):
    """(rows, meta, description) of a hw4 folder or an audio folder."""
    if layout == "hw4":
        from spkid.sources.hw4 import scan_hw4
        if p.data.submit_dir is not None:
            raise DataError(f"params: data.submit_dir = {p.data.submit_dir!r}: only for "
                            "audio_dir data (a HW4 folder lists its submit utterances in "
                            "testdata.json)")
        rows, meta = scan_hw4(folder)
        n_submit = sum(r.role == "submit" for r in rows)
        text = (f"{len(rows) - n_submit} utterances, {len(meta['speakers'])} speakers, "
                f"{n_submit} submit (precomputed {meta['n_mels']}-mel features)")
        return rows, meta, text

    from spkid.sources.audio_dir import scan_audio_dir, submit_rows
    from spkid.sources.kaldi import scan_kaldi
    submit = None
    if p.data.submit_dir is not None:
        submit = Path(os.path.abspath((submit_base or Path.cwd()) / p.data.submit_dir))
    if layout == "kaldi":
        rows, meta = scan_kaldi(folder, min_seconds=p.data.min_seconds, short=p.data.short)
        rows += submit_rows(submit) if submit is not None else []
    else:
        # A verification folder inside data.path holds unseen speakers, not training ones.
        exclude = [verify_meta["verify_dir"]] if verify_meta.get("verify_dir") else []
        rows, meta = scan_audio_dir(folder, min_seconds=p.data.min_seconds, short=p.data.short,
                                    submit_dir=submit, exclude=exclude)
    labelled = [r for r in rows if r.role is None]
    n_submit = len(rows) - len(labelled)
    minutes = sum(r.duration for r in labelled) / 60
    if p.data.short == "skip":
        short = f"{meta['skipped_short']} skipped"
    else:
        short = f"{sum(r.duration < p.data.min_seconds for r in labelled)} to pad"
    unit = "utterances" if layout == "kaldi" else "recordings"
    text = (f"{len(labelled)} {unit}, {len(meta['speakers'])} speakers, {minutes:.1f} min "
            f"of audio, {n_submit} submit (short: {short}, min_seconds {p.data.min_seconds:g})")
    return rows, meta, text


def _external(p, verify: tuple[list, dict]) -> str:
    submit_base = None
    if p.data.source == "url":
        layout, folder, origin = _fetch(p)
        # A relative submit_dir names a folder inside the archive: the user cannot know
        # where it was unpacked.
        submit_base = folder
    else:
        layout, folder, origin = p.data.source, _local(p.data.path), None
    rows, meta, text = _scan(p, layout, folder, verify[1], submit_base)
    _warn_overlap(rows, verify)
    meta = {**meta, "source": p.data.source, "folder": str(folder)}
    if origin is not None:
        meta["url"] = origin
    changed = _replace_if_changed(RAW, lambda tmp: (
        write_manifest(tmp / MANIFEST.name, rows, meta),
        _write_unseen(tmp / UNSEEN_MANIFEST.name, verify)))
    where = f"{origin} -> {folder}" if origin else str(folder)
    return f"{layout} {where}: {text}{'' if changed else '; unchanged'}"


def _warn_overlap(rows, verify) -> None:
    vrows, _ = verify
    train = {r.speaker for r in rows if r.speaker}
    shared = sorted(train & {r.speaker for r in vrows if r.speaker})
    if shared:
        print(f"spkid: warning: {len(shared)} verification speaker(s) also appear in the "
              f"training data (e.g. {shared[0]!r}): data.verify_dir should hold unseen speakers",
              file=sys.stderr)


# --- writing ----------------------------------------------------------------------------

def _write_unseen(path: Path, verify: tuple[list, dict], only_if_changed: bool = False) -> None:
    """The verification manifest; written even when empty (evaluate depends on it)."""
    rows, meta = verify
    if only_if_changed:
        _replace_if_changed(path, lambda tmp: write_manifest(tmp, rows, meta), is_dir=False)
    else:
        write_manifest(path, rows, meta)


class _Unchanged(Exception):
    pass


def _replace_if_changed(target: Path, write, is_dir: bool = True) -> bool:
    """Build the new `target` in a temporary sibling with write(tmp) and put it in place
    in one rename, unless it is byte for byte what is already there: then the old one
    stays untouched (same mtimes, so DVC need not even re-hash it). Returns whether it
    was replaced."""
    try:
        with (atomic_dir(target) if is_dir else atomic_path(target)) as tmp:
            write(tmp)
            if _same(tmp, target, is_dir):
                raise _Unchanged
    except _Unchanged:
        return False
    return True


def _same(new: Path, old: Path, is_dir: bool) -> bool:
    if not is_dir:
        return old.is_file() and filecmp.cmp(new, old, shallow=False)
    if not old.is_dir():
        return False
    names = sorted(f.name for f in new.iterdir())
    if names != sorted(f.name for f in old.iterdir()):
        return False
    return all((new / n).is_file() and (old / n).is_file()
               and filecmp.cmp(new / n, old / n, shallow=False) for n in names)


@app.command()
@one_line_errors
@exclusive
def download(params: Path = ParamsOption):
    """Generate or fetch the corpus and write its manifest."""
    started = time.perf_counter()
    p = load_params(params)
    # Scan the verification audio first: a bad file there fails before anything is written.
    verify = scan_unseen_speakers(
        _local(p.data.verify_dir) if p.data.verify_dir is not None else None,
        _local(p.evaluate.trials) if p.evaluate.trials is not None else None)
    if p.data.source == "synthetic":
        text = _synthetic(p, verify)
    else:
        text = _external(p, verify)
    if verify[1]["kind"] is not None:
        vrows, vmeta = verify
        what = (f"{vmeta['pairs']} listed trials over {len(vrows)} recordings"
                if vmeta["kind"] == "trials" else
                f"{len(vrows)} recordings, {len(vmeta['speakers'])} speakers")
        text += f"; verify: {what}"
    summary("download", text, time.perf_counter() - started)
