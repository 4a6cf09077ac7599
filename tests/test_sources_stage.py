"""The download and evaluate stages on real data sources: a HW4 folder, a folder of
recordings, an archive behind a file:// URL, and unseen-speaker verification. The stage
commands run in-process, in a temporary folder standing in for the repository root."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import typer
import yaml

from spkid.data.manifest import ManifestRoots, read_manifest
from test_atomic import writer

N_MELS = 40
HW4_SPEAKERS = ["id10473", "id00464", "id10001"]  # class ids deliberately not in name order
SR = 16000


# --- fake data sets (also used by test_e2e_sources.py) ------------------------------------

def make_hw4(folder: Path, speakers=HW4_SPEAKERS, n_utts: int = 6, n_test: int = 3,
             mel_len=(60, 160), seed: int = 0) -> Path:
    """A HW4 Kaggle folder: mapping.json, metadata.json, testdata.json, uttr-*.pt tensors
    of random float32 (mel_len, 40) log-mels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    k = 0

    def utt() -> dict:
        nonlocal k
        n = int(rng.integers(*mel_len))
        name = f"uttr-{hashlib.md5(f'{seed}-{k}'.encode()).hexdigest()}.pt"
        k += 1
        torch.save(torch.from_numpy(rng.standard_normal((n, N_MELS), dtype=np.float32)),
                   folder / name)
        return {"feature_path": name, "mel_len": n}

    labelled = {s: [utt() for _ in range(n_utts)] for s in speakers}
    tests = [utt() for _ in range(n_test)]
    (folder / "mapping.json").write_text(json.dumps({
        "speaker2id": {s: i for i, s in enumerate(speakers)},
        "id2speaker": {str(i): s for i, s in enumerate(speakers)}}))
    (folder / "metadata.json").write_text(json.dumps({
        "n_mels": N_MELS, "speakers": dict(sorted(labelled.items()))}))
    (folder / "testdata.json").write_text(json.dumps({"n_mels": N_MELS, "utterances": tests}))
    return folder


def voice(f0: float, seconds: float, rng: np.random.Generator, sr: int = SR) -> np.ndarray:
    """A crude voice: a few harmonics of f0 with a speaker-specific tilt, plus noise."""
    t = np.arange(int(seconds * sr)) / sr
    wave = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6.28)) / h ** (1 + f0 / 400)
               for h in range(1, 6))
    wave = wave * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))  # syllable-rate envelope
    return (0.2 * wave / np.abs(wave).max() + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def make_audio_dir(folder: Path, speakers: int = 3, per_speaker: int = 4,
                   seconds=(1.0, 2.0), seed: int = 0, prefix: str = "spk",
                   fmt: str = "wav") -> Path:
    """<folder>/<speaker>/<n>.<fmt>: short sine/noise mixtures, one pitch per speaker."""
    rng = np.random.default_rng(seed)
    for s in range(speakers):
        f0 = 100.0 + 37.0 * s + 11.0 * seed
        for u in range(per_speaker):
            path = folder / f"{prefix}{s}" / f"{u:02d}.{fmt}"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_audio(path, voice(f0, rng.uniform(*seconds), rng), SR)
    return folder


def write_audio(path: Path, wave: np.ndarray, sr: int) -> None:
    """WAV/FLAC through soundfile; m4a (AAC in MP4) and .aac (raw ADTS stream) encoded
    through PyAV, the library spkid decodes them with."""
    if path.suffix not in (".m4a", ".aac"):
        sf.write(str(path), wave, sr)
        return
    import av
    with av.open(str(path), "w", format="mp4" if path.suffix == ".m4a" else "adts") as out:
        stream = out.add_stream("aac", rate=sr)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.asarray(wave, np.float32)[None], format="fltp",
                                           layout="mono")
        frame.sample_rate = sr
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)


