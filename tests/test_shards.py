import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from spkid.core.errors import DataError, StaleInputError
from spkid.features.store import (ShardWriter, _offsets_within_shards, open_features, read_catalog,
                                  read_meta, schema, shard_paths)


def make_items(n=7, mels=5, seed=0):
    rng = np.random.default_rng(seed)
    return [(f"u{i}", f"s{i % 3}" if i < n - 1 else None, None if i < n - 1 else "submit",
             rng.standard_normal((rng.integers(3, 12), mels)).astype(np.float32)) for i in range(n)]


def write_blocks(folder, items, block_size, dtype="float32", **kw):
    for b in range(0, len(items), block_size):
        w = ShardWriter(folder, f"{b // block_size:05d}", {"features": {"n_mels": 5}}, dtype, **kw)
        for uid, spk, role, f in items[b:b + block_size]:
            w.add(uid, spk, role, f)
        w.finish({"utterances": len(items[b:b + block_size])})


def test_round_trip_across_shards_is_memory_mapped(tmp_path):
    items = make_items()
    write_blocks(tmp_path, items, 3)
    assert [p.name for p in shard_paths(tmp_path)] == [
        "shard-00000-000.parquet", "shard-00001-000.parquet", "shard-00002-000.parquet"]
    assert pq.read_schema(shard_paths(tmp_path)[0]).remove_metadata() == schema("float32")
    assert read_meta(tmp_path) == {"features": {"n_mels": 5}, "part": 0, "last": True,
                                   "stats": {"utterances": 3}}
    cat = read_catalog(tmp_path).to_pylist()
    assert [(c["utterance_id"], c["speaker"], c["role"], c["num_frames"]) for c in cat] == \
        [(u, s, r, len(f)) for u, s, r, f in items]
    store = open_features(tmp_path)
    assert all(isinstance(a, np.memmap) for a in store.arrays)  # frames are not read into RAM
    for i, (_, _, _, f) in enumerate(items):
        np.testing.assert_array_equal(store.matrix(i), f)
    # The shards stay ordinary Parquet: any reader gets the same matrices.
    table = pq.read_table(shard_paths(tmp_path)[1])
    np.testing.assert_array_equal(np.asarray(table["features"][0].as_py(), np.float32),
                                  items[3][3].reshape(-1))
    np.testing.assert_array_equal(store.positions(["u5", "u1"]), [5, 1])
    with pytest.raises(DataError, match="'nope'.*index was made from other features"):
        store.positions(["u1", "nope"])


def test_crops_pad_and_mask(tmp_path):
    items = make_items()
    write_blocks(tmp_path, items, 4)
    store = open_features(tmp_path)
    x, mask = store.crops(np.array([2, 5]), np.array([1, 0]), np.array([2, 3]))
    assert x.shape == (2, 3, 5) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0, :2], items[2][3][1:3])
    np.testing.assert_array_equal(x[1], items[5][3][:3])
    assert (x[0, 2] == 0).all() and mask.tolist() == [[True, True, False], [True, True, True]]


def test_float16_halves_the_values_and_reads_back_as_float32(tmp_path):
    items = make_items()
    write_blocks(tmp_path / "a", items, 10, "float32")
    write_blocks(tmp_path / "b", items, 10, "float16")
    assert pq.read_schema(shard_paths(tmp_path / "b")[0]).field("features").type.value_type == "halffloat"
    store = open_features(tmp_path / "b")
    x, _ = store.crops(np.array([0]), np.array([0]), np.array([3]))
    assert x.dtype == np.float32
    np.testing.assert_allclose(x[0], items[0][3][:3], rtol=1e-3, atol=1e-3)
    raw = sum(f.nbytes for *_, f in items)
    grew = shard_paths(tmp_path / "a")[0].stat().st_size - shard_paths(tmp_path / "b")[0].stat().st_size
    assert grew == pytest.approx(raw / 2, rel=0.05)


def test_float16_overflow_is_refused_by_name(tmp_path):
    w = ShardWriter(tmp_path, "00000", {}, "float16")
    with pytest.raises(DataError, match="u-big.*NaN or inf.*float16"):
        w.add("u-big", "s", None, np.full((2, 5), 1e6, np.float32))


def test_a_large_block_is_split_into_parts(tmp_path):
    items = make_items(n=6)
    write_blocks(tmp_path, items, 6, max_part_bytes=2 * 12 * 5 * 4)
    names = [p.name for p in shard_paths(tmp_path)]
    assert len(names) > 1 and all(n.startswith("shard-00000-") for n in names)
    lasts = [pq.read_schema(p).metadata[b"spkid"] for p in shard_paths(tmp_path)]
    assert [b'"last": true' in m for m in lasts] == [False] * (len(names) - 1) + [True]
    store = open_features(tmp_path)
    for i, (_, _, _, f) in enumerate(items):
        np.testing.assert_array_equal(store.matrix(i), f)


