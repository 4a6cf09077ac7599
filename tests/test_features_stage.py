"""The features stage spread over processes (worker processes on one machine and torchrun
ranks write byte for byte what one process writes) and over runs (a killed run resumes,
a changed manifest rewrites only the blocks it changed, and every way ends with the bytes
of one run from scratch)."""

import filecmp
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from spkid.core.errors import StaleInputError
from spkid.data.manifest import read_manifest, write_manifest
from spkid.features.blocks import cut_blocks
from spkid.features.store import open_features
from test_train_stage import BIN, env, free_port, spkid

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
    ids = [r.utterance_id for r in read_manifest(one / "data/raw/manifest.parquet")[0]]
    blocks = len(cut_blocks(ids, 4))
    assert "18 utterances" in out and f"{blocks} blocks, {blocks} written, 0 kept" in out
    shards = sorted(p.name for p in (one / "data/features").glob("shard-*.parquet"))
    assert [n[6:11] for n in shards] == [f"{k:05d}" for k in range(blocks)]
    assert all(re.fullmatch(r"shard-\d{5}-[0-9a-f]{16}-000\.parquet", n) for n in shards)

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


def written(out: str) -> tuple[int, int]:
    m = re.search(r"(\d+) blocks, (\d+) written, (\d+) kept", out)
    return int(m[2]), int(m[3])


def test_blocks_are_cut_by_content_and_at_twice_the_size_at_most():
    ids = [f"u{k:05d}" for k in range(5000)]
    blocks = cut_blocks(ids, 50)
    sizes = [b - a for a, b in blocks]
    assert blocks[0][0] == 0 and blocks[-1][1] == 5000 and max(sizes) <= 100
    assert all(b == c for (_, b), (c, _) in zip(blocks, blocks[1:]))
    assert 35 < 5000 / len(blocks) < 60
    # One id more in the middle changes one block; every other is the same rows.
    grown = cut_blocks(ids[:2500] + ["u02500x"] + ids[2500:], 50)
    before = {tuple(ids[a:b]) for a, b in blocks}
    after = [tuple((ids[:2500] + ["u02500x"] + ids[2500:])[a:b]) for a, b in grown]
    assert sum(block not in before for block in after) <= 2


def test_a_killed_run_resumes_and_ends_with_the_bytes_of_a_fresh_one(downloaded, tmp_path):
    fresh = with_params(downloaded, tmp_path / "fresh", shard_size=1)
    total, _ = written(spkid(fresh, "features").stdout)
    killed = with_params(downloaded, tmp_path / "killed", shard_size=1)
    folder = killed / "data/features"
    run = subprocess.Popen([str(BIN / "spkid"), "features"], cwd=killed, env=env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list(folder.glob("shard-*.parquet"))) < 3 and time.time() < deadline:
        time.sleep(0.005)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    done = len(list(folder.glob("shard-*.parquet")))
    assert 3 <= done < total, "the run ended before it could be killed"
    with pytest.raises(StaleInputError, match="did not finish"):
        open_features(folder)
    redo, kept = written(spkid(killed, "features").stdout)
    assert redo == total - kept and kept >= 3
    same_tree(fresh / "data/features", folder)


def test_a_changed_manifest_rewrites_only_its_blocks(downloaded, tmp_path):
    one = with_params(downloaded, tmp_path / "one")
    total, _ = written(spkid(one, "features").stdout)
    manifest = one / "data/raw/manifest.parquet"
    rows, meta = read_manifest(manifest)
    write_manifest(manifest, rows[:7] + rows[8:], meta)  # one utterance gone
    redo, kept = written(spkid(one, "features").stdout)
    assert redo == 1 and kept >= total - 2
    fresh = with_params(downloaded, tmp_path / "fresh")
    write_manifest(fresh / "data/raw/manifest.parquet", rows[:7] + rows[8:], meta)
    spkid(fresh, "features")
    same_tree(fresh / "data/features", one / "data/features")
    # A feature param makes every block stale: all rewritten, none of the old left.
    params = yaml.safe_load((one / "params.yaml").read_text())
    params["features"]["n_mels"] = 32
    (one / "params.yaml").write_text(yaml.safe_dump(params))
    redo, kept = written(spkid(one, "features").stdout)
    assert kept == 0 and len(list((one / "data/features").glob("shard-*"))) == redo
    assert json.loads((one / "data/features/summary.json").read_text())["features"]["n_mels"] == 32
