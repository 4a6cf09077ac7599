"""Parquet feature shards: the contract between `features` and everything after it.

Manifest rows are cut into blocks of `features.shard_size`; block k is written as
`shard-KKKKK-PPP.parquet` (part P: a block whose matrices would exceed `MAX_PART_BYTES`
is split), one row per utterance:

    utterance_id  string        unique id (same as the manifest)
    speaker       string        speaker name; null for `submit` items
    role          string        null = labelled, split later by `index`; "submit"
    num_frames    int32         T
    num_mels      int16         F
    features      list<float32 | float16>  the T x F log-mel matrix, row-major

A block's content depends only on its manifest rows, so one process, several worker
processes or several machines write byte-identical shards. Schema metadata `spkid`
(JSON) records the feature params. Shards are written whole (temporary name, then rename).

Why the shards are read through memory mapping: the features are written uncompressed,
PLAIN-encoded, in a single data page per column chunk, so a shard's log-mel values lie in
one contiguous run at the end of its column chunk, at an offset the Parquet footer gives.
`FeatureStore` maps that run of every shard (numpy.memmap) instead of reading frames into
RAM: a stage holds the utterance catalog, not the frames, so its memory does not grow
with the data, and a crop is a slice of a mapped array. The files stay ordinary Parquet
that any Parquet reader opens; log-mels compress poorly (zstd saved about 10 %), and
`features.dtype: float16` halves them instead.
"""

from __future__ import annotations

import json
import resource
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from spkid.core.atomic import atomic_path
from spkid.core.errors import DataError, StaleInputError
from spkid.core.memory import release_free_memory

DTYPES = {"float32": (np.float32, pa.float32()), "float16": (np.float16, pa.float16())}
PATTERN = "shard-*.parquet"
# Present while a `features` run is writing the folder (spkid.features.blocks), and left
# by one that did not finish: then the folder holds only some of the blocks.
INCOMPLETE = "incomplete.json"
# A Parquet page size is an int32; staying well under it also bounds a writer's memory.
MAX_PART_BYTES = 1 << 30


def schema(dtype: str = "float32") -> pa.Schema:
    return pa.schema([
        ("utterance_id", pa.string()),
        ("speaker", pa.string()),
        ("role", pa.string()),
        ("num_frames", pa.int32()),
        ("num_mels", pa.int16()),
        ("features", pa.list_(DTYPES[dtype][1])),
    ])




def shard_name(block: str, part: int) -> str:
    return f"shard-{block}-{part:03d}.parquet"


class ShardWriter:
    """Writes the utterances of one block: a part every `MAX_PART_BYTES` of features. Each
    part's metadata says which part it is; the last one also says that it is the last and
    holds the block's counts, so a block whose last part exists is complete (a writer
    killed between parts leaves a block without one)."""

    def __init__(self, folder: str | Path, block: str, meta: dict, dtype: str = "float32",
                 max_part_bytes: int = MAX_PART_BYTES):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.block, self.dtype, self.max_part_bytes = block, dtype, max_part_bytes
        self.np_dtype = DTYPES[dtype][0]
        self.meta = meta
        self._rows: list[dict] = []
        self._bytes = 0
        self.parts = 0
        self.frames = 0

    def add(self, utterance_id: str, speaker: str | None, role: str | None, feats: np.ndarray):
        feats = np.asarray(feats)
        if feats.ndim != 2 or feats.shape[0] == 0:
            raise DataError(f"{utterance_id}: features must be a non-empty (frames, mels) matrix, "
                            f"got shape {feats.shape}")
        with np.errstate(over="ignore"):
            stored = np.ascontiguousarray(feats, dtype=self.np_dtype)
        # Checked after the cast: a value beyond float16's range becomes inf here.
        if not np.isfinite(stored).all():
            raise DataError(f"{utterance_id}: features contain NaN or inf"
                            + (f" (as {self.dtype})" if np.isfinite(feats).all() else ""))
        if self._rows and self._bytes + stored.nbytes > self.max_part_bytes:
            self._flush()
        self._rows.append({"utterance_id": utterance_id, "speaker": speaker, "role": role,
                           "num_frames": stored.shape[0], "num_mels": stored.shape[1],
                           "features": stored.reshape(-1)})
        self._bytes += stored.nbytes
        self.frames += stored.shape[0]

    def finish(self, stats: dict | None = None) -> None:
        """Write the last part (empty when every utterance of the block was left out),
        recording `stats`, the block's counts."""
        self._flush(last=True, stats=stats)

    def _flush(self, last: bool = False, stats: dict | None = None) -> None:
        flat = (np.concatenate([r["features"] for r in self._rows]) if self._rows
                else np.zeros(0, self.np_dtype))
        offsets = np.zeros(len(self._rows) + 1, dtype=np.int32)
        np.cumsum([len(r["features"]) for r in self._rows], out=offsets[1:])
        table = pa.table({
            "utterance_id": pa.array([r["utterance_id"] for r in self._rows], pa.string()),
            "speaker": pa.array([r["speaker"] for r in self._rows], pa.string()),
            "role": pa.array([r["role"] for r in self._rows], pa.string()),
            "num_frames": pa.array([r["num_frames"] for r in self._rows], pa.int32()),
            "num_mels": pa.array([r["num_mels"] for r in self._rows], pa.int16()),
            "features": pa.ListArray.from_arrays(pa.array(offsets),
                                                 pa.array(flat, DTYPES[self.dtype][1])),
        }, schema=schema(self.dtype)).replace_schema_metadata({"spkid": json.dumps(
            {**self.meta, "part": self.parts, "last": last, **({"stats": stats} if last else {})},
            sort_keys=True)})
        path = self.folder / shard_name(self.block, self.parts)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, compression="none", use_dictionary=False,
                           column_encoding={"features": "PLAIN"}, write_statistics=False,
                           data_page_size=self.max_part_bytes + (1 << 20),
                           max_rows_per_page=len(self._rows) + 1,
                           row_group_size=max(1, len(self._rows)))
            # The memory-mapped reading relies on this layout: prove it on what was written.
            if not np.array_equal(_map_values(tmp, len(flat), self.np_dtype), flat):
                raise DataError(f"{path}: pyarrow {pa.__version__} did not write the features "
                                "as one plain uncompressed page; spkid cannot map them")
        self.parts += 1
        self._rows, self._bytes = [], 0