def write_params(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


TINY_TRAIN = {
    "index": {"val_fraction": 0.25, "test_fraction": 0.25, "segment_len": 32},
    "model": {"encoder": "transformer", "pooling": "sap", "d_model": 16, "layers": 1, "heads": 2, "ffn_dim": 32, "embedding_dim": 16,
              "attention_dim": 16},
    "train": {"steps": 4, "batch_size": 8, "valid_every": 2, "warmup_steps": 1,
              "device": "cpu"},
}


def merged(*dicts: dict) -> dict:
    out: dict = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# --- running stages in-process -------------------------------------------------------------

@pytest.fixture
def project(tmp_path, monkeypatch):
    """A scratch repository root: the stages read and write relative to the cwd."""
    root = tmp_path / "repo"
    root.mkdir()
    monkeypatch.chdir(root)
    return root


def stage(name: str, capsys, params: Path = Path("params.yaml")) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of one stage command."""
    import importlib

    fn = getattr(importlib.import_module(f"stages.{name}"), name)
    capsys.readouterr()
    try:
        fn(params)
        code = 0
    except typer.Exit as exc:
        code = exc.exit_code
    out, err = capsys.readouterr()
    return code, out, err


def ok(name: str, capsys) -> str:
    code, out, err = stage(name, capsys)
    assert code == 0, err
    return out


def fail(name: str, capsys) -> str:
    code, out, err = stage(name, capsys)
    assert code == 2, (out, err)
    # (a progress bar may leave its last state on the error's line)
    lines = [line[line.index("spkid: error:"):] for line in err.replace("\r", "\n").splitlines()
             if "spkid: error:" in line]
    assert len(lines) == 1, err
    return lines[0]


def snapshot(folder: Path) -> dict:
    """name -> (bytes, mtime_ns) of every file below `folder`."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --- hw4 --------------------------------------------------------------------------------

def test_hw4_download_and_features(project, tmp_path, capsys):
    hw4 = make_hw4(tmp_path / "hw4")
    write_params(project / "params.yaml", {"data": {"source": "hw4", "path": "../hw4"}})
    out = ok("download", capsys)
    assert "[download] hw4 " in out and "18 utterances, 3 speakers, 3 submit" in out

    rows, meta = read_manifest(project / "data/raw/manifest.parquet")
    assert meta["format"] == "hw4" and meta["source"] == "hw4" and meta["n_mels"] == 40
    # Where the folder is lives beside the manifest, not in it: paths are relative to it.
    roots = ManifestRoots.read(project / "data/raw/manifest.parquet")
    assert roots.corpus == str(hw4.absolute()) and "folder" not in meta
    metadata = json.loads((hw4 / "metadata.json").read_text())["speakers"]
    tests = json.loads((hw4 / "testdata.json").read_text())["utterances"]
    # labelled rows: speakers in mapping.json order, utterances in metadata.json order
    assert [r.utterance_id for r in rows if r.role is None] == [
        u["feature_path"] for s in HW4_SPEAKERS for u in metadata[s]]
    # submit rows: testdata.json order, the utterance id is the feature_path
    assert [r.utterance_id for r in rows if r.role == "submit"] == [u["feature_path"] for u in tests]
    for r in rows:
        assert r.path == r.utterance_id and roots.resolve(r) == hw4.absolute() / r.utterance_id
        st = os.stat(roots.resolve(r))
        assert r.size == st.st_size and r.mtime_ns == st.st_mtime_ns
    # the folder is read in place, never copied
    assert sorted(p.name for p in (project / "data/raw").iterdir()) == [
        "manifest.parquet", "manifest.roots.json", "verify.parquet"]
    vrows, vmeta = read_manifest(project / "data/raw/verify.parquet")
    assert vrows == [] and vmeta["kind"] is None

    out = ok("features", capsys)
    assert "21 utterances" in out
    summary = json.loads((project / "data/features/summary.json").read_text())
    assert summary["precomputed"] is True and summary["utterances"] == 21
    from spkid.features.store import open_features, read_meta
    assert read_meta(project / "data/features")["precomputed"] is True
    store = open_features(project / "data/features")
    first = tests[0]["feature_path"]
    np.testing.assert_array_equal(store.matrix(store.positions([first])[0]),
                                  torch.load(hw4 / first).numpy())


def test_download_is_byte_identical_and_untouched_when_nothing_changed(project, tmp_path, capsys):
    make_hw4(tmp_path / "hw4")
    write_params(project / "params.yaml", {"data": {"source": "hw4", "path": str(tmp_path / "hw4")}})
    ok("download", capsys)
    before = snapshot(project / "data/raw")
    out = ok("download", capsys)
    assert "; unchanged" in out
    assert snapshot(project / "data/raw") == before  # same bytes, not even rewritten

    # The manifest bytes depend on content only: a fresh write gives the same file.
    shutil.rmtree(project / "data/raw")
    ok("download", capsys)
    assert {k: v[0] for k, v in snapshot(project / "data/raw").items()} == {
        k: v[0] for k, v in before.items()}

    # A changed feature file changes its fingerprint, hence the manifest.
    victim = next((tmp_path / "hw4").glob("uttr-*.pt"))
    os.utime(victim, ns=(1, 1))
    ok("download", capsys)
    assert (project / "data/raw/manifest.parquet").read_bytes() != before["manifest.parquet"][0]


def test_hw4_errors_are_one_line(project, tmp_path, capsys):
    write_params(project / "params.yaml", {"data": {"source": "hw4", "path": "nowhere"}})
    line = fail("download", capsys)
    assert str(project / "nowhere") in line and "not found" in line
    assert not (project / "data/raw").exists()

    hw4 = make_hw4(tmp_path / "hw4")
    write_params(project / "params.yaml", {"data": {"source": "hw4", "path": str(hw4)}})
    ok("download", capsys)
    before = snapshot(project / "data/raw")
    victim = json.loads((hw4 / "testdata.json").read_text())["utterances"][1]["feature_path"]
    (hw4 / victim).unlink()
    line = fail("download", capsys)
    assert str(hw4 / victim) in line and "testdata.json" in line
    assert snapshot(project / "data/raw") == before  # the old output is left as it was


# --- audio_dir --------------------------------------------------------------------------

def test_audio_dir_download_short_counts_and_submit(project, tmp_path, capsys):
    data = make_audio_dir(tmp_path / "audio", speakers=3, per_speaker=3)
    sf.write(str(data / "spk1" / "short.wav"), np.zeros(1600, np.float32) + 0.01, SR)  # 0.1 s
    make_audio_dir(data / "submit", speakers=1, per_speaker=2, prefix="x", fmt="flac")
    write_params(project / "params.yaml", {"data": {
        "source": "audio_dir", "path": "../audio", "submit_dir": "../audio/submit"}})
    out = ok("download", capsys)
    assert "9 recordings, 3 speakers" in out and "2 submit" in out and "short: 1 skipped" in out
    rows, meta = read_manifest(project / "data/raw/manifest.parquet")
    assert meta["format"] == "audio" and meta["skipped_short"] == 1
    assert meta["speakers"] == ["spk0", "spk1", "spk2"]  # the submit folder is no speaker
    assert [r.utterance_id for r in rows if r.role == "submit"] == [
        "submit/x0/00.flac", "submit/x0/01.flac"]
    roots = ManifestRoots.read(project / "data/raw/manifest.parquet")
    assert roots.submit == str((tmp_path / "audio/submit").absolute())
    assert [r.path for r in rows] == [r.utterance_id for r in rows if r.role is None] + [
        "x0/00.flac", "x0/01.flac"]  # each relative to its own folder
    assert all(roots.resolve(r).is_file() for r in rows)

    out = ok("features", capsys)
    assert "11 utterances" in out
    summary = json.loads((project / "data/features/summary.json").read_text())
    assert summary["precomputed"] is False and summary["source"]["skipped_short"] == 1

    # short: pad keeps it (the features stage pads it) and says so
    write_params(project / "params.yaml", {"data": {
        "source": "audio_dir", "path": "../audio", "submit_dir": "../audio/submit",
        "short": "pad"}})
    out = ok("download", capsys)
    assert "10 recordings" in out and "short: 1 to pad" in out
    out = ok("features", capsys)
    assert "1 padded" in out


def test_corrupt_audio_is_named_by_download_and_by_features_when_it_must_decode(
        project, tmp_path, capsys):
    data = make_audio_dir(tmp_path / "audio", speakers=2, per_speaker=4)
    write_params(project / "params.yaml", {
        "data": {"source": "audio_dir", "path": str(data)},
        "features": {"shard_size": 1, "batch_size": 1}})
    ok("download", capsys)
    ok("features", capsys)
    before = snapshot(project / "data/features")
    # Corrupt a file in the middle after the download stage checked it. The manifest does
    # not know: features has nothing to redo and leaves its shards untouched.
    victim = data / "spk1" / "01.wav"
    victim.write_bytes(b"RIFF" + os.urandom(2000))
    assert "0 written, 8 kept" in ok("features", capsys)
    after = snapshot(project / "data/features")
    assert {k: v for k, v in after.items() if k.startswith("shard-")} == \
        {k: v for k, v in before.items() if k.startswith("shard-")}
    # The download stage sees the change and names the file, leaving data/raw alone.
    raw = snapshot(project / "data/raw")
    line = fail("download", capsys)
    assert str(victim) in line
    assert snapshot(project / "data/raw") == raw
    # A features run that must decode it again fails naming it, and leaves the folder
    # marked unfinished (readers refuse it) with no temporary behind.
    write_params(project / "params.yaml", {
        "data": {"source": "audio_dir", "path": str(data)},
        "features": {"shard_size": 1, "batch_size": 1, "n_mels": 32}})
    line = fail("features", capsys)
    assert str(victim) in line
    assert "a features run did not finish" in fail("index", capsys)
    assert sorted(p.name for p in (project / "data").iterdir()) == [".spkid.lock", "downloads", "features", "raw"]
    assert not [p for p in (project / "data/features").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("value,message", [
    (np.nan, "audio contains NaN or inf samples"),
    (1e20, "samples reach 1e+20, far beyond full scale (1); not usable audio")])
def test_bad_samples_in_the_middle_fail_features_naming_the_path(project, tmp_path, capsys,
                                                                 value, message):
    # download decodes only a recording's last frames; a bad sample before them is found
    # by features, the stage that decodes the whole file (as the README says).
    data = make_audio_dir(tmp_path / "audio", speakers=2, per_speaker=3)
    victim = data / "spk1" / "01.wav"
    wave = voice(150.0, 1.0, np.random.default_rng(1))
    wave[SR // 2] = value
    sf.write(str(victim), wave, SR, subtype="FLOAT")
    write_params(project / "params.yaml", {"data": {"source": "audio_dir", "path": str(data)}})
    ok("download", capsys)
    assert fail("features", capsys) == f"spkid: error: {victim}: {message}"


# --- url --------------------------------------------------------------------------------

def _zip_folder(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(folder.rglob("*")):
            zf.write(p, Path("HW4") / p.relative_to(folder))
    return archive


def test_url_hw4_archive(project, tmp_path, capsys):
    archive = _zip_folder(make_hw4(tmp_path / "hw4"), tmp_path / "hw4.zip")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    url = archive.absolute().as_uri()

    write_params(project / "params.yaml", {"data": {"source": "url", "url": url,
                                                    "sha256": "0" * 64}})
    line = fail("download", capsys)
    assert "SHA-256 mismatch" in line and "0" * 64 in line
    assert not (project / "data/raw").exists()

    write_params(project / "params.yaml", {"data": {"source": "url", "url": url, "sha256": digest}})
    out = ok("download", capsys)
    assert f"[download] hw4 {url} -> " in out
    rows, meta = read_manifest(project / "data/raw/manifest.parquet")
    assert meta["format"] == "hw4" and meta["source"] == "url" and meta["url"] == url
    roots = ManifestRoots.read(project / "data/raw/manifest.parquet")
    extracted = Path(roots.corpus)
    assert extracted.parent.parent == (project / "data/downloads").absolute()
    assert extracted.parent.name.startswith("extracted-") and extracted.name == "HW4"
    tests = json.loads((tmp_path / "hw4/testdata.json").read_text())["utterances"]
    assert [r.utterance_id for r in rows if r.role == "submit"] == [u["feature_path"] for u in tests]
    assert all(roots.resolve(r).parent == extracted for r in rows)

    # Cached: neither downloaded nor unpacked again, so the manifest stays the same bytes.
    before = snapshot(project / "data/raw")
    out = ok("download", capsys)
    assert "; unchanged" in out and snapshot(project / "data/raw") == before

    # data.layout given explicitly but wrong: the scanner names what is missing.
    write_params(project / "params.yaml", {"data": {"source": "url", "url": url,
                                                    "layout": "audio_dir"}})
    line = fail("download", capsys)
    assert "HW4" in line and "audio" in line


def test_url_audio_archive_with_submit_inside(project, tmp_path, capsys):
    import tarfile

    data = make_audio_dir(tmp_path / "corpus", speakers=2, per_speaker=3)
    make_audio_dir(data / "submit", speakers=1, per_speaker=2, prefix="x")
    archive = tmp_path / "corpus.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(data, arcname="corpus")
    # A relative submit_dir names a folder inside the archive.
    write_params(project / "params.yaml", {"data": {
        "source": "url", "url": str(archive), "submit_dir": "submit"}})
    out = ok("download", capsys)
    assert "audio_dir " in out and "6 recordings, 2 speakers" in out and "2 submit" in out
    rows, meta = read_manifest(project / "data/raw/manifest.parquet")
    roots = ManifestRoots.read(project / "data/raw/manifest.parquet")
    assert meta["speakers"] == ["spk0", "spk1"] and Path(roots.corpus).name == "corpus"
    assert Path(roots.submit) == Path(roots.corpus) / "submit"
    assert [r.utterance_id for r in rows if r.role == "submit"] == [
        "submit/x0/00.wav", "submit/x0/01.wav"]


# --- verification on unseen speakers ------------------------------------------------------

def _train(capsys):
    for name in ("download", "features", "index", "train"):
        ok(name, capsys)


def test_verify_dir_and_trials(project, tmp_path, capsys):
    data = make_audio_dir(tmp_path / "audio", speakers=3, per_speaker=4)
    unseen = make_audio_dir(tmp_path / "unseen", speakers=3, per_speaker=3, seed=5, prefix="new")
    base = merged(TINY_TRAIN, {"data": {"source": "audio_dir", "path": str(data)}})
    write_params(project / "params.yaml", base)
    _train(capsys)
    ok("evaluate", capsys)
    report = json.loads((project / "metrics/eval.json").read_text())
    assert "verify" not in report and not (project / "metrics/det/verify.json").exists()

    # data.verify_dir: all 9 same-speaker pairs plus different-speaker pairs (4x as many,
    # capped by the 27 that exist)
    write_params(project / "params.yaml", merged(base, {"data": {"verify_dir": "../unseen"}}))
    out = ok("download", capsys)
    assert "verify: 9 recordings, 3 speakers" in out
    vrows, vmeta = read_manifest(project / "data/raw/verify.parquet")
    assert vmeta["kind"] == "dir" and len(vrows) == 9
    out = ok("evaluate", capsys)
    assert "verify: EER" in out
    verify = json.loads((project / "metrics/eval.json").read_text())["verify"]
    assert verify["trials"] == 9 + 27 and verify["target_trials"] == 9
    assert 0 <= verify["eer"] <= 1 and 0 <= verify["min_dcf_p01"] <= 1
    assert 0 <= verify["min_dcf_p05"] <= 1 and verify["speakers"] == 3
    assert json.loads((project / "metrics/det/verify.json").read_text())["det"]

    # evaluate.trials alone: paths relative to the list's folder
    lines = ["1 new0/00.wav new0/01.wav", "0 new0/00.wav new1/00.wav",
             "# a comment", "1 new2/01.wav new2/02.wav", "0 new1/02.wav new2/02.wav",
             "0 new0/01.wav new2/00.wav"]
    (unseen / "trials.txt").write_text("\n".join(lines) + "\n")
    write_params(project / "params.yaml", merged(base, {"evaluate": {"trials": str(unseen / "trials.txt")}}))
    out = ok("download", capsys)
    assert "verify: 5 listed trials over 7 recordings" in out
    ok("evaluate", capsys)
    verify = json.loads((project / "metrics/eval.json").read_text())["verify"]
    assert verify["trials"] == 5 and verify["target_trials"] == 2 and verify["recordings"] == 7

    # Editing a label changes verify.parquet (so DVC re-runs evaluate)...
    before = (project / "data/raw/verify.parquet").read_bytes()
    (unseen / "trials.txt").write_text("\n".join(["0" + lines[0][1:]] + lines[1:]) + "\n")
    ok("download", capsys)
    assert (project / "data/raw/verify.parquet").read_bytes() != before
    # ...and so does editing the list without running download: evaluate refuses.
    (unseen / "trials.txt").write_text("\n".join(lines) + "\n")
    line = fail("evaluate", capsys)
    assert str(unseen / "trials.txt") in line and "changed" in line

    # Both: trial paths are relative to data.verify_dir
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "t.txt").write_text("\n".join(lines) + "\n")
    write_params(project / "params.yaml", merged(base, {
        "data": {"verify_dir": str(unseen)}, "evaluate": {"trials": "../lists/t.txt"}}))
    ok("download", capsys)
    ok("evaluate", capsys)
    verify = json.loads((project / "metrics/eval.json").read_text())["verify"]
    assert verify["trials"] == 5 and verify["speakers"] == 3

    # A trial list naming a missing file: one line naming the file
    (unseen / "trials.txt").write_text("1 new0/00.wav new0/99.wav\n")
    write_params(project / "params.yaml", merged(base, {"evaluate": {"trials": str(unseen / "trials.txt")}}))
    line = fail("download", capsys)
    assert str(unseen / "new0" / "99.wav") in line

    # Dropping the setting removes "verify" again.
    write_params(project / "params.yaml", base)
    ok("download", capsys)
    ok("evaluate", capsys)
    assert "verify" not in json.loads((project / "metrics/eval.json").read_text())


def test_verify_dir_inside_the_data_folder_is_not_trained_on(project, tmp_path, capsys):
    data = make_audio_dir(tmp_path / "audio", speakers=3, per_speaker=2)
    make_audio_dir(data / "unseen", speakers=2, per_speaker=2, seed=3, prefix="new")
    (data / "trials.txt").write_text("1 spk0/00.wav spk0/01.wav\n0 spk0/00.wav spk1/00.wav\n")
    write_params(project / "params.yaml", {"data": {
        "source": "audio_dir", "path": str(data), "verify_dir": str(data / "unseen")}})
    out = ok("download", capsys)
    assert "6 recordings, 3 speakers" in out and "verify: 4 recordings, 2 speakers" in out
    # a trial list kept in the data folder itself does not hide the data folder
    write_params(project / "params.yaml", {"data": {"source": "audio_dir", "path": str(data)},
                                           "evaluate": {"trials": str(data / "trials.txt")}})
    out = ok("download", capsys)
    assert "verify: 2 listed trials over 3 recordings" in out
    # same speakers in training and verification: a warning, not an error
    seen = make_audio_dir(tmp_path / "seen", speakers=2, per_speaker=2, seed=4)
    write_params(project / "params.yaml", {"data": {
        "source": "audio_dir", "path": str(data), "verify_dir": str(seen)}})
    code, out, err = stage("download", capsys)
    assert code == 0 and "warning: 2 verification speaker(s) also appear" in err


def test_verification_of_a_hw4_model_warns(project, tmp_path, capsys):
    hw4 = make_hw4(tmp_path / "hw4")
    unseen = make_audio_dir(tmp_path / "unseen", speakers=2, per_speaker=2)
    write_params(project / "params.yaml", merged(TINY_TRAIN, {"data": {
        "source": "hw4", "path": str(hw4), "verify_dir": str(unseen)}}))
    _train(capsys)
    model = json.loads((project / "data/model/model.json").read_text())
    assert model["features"]["precomputed"] is True
    code, out, err = stage("evaluate", capsys)
    assert code == 0, err
    assert "warning" in err and "precomputed" in err
    assert json.loads((project / "metrics/eval.json").read_text())["verify"]["trials"] == 2 + 4


def test_embed_audio_files_matches_the_feature_shards(project, tmp_path, capsys):
    """Raw audio embedded on the fly gives the embedding of the same file's stored
    features, whatever batch it lands in."""
    from spkid.features.logmel import LogMelExtractor
    from spkid.features.store import open_features
    from spkid.models.embedding import embed_views
    from spkid.models.folder import load_model_dir
    from spkid.scoring.embedding import embed_audio_files

    data = make_audio_dir(tmp_path / "audio", speakers=3, per_speaker=4, seconds=(0.6, 3.0))
    write_params(project / "params.yaml", merged(TINY_TRAIN, {"data": {"source": "audio_dir",
                                                                       "path": str(data)}}))
    _train(capsys)
    model, config = load_model_dir(project / "data/model")
    rows, _ = read_manifest(project / "data/raw/manifest.parquet")
    store = open_features(project / "data/features")
    views = {"source_id": [r.utterance_id for r in rows], "start_frame": [0] * len(rows),
             "num_frames": store.length[store.positions([r.utterance_id for r in rows])]}
    want = embed_views(model, store, views, 20000, torch.device("cpu")).embeddings
    extractor = LogMelExtractor.from_config(config["features"])
    roots = ManifestRoots.read(project / "data/raw/manifest.parquet")
    paths = [str(roots.resolve(r)) for r in rows]
    got = embed_audio_files(model, extractor, paths, 20000, "cpu")
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # one file per batch and per chunk, in reverse order: the same numbers
    alone = embed_audio_files(model, extractor, paths[::-1], 1, "cpu", chunk_frames=1)
    np.testing.assert_allclose(alone[::-1], want, rtol=1e-4, atol=1e-5)
    assert embed_audio_files(model, extractor, [], 100, "cpu").shape == (0, model.embedding_dim)
    # A span of a recording (a Kaldi segment) embeds as those samples cut into a file.
    wave, sr = sf.read(paths[0], dtype="float32")
    cut = tmp_path / "cut.wav"
    sf.write(str(cut), wave[int(0.1 * sr):int(0.55 * sr)], sr, subtype="FLOAT")
    spans = embed_audio_files(model, extractor, [paths[0], cut], 20000, "cpu",
                              spans=[(0.1, 0.55), (None, None)])
    np.testing.assert_allclose(spans[0], spans[1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(spans[0], got[0], rtol=1e-3, atol=1e-4)


def test_synthetic_corpus_keeps_its_stamp_and_gets_a_verify_manifest(project, tmp_path, capsys):
    unseen = make_audio_dir(tmp_path / "unseen", speakers=2, per_speaker=2)
    synthetic = {"synthetic": {"speakers": 2, "utterances_per_speaker": 3, "submit_per_speaker": 0,
                               "min_seconds": 0.5, "max_seconds": 0.6, "unseen_speakers": 3,
                               "unseen_utterances_per_speaker": 2}}
    write_params(project / "params.yaml", {"data": synthetic})
    out = ok("download", capsys)
    assert "synthetic corpus: 6 utterances" in out and "verify: 6 recordings, 3 speakers" in out
    manifest = snapshot(project / "data/raw")["manifest.parquet"]
    held = read_manifest(project / "data/raw/verify.parquet")
    assert sorted({r.speaker for r in held[0]}) == ["unseen000", "unseen001", "unseen002"]
    assert all(Path(project, r.path).is_file() for r in held[0]) and held[1]["held_out"]

    # A verification folder replaces the held-out speakers and regenerates nothing.
    write_params(project / "params.yaml", {"data": {**synthetic, "verify_dir": str(unseen)}})
    out = ok("download", capsys)
    assert "is current" in out and "verify: 4 recordings, 2 speakers" in out
    assert snapshot(project / "data/raw")["manifest.parquet"] == manifest
    assert len(read_manifest(project / "data/raw/verify.parquet")[0]) == 4
    verify = snapshot(project / "data/raw")["verify.parquet"]
    ok("download", capsys)
    assert snapshot(project / "data/raw")["verify.parquet"] == verify  # not rewritten
    # Without it, the held-out speakers are back, still without a regeneration; holding out
    # none regenerates the audio but not one training sample: the manifest is the same.
    write_params(project / "params.yaml", {"data": synthetic})
    assert "is current" in ok("download", capsys)
    assert read_manifest(project / "data/raw/verify.parquet") == held
    write_params(project / "params.yaml", {"data": {"synthetic": {
        **synthetic["synthetic"], "unseen_speakers": 0}}})
    assert "synthetic corpus: 6 utterances" in ok("download", capsys)
    assert snapshot(project / "data/raw")["manifest.parquet"][0] == manifest[0]  # the bytes
    assert read_manifest(project / "data/raw/verify.parquet")[0] == []
    write_params(project / "params.yaml", {"data": {**synthetic, "verify_dir": str(unseen)}})
    ok("download", capsys)

    # A regeneration killed with SIGKILL leaks its folder; the next run, even one with
    # nothing to regenerate, removes it.
    writer(project / "data/raw", tmp_path / "elsewhere", "kill")
    # raw, the leak, the stage lock, the cache of checked verification audio
    assert len(list((project / "data").iterdir())) == 4
    assert "is current" in ok("download", capsys)
    assert sorted(p.name for p in (project / "data").iterdir()) == [
        ".spkid.lock", "downloads", "raw"]
