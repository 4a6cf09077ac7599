"""spkid embed / verify / predict on audio files, against the library computed directly."""

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

from spkid.core.errors import DataError
from spkid.core.params import validate_params
from spkid.features.logmel import LogMelExtractor
from spkid.models.folder import build_model, save_model_dir

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("inference")
    p = validate_params({"model": {"encoder": "transformer", "d_model": 16, "layers": 1, "heads": 2, "ffn_dim": 32,
                                   "embedding_dim": 8}})
    extractor = LogMelExtractor()
    config = {"model": p.model.to_dict(), "loss": p.loss.to_dict(), "n_mels": 40,
              "speakers": ["alice", "bob", "carol"], "features": {**extractor.config(), "precomputed": False},
              "eer_threshold": 0.5}
    torch.manual_seed(0)
    model = build_model(config).eval()
    save_model_dir(root / "model", model.state_dict(), config)
    rng = np.random.default_rng(0)
    for spk, f0 in (("alice", 220), ("bob", 120)):
        for k in range(2):
            t = np.arange(int(16000 * (1 + 0.3 * k))) / 16000
            wave = 0.3 * np.sin(2 * np.pi * f0 * (1 + 0.05 * k) * t) + 0.01 * rng.standard_normal(len(t))
            (root / "audio" / spk / "sess").mkdir(parents=True, exist_ok=True)
            sf.write(root / "audio" / spk / "sess" / f"{k}.wav", wave, 16000)
    stereo = np.stack([wave, wave], axis=1)
    sf.write(root / "loose.flac", stereo[::2], 8000)  # stereo at 8 kHz: mixed and resampled
    return root, model, extractor


def direct_embedding(model, extractor, path):
    from spkid.data.audio import read_audio
    feats = extractor([read_audio(path, 16000)])[0]
    x = torch.from_numpy(feats)[None]
    with torch.no_grad():
        return model.embed(x, torch.ones(x.shape[:2], dtype=torch.bool))[0].numpy()


def run(root, *args, model=None):
    return subprocess.run([str(BIN / "spkid"), *args, "--model", str(model or root / "model"),
                           "--device", "cpu"], cwd=root, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})


def cli(root, *args):
    out = run(root, *args)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def cli_error(root, *args, model=None):
    """The one line a command that fails on bad input prints (exit status 2)."""
    out = run(root, *args, model=model)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr[-2000:]
    return out.stderr.strip()


def test_embed_folder_and_file(setup):
    root, model, extractor = setup
    cli(root, "embed", str(root / "audio"), str(root / "loose.flac"), "--out", str(root / "e.parquet"))
    rows = pq.read_table(root / "e.parquet").to_pylist()
    assert [Path(r["path"]).relative_to(root).as_posix() for r in rows] == [
        "audio/alice/sess/0.wav", "audio/alice/sess/1.wav", "audio/bob/sess/0.wav",
        "audio/bob/sess/1.wav", "loose.flac"]
    assert [r["speaker"] for r in rows] == ["alice", "alice", "bob", "bob", None]
    for r in rows:
        np.testing.assert_allclose(r["embedding"], direct_embedding(model, extractor, r["path"]),
                                   atol=1e-4)


def test_verify_scores_and_decides(setup):
    root, model, extractor = setup
    a, b = root / "audio/alice/sess/0.wav", root / "audio/bob/sess/1.wav"
    out = cli(root, "verify", str(a), str(b))
    ea, eb = direct_embedding(model, extractor, a), direct_embedding(model, extractor, b)
    score = float(ea @ eb / np.linalg.norm(ea) / np.linalg.norm(eb))
    assert f"score {score:.4f}" in out
    assert ("same" if score >= 0.5 else "different") + " speaker" in out


def test_verify_with_a_calibration_decides_on_the_llr_at_the_bayes_threshold(setup, tmp_path):
    root, model, extractor = setup
    folder = tmp_path / "calibrated"
    shutil.copytree(root / "model", folder)
    config = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps(
        {**config, "calibration": {"slope": 10.0, "offset": -5.0}}))
    a, b = root / "audio/alice/sess/0.wav", root / "audio/bob/sess/1.wav"
    ea, eb = direct_embedding(model, extractor, a), direct_embedding(model, extractor, b)
    llr = 10.0 * float(ea @ eb / np.linalg.norm(ea) / np.linalg.norm(eb)) - 5.0
    for p_target in (0.5, 0.01, 0.99):
        out = run(root, "verify", str(a), str(b), "--p-target", str(p_target), model=folder)
        assert out.returncode == 0, out.stderr
        threshold = math.log((1 - p_target) / p_target)
        assert f"llr {llr:.3f} Bayes threshold {threshold:.3f}" in out.stdout
        assert ("same" if llr >= threshold else "different") + " speaker" in out.stdout