@contextmanager
def _reading(path: Path):
    """Reading one shard: a file pyarrow cannot parse (a copy cut short, overwritten) is a
    damaged shard, named in one line, not pyarrow's traceback. The features step writes
    it again (a block whose part does not read is rewritten)."""
    try:
        yield
    except (FileNotFoundError, PermissionError):
        raise
    except (pa.ArrowException, OSError) as exc:  # ArrowInvalid: no footer; OSError: bad pages
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        why = why.replace(f"Could not open Parquet input source '{path}': ", "")  # named already
        raise StaleInputError(f"{path}: damaged feature shard, not readable as Parquet "
                              f"({why})", path) from None


def _values_offset(path: Path, count: int, itemsize: int) -> int:
    """File offset of the `count` feature values of a shard written by ShardWriter."""
    with _reading(path):
        meta = pq.ParquetFile(path).metadata
    names = [meta.schema.column(i).path for i in range(meta.num_columns)]
    if meta.num_row_groups != 1 or "features.list.element" not in names:
        raise StaleInputError(f"{path}: not a spkid feature shard", path)
    col = meta.row_group(0).column(names.index("features.list.element"))
    if (col.compression != "UNCOMPRESSED" or col.dictionary_page_offset is not None
            or set(col.encodings) - {"PLAIN", "RLE"}):
        raise StaleInputError(f"{path}: features are stored {col.compression.lower()} with "
                              f"{'/'.join(col.encodings)} encoding, not plain and uncompressed "
                              "(written by an older spkid?)", path)
    end = col.data_page_offset + col.total_compressed_size
    start = end - count * itemsize
    if start < col.data_page_offset:
        raise DataError(f"{path}: features column is shorter than its num_frames say")
    size = path.stat().st_size
    if end > size:
        raise StaleInputError(f"{path}: damaged feature shard: its footer places the features "
                              f"up to byte {end}, the file has {size}", path)
    return start


def _map_values(path: Path, count: int, dtype) -> np.ndarray:
    if count == 0:
        return np.zeros(0, dtype)
    offset = _values_offset(Path(path), count, np.dtype(dtype).itemsize)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(count,))


def shard_paths(folder: str | Path) -> list[Path]:
    if (Path(folder) / INCOMPLETE).exists():
        raise StaleInputError(f"{folder}: a features run did not finish (its {INCOMPLETE} is "
                              "still there), so some blocks are missing", folder)
    paths = sorted(Path(folder).glob(PATTERN))
    if not paths:
        raise DataError(f"no feature shards ({PATTERN}) in {folder}")
    return paths


def read_catalog(folder: str | Path) -> pa.Table:
    """Every utterance's id, speaker, role and size, without the feature matrices."""
    cols = ["utterance_id", "speaker", "role", "num_frames", "num_mels"]
    tables = []
    for i, p in enumerate(shard_paths(folder)):
        with _reading(p):
            t = pq.read_table(p, columns=cols)
        tables.append(t.append_column("shard", pa.array(np.full(len(t), i, np.int32))))
    release_free_memory()  # after thousands of footers read (spkid.core.memory)
    return pa.concat_tables(tables)


