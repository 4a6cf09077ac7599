"""Checked recordings are remembered by path, size and mtime (spkid.data.sources.checks):
a `download` after which nothing changed opens no audio file, a changed file is checked
again, and checks spread over processes find what one process finds."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from spkid.core.errors import DataError
from spkid.data.manifest import ManifestRoots, read_manifest
from spkid.data.sources import checks as checks_module
from spkid.data.sources.checks import PARALLEL_FROM, AudioChecks, CheckFailed, check_audio
from test_sources_stage import fail, make_audio_dir, ok, project, snapshot, write_params  # noqa: F401

SR = 16000


def corrupt_in_place(path: Path) -> None:
    """Garbage of the same size with the same mtime: only opening the file can tell."""
    st = path.stat()
    path.write_bytes(b"RIFF" + os.urandom(st.st_size - 4))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


def test_a_remembered_check_opens_nothing_and_a_changed_file_is_checked_again(tmp_path):
    data = make_audio_dir(tmp_path / "audio", speakers=2, per_speaker=3)
    files = sorted(data.rglob("*.wav"))
    cache = tmp_path / "cache" / "checks.parquet"
    first = AudioChecks(cache)
    found = first.check(files)
    assert [c.duration for c in found] == [check_audio(f) for f in files]
    assert (first.asked, first.opened) == (6, 6)
    first.save()

    corrupt_in_place(files[2])
    with pytest.raises(DataError, match=str(files[2])):
        check_audio(files[2])  # it is broken, and a fresh check says so
    again = AudioChecks(cache)
    assert again.check(files) == found  # ... but size and mtime say it was checked
    assert (again.asked, again.opened) == (6, 0)

    os.utime(files[2])  # a new mtime: checked again, and refused by name
    with pytest.raises(CheckFailed, match=str(files[2])) as err:
        AudioChecks(cache).check(files)
    assert err.value.path == files[2]


def test_the_cache_is_dropped_when_the_checking_code_changes_or_it_is_unreadable(
        tmp_path, monkeypatch):
    data = make_audio_dir(tmp_path / "audio", speakers=1, per_speaker=2)
    files = sorted(data.rglob("*.wav"))
    cache = tmp_path / "checks.parquet"
    c = AudioChecks(cache)
    c.check(files)
    c.save()
    assert AudioChecks(cache).known == c.known
    monkeypatch.setattr(checks_module, "_code_digest", lambda: "other code")
    assert AudioChecks(cache).known == {}
    monkeypatch.undo()
    cache.write_bytes(b"not parquet")
    fresh = AudioChecks(cache)
    assert fresh.known == {} and len(fresh.check(files)) == 2 and fresh.opened == 2


def test_parallel_checks_agree_with_one_process_and_report_the_first_failure(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(0)
    files = []
    for k in range(2 * PARALLEL_FROM + 3):
        files.append(folder / f"{k:03d}.wav")
        sf.write(str(files[-1]), 0.1 * rng.standard_normal(800 + 8 * k).astype(np.float32), SR)
    one = AudioChecks(workers=1).check(files)
    spread = AudioChecks(workers=2).check(files)
    assert spread == one and [round(c.duration * SR) for c in one] == [800 + 8 * k for k in
                                                                     range(len(files))]
    for k in (100, 20):
        files[k].write_bytes(b"RIFF" + os.urandom(300))
    with pytest.raises(CheckFailed) as err:
        AudioChecks(workers=2).check(files)
    assert err.value.path == files[20]  # the first in order, not the first to finish


def test_download_with_nothing_changed_opens_no_audio(project, tmp_path, capsys):
    data = make_audio_dir(tmp_path / "audio", speakers=3, per_speaker=3)
    verify = make_audio_dir(tmp_path / "verify", speakers=2, per_speaker=2, prefix="new", seed=3)
    write_params(project / "params.yaml", {"data": {
        "source": "audio_dir", "path": str(data), "verify_dir": str(verify)}})
    out = ok("download", capsys)
    assert "13 of 13 recordings opened" in out
    raw = snapshot(project / "data/raw")

    # Broken in place with size and mtime kept: not opened, so not noticed, and nothing
    # written changes (a DVC repro would run nothing downstream).
    corrupt_in_place(data / "spk1" / "01.wav")
    corrupt_in_place(verify / "new0" / "00.wav")
    out = ok("download", capsys)
    assert "0 of 13 recordings opened" in out and "; unchanged" in out
    assert snapshot(project / "data/raw") == raw

    # Touched: opened again, and the one-line error names it.
    os.utime(data / "spk1" / "01.wav")
    assert str(data / "spk1" / "01.wav") in fail("download", capsys)
    assert snapshot(project / "data/raw") == raw


def test_the_same_corpus_at_another_path_gives_the_same_manifest(project, tmp_path, capsys):
    data = make_audio_dir(tmp_path / "a" / "audio", speakers=2, per_speaker=2)
    submit = make_audio_dir(tmp_path / "a" / "submit", speakers=1, per_speaker=2, prefix="x")
    write_params(project / "params.yaml", {"data": {
        "source": "audio_dir", "path": str(data), "submit_dir": str(submit)}})
    ok("download", capsys)
    before = (project / "data/raw/manifest.parquet").read_bytes()

    shutil.move(tmp_path / "a", tmp_path / "b")  # a move keeps every mtime
    data, submit = tmp_path / "b" / "audio", tmp_path / "b" / "submit"
    write_params(project / "params.yaml", {"data": {
        "source": "audio_dir", "path": str(data), "submit_dir": str(submit)}})
    ok("download", capsys)
    assert (project / "data/raw/manifest.parquet").read_bytes() == before
    manifest = project / "data/raw/manifest.parquet"
    roots = ManifestRoots.read(manifest)
    assert (roots.corpus, roots.submit) == (str(data), str(submit))
    rows, _ = read_manifest(manifest)
    assert [roots.resolve(r) for r in rows] == sorted(data.rglob("*.wav")) + sorted(
        submit.rglob("*.wav"))
    # features finds the files where they are now
    assert "6 utterances" in ok("features", capsys)