def test_rejects_non_finite_and_bad_shapes(tmp_path):
    w = ShardWriter(tmp_path, "00000", {})
    bad = np.ones((4, 5), np.float32)
    bad[2, 1] = np.nan
    with pytest.raises(DataError, match="u-nan.*NaN"):
        w.add("u-nan", "s", None, bad)
    with pytest.raises(DataError, match="u-empty"):
        w.add("u-empty", "s", None, np.zeros((0, 5), np.float32))


def test_compressed_shards_from_an_older_spkid_are_refused_by_name(tmp_path):
    items = make_items()
    write_blocks(tmp_path, items, 10)
    path = shard_paths(tmp_path)[0]
    pq.write_table(pq.read_table(path), path, compression="zstd")
    with pytest.raises(DataError, match=f"{path.name}.*zstd.*older spkid") as exc:
        open_features(tmp_path)
    assert exc.value.output == path  # the stage layer says which step writes it again


def test_stage_layer_names_the_step_that_makes_a_stale_input(tmp_path, monkeypatch, capsys):
    import typer

    from spkid.core.errors import StaleInputError
    from stages.common import one_line_errors, remedy
    monkeypatch.chdir(tmp_path)
    assert remedy("data/features/shard-00000-000.parquet") == "run `spkid features` or `dvc repro`"
    assert remedy(tmp_path / "data/raw/manifest.parquet") == "run `spkid download` or `dvc repro`"
    assert remedy(None) == remedy("elsewhere/file") == "run `dvc repro`"

    @one_line_errors
    def command():
        raise StaleInputError("data/index/segments.parquet: out of step", "data/index/segments.parquet")
    with pytest.raises(typer.Exit):
        command()
    assert capsys.readouterr().err == ("spkid: error: data/index/segments.parquet: out of step "
                                       "(run `spkid index` or `dvc repro`)\n")


def test_missing_shards_named(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path)):
        read_catalog(tmp_path)


def test_crash_leaves_no_partial_shard(tmp_path, monkeypatch):
    import spkid.features.store as shards
    w = ShardWriter(tmp_path, "00000", {})
    w.add("a", "s", None, np.ones((3, 2), np.float32))

    def explode(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(shards.pq, "write_table", explode)
    with pytest.raises(OSError):
        w.finish()
    assert list(tmp_path.iterdir()) == []  # no shard, no temporary file


def test_offsets_within_shards_match_a_scan_of_each_shard():
    # open_features computes them with one sort (linear in shards x rows before).
    rng = np.random.default_rng(0)
    for _ in range(100):
        n, shards = int(rng.integers(0, 60)), int(rng.integers(1, 7))
        shard = rng.integers(0, shards, n).astype(np.int64)
        length = rng.integers(1, 500, n).astype(np.int64)
        want = np.zeros(n, np.int64)
        for s in range(shards):
            rows = np.nonzero(shard == s)[0]
            want[rows[1:]] = np.cumsum(length[rows[:-1]])
        np.testing.assert_array_equal(_offsets_within_shards(shard, length), want)


def test_a_damaged_shard_is_named_not_a_pyarrow_traceback(tmp_path):
    items = make_items()
    write_blocks(tmp_path, items, 3)
    first, middle = shard_paths(tmp_path)[:2]
    os.truncate(middle, middle.stat().st_size // 2)  # a copy cut short: no footer
    for read in (read_catalog, open_features):
        with pytest.raises(StaleInputError, match=f"^{middle}: damaged feature shard") as exc:
            read(tmp_path)
        assert exc.value.output == middle  # the stage layer: run `spkid features`
    os.truncate(first, 0)
    with pytest.raises(StaleInputError, match=f"^{first}: damaged feature shard"):
        read_meta(tmp_path)


def test_a_shard_shorter_than_its_footer_says_is_damaged(tmp_path):
    items = [(f"u{i}", "s", None, np.full((400, 5), i, np.float32)) for i in range(3)]
    write_blocks(tmp_path, items, 10)
    path = shard_paths(tmp_path)[0]
    data = path.read_bytes()
    # The other columns and the footer kept, the feature values cut out: the catalog reads,
    # the footer's offsets point past the end of the file.
    meta = pq.ParquetFile(path).metadata
    features = meta.row_group(0).column(meta.num_columns - 1).data_page_offset
    tail = 8 + int.from_bytes(data[-8:-4], "little")
    path.write_bytes(data[:features + 16] + data[-tail:])
    assert len(read_catalog(tmp_path)) == len(items)
    with pytest.raises(StaleInputError, match=f"^{path}: damaged feature shard"):
        open_features(tmp_path)


def test_the_features_step_rewrites_a_damaged_part(tmp_path):
    from spkid.features.blocks import _complete
    items = make_items(n=6)
    write_blocks(tmp_path, items, 6, max_part_bytes=60)
    parts = {int(p.name[-11:-8]): p for p in shard_paths(tmp_path)}
    assert len(parts) > 2 and _complete(parts)
    os.truncate(parts[1], parts[1].stat().st_size // 2)  # not the last part, whose footer says 'last'
    assert not _complete(parts)
