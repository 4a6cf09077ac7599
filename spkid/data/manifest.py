"""The manifest: what the `download` step found, one row per recording (or per
precomputed feature file), written as Parquet.

Columns
    utterance_id  string   unique id (for hw4: the feature_path, as Kaggle expects)
    speaker       string   speaker name; null for unlabelled (`submit`) items
    path          string   file location: relative to its root (ManifestRoots), or absolute
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

Where the corpus lies is not in the manifest: paths inside the corpus folder (and inside
the submit folder, for role "submit") are written relative to it, and the two folders go
to a sidecar, `<manifest>.roots.json`, that no stage lists as a dependency. The same
corpus moved to another mount gives the same manifest bytes, and nothing re-runs.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from spkid.core.atomic import atomic_path, write_json
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


@dataclass(frozen=True)
class ManifestRoots:
    """The folders a manifest's relative paths start from: `corpus` for labelled rows,
    `submit` for role "submit" (None: the corpus folder). A manifest without a sidecar
    (the synthetic corpus, which lives beside it) is relative to its own folder."""
    corpus: str
    submit: str | None = None

    @staticmethod
    def sidecar(manifest_path: str | Path) -> Path:
        return Path(manifest_path).with_suffix(".roots.json")

    @classmethod
    def read(cls, manifest_path: str | Path) -> ManifestRoots:
        side = cls.sidecar(manifest_path)
        if not side.is_file():
            return cls(os.path.abspath(Path(manifest_path).parent))
        try:
            found = json.loads(side.read_text())
            return cls(found["corpus"], found.get("submit"))
        except (ValueError, KeyError, TypeError):
            raise DataError(f"{side}: not a spkid roots file (run the download step "
                            "again)") from None

    def _root(self, role: str | None) -> str:
        return self.submit if role == "submit" and self.submit is not None else self.corpus

    def relative_paths(self, table: pa.Table) -> pa.ChunkedArray:
        """The table's paths, relative to their root where they lie inside it (the
        scanners write absolute, normalised paths). Worked out once per distinct path."""
        encoded = pc.dictionary_encode(table["path"]).combine_chunks()
        distinct = encoded.dictionary.to_pylist()
        submit = pc.fill_null(pc.equal(table["role"], "submit"), False)
        out = {}
        for role in (None, "submit"):
            prefix = os.path.join(self._root(role), "")
            out[role] = pa.array([p[len(prefix):] if p.startswith(prefix) else p
                                  for p in distinct], pa.string()).take(encoded.indices)
        return pc.if_else(submit, out["submit"], out[None])

    def resolve(self, row: ManifestRow) -> Path:
        """Absolute location of a row's file."""
        return (Path(self._root(row.role)) / row.path).resolve()


def rows_table(rows: list[ManifestRow]) -> pa.Table:
    return pa.table({f.name: pa.array([getattr(r, f.name) for r in rows], f.type)
                     for f in SCHEMA}, schema=SCHEMA)


def write_manifest(path: str | Path, rows: list[ManifestRow] | pa.Table, meta: dict,
                   roots: ManifestRoots | None = None) -> None:
    """Write the manifest (rows, or a table of SCHEMA); with `roots`, the absolute paths
    are written relative to them and the roots to the sidecar beside `path`."""
    table = rows if isinstance(rows, pa.Table) else rows_table(rows)
    ids = table["utterance_id"]
    if len(pc.unique(ids)) != len(ids):
        counts = pc.value_counts(ids).flatten()
        twice = pc.filter(counts[0], pc.greater(counts[1], 1))
        dup = ids[int(np.argmax(pc.is_in(ids, value_set=twice).to_numpy(zero_copy_only=False)))]
        raise DataError(f"duplicate utterance id {dup.as_py()!r} in {path}")
    bad_role = pc.fill_null(pc.not_equal(table["role"], "submit"), False).to_numpy(
        zero_copy_only=False)
    if bad_role.any():
        k = int(np.argmax(bad_role))
        raise DataError(f"manifest role must be null or 'submit', got "
                        f"{table['role'][k].as_py()!r} for {ids[k].as_py()}")
    if roots is not None:
        table = table.set_column(SCHEMA.get_field_index("path"), "path",
                                 roots.relative_paths(table))
    table = table.replace_schema_metadata({"spkid": json.dumps(meta, sort_keys=True)})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    if roots is not None:
        write_json(ManifestRoots.sidecar(path), asdict(roots))


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
