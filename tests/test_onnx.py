"""ONNX export: ONNX Runtime gives the embeddings PyTorch gives (within 1e-4) for any
lengths and batch compositions, for every encoder, the same EER on audio files, and
`spkid verify` / `embed` accept the .onnx file. Needs the `onnx` extra."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from spkid.core.install import onnx_missing as missing
from spkid.serve.embedder import load_embedder
from spkid.serve.onnx import ONNX_FILE, OnnxEmbedder, export_onnx
from test_models import ENCODER_SETTINGS, N_MELS, make_net, padded_batch, randomize_norms

pytestmark = pytest.mark.skipif(missing() is not None, reason=f"ONNX export unavailable: {missing()}")


# Every encoder at its test settings; ResNet34 strided over time (WeSpeaker's), whose graph
# holds every op of the unstrided one plus the mask's subsampling (one export, not two).
VARIANTS = {**{name: dict(encoder=name, **settings) for name, settings in ENCODER_SETTINGS.items()
               if name != "resnet34"},
            "resnet34_time_stride": dict(encoder="resnet34", **ENCODER_SETTINGS["resnet34"],
                                         time_stride=2)}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def exported(request, tmp_path_factory):
    encoder = request.param
    torch.manual_seed(0)
    with pytest.MonkeyPatch.context() as patch:
        # CAM++ with 2 layers per dense block: every op of the 52-layer model, in a graph the
        # exporter takes ~4 s on instead of ~40 s.
        patch.setattr("spkid.models.campplus.BLOCK_LAYERS", (2, 2, 2))
        net = make_net(pooling="asp", **VARIANTS[encoder])
    randomize_norms(net)
    net.eval()
    mean = np.random.default_rng(0).normal(size=net.embedding_dim).astype(np.float32)
    path = tmp_path_factory.mktemp(encoder) / ONNX_FILE
    export_onnx(net, path, N_MELS, mean)
    return net, OnnxEmbedder(path), mean


def test_onnx_runtime_matches_pytorch_whatever_the_batch(exported):
    net, onnx, mean = exported
    assert onnx.embedding_dim == net.embedding_dim
    for seed, lengths in enumerate(([50, 9, 33], [12], [40, 40, 40, 40], [7, 120])):
        x, mask = padded_batch(lengths, seed=seed)
        with torch.no_grad():
            expected = net.embed(x, mask).numpy() - mean
        got = onnx.embed(x, mask).numpy()
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
        # Each recording alone, unpadded, gets the embedding it got among the others.
        for i, n in enumerate(lengths):
            alone = onnx.embed(x[i:i + 1, :n], mask[i:i + 1, :n]).numpy()
            np.testing.assert_allclose(alone[0], got[i], atol=1e-4, rtol=0)


def _voices(root, speakers=4, per=3):
    rng = np.random.default_rng(1)
    paths, labels = [], []
    for s in range(speakers):
        for k in range(per):  # close, jittered pitches in loud noise: an EER above 0
            f0 = 150 + 8 * s + rng.uniform(-12, 12)
            t = np.arange(int(16000 * (0.4 + 0.15 * k))) / 16000
            wave = 0.2 * np.sin(2 * np.pi * f0 * t) + 0.2 * rng.standard_normal(len(t))
            paths.append(root / f"s{s}-{k}.wav")
            sf.write(paths[-1], wave, 16000)
            labels.append(s)
    return paths, labels


def test_same_eer_and_the_cli_accepts_the_onnx_file(tmp_path):
    """The exported folder of a default-encoder model, with a training mean and an AS-norm
    cohort: both backends give the same embeddings, EER and `spkid verify` result."""
    from spkid.core.params import validate_params
    from spkid.features.logmel import LogMelExtractor
    from spkid.models.folder import build_model, save_model_dir
    from spkid.scoring.embedding import embed_audio_files
    from spkid.scoring.evaluation import score_trials
    from spkid.scoring.norm import ScoreNorm
    from spkid.scoring.trials import sample_trials

    p = validate_params({"model": {"channels": 16, "embedding_dim": 16}})
    extractor = LogMelExtractor()
    config = {"model": p.model.to_dict(), "loss": p.loss.to_dict(), "n_mels": 40,
              "speakers": ["a", "b", "c"], "features": {**extractor.config(), "precomputed": False},
              "eer_threshold": 0.1}
    torch.manual_seed(0)
    model = build_model(config).eval()
    randomize_norms(model)
    folder = tmp_path / "model"
    save_model_dir(folder, model.state_dict(), config)
    rng = np.random.default_rng(2)
    norm = ScoreNorm(rng.normal(size=16).astype(np.float32),
                     rng.normal(size=(6, 16)).astype(np.float32), 3)
    norm.save(folder)
    export_onnx(model, folder / ONNX_FILE, 40, norm.mean)

    paths, labels = _voices(tmp_path)
    i, j, trial_labels = sample_trials(labels, 0, 4.0, 10_000)
    results = {}
    for which in (folder, folder / ONNX_FILE):
        net, cfg, shipped, device = load_embedder(which, "cpu")
        emb = shipped.center(embed_audio_files(net, LogMelExtractor.from_config(cfg["features"]), paths,
                                               400, device))
        results[which.name] = emb, score_trials(emb, i, j, trial_labels)[0]["eer"], shipped.decision_scores(
            emb, np.array([0]), np.array([4]))[0]
    (e_pt, eer_pt, s_pt), (e_ox, eer_ox, s_ox) = results["model"], results[ONNX_FILE]
    np.testing.assert_allclose(e_ox, e_pt, atol=1e-4, rtol=0)
    assert eer_ox == eer_pt and 0 < eer_pt < 1
    assert s_ox == pytest.approx(s_pt, abs=1e-4)

    # The real commands, in this process (a subprocess would import torch again).
    from typer.testing import CliRunner

    from stages.cli import build_app
    app = build_app()

    def spkid(*args):
        return CliRunner().invoke(app, [*args, "--model", str(folder / ONNX_FILE)])
    out = spkid("verify", str(paths[0]), str(paths[4]))
    assert out.exit_code == 0, out.output[-2000:]
    score = float(out.stdout.split()[1])
    assert score == pytest.approx(s_pt, abs=2e-4)
    assert ("same" if s_pt >= 0.1 else "different") + " speaker" in out.stdout
    out = spkid("predict", str(paths[0]))
    assert out.exit_code == 2 and "predict needs the PyTorch model folder" in out.stderr


def test_exported_bytes_do_not_depend_on_where_spkid_lives(tmp_path):
    import onnx

    import spkid
    torch.manual_seed(0)
    net = make_net(encoder="transformer", pooling="asp", **ENCODER_SETTINGS["transformer"]).eval()
    a, b = tmp_path / "a" / ONNX_FILE, tmp_path / "b" / ONNX_FILE
    for path in (a, b):
        path.parent.mkdir()
        export_onnx(net, path, N_MELS)
    assert a.read_bytes() == b.read_bytes()
    source_dir = str(next(iter(spkid.__path__))).encode()
    assert source_dir not in a.read_bytes() and b"stack_trace" not in a.read_bytes()
    model = onnx.load(str(a))
    assert all(len(node.metadata_props) == 0 for node in model.graph.node)
