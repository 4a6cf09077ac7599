import numpy as np
import pyarrow.parquet as pq
import pytest

from spkid.errors import DataError
from spkid.shards import SCHEMA, ShardWriter, load_features, read_catalog, read_meta, shard_paths


def make_items(n=7, mels=5, seed=0):
    rng = np.random.default_rng(seed)
    return [(f"u{i}", f"s{i % 3}" if i < n - 1 else None, None if i < n - 1 else "submit",
             rng.standard_normal((rng.integers(3, 12), mels)).astype(np.float32)) for i in range(n)]


def test_round_trip_across_shards(tmp_path):
    items = make_items()
    w = ShardWriter(tmp_path, shard_size=3, meta={"features": {"n_mels": 5}})
    for uid, spk, role, f in items:
        w.add(uid, spk, role, f)
    w.flush()
    assert w.shards == 3 and len(shard_paths(tmp_path)) == 3
    assert pq.read_schema(shard_paths(tmp_path)[0]).remove_metadata() == SCHEMA
    assert read_meta(tmp_path) == {"features": {"n_mels": 5}}
    cat = read_catalog(tmp_path).to_pylist()
    assert [(c["utterance_id"], c["speaker"], c["role"], c["num_frames"]) for c in cat] == \
        [(u, s, r, len(f)) for u, s, r, f in items]
    store = load_features(tmp_path)
    assert store.frames.flags["C_CONTIGUOUS"] and store.frames.dtype == np.float32
    for i, (_, _, _, f) in enumerate(items):
        np.testing.assert_array_equal(store.matrix(i), f)
    # A subset keeps only the asked-for utterances, in order.
    part = load_features(tmp_path, keep={"u1", "u5"})
    assert part.ids == ["u1", "u5"]
    np.testing.assert_array_equal(part.matrix(1), items[5][3])
    assert part.frames.shape[0] == len(items[1][3]) + len(items[5][3])


def test_rejects_non_finite_and_bad_shapes(tmp_path):
    w = ShardWriter(tmp_path, 10, {})
    bad = np.ones((4, 5), np.float32)
    bad[2, 1] = np.nan
    with pytest.raises(DataError, match="u-nan.*NaN"):
        w.add("u-nan", "s", None, bad)
    with pytest.raises(DataError, match="u-empty"):
        w.add("u-empty", "s", None, np.zeros((0, 5), np.float32))


def test_missing_shards_named(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path)):
        read_catalog(tmp_path)


def test_crash_leaves_no_partial_shard(tmp_path, monkeypatch):
    import spkid.shards as shards
    w = ShardWriter(tmp_path, 2, {})
    w.add("a", "s", None, np.ones((3, 2), np.float32))

    def explode(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(shards.pq, "write_table", explode)
    with pytest.raises(OSError):
        w.add("b", "s", None, np.ones((3, 2), np.float32))
    assert list(tmp_path.iterdir()) == []  # no shard, no temporary file
