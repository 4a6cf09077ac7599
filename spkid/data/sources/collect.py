"""Bringing the utterances in: the synthetic corpus, or a local folder / fetched archive
scanned into manifest rows, written into the raw folder (`RawFiles`, given by the caller)
only when it changed, so an unchanged source keeps every hash and nothing downstream
re-runs."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from spkid.core.atomic import atomic_dir, remove_stale_temporaries, replace_if_changed, write_json
from spkid.core.errors import DataError
from spkid.data import synthetic
from spkid.data.manifest import ManifestRoots, ManifestRow, read_manifest, rows_table, write_manifest
from spkid.data.sources.audio_dir import scan_audio_dir, submit_rows
from spkid.data.sources.checks import AudioChecks
from spkid.data.sources.fetch import fetch, locate_layout
from spkid.data.sources.hw4 import scan_hw4
from spkid.data.sources.kaldi import scan_kaldi_table
from spkid.data.sources.unseen import FORMAT as UNSEEN_FORMAT


@dataclass(frozen=True)
class RawFiles:
    raw: Path  # the folder the stage owns
    manifest: Path
    stamp: Path  # what generated the synthetic corpus
    unseen: Path  # the unseen-speaker manifest
    downloads: Path  # download cache, outside every DVC output
    held_out: Path  # the synthetic speakers held out of training (inside raw)


def unseen_summary(unseen: tuple[list, dict]) -> str:
    """How the unseen-speaker recordings read in a summary line ("" when there are none)."""
    unseen_rows, unseen_meta = unseen
    if unseen_meta["kind"] is None:
        return ""
    unit = ("utterances" if unseen_meta.get("keys") == "utterance_id"  # Kaldi's
            else "recordings")
    if unseen_meta["kind"] == "trials":
        lists = unseen_meta["lists"]
        each = ", ".join(f"{e['name']} {e['pairs']}" for e in lists)
        listed = (f"{lists[0]['pairs']} listed trials" if len(lists) == 1 else
                  f"{len(lists)} lists ({each} trials)")
        what = f"{listed} over {len(unseen_rows)} {unit}"
    else:
        what = f"{len(unseen_rows)} {unit}, {len(unseen_meta['speakers'])} speakers"
    return f"; verify: {what}"


_UNSEEN_KEYS = ("unseen_speakers", "unseen_utterances_per_speaker")


def _stamp(p) -> dict:
    code = hashlib.sha256(Path(synthetic.__file__).read_bytes()).hexdigest()
    # Only what the generator reads: changing data.verify_dir or data.min_seconds must not
    # regenerate the corpus.
    data = {"seed": p.data.seed, "synthetic": p.data.synthetic.to_dict()}
    return {"data": data, "sample_rate": p.features.sample_rate, "code": code}


def _training_digest(stamp: dict) -> str:
    """The training manifest's generator digest: the stamp without the held-out speakers,
    who change none of the training audio (so holding out more re-extracts nothing)."""
    data = {**stamp["data"], "synthetic": {k: v for k, v in stamp["data"]["synthetic"].items()
                                           if k not in _UNSEEN_KEYS}}
    return hashlib.sha256(json.dumps({**stamp, "data": data}, sort_keys=True).encode()).hexdigest()


def held_out_speakers(rows: list[ManifestRow], raw: Path) -> tuple[list, dict]:
    """The unseen-speaker manifest (rows, meta) of the synthetic speakers held out of
    training (`rows` of role "unseen", paths relative to the corpus folder `raw`)."""
    rows = [replace(r, path=str(raw / r.path)) for r in rows]
    return rows, {"format": UNSEEN_FORMAT, "kind": "dir", "verify_dir": str(raw / "verify"),
                  "speakers": sorted({r.speaker for r in rows}), "held_out": True}


def synthetic_corpus(p, files: RawFiles, unseen: tuple[list, dict]) -> tuple[str, tuple]:
    """Generate the synthetic corpus into files.raw (nothing to do when its stamp matches).
    Returns what to tell the user and the unseen-speaker manifest written: `unseen` (from
    data.verify_dir / evaluate.trials), else the speakers held out of the corpus."""
    stamp = _stamp(p)
    s = p.data.synthetic
    hold_out = unseen[1]["kind"] is None and s.unseen_speakers > 0
    if files.stamp.exists() and files.manifest.exists() and json.loads(files.stamp.read_text()) == stamp:
        # atomic_dir(files.raw) cleans up after a killed regeneration, but it does not run here.
        remove_stale_temporaries(files.raw)
        if hold_out and files.held_out.exists():
            unseen = held_out_speakers(read_manifest(files.held_out)[0], files.raw)
        write_unseen(files.unseen, unseen, only_if_changed=True)
        return "synthetic corpus is current", unseen
    with atomic_dir(files.raw) as tmp:
        rows = synthetic.generate_corpus(
            tmp, speakers=s.speakers, utterances_per_speaker=s.utterances_per_speaker,
            submit_per_speaker=s.submit_per_speaker, min_seconds=s.min_seconds,
            max_seconds=s.max_seconds, snr_db=s.snr_db, spread=s.spread,
            unseen_speakers=s.unseen_speakers,
            unseen_utterances_per_speaker=s.unseen_utterances_per_speaker,
            sample_rate=p.features.sample_rate, seed=p.data.seed)
        held = [r for r in rows if r.role == "unseen"]
        rows = [r for r in rows if r.role != "unseen"]
        # The stamp's digest makes the manifest change whenever the audio may have, so a
        # stage may depend on the manifest alone.
        write_manifest(tmp / files.manifest.name, rows, {"format": "audio", "source": "synthetic",
                                                   "generator": _training_digest(stamp)})
        # Kept beside the corpus, so a later data.verify_dir change can bring them back.
        held = [replace(r, role=None) for r in held]
        write_manifest(tmp / files.held_out.name, held, {"format": "audio", "source": "synthetic"})
        if hold_out:
            unseen = held_out_speakers(held, files.raw)
        write_json(tmp / files.stamp.name, stamp)
        write_unseen(tmp / files.unseen.name, unseen)
    seconds = sum(r.duration for r in rows)
    return (f"synthetic corpus: {len(rows)} utterances, {s.speakers} speakers, "
            f"{seconds / 60:.1f} min of audio", unseen)


# --- external data: hw4, audio_dir, url --------------------------------------------------

def local_path(path: str) -> Path:
    """A params path: relative ones resolve against the repository root (the cwd of the
    stage). Absolute, not resolved: symlinked data folders keep their names."""
    return Path(os.path.abspath(path))


def _fetch(p, files: RawFiles) -> tuple[str, Path, str]:
    """(layout, data folder, description) of the unpacked data.url archive."""
    urls = [p.data.url] if isinstance(p.data.url, str) else list(p.data.url)
    key = hashlib.sha256("\n".join(urls).encode()).hexdigest()[:12]
    root = fetch(urls, files.downloads / f"extracted-{key}", sha256=p.data.sha256,
                 cache_dir=files.downloads, progress=sys.stderr.isatty())
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


def _scan(p, layout: str, folder: Path, unseen_meta: dict, submit: Path | None,
          checks: AudioChecks) -> tuple[pa.Table, dict, str]:
    """(manifest table, meta, description) of a hw4 folder or an audio folder."""
    if layout == "hw4":
        if p.data.submit_dir is not None:
            raise DataError(f"params: data.submit_dir = {p.data.submit_dir!r}: only for "
                            "audio_dir data (a HW4 folder lists its submit utterances in "
                            "testdata.json)")
        rows, meta = scan_hw4(folder)
        n_submit = sum(r.role == "submit" for r in rows)
        text = (f"{len(rows) - n_submit} utterances, {len(meta['speakers'])} speakers, "
                f"{n_submit} submit (precomputed {meta['n_mels']}-mel features)")
        return rows_table(rows), meta, text

    if layout == "kaldi":
        table, meta = scan_kaldi_table(folder, min_seconds=p.data.min_seconds,
                                       short=p.data.short, checks=checks)
        if submit is not None:
            table = pa.concat_tables([table, rows_table(submit_rows(submit, checks))])
    else:
        # A verification folder inside data.path holds unseen speakers, not training ones.
        exclude = [unseen_meta["verify_dir"]] if unseen_meta.get("verify_dir") else []
        rows, meta = scan_audio_dir(folder, min_seconds=p.data.min_seconds, short=p.data.short,
                                    submit_dir=submit, exclude=exclude, checks=checks)
        table = rows_table(rows)
    labelled = table.filter(pc.is_null(table["role"]))
    n_submit = len(table) - len(labelled)
    durations = labelled["duration"].to_numpy()
    if p.data.short == "skip":
        short = f"{meta['skipped_short']} skipped"
    else:
        short = f"{int((durations < p.data.min_seconds).sum())} to pad"
    unit = "utterances" if layout == "kaldi" else "recordings"
    text = (f"{len(labelled)} {unit}, {len(meta['speakers'])} speakers, "
            f"{durations.sum() / 60:.1f} min of audio, {n_submit} submit (short: {short}, "
            f"min_seconds {p.data.min_seconds:g})")
    return table, meta, text


def external_source(p, files: RawFiles, unseen: tuple[list, dict], checks: AudioChecks) -> str:
    """Scan a local folder or a fetched archive (hw4, audio_dir, kaldi) into files.raw,
    opening only the recordings `checks` has not seen as they are."""
    submit_base = None
    if p.data.source == "url":
        layout, folder, origin = _fetch(p, files)
        # A relative submit_dir names a folder inside the archive: the user cannot know
        # where it was unpacked.
        submit_base = folder
    else:
        layout, folder, origin = p.data.source, local_path(p.data.path), None
    submit = None
    if p.data.submit_dir is not None:
        submit = Path(os.path.abspath((submit_base or Path.cwd()) / p.data.submit_dir))
    table, meta, text = _scan(p, layout, folder, unseen[1], submit, checks)
    _warn_overlap(meta["speakers"], unseen)
    # Not the folder: the manifest names files relative to it, so a moved corpus gives
    # the same bytes (the roots sidecar says where it is now).
    meta = {**meta, "source": p.data.source}
    if origin is not None:
        meta["url"] = origin
    roots = ManifestRoots(str(folder), str(submit) if submit is not None else None)
    changed = replace_if_changed(files.raw, lambda tmp: (
        write_manifest(tmp / files.manifest.name, table, meta, roots),
        write_unseen(tmp / files.unseen.name, unseen)))
    where = f"{origin} -> {folder}" if origin else str(folder)
    return f"{layout} {where}: {text}{'' if changed else '; unchanged'}"


def _warn_overlap(speakers: list[str], unseen) -> None:
    unseen_rows, _ = unseen
    shared = sorted(set(speakers) & {r.speaker for r in unseen_rows if r.speaker})
    if shared:
        print(f"spkid: warning: {len(shared)} verification speaker(s) also appear in the "
              f"training data (e.g. {shared[0]!r}): data.verify_dir should hold unseen speakers",
              file=sys.stderr)


def write_unseen(path: Path, unseen: tuple[list, dict], only_if_changed: bool = False) -> None:
    """The verification manifest; written even when empty (evaluate depends on it)."""
    rows, meta = unseen
    if only_if_changed:
        replace_if_changed(path, lambda tmp: write_manifest(tmp, rows, meta), is_dir=False)
    else:
        write_manifest(path, rows, meta)