def read_meta(folder: str | Path) -> dict:
    first = shard_paths(folder)[0]
    with _reading(first):
        schema_ = pq.read_schema(first)
    return json.loads((schema_.metadata or {}).get(b"spkid", b"{}"))


@dataclass
class FeatureStore:
    """Utterance matrices by position: `arrays[shard[i]][offset[i]:offset[i] + length[i]]`
    is utterance `ids[i]`. The arrays are memory-mapped shards (or, for features computed
    on the fly, the matrices themselves)."""

    ids: pa.Array
    shard: np.ndarray
    offset: np.ndarray
    length: np.ndarray
    arrays: list[np.ndarray]
    n_mels: int

    @classmethod
    def from_matrices(cls, ids, matrices: list[np.ndarray]) -> "FeatureStore":
        n_mels = matrices[0].shape[1] if matrices else 0
        return cls(pa.array(list(ids), pa.string()), np.arange(len(matrices)),
                   np.zeros(len(matrices), np.int64),
                   np.array([len(m) for m in matrices], np.int64), list(matrices), n_mels)

    def positions(self, ids) -> np.ndarray:
        """Store positions of utterance ids; a missing id is a DataError naming it."""
        wanted = ids if isinstance(ids, (pa.Array, pa.ChunkedArray)) else pa.array(list(ids), pa.string())
        pos = pc.index_in(wanted, value_set=self.ids)
        if pos.null_count:
            missing = pc.filter(wanted, pc.is_null(pos))[0].as_py()
            raise StaleInputError(f"utterance {missing!r} is not in the feature shards (the "
                                  "index was made from other features)")
        return pos.to_numpy(zero_copy_only=False).astype(np.int64)

    def matrix(self, i: int) -> np.ndarray:
        return self.arrays[self.shard[i]][self.offset[i]:self.offset[i] + self.length[i]]

    def crops(self, pos: np.ndarray, starts: np.ndarray, lengths: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
        """float32 (B, max length, n_mels) crops, zero-padded, and their (B, max length)
        mask: crop k is frames starts[k] .. starts[k] + lengths[k] of utterance pos[k]."""
        width = int(lengths.max())
        x = np.zeros((len(lengths), width, self.n_mels), np.float32)
        for k, (p, s, n) in enumerate(zip(pos.tolist(), starts.tolist(), lengths.tolist())):
            a = self.offset[p] + s
            x[k, :n] = self.arrays[self.shard[p]][a:a + n]
        return x, np.arange(width)[None, :] < lengths[:, None]


def open_features(folder: str | Path) -> FeatureStore:
    """Map every shard of `folder`; nothing but the catalog is read into memory."""
    paths = shard_paths(folder)
    catalog = read_catalog(folder)
    mels = catalog.column("num_mels").to_numpy()
    if len(mels) and (mels != mels[0]).any():
        raise DataError(f"{folder}: shards disagree on the number of mels")
    n_mels = int(mels[0]) if len(mels) else 0
    shard = catalog.column("shard").to_numpy().astype(np.int64)
    length = catalog.column("num_frames").to_numpy().astype(np.int64)
    offset = _offsets_within_shards(shard, length)
    frames_of = np.bincount(shard, weights=length, minlength=len(paths)).astype(np.int64)
    _allow_open_files(len(paths))
    arrays = []
    for s, path in enumerate(paths):
        with _reading(path):
            field = pq.read_schema(path).field("features").type.value_type
        dtype = next((np_t for np_t, pa_t in DTYPES.values() if pa_t == field), None)
        if dtype is None:
            raise DataError(f"{path}: features are {field}, expected float32 or float16")
        frames = int(frames_of[s])
        arrays.append(_map_values(path, frames * n_mels, dtype).reshape(frames, n_mels))
    release_free_memory()  # after thousands of footers read (spkid.core.memory)
    return FeatureStore(catalog.column("utterance_id").combine_chunks(), shard, offset, length,
                        arrays, n_mels)


def _offsets_within_shards(shard: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Each row's first frame within its shard (rows of a shard are stored in catalog
    order): one sort, not a scan of every row per shard."""
    order = np.argsort(shard, kind="stable")
    ends = np.cumsum(length[order])
    starts = ends - length[order]
    group = shard[order]
    first = np.searchsorted(group, group, side="left")
    offset = np.empty_like(length)
    offset[order] = starts - starts[first]
    return offset


def _allow_open_files(needed: int) -> None:
    # Each mapping keeps a file descriptor; VoxCeleb-size data has thousands of shards.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            raise DataError(f"{needed} feature shards need more open files than this system "
                            f"allows ({hard}): raise features.shard_size")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
