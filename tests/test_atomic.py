import signal
import subprocess
import sys

import pytest

from spkid.core.atomic import atomic_dir, atomic_path, remove_stale_temporaries, write_json


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_dir_replaces_whole_folder(tmp_path):
    target = tmp_path / "dir"
    target.mkdir()
    (target / "stale").write_text("x")
    with atomic_dir(target) as tmp:
        (tmp / "new").write_text("y")
        assert (target / "stale").exists()  # old output intact until the new one is complete
    assert [p.name for p in target.iterdir()] == ["new"]
    with pytest.raises(ValueError):
        with atomic_dir(target) as tmp:
            (tmp / "partial").write_text("z")
            raise ValueError
    assert [p.name for p in target.iterdir()] == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir"]


def test_write_json(tmp_path):
    write_json(tmp_path / "a" / "b.json", {"x": 1})
    assert (tmp_path / "a" / "b.json").read_text() == '{\n  "x": 1\n}\n'


# --- temporaries of a killed writer --------------------------------------------------------

WRITER = """
import os, signal, sys
from spkid.core.atomic import atomic_dir, atomic_path
folder, file, how = sys.argv[1:]
with atomic_dir(folder) as tmp:
    (tmp / "shard-00000.parquet").write_bytes(b"x" * 1000)
    with atomic_path(file) as half:
        half.write_bytes(b"half")
        print(tmp.name, half.name, flush=True)
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        sys.stdin.read()  # held open until the test closes stdin
"""


def writer(folder, file, how):
    """A process inside atomic_dir(folder) and atomic_path(file), killed with SIGKILL
    ("kill") or left waiting ("wait"); and the names of its two temporaries."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(folder), str(file), how],
                            text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    names = proc.stdout.readline().split()
    assert len(names) == 2, proc.communicate()
    if how == "kill":
        assert proc.wait(timeout=60) == -signal.SIGKILL
    return proc, names


def test_temporaries_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    proc, leaked = writer(tmp_path / "features", tmp_path / "manifest.parquet", "kill")
    assert all((tmp_path / name).exists() for name in leaked)  # what kill -9 leaves
    # A replaced folder on its way out, as a kill between the two renames leaves it.
    old = tmp_path / leaked[0].replace(".tmp", ".old")
    old.mkdir()
    # Not ours, or not this target's: left alone.
    keep = [".features.backup", ".features.abc123.tmp", "features.1-x.abc.tmp",
            f".features.{proc.pid}-otherhost.abc12345.tmp", f".featuresx.{proc.pid}-h.abc.tmp"]
    for name in keep:
        (tmp_path / name).write_text("keep")

    with atomic_dir(tmp_path / "features") as tmp:
        (tmp / "new").write_text("y")
    assert not (tmp_path / leaked[0]).exists() and not old.exists()
    assert (tmp_path / leaked[1]).exists()  # another target's: cleaned when it is written
    write_json(tmp_path / "manifest.parquet", {})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep + ["features",
                                                                        "manifest.parquet"])


def test_temporaries_of_a_running_writer_are_kept(tmp_path):
    proc, names = writer(tmp_path / "features", tmp_path / "manifest.parquet", "wait")
    try:
        with atomic_dir(tmp_path / "features") as tmp:
            (tmp / "new").write_text("y")
        write_json(tmp_path / "manifest.parquet", {})
        assert all((tmp_path / name).exists() for name in names)
        assert remove_stale_temporaries(tmp_path / "features") == []
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert remove_stale_temporaries(tmp_path / "features") == [tmp_path / names[0]]
    assert not (tmp_path / names[0]).exists()
