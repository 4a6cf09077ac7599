"""The features stage spread over processes: worker processes on one machine and torchrun
ranks write byte for byte what one process writes."""

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_train_stage import env, free_port, spkid

PARAMS = {
    "data": {"synthetic": {"speakers": 3, "utterances_per_speaker": 5, "submit_per_speaker": 1,
                           "min_seconds": 0.5, "max_seconds": 2.5}},
    # 18 utterances in blocks of 4: five blocks, the last one short.
    "features": {"shard_size": 4, "batch_size": 3, "workers": 1},
}


@pytest.fixture(scope="module")
def downloaded(tmp_path_factory):
    root = tmp_path_factory.mktemp("downloaded")
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    spkid(root, "download")
    return root


def with_params(downloaded, dest: Path, **features) -> Path:
    shutil.copytree(downloaded, dest)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["features"].update(features)
    (dest / "params.yaml").write_text(yaml.safe_dump(params))
    return dest


def same_tree(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    _, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert not mismatch and not errors, mismatch + errors


def test_workers_and_torchrun_ranks_write_what_one_process_writes(downloaded, tmp_path):
    one = with_params(downloaded, tmp_path / "one")
    out = spkid(one, "features").stdout
    assert "18 utterances" in out and "5 shards" in out
    shards = sorted((one / "data/features").glob("shard-*.parquet"))
    assert [p.name for p in shards] == [f"shard-{k:05d}-000.parquet" for k in range(5)]

    two = with_params(downloaded, tmp_path / "two", workers=2)
    spkid(two, "features")
    same_tree(one / "data/features", two / "data/features")

    ranks = with_params(downloaded, tmp_path / "ranks")
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
         "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "stages.cli", "features"],
        cwd=ranks, env=env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert run.stdout.count("[features] 18 utterances") == 1  # rank 0 alone reports
    assert "x 2 ranks" in run.stdout
    same_tree(one / "data/features", ranks / "data/features")
    assert sorted(p.name for p in ranks.joinpath("data").iterdir()) == [".spkid.lock", "features", "raw"]


def test_float16_shards_are_half_the_size_and_read_as_float32(downloaded, tmp_path):
    import numpy as np

    from spkid.features.store import open_features
    full = with_params(downloaded, tmp_path / "f32")
    half = with_params(downloaded, tmp_path / "f16", dtype="float16")
    for repo in (full, half):
        spkid(repo, "features")

    def size(repo):
        return sum(p.stat().st_size for p in (repo / "data/features").glob("shard-*.parquet"))
    assert size(half) < 0.55 * size(full)
    a, b = open_features(full / "data/features"), open_features(half / "data/features")
    pos = np.arange(len(a.length))
    xa, _ = a.crops(pos, np.zeros_like(pos), a.length)
    xb, _ = b.crops(pos, np.zeros_like(pos), b.length)
    assert xb.dtype == np.float32
    np.testing.assert_allclose(xb, xa, atol=0.01, rtol=0.001)  # float16 keeps ~3 digits


def test_augmented_copies_are_the_same_bytes_from_any_number_of_workers(downloaded, tmp_path):
    augment = {"copies": 2, "speed": [1.1]}
    one = with_params(downloaded, tmp_path / "one", augment=augment)
    out = spkid(one, "features").stdout
    # 3 speakers x 5 utterances: 3 train each, and 5 copies of each (a speed copy, 2 x 2)
    assert "18 utterances" in out and "+ 45 augmented copies" in out
    two = with_params(downloaded, tmp_path / "two", workers=2, augment=augment)
    spkid(two, "features")
    same_tree(one / "data/features", two / "data/features")
    clean = with_params(downloaded, tmp_path / "clean")
    spkid(clean, "features")
    # The clean blocks are what features writes without copies, but for the meta that
    # records the augmentation.
    import pyarrow.parquet as pq
    for path in sorted((clean / "data/features").glob("shard-*.parquet")):
        a, b = pq.read_table(path), pq.read_table(one / "data/features" / path.name)
        assert a.schema.metadata != b.schema.metadata
        assert a.replace_schema_metadata(None).equals(b.replace_schema_metadata(None))
