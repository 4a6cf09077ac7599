"""spkid embed / verify / predict on audio files, against the library computed directly."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

from spkid.checkpoint import build_model, save_model_dir
from spkid.features import LogMelExtractor
from spkid.params import validate_params

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
    from spkid.audio import read_audio
    feats = extractor([read_audio(path, 16000)])[0]
    x = torch.from_numpy(feats)[None]
    with torch.no_grad():
        return model.embed(x, torch.ones(x.shape[:2], dtype=torch.bool))[0].numpy()


def cli(root, *args):
    out = subprocess.run([str(BIN / "spkid"), *args, "--model", str(root / "model"), "--device", "cpu"],
                         cwd=root, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


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
