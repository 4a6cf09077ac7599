"""Parquet feature shards: the contract between `features` and everything after it.

Each `shard-NNNNN.parquet` holds up to `features.shard_size` utterances, one row each:

    utterance_id  string        unique id (same as the manifest)
    speaker       string        speaker name; null for `submit` items
    role          string        null = labelled, split later by `index`; "submit"
    num_frames    int32         T
    num_mels      int16         F
    features      list<float32> the T x F log-mel matrix, row-major (frame by frame)

Schema metadata `spkid` (JSON) records the feature params. Shards are written whole
(write to a temporary name, then rename), so a crash never leaves one a later run trusts.
Readers fill one contiguous float32 array instead of loading items one by one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from spkid.atomic import atomic_path
from spkid.errors import DataError

SCHEMA = pa.schema([
    ("utterance_id", pa.string()),
    ("speaker", pa.string()),
    ("role", pa.string()),
    ("num_frames", pa.int32()),
    ("num_mels", pa.int16()),
    ("features", pa.list_(pa.float32())),
])
PATTERN = "shard-*.parquet"


class ShardWriter:
    """Buffers rows and writes a shard every `shard_size` utterances (memory stays bounded)."""

    def __init__(self, folder: str | Path, shard_size: int, meta: dict):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.shard_size = shard_size
        self.meta = {"spkid": json.dumps(meta, sort_keys=True)}
        self._rows: list[dict] = []
        self.shards = 0
        self.utterances = 0
        self.frames = 0

    def add(self, utterance_id: str, speaker: str | None, role: str | None, feats: np.ndarray):
        feats = np.ascontiguousarray(feats, dtype=np.float32)
        if feats.ndim != 2 or feats.shape[0] == 0:
            raise DataError(f"{utterance_id}: features must be a non-empty (frames, mels) matrix, "
                            f"got shape {feats.shape}")
        if not np.isfinite(feats).all():
            raise DataError(f"{utterance_id}: features contain NaN or inf")
        self._rows.append({"utterance_id": utterance_id, "speaker": speaker, "role": role,
                           "num_frames": feats.shape[0], "num_mels": feats.shape[1],
                           "features": feats.reshape(-1)})
        self.utterances += 1
        self.frames += feats.shape[0]
        if len(self._rows) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if not self._rows:
            return
        flat = np.concatenate([r["features"] for r in self._rows])
        offsets = np.zeros(len(self._rows) + 1, dtype=np.int32)
        np.cumsum([len(r["features"]) for r in self._rows], out=offsets[1:])
        table = pa.table({
            "utterance_id": pa.array([r["utterance_id"] for r in self._rows], pa.string()),
            "speaker": pa.array([r["speaker"] for r in self._rows], pa.string()),
            "role": pa.array([r["role"] for r in self._rows], pa.string()),
            "num_frames": pa.array([r["num_frames"] for r in self._rows], pa.int32()),
            "num_mels": pa.array([r["num_mels"] for r in self._rows], pa.int16()),
            "features": pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.float32())),
        }, schema=SCHEMA).replace_schema_metadata(self.meta)
        with atomic_path(self.folder / f"shard-{self.shards:05d}.parquet") as tmp:
            pq.write_table(table, tmp, compression="zstd")
        self.shards += 1
        self._rows = []


def shard_paths(folder: str | Path) -> list[Path]:
    paths = sorted(Path(folder).glob(PATTERN))
    if not paths:
        raise DataError(f"no feature shards ({PATTERN}) in {folder} (run the features stage first)")
    return paths


def read_catalog(folder: str | Path) -> pa.Table:
    """Every utterance's id, speaker, role and size, without the feature matrices."""
    cols = ["utterance_id", "speaker", "role", "num_frames", "num_mels"]
    tables = []
    for i, p in enumerate(shard_paths(folder)):
        t = pq.read_table(p, columns=cols)
        tables.append(t.append_column("shard", pa.array(np.full(len(t), i, np.int32)))
                       .append_column("row", pa.array(np.arange(len(t), dtype=np.int32))))
    return pa.concat_tables(tables)


def read_meta(folder: str | Path) -> dict:
    schema = pq.read_schema(shard_paths(folder)[0])
    return json.loads((schema.metadata or {}).get(b"spkid", b"{}"))


@dataclass
class FeatureStore:
    """All frames of the selected utterances in one (total_frames, n_mels) array.

    `offset[i]` and `length[i]` locate utterance `ids[i]` in `frames`."""

    frames: np.ndarray
    ids: list[str]
    offset: np.ndarray
    length: np.ndarray

    def position(self) -> dict[str, int]:
        return {u: i for i, u in enumerate(self.ids)}

    def matrix(self, i: int) -> np.ndarray:
        return self.frames[self.offset[i]:self.offset[i] + self.length[i]]


def load_features(folder: str | Path, keep: set[str] | None = None) -> FeatureStore:
    """Read shards into one contiguous array (preallocated, filled shard by shard, so peak
    memory is the array plus one shard). `keep` limits it to some utterance ids."""
    catalog = read_catalog(folder)
    ids = catalog.column("utterance_id").to_pylist()
    frames_n = catalog.column("num_frames").to_numpy().astype(np.int64)
    mels = catalog.column("num_mels").to_numpy()
    if len(mels) and (mels != mels[0]).any():
        raise DataError(f"{folder}: shards disagree on the number of mels")
    selected = np.array([keep is None or u in keep for u in ids], dtype=bool)
    length = frames_n[selected]
    offset = np.zeros(len(length), dtype=np.int64)
    np.cumsum(length[:-1], out=offset[1:]) if len(length) > 1 else None
    n_mels = int(mels[0]) if len(mels) else 0
    frames = np.empty((int(length.sum()), n_mels), dtype=np.float32)
    shard_of = catalog.column("shard").to_numpy()
    out_i = 0
    for s, p in enumerate(shard_paths(folder)):
        in_shard = np.nonzero(shard_of == s)[0]
        sel = selected[in_shard]
        if not sel.any():
            continue
        col = pq.read_table(p, columns=["features"]).column("features").combine_chunks()
        for row in np.nonzero(sel)[0]:
            values = col[int(row)].values.to_numpy(zero_copy_only=False)
            n = length[out_i]
            frames[offset[out_i]:offset[out_i] + n] = values.reshape(n, n_mels)
            out_i += 1
    kept_ids = [u for u, k in zip(ids, selected) if k]
    return FeatureStore(frames, kept_ids, offset, length)
