"""End to end: the real `spkid` CLI under the real `dvc repro` / `dvc exp run` in a
temporary git repository holding a copy of the project."""

import base64
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ["dvc.yaml", "params.yaml", "pyproject.toml", ".dvcignore", ".gitignore",
                 ".dvc/config", ".dvc/.gitignore", "spkid", "stages"]
TINY = {
    "data": {"synthetic": {"speakers": 5, "utterances_per_speaker": 8, "submit_per_speaker": 1,
                           "min_seconds": 1.0, "max_seconds": 2.0, "unseen_speakers": 3,
                           "unseen_utterances_per_speaker": 4}},
    "index": {"val_fraction": 0.25, "test_fraction": 0.25},
    "model": {"channels": 16, "embedding_dim": 32},  # the default encoder, tiny
    "train": {"steps": 40, "batch_size": 16, "valid_every": 20, "warmup_steps": 5},
}


def copy_project(dest: Path, params: dict) -> None:
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    shipped = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in params.items():
        merge(shipped[section], values)
    (dest / "params.yaml").write_text(yaml.safe_dump(shipped, sort_keys=False))


def merge(into: dict, values: dict) -> None:
    for k, v in values.items():
        if isinstance(v, dict):
            merge(into[k], v)
        else:
            into[k] = v


def run(cmd, cwd, env, check=True):
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


@pytest.fixture
def repo(tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
           "DVC_NO_ANALYTICS": "1"}
    run(["git", "init", "-q", "-b", "main"], tmp_path, env)
    return tmp_path, env


def commit(path, env, message):
    run(["git", "add", "-A"], path, env)
    run(["git", "commit", "-q", "-m", message], path, env)


def read_metrics(path: Path) -> dict:
    return json.loads((path / "metrics" / "eval.json").read_text())


PICTURES = ("training", "det", "scores", "embeddings", "confusions")


def check_pictures(path: Path, env, roles) -> None:
    """Every picture exists, is in the report inline, and `dvc plots show` shows them
    without loading anything from the network."""
    page = (path / "metrics/report.html").read_text()
    for name in PICTURES:
        png = path / "metrics/plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert base64.b64encode(png.read_bytes()).decode() in page, f"{name}.png not in the report"
    assert "http://" not in page and "https://" not in page
    for role in roles:
        assert f"<td class=l>{role}</td>" in page
    shown = path / "plots-page"
    run(["dvc", "plots", "show", "--out", str(shown)], path, env)
    html = (shown / "index.html").read_text()
    assert "http://" not in html and "https://" not in html, "dvc plots show needs the network"
    for name in PICTURES:
        assert f"{name}.png" in html, f"{name}.png is not a DVC plot"
    shutil.rmtree(shown)


