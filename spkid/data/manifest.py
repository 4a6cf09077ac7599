"""The manifest: what the `download` step found, one row per recording (or per
precomputed feature file), written as Parquet.

Columns
    utterance_id  string   unique id (for hw4: the feature_path, as Kaggle expects)
    speaker       string   speaker name; null for unlabelled (`submit`) items
    path          string   file location, relative to the manifest's folder or absolute
    duration      float64  seconds of audio (null when unknown, e.g. precomputed features)
    num_frames    int64    frames of precomputed features (null for audio)
    role          string   null = labelled (the `index` step splits these into train / val /
                           test); "submit" = unlabelled audio for the submission file
    size          int64    file size in bytes (fingerprint of files outside the repository)
    mtime_ns      int64    modification time (same purpose; null for files we generated)
    start, end    float64  the utterance is this span of the file, in seconds (Kaldi
                           `segments`); null = from the beginning / to the end

Schema metadata `spkid` (JSON) describes the whole set: {"format": "audio" | "hw4", ...}.
A change to an external file changes its fingerprint, so the manifest's hash changes and
DVC re-runs everything downstream.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from spkid.core.atomic import atomic_path
from spkid.core.errors import DataError, StaleInputError

SCHEMA = pa.schema([
    ("utterance_id", pa.string()),
    ("speaker", pa.string()),
    ("path", pa.string()),
    ("duration", pa.float64()),
    ("num_frames", pa.int64()),
    ("role", pa.string()),
    ("size", pa.int64()),
    ("mtime_ns", pa.int64()),
    ("start", pa.float64()),
    ("end", pa.float64()),
])
OPTIONAL = {"start", "end"}  # absent from manifests written before spans existed


@dataclass
class ManifestRow:
    utterance_id: str
    speaker: str | None
    path: str
    duration: float | None = None
    num_frames: int | None = None
    role: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    start: float | None = None
    end: float | None = None


def write_manifest(path: str | Path, rows: list[ManifestRow], meta: dict) -> None:
    ids = [r.utterance_id for r in rows]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DataError(f"duplicate utterance id {dup!r} in {path}")
    for r in rows:
        if r.role not in (None, "submit"):
            raise DataError(f"manifest role must be null or 'submit', got {r.role!r} for {r.utterance_id}")
    table = pa.Table.from_pylist([asdict(r) for r in rows], schema=SCHEMA)
    table = table.replace_schema_metadata({"spkid": json.dumps(meta, sort_keys=True)})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_manifest_table(path: str | Path) -> tuple[pa.Table, dict]:
    """The manifest as a table of every SCHEMA column (columns an older spkid did not write
    are null), and its metadata."""
    path = Path(path)
    if not path.exists():
        raise StaleInputError(f"{path}: manifest not found", path)
    table = pq.read_table(path)
    missing = set(SCHEMA.names) - set(table.column_names) - OPTIONAL
    if missing:
        raise DataError(f"{path}: not a spkid manifest (missing columns {sorted(missing)})")
    meta = json.loads((table.schema.metadata or {}).get(b"spkid", b"{}"))
    table = pa.table({f.name: table[f.name] if f.name in table.column_names
                      else pa.nulls(len(table), f.type) for f in SCHEMA}, schema=SCHEMA)
    return table, meta


def read_manifest(path: str | Path) -> tuple[list[ManifestRow], dict]:
    """The manifest as rows: for the small ones (verification audio, tests)."""
    table, meta = read_manifest_table(path)
    return [ManifestRow(**d) for d in table.to_pylist()], meta


def resolve(manifest_path: str | Path, row: ManifestRow) -> Path:
    """Absolute location of a row's file (relative paths are relative to the manifest)."""
    return (Path(manifest_path).parent / row.path).resolve()
