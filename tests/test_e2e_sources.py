"""End to end on real data sources: `dvc repro` in a temporary git repository on a HW4
folder, a folder of recordings (split in time, with unseen-speaker verification) and a
file:// archive. Each stays tiny: a few speakers and ~30 training steps."""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from test_e2e import (check_pictures, commit, copy_project,  # noqa: F401 (repo: fixture)
                      read_metrics, repo, run)
from test_sources_stage import make_audio_dir, make_hw4

TINY = {
    "index": {"val_fraction": 0.25, "test_fraction": 0.25, "segment_len": 48},
    "model": {"encoder": "transformer", "pooling": "sap", "d_model": 32, "layers": 1, "heads": 2, "ffn_dim": 64, "embedding_dim": 32,
              "attention_dim": 32},
    "train": {"steps": 30, "batch_size": 16, "valid_every": 15, "warmup_steps": 5},
    "evaluate": {"trials": None},  # until params.yaml ships the key
    "export": {"onnx": False},  # test_e2e and test_onnx cover it; 10 s an export
}
STAGES = ("download", "features", "index", "train", "evaluate", "export")


def with_tiny(**sections) -> dict:
    out = {k: dict(v) for k, v in TINY.items()}
    for section, values in sections.items():
        out.setdefault(section, {}).update(values)
    return out


def repro(path, env) -> str:
    out = run(["dvc", "repro"], path, env)
    return out.stdout