def test_predict_gives_closed_set_speaker(setup):
    root, model, extractor = setup
    out = cli(root, "predict", str(root / "audio" / "bob"))
    lines = out.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        path, speaker, prob = line.split("\t")
        with torch.no_grad():
            logits = model.head(torch.from_numpy(direct_embedding(model, extractor, path))[None])
            probs = torch.softmax(logits, 1)[0]
        k = int(probs.argmax())
        assert speaker == ["alice", "bob", "carol"][k]
        assert float(prob) == pytest.approx(float(probs[k]), abs=1e-3)


def test_missing_input_is_one_line_error(setup):
    root, _, _ = setup
    out = subprocess.run([str(BIN / "spkid"), "predict", str(root / "nope.wav"), "--model",
                          str(root / "model")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "nope.wav: no such file" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_embed_checks_out_before_any_work(setup, tmp_path):
    root, _, _ = setup
    folder = tmp_path / "existing"
    folder.mkdir()
    assert cli_error(root, "embed", str(root / "audio"), "--out", str(folder)) == (
        f"spkid: error: {folder}: is a folder (--out names the Parquet file to write)")
    assert list(folder.iterdir()) == []
    # Checked before the model is even read: the missing model is not what it reports.
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "e.parquet"
    assert cli_error(root, "embed", str(root / "audio"), "--out", str(out),
                     model=tmp_path / "no-model") == (
        f"spkid: error: {out}: cannot be created: {tmp_path / 'file'} is not a folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder")
def test_embed_into_a_read_only_folder(setup, tmp_path):
    root, _, _ = setup
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    out = read_only / "sub" / "e.parquet"
    assert cli_error(root, "embed", str(root / "audio"), "--out", str(out)) == (
        f"spkid: error: {out}: cannot be written: no write permission in {read_only}")


def test_verify_checks_its_inputs_first(setup, tmp_path):
    root, model, _ = setup
    good = root / "audio/alice/sess/0.wav"
    assert cli_error(root, "verify", str(good), str(root / "nope.wav")) == (
        f"spkid: error: {root / 'nope.wav'}: not found")
    assert cli_error(root, "verify", str(root / "audio"), str(good)) == (
        f"spkid: error: {root / 'audio'}: is a folder (verify compares two recordings)")
    # A model without a threshold is refused before any audio is decoded (this would not).
    config = json.loads((root / "model" / "model.json").read_text())
    del config["eer_threshold"]
    save_model_dir(tmp_path / "m", model.state_dict(), config)
    (tmp_path / "bad.wav").write_bytes(b"RIFF" + bytes(100))
    assert cli_error(root, "verify", str(good), str(tmp_path / "bad.wav"), model=tmp_path / "m") == (
        f"spkid: error: {tmp_path / 'm'}: model.json has no eer_threshold (export a model that "
        "was evaluated)")


def test_missing_audio_says_not_found(tmp_path):
    from spkid.data.audio import audio_info, read_audio
    for read in (audio_info, lambda p: read_audio(p, 16000)):
        with pytest.raises(DataError, match=rf"^{re.escape(str(tmp_path / 'gone.wav'))}: not found$"):
            read(tmp_path / "gone.wav")
        with pytest.raises(DataError, match=rf"^{re.escape(str(tmp_path))}: is a folder, not an audio file$"):
            read(tmp_path)


def test_a_missing_model_is_stale_input_the_stage_layer_names(tmp_path, monkeypatch):
    """The library says the model is not found; which command makes it is the stage
    layer's advice (data/model: train, data/export/model: export)."""
    from spkid.core.errors import StaleInputError
    from spkid.models.folder import load_model_dir
    from stages.common import remedy
    monkeypatch.chdir(tmp_path)
    for folder, stage in (("data/model", "train"), ("data/export/model", "export")):
        with pytest.raises(StaleInputError, match=rf"^{folder}/model.json: not found$") as exc:
            load_model_dir(folder)
        assert remedy(exc.value.output) == f"run `spkid {stage}` or `dvc repro`"