@pytest.mark.e2e
def test_repro_then_experiment(repo):
    path, env = repo
    copy_project(path, TINY)
    commit(path, env, "project")

    out = run(["dvc", "repro"], path, env)
    for stage in ("download", "features", "index", "train", "evaluate", "export", "report"):
        assert f"[{stage}]" in out.stdout, f"stage {stage} printed no summary"
    base = read_metrics(path)
    check_pictures(path, env, roles=("val", "test"))
    for role in ("val", "test"):
        assert set(base[role]) >= {"accuracy_top1", "accuracy_top5", "eer", "min_dcf_p01",
                                   "min_dcf_p05", "trials"}
        assert 0.0 <= base[role]["accuracy_top1"] <= base[role]["accuracy_top5"] <= 1.0
        assert base[role]["eer"] is not None and 0.0 <= base[role]["eer"] <= 1.0
        assert base[role]["trials"] > 0
    # Outputs are linked to the DVC cache, not copied: the features exist once on disk.
    shard = next((path / "data/features").glob("shard-*.parquet"))
    assert shard.is_symlink() or shard.stat().st_nlink >= 2
    train_metrics = json.loads((path / "metrics" / "train.json").read_text())
    assert train_metrics["steps"] == 40 and 0 <= train_metrics["best_val_accuracy"] <= 1

    # The submission has one row per submit utterance, each a known speaker.
    views = pq.read_table(path / "data/index/utterances.parquet").to_pylist()
    submit_ids = [v["utterance_id"] for v in views if v["role"] == "submit"]
    speakers = json.loads((path / "data/index/speakers.json").read_text())["speakers"]
    with open(path / "data/export/submission.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["Id", "Category"]
    assert [r[0] for r in rows[1:]] == submit_ids and len(submit_ids) == 5
    assert all(r[1] in speakers for r in rows[1:])
    model_json = json.loads((path / "data/export/model/model.json").read_text())
    assert model_json["speakers"] == speakers and model_json["features"]["n_mels"] == 40
    assert isinstance(model_json["eer_threshold"], float)
    # The held-out synthetic speakers are the unseen-speaker role, and the threshold is theirs.
    verify = base["verify"]
    assert verify["speakers"] == 3 and verify["recordings"] == 12
    assert model_json["eer_threshold"] == verify["eer_threshold"]
    assert model_json["threshold_from"] == "verify EER"
    low, high = verify["eer_ci95"]["low"], verify["eer_ci95"]["high"]
    assert low <= verify["eer"] <= high and verify["bootstrap"]["by"] == "speakers"
    state = torch.load(path / "data/export/model/model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    # Raw cosine scores only by default; the ONNX graph when the onnx extra is installed.
    assert "asnorm" not in base["val"] and model_json["score"] == "cosine"
    from spkid.core.install import onnx_missing as missing
    assert (path / "data/export/model/model.onnx").exists() == (missing() is None)

    # Nothing changed: a second repro runs no stage but the cheap download check.
    again = run(["dvc", "repro"], path, env)
    assert "[train]" not in again.stdout and "is current" in again.stdout
    commit(path, env, "baseline results")

    # Another machine gets the committed results from a DVC remote without running a stage.
    remote, clone = path.parent / f"{path.name}-remote", path.parent / f"{path.name}-clone"
    run(["dvc", "remote", "add", "-d", "storage", str(remote)], path, env)
    commit(path, env, "a DVC remote")
    run(["dvc", "push"], path, env)
    run(["git", "clone", "-q", str(path), str(clone)], path.parent, env)
    run(["dvc", "pull"], clone, env)
    assert read_metrics(clone) == base
    for out_file in ("data/export/model/model.pt", "data/export/submission.csv",
                     "data/model/model.pt", "data/index/segments.parquet", shard.relative_to(path)):
        assert (clone / out_file).read_bytes() == (path / out_file).read_bytes(), out_file
    pulled = run(["dvc", "repro"], clone, env)
    assert "is current" in pulled.stdout and not any(
        f"[{stage}]" in pulled.stdout for stage in ("features", "index", "train", "evaluate", "export"))
    shutil.rmtree(clone)

    # Determinism: training again on the same params gives the very same model.
    lock_before = yaml.safe_load((path / "dvc.lock").read_text())["stages"]["train"]["outs"]
    run(["dvc", "repro", "--force", "--single-item", "train"], path, env)
    lock_after = yaml.safe_load((path / "dvc.lock").read_text())["stages"]["train"]["outs"]
    assert lock_after == lock_before
    assert json.loads((path / "metrics" / "train.json").read_text()) == train_metrics

    # One experiment for several things at once (each costs a whole training): a larger
    # margin, score normalisation, a non-default encoder, pooling and loss by name, a
    # large-margin fine-tuning phase, and the verification recipe's augmentation
    # (list params through -S, as `spkid recipe` prints them).
    recipe = run(["spkid", "recipe", "verification"], path, env).stdout.split()
    ran = run(["dvc", "exp", "run", *recipe, "-S", "loss.m=0.35", "-S", "evaluate.subtract_mean=true",
               "-S", "evaluate.asnorm_top_n=3", "-S", "model.encoder=conformer",
               "-S", "model.d_model=32", "-S", "model.layers=1", "-S", "model.heads=2",
               "-S", "model.ffn_dim=64", "-S", "model.pooling=sap", "-S", "loss.name=am_softmax",
               "-S", "loss.margin_warmup=[5,30]", "-S", "train.finetune.steps=10",
               "-S", "train.finetune.crop_frames=48"], path, env)
    # Augmentation is on the fly: the features stay as they were, the model gets a class
    # for each speaker at each speed.
    assert "Stage 'features' didn't change" in ran.stdout
    exp = read_metrics(path)
    speakers = json.loads((path / "data/index/speakers.json").read_text())["speakers"]
    classes = json.loads((path / "data/model/model.json").read_text())["speakers"]
    assert classes == speakers + [f"{s}~sp{f}" for f in ("0.9", "1.1") for s in speakers]
    with open(path / "data/export/submission.csv") as f:
        assert not any("~" in line for line in f), "submissions name real speakers only"
    trained = json.loads((path / "metrics" / "train.json").read_text())
    assert trained["steps"] == TINY["train"]["steps"] + 10
    assert trained["best_step"] > TINY["train"]["steps"], "data/model comes from fine-tuning"
    assert exp != base, "another model must change the metrics"
    config = json.loads((path / "data/export/model/model.json").read_text())
    assert (config["model"]["encoder"], config["model"]["pooling"], config["loss"]["name"]) == \
        ("conformer", "sap", "am_softmax")
    state = torch.load(path / "data/export/model/model.pt", weights_only=True)
    assert any(k.startswith("encoder.conformer.") for k in state), sorted(state)[:5]
    # Normalised scores beside the raw ones; export ships the normalisation and its threshold.
    for role in ("val", "test"):
        assert exp[role]["mean_sub"]["eer"] is not None and exp[role]["asnorm"]["eer"] is not None
    shipped = json.loads((path / "data/export/model/model.json").read_text())
    assert shipped["score"] == "asnorm"
    assert shipped["eer_threshold"] == exp["verify"]["asnorm"]["eer_threshold"]
    assert exp["shipped"] == {"eer_threshold": shipped["eer_threshold"], "role": "verify",
                              "score": "asnorm", "seen_speakers": False}
    assert (path / "data/export/model/score_norm.npz").exists()
    shown = json.loads(run(["dvc", "exp", "show", "--json"], path, env).stdout)
    margins = []
    for rev in shown:
        entries = [rev] + [e for x in rev.get("experiments") or [] for e in x.get("revs", [])]
        for e in entries:
            data = e.get("data") or {}
            m = data.get("params", {}).get("params.yaml", {}).get("data", {}).get("loss", {}).get("m")
            if m is not None:
                margins.append(m)
    assert 0.2 in margins and 0.35 in margins, margins
    diff = run(["dvc", "metrics", "diff", "--json"], path, env).stdout
    assert "eval.json" in diff


@pytest.mark.e2e
def test_bad_params_stop_before_any_work(repo):
    path, env = repo
    copy_project(path, {**TINY, "loss": {"m": -0.5}})
    commit(path, env, "bad")
    out = run(["dvc", "repro"], path, env, check=False)
    assert out.returncode != 0
    assert "loss.m = -0.5: must be >= 0" in out.stderr + out.stdout
    assert not (path / "data" / "raw" / "manifest.parquet").exists()
