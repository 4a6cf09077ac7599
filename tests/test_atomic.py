import pytest

from spkid.atomic import atomic_dir, atomic_path, write_json


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
