"""spkid.data.sources.audio_dir: a folder of recordings, one subfolder per speaker."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from spkid.core.errors import DataError
from spkid.data.manifest import read_manifest, write_manifest
from spkid.data.sources.audio_dir import scan_audio_dir, scan_unseen_folder
from spkid.data.sources.trials import read_trials_list

RNG = np.random.default_rng(0)


def write_audio(path: Path, seconds: float, sr: int = 16000, channels: int = 1,
                fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = int(round(seconds * sr))
    data = (RNG.standard_normal((frames, channels)) * 0.1).astype(np.float32)
    sf.write(str(path), data, sr, format=fmt)
    return path


@pytest.fixture
def corpus(tmp_path) -> Path:
    """spkA: wav + nested flac; spkB: upper-case .WAV stereo at 8 kHz + flac;
    spkC: one 0.2 s recording (short). Plus things that must be ignored."""
    root = tmp_path / "corpus"
    write_audio(root / "spkA" / "a1.wav", 1.0)
    write_audio(root / "spkA" / "chapter1" / "a2.flac", 1.25)
    write_audio(root / "spkB" / "b1.WAV", 1.5, sr=8000, channels=2, fmt="WAV")
    write_audio(root / "spkB" / "b2.flac", 0.75)
    write_audio(root / "spkC" / "c1.wav", 0.2)
    (root / "spkA" / "notes.txt").write_text("not audio")
    (root / "spkA" / ".a1.wav").write_bytes(b"hidden junk, e.g. an AppleDouble file")
    (root / ".cache" / "x").mkdir(parents=True)
    (root / ".cache" / "x" / "junk.wav").write_bytes(b"junk")
    (root / "README.md").write_text("top-level non-audio files are fine")
    return root


# --- scan_audio_dir: the good cases -----------------------------------------------------

def test_scan_skip_short(corpus):
    rows, meta = scan_audio_dir(corpus, min_seconds=0.5, short="skip")
    assert meta == {"format": "audio", "skipped_short": 1, "speakers": ["spkA", "spkB"]}
    assert [r.utterance_id for r in rows] == [
        "spkA/a1.wav", "spkA/chapter1/a2.flac", "spkB/b1.WAV", "spkB/b2.flac"]
    assert [r.speaker for r in rows] == ["spkA", "spkA", "spkB", "spkB"]
    assert [r.duration for r in rows] == pytest.approx([1.0, 1.25, 1.5, 0.75])
    for r in rows:
        assert r.role is None and r.num_frames is None
        assert Path(r.path) == (corpus / r.utterance_id).absolute()
        st = os.stat(r.path)
        assert (r.size, r.mtime_ns) == (st.st_size, st.st_mtime_ns)


def test_scan_pad_keeps_short(corpus):
    rows, meta = scan_audio_dir(corpus, min_seconds=0.5, short="pad")
    assert meta["skipped_short"] == 0 and meta["speakers"] == ["spkA", "spkB", "spkC"]
    assert rows[-1].utterance_id == "spkC/c1.wav" and rows[-1].duration == pytest.approx(0.2)


def test_scan_is_deterministic_and_fits_the_manifest(corpus, tmp_path):
    rows, meta = scan_audio_dir(corpus, min_seconds=0.0, short="skip")
    assert scan_audio_dir(corpus, min_seconds=0.0, short="skip") == (rows, meta)
    write_manifest(tmp_path / "m.parquet", rows, meta)
    assert read_manifest(tmp_path / "m.parquet") == (rows, meta)


def test_submit_dir(corpus, tmp_path):
    submit = tmp_path / "unlabelled"
    write_audio(submit / "z.wav", 1.0)
    write_audio(submit / "batch2" / "a.flac", 0.1)  # short, but kept: it needs an answer
    write_audio(submit / "m.ogg", 1.0, fmt="OGG")
    if "MP3" in sf.available_formats():  # libsndfile >= 1.1 (bundled with soundfile wheels)
        write_audio(submit / "n.MP3", 1.0, fmt="MP3")
    (submit / ".hidden.wav").write_bytes(b"junk")
    rows, meta = scan_audio_dir(corpus, min_seconds=0.5, short="skip", submit_dir=submit)
    sub = [r for r in rows if r.role == "submit"]
    mp3 = ["submit/n.MP3"] if "MP3" in sf.available_formats() else []
    assert [r.utterance_id for r in sub] == ["submit/batch2/a.flac", "submit/m.ogg", *mp3,
                                             "submit/z.wav"]
    assert all(r.speaker is None for r in sub)
    assert sub[0].path == str((submit / "batch2" / "a.flac").absolute())
    assert meta["skipped_short"] == 1 and meta["speakers"] == ["spkA", "spkB"]
    assert rows[: len(rows) - len(sub)] == scan_audio_dir(corpus, min_seconds=0.5, short="skip")[0]


def test_submit_dir_inside_the_folder_is_not_a_speaker(corpus):
    write_audio(corpus / "test" / "q.wav", 1.0)
    rows, meta = scan_audio_dir(corpus, min_seconds=0.5, short="skip", submit_dir=corpus / "test")
    assert "test" not in meta["speakers"]
    assert [r.utterance_id for r in rows if r.role == "submit"] == ["submit/q.wav"]


def test_symlink_loop_does_not_hang(corpus):
    (corpus / "spkA" / "loop").symlink_to(corpus / "spkA", target_is_directory=True)
    rows, _ = scan_audio_dir(corpus, min_seconds=0.5, short="skip")
    assert len(rows) == 4


# --- scan_audio_dir: bad folders and files ----------------------------------------------

def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="nowhere: audio folder not found"):
        scan_audio_dir(tmp_path / "nowhere", min_seconds=0.5, short="skip")


def test_missing_submit_dir(corpus, tmp_path):
    with pytest.raises(DataError, match="no-submit: submit folder not found"):
        scan_audio_dir(corpus, min_seconds=0.5, short="skip", submit_dir=tmp_path / "no-submit")


def test_submit_dir_without_audio(corpus, tmp_path):
    (tmp_path / "empty-submit").mkdir()
    with pytest.raises(DataError, match="empty-submit: submit folder holds no audio"):
        scan_audio_dir(corpus, min_seconds=0.5, short="skip", submit_dir=tmp_path / "empty-submit")


def test_folder_without_audio(tmp_path):
    (tmp_path / "data" / "spk1").mkdir(parents=True)
    (tmp_path / "data" / "spk1" / "a.txt").write_text("x")
    with pytest.raises(DataError, match="data: no audio files"):
        scan_audio_dir(tmp_path / "data", min_seconds=0.5, short="skip")


def test_audio_without_speaker_folder(corpus):
    write_audio(corpus / "loose.wav", 1.0)
    with pytest.raises(DataError, match="loose.wav: audio file directly in .* has no speaker folder"):
        scan_audio_dir(corpus, min_seconds=0.5, short="skip")


def test_all_recordings_short(tmp_path):
    write_audio(tmp_path / "d" / "s1" / "a.wav", 0.1)
    write_audio(tmp_path / "d" / "s2" / "b.wav", 0.1)
    with pytest.raises(DataError, match="d: all 2 recordings are shorter than min_seconds = 0.5"):
        scan_audio_dir(tmp_path / "d", min_seconds=0.5, short="skip")


def test_bad_short_value(corpus):
    with pytest.raises(ValueError, match="short"):
        scan_audio_dir(corpus, min_seconds=0.5, short="drop")


def _cut(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def _break(corpus: Path, kind: str) -> Path:
    """Put one bad file into the corpus; return its path."""
    bad = corpus / "spkB"
    if kind == "garbage":
        path = bad / "garbage.wav"
        path.write_bytes(os.urandom(4000))
    elif kind == "empty file":
        path = bad / "empty.flac"
        path.write_bytes(b"")
    elif kind == "zero frames":
        path = bad / "silent.wav"
        sf.write(str(path), np.zeros((0, 1), dtype=np.float32), 16000)
    elif kind == "truncated wav":
        path = _cut(write_audio(bad / "full.wav", 1.0), bad / "cut.wav", 0.4)
        (bad / "full.wav").unlink()
    elif kind == "truncated flac":
        path = _cut(write_audio(bad / "full.flac", 1.0), bad / "cut.flac", 0.4)
        (bad / "full.flac").unlink()
    elif kind == "header only":
        full = write_audio(bad / "full.wav", 1.0)
        path = bad / "head.wav"
        path.write_bytes(full.read_bytes()[:20])  # the RIFF header stops mid-way
        full.unlink()
    elif kind in ("nan", "inf", "huge"):
        # Float WAV holds any float32: a bad value in the last frames, which download decodes.
        path = bad / f"{kind}.wav"
        data = (RNG.standard_normal(16000) * 0.1).astype(np.float32)
        data[-10] = {"nan": np.nan, "inf": -np.inf, "huge": 3e15}[kind]
        sf.write(str(path), data, 16000, subtype="FLOAT")
    return path


@pytest.mark.parametrize("kind,message", [
    ("garbage", "cannot read audio header"),
    ("empty file", r"empty file \(0 bytes\)"),
    ("zero frames", r"audio is empty \(0 samples\)"),
    ("truncated wav", "truncated WAV"),
    ("truncated flac", "truncated"),
    ("header only", "cannot read audio header"),
    ("nan", "audio contains NaN or inf samples"),
    ("inf", "audio contains NaN or inf samples"),
    ("huge", r"samples reach 3e\+15, far beyond full scale"),
])
def test_bad_recording_names_the_file(corpus, kind, message):
    path = _break(corpus, kind)
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: {message}"):
        scan_audio_dir(corpus, min_seconds=0.0, short="pad")


def test_bad_submit_recording_names_the_file(corpus, tmp_path):
    submit = tmp_path / "sub"
    submit.mkdir()
    (submit / "broken.flac").write_bytes(b"fLaC" + os.urandom(100))
    with pytest.raises(DataError, match="broken.flac: "):
        scan_audio_dir(corpus, min_seconds=0.0, short="pad", submit_dir=submit)


def test_speaker_called_submit_collides_with_submit_rows(corpus, tmp_path):
    write_audio(corpus / "submit" / "x.wav", 1.0)
    write_audio(tmp_path / "sub" / "x.wav", 1.0)
    with pytest.raises(DataError, match=r"x.wav: utterance id 'submit/x.wav' is also used by"):
        scan_audio_dir(corpus, min_seconds=0.0, short="pad", submit_dir=tmp_path / "sub")


# --- scan_unseen_folder and trial lists --------------------------------------------------------

@pytest.fixture
def verify(tmp_path) -> Path:
    root = tmp_path / "verify"
    for spk in ("id1", "id2"):
        write_audio(root / "wav" / spk / "v1" / "00001.wav", 0.3)  # short: kept anyway
        write_audio(root / "wav" / spk / "v2" / "00002.wav", 1.0)
    return root


def test_scan_verify_keeps_everything(verify):
    rows = scan_unseen_folder(verify / "wav")
    assert [r.utterance_id for r in rows] == [
        "id1/v1/00001.wav", "id1/v2/00002.wav", "id2/v1/00001.wav", "id2/v2/00002.wav"]
    assert all(r.role is None for r in rows) and rows[0].speaker == "id1"


def test_read_trials_list(verify):
    (verify / "wav" / "trials.txt").write_text(
        "# label enroll test\n"
        "1 id1/v1/00001.wav id1/v2/00002.wav\n"
        "\n"
        "0\tid1/v1/00001.wav   id2/v2/00002.wav\n")
    trials = read_trials_list(verify / "wav" / "trials.txt")
    rows = {Path(r.path): r for r in scan_unseen_folder(verify / "wav")}
    assert [(label, rows[a].utterance_id, rows[b].utterance_id) for label, a, b in trials] == [
        (1, "id1/v1/00001.wav", "id1/v2/00002.wav"),
        (0, "id1/v1/00001.wav", "id2/v2/00002.wav")]


def test_read_trials_list_with_audio_root(verify):
    # VoxCeleb's veri_test.txt sits next to wav/, its paths are relative to wav/
    (verify / "veri_test.txt").write_text("1 id1/v1/00001.wav id2/v1/00001.wav\n")
    [(label, a, b)] = read_trials_list(verify / "veri_test.txt", audio_root=verify / "wav")
    assert label == 1 and a == (verify / "wav" / "id1" / "v1" / "00001.wav").absolute()


@pytest.mark.parametrize("line,message", [
    ("1 id1/v1/00001.wav", "expected 'label enroll_path test_path'"),
    ("1 a b c", "expected 'label enroll_path test_path'"),
    ("2 id1/v1/00001.wav id1/v2/00002.wav", "label must be 0 or 1, got '2'"),
    ("yes id1/v1/00001.wav id1/v2/00002.wav", "label must be 0 or 1"),
])
def test_malformed_trial_line(verify, line, message):
    path = verify / "wav" / "trials.txt"
    path.write_text(f"1 id1/v1/00001.wav id1/v2/00002.wav\n{line}\n")
    with pytest.raises(DataError, match=rf"trials.txt:2: {message}"):
        read_trials_list(path)


def test_trial_names_missing_audio(verify):
    path = verify / "wav" / "trials.txt"
    path.write_text("1 id1/v1/00001.wav id1/v1/00009.wav\n")
    with pytest.raises(DataError, match=r"00009.wav: audio file not found \(trial list .*trials.txt line 1\)"):
        read_trials_list(path)


def test_missing_or_empty_trial_list(tmp_path):
    with pytest.raises(DataError, match="none.txt: trial list not found"):
        read_trials_list(tmp_path / "none.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(DataError, match="empty.txt: trial list has no trials"):
        read_trials_list(tmp_path / "empty.txt")