@pytest.mark.e2e
def test_hw4_folder_to_submission(repo, tmp_path_factory):
    path, env = repo
    hw4 = make_hw4(tmp_path_factory.mktemp("data") / "hw4", n_utts=8, n_test=5)
    copy_project(path, with_tiny(data={"source": "hw4", "path": str(hw4)}))
    commit(path, env, "project")

    out = repro(path, env)
    for stage in STAGES:
        assert f"[{stage}]" in out, f"stage {stage} printed no summary"
    tests = json.loads((hw4 / "testdata.json").read_text())["utterances"]
    speakers = json.loads((path / "data/index/speakers.json").read_text())["speakers"]
    assert sorted(speakers) == sorted(json.loads((hw4 / "mapping.json").read_text())["speaker2id"])
    with open(path / "data/export/submission.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["Id", "Category"]
    assert [r[0] for r in rows[1:]] == [u["feature_path"] for u in tests]
    assert all(r[1] in speakers for r in rows[1:])
    for folder in ("data/model", "data/export/model"):
        model = json.loads((path / folder / "model.json").read_text())
        assert model["features"]["precomputed"] is True
    # Never copied into the repository: the manifest points at the folder.
    assert sorted(p.name for p in (path / "data/raw").iterdir()) == [
        "manifest.parquet", "manifest.roots.json", "verify.parquet"]

    again = repro(path, env)
    assert "[download]" in again and "unchanged" in again
    for stage in STAGES[1:]:
        assert f"[{stage}]" not in again, f"{stage} ran again though nothing changed"


@pytest.mark.e2e
def test_audio_dir_split_by_time_with_verification(repo, tmp_path_factory):
    path, env = repo
    data = tmp_path_factory.mktemp("data")
    # VoxCeleb2's format: the training recordings are m4a (AAC), decoded through PyAV.
    train = make_audio_dir(data / "train", speakers=4, per_speaker=1, seconds=(10.0, 12.0),
                           fmt="m4a")
    verify = make_audio_dir(data / "verify", speakers=3, per_speaker=3, seconds=(1.0, 2.0),
                            seed=7, prefix="new")
    copy_project(path, with_tiny(
        data={"source": "audio_dir", "path": str(train), "verify_dir": str(verify)},
        index={"split_by": "time", "trial_seconds": 1.0}))  # 2 pieces per role and speaker
    commit(path, env, "project")

    out = repro(path, env)
    assert "verify: 9 recordings, 3 speakers" in out and "verify: EER" in out
    manifest = pq.read_table(path / "data/raw/manifest.parquet")["utterance_id"].to_pylist()
    assert len(manifest) == 4 and all(u.endswith(".m4a") for u in manifest)
    report = read_metrics(path)
    for role in ("val", "test"):  # one recording per speaker, still several trials per role
        assert report[role]["target_trials"] > 0 and report[role]["eer"] is not None
    assert set(report["verify"]) >= {"eer", "min_dcf_p01", "min_dcf_p05", "trials"}
    assert report["verify"]["trials"] == 9 + 27 and 0 <= report["verify"]["eer"] <= 1
    lock = yaml.safe_load((path / "dvc.lock").read_text())["stages"]["evaluate"]["deps"]
    assert "data/raw/verify.parquet" in [d["path"] for d in lock]
    check_pictures(path, env, roles=("val", "test", "verify"))
    assert json.loads((path / "metrics/det/verify.json").read_text())["det"]

    # A changed verification file re-runs evaluate, not features, index or train.
    victim = verify / "new1" / "00.wav"
    victim.write_bytes(victim.read_bytes())  # same bytes, new mtime: a new fingerprint
    again = repro(path, env)
    assert "[evaluate]" in again and "verify: EER" in again
    assert "1 of 13 recordings opened" in again
    for stage in ("features", "index", "train"):
        assert f"[{stage}]" not in again, f"{stage} ran again for a verification file"

    # The training corpus moved to another path: the manifest names files relative to it,
    # so no feature is computed again and nothing after download runs.
    params = yaml.safe_load((path / "params.yaml").read_text())
    moved = data / "elsewhere" / "train"
    moved.parent.mkdir()
    train.rename(moved)  # keeps every mtime
    params["data"]["path"] = str(moved)
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    again = repro(path, env)
    assert "[download]" in again and "4 of 13 recordings opened" in again  # new paths
    assert "Stage 'features' didn't change" in again
    for stage in STAGES[1:]:
        assert f"[{stage}]" not in again, f"{stage} ran again for a moved corpus"

    # index.seed (augmentation off) changes the split, not a feature.
    params["index"]["seed"] += 1
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    again = repro(path, env)
    assert "[index]" in again and "[features]" not in again
    assert "0 of 13 recordings opened" in again


@pytest.mark.e2e
def test_url_archive_of_audio(repo, tmp_path_factory):
    path, env = repo
    data = tmp_path_factory.mktemp("data")
    corpus = make_audio_dir(data / "corpus", speakers=3, per_speaker=4)
    archive = data / "corpus.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(corpus.rglob("*")):
            zf.write(p, Path("corpus") / p.relative_to(corpus))
    url = archive.as_uri()
    copy_project(path, with_tiny(data={"source": "url", "url": url}))
    commit(path, env, "project")

    out = repro(path, env)
    assert f"[download] audio_dir {url} -> " in out
    for stage in STAGES:
        assert f"[{stage}]" in out
    report = read_metrics(path)
    assert report["val"]["utterances"] == 3 and "verify" not in report
    # the download cache is outside every DVC out and git
    assert list((path / "data/downloads").glob("extracted-*/corpus/spk0/00.wav"))
    status = run(["git", "status", "--porcelain"], path, env).stdout
    assert "data/downloads" not in status


@pytest.mark.e2e
def test_kaldi_folder(repo, tmp_path_factory):
    """The toolkits' way of keeping data, end to end: a Kaldi folder (wav.scp with FLAC and
    m4a recordings, segments, utt2spk, spk2utt) to train on, and another, with a Kaldi
    trial list naming its segments by utterance id, to verify on. (An m4a audio_dir runs
    end to end in test_audio_dir_split_by_time_with_verification.)"""
    pytest.importorskip("av")
    from test_sources_kaldi import make_kaldi
    path, env = repo
    data = tmp_path_factory.mktemp("data")
    kaldi = make_kaldi(data / "kaldi", speakers=("alice", "bob", "carol"))
    unseen = make_kaldi(data / "unseen", speakers=("dave", "erin"), seed=1)
    (unseen / "trials").write_text(
        "dave-rec0-a dave-rec1-b target\ndave-rec0-a erin-rec0-b nontarget\n"
        "erin-rec0-a erin-rec1-a target\nerin-rec1-b dave-rec1-a nontarget\n")
    # A second list sharing utterances with the first, and a list to calibrate on.
    (unseen / "hard").write_text("dave-rec0-a dave-rec0-b target\ndave-rec0-a erin-rec0-a nontarget\n")
    (unseen / "cal").write_text("erin-rec0-b erin-rec1-b target\ndave-rec1-b erin-rec1-b nontarget\n"
                                "dave-rec1-a dave-rec1-b target\nerin-rec0-b dave-rec0-b nontarget\n")
    copy_project(path, with_tiny(data={"source": "kaldi", "path": str(kaldi),
                                       "verify_dir": str(unseen)},
                                 evaluate={"trials": [str(unseen / "trials"), str(unseen / "hard")],
                                           "calibration_trials": str(unseen / "cal")}))
    commit(path, env, "project")

    out = repro(path, env)
    for stage in STAGES:
        assert f"[{stage}]" in out, f"stage {stage} printed no summary"
    assert "12 utterances, 3 speakers" in out
    views = pq.read_table(path / "data/index/utterances.parquet").to_pylist()
    assert {v["utterance_id"] for v in views} == {
        f"{spk}-rec{r}-{half}" for spk in ("alice", "bob", "carol") for r in (0, 1) for half in "ab"}
    metrics = read_metrics(path)
    assert metrics["test"]["trials"] > 0
    assert "verify: 3 lists (trials 4, hard 2, cal 4 trials) over 8 utterances" in out
    verify, hard = metrics["verify"], metrics["verify_hard"]
    assert (verify["trials"], verify["target_trials"], verify["recordings"]) == (4, 2, 7)
    assert verify["speakers"] == 2 and 0 <= verify["eer"] <= 1
    assert (hard["list"], hard["trials"], hard["recordings"]) == ("hard", 2, 3)
    assert verify["calibration"]["fit_list"] == hard["calibration"]["fit_list"] == "cal"
    assert (path / "metrics/det/verify_hard.json").is_file()
    shipped = json.loads((path / "data/export/model/model.json").read_text())["calibration"]
    assert shipped["slope"] == verify["calibration"]["slope"]
