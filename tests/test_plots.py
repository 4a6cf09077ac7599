"""Pictures and the self-contained report (spkid.report)."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from spkid.report import evaluation_plots, training_curves
from spkid.report.page import changed_params, data_version, render_report
from spkid.scoring.evaluation import verification

pytest.importorskip("matplotlib")


def png_pixels(path):
    import matplotlib.image
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return matplotlib.image.imread(path)


def not_blank(path) -> bool:
    img = png_pixels(path)[..., :3]
    return img.std() > 0.02 and (img < 0.5).mean() > 0.002  # ink on the page


def trials(rng, n=400):
    labels = (np.arange(n) % 4 == 0).astype(np.int64)
    scores = np.where(labels == 1, rng.normal(0.6, 0.1, n), rng.normal(0.1, 0.15, n))
    return scores, labels


def test_evaluation_pictures(tmp_path):
    rng = np.random.default_rng(0)
    curves, report = {}, {}
    for role in ("val", "test", "verify"):
        report[role], curves[role] = verification(*trials(rng))
    curves["empty"], report["empty"] = None, {"eer": None}  # a role without trials is left out
    speakers = [f"spk{k}" for k in range(6)]
    true = np.repeat(np.arange(6), 5)
    predicted = true.copy()
    predicted[[0, 1, 5]] = [1, 1, 0]  # spk0 taken for spk1 twice, spk1 for spk0 once
    emb = rng.normal(size=(30, 16)) + 3 * np.eye(6, 16)[true]
    pairs = evaluation_plots.evaluation_plots(tmp_path, curves, report, val_embeddings=emb, val_true=true,
                                   val_predicted=predicted, speaker_names=speakers, seed=0)
    assert pairs[0] == {"speakers": ["spk0", "spk1"], "errors": 3, "a_as_b": 2, "b_as_a": 1}
    for name, shape in (("det", (500, 560)), ("scores", (360, 1260)), ("embeddings", (560, 640)),
                        ("confusions", (400, 640))):
        path = tmp_path / f"{name}.png"
        assert png_pixels(path).shape[:2] == shape, name
        assert not_blank(path), name
    # The same data gives the same bytes: DVC sees no change where there is none.
    first = {p.name: p.read_bytes() for p in tmp_path.glob("*.png")}
    evaluation_plots.evaluation_plots(tmp_path, curves, report, val_embeddings=emb, val_true=true,
                           val_predicted=predicted, speaker_names=speakers, seed=0)
    assert first == {p.name: p.read_bytes() for p in tmp_path.glob("*.png")}


def test_training_picture_from_dvclive_files(tmp_path):
    metrics = tmp_path / "plots" / "metrics"
    for name, values in (("train/loss", [3.0, 2.0, 1.5]), ("train/accuracy", [0.1, 0.4, 0.6]),
                         ("val/accuracy", [0.2, 0.5, 0.7]), ("lr", [1e-3, 8e-4, 1e-4])):
        tsv = metrics / f"{name}.tsv"
        tsv.parent.mkdir(parents=True, exist_ok=True)
        leaf = name.split("/")[-1]
        tsv.write_text(f"timestamp\tstep\t{leaf}\n" + "".join(
            f"{1000 + k}\t{100 * (k + 1)}\t{v}\n" for k, v in enumerate(values)))
    curves = training_curves.dvclive_curves(metrics)
    assert sorted(curves) == ["lr", "train/accuracy", "train/loss", "val/accuracy"]
    np.testing.assert_array_equal(curves["val/accuracy"][0], [100, 200, 300])
    out = tmp_path / "training.png"
    training_curves.training_curves(curves, out, margin=0.2)
    assert png_pixels(out).shape[:2] == (600, 960) and not_blank(out)


def test_report_is_self_contained(tmp_path):
    rng = np.random.default_rng(1)
    image = tmp_path / "det.png"
    metrics = {}
    curves = {}
    for role in ("val", "test"):
        metrics[role], curves[role] = verification(*trials(rng))
        metrics[role].update(accuracy_top1=0.875, accuracy_top5=0.99)
    metrics["verify"] = {**verification(*trials(rng))[0], "asnorm": {"eer": 0.0123, "trials": 400}}
    # A further trial list gets its row; a calibration from a named list says so.
    metrics["verify_vox1_E"] = {**verification(*trials(rng))[0], "eer": 0.0456}
    metrics["shipped"] = {"eer_threshold": 0.5, "role": "verify", "score": "cosine",
                          "seen_speakers": False}
    metrics["verify"]["calibration"] = {
        "score": "cosine", "fit_list": "cal", "fit_trials": 1500, "trials": 400, "cllr": 0.25,
        "min_cllr": 0.2, "act_dcf_p01": 0.5, "min_dcf_p01": 0.4}
    evaluation_plots.det_curves({r: {**c, "eer": metrics[r]["eer"]} for r, c in curves.items()}, image)
    params = {"data": {"source": "audio_dir", "seed": 0}, "loss": {"m": 0.35, "s": 30.0}}
    defaults = {"data": {"source": "synthetic", "seed": 0}, "loss": {"m": 0.2, "s": 30.0}}
    lock = {"stages": {"download": {"outs": [{"path": "data/raw", "md5": "abc.dir"}]},
                       "features": {"outs": [{"path": "data/features", "md5": "def.dir"}]}}}
    page = render_report(metrics=metrics, train={"steps": 40, "best_val_accuracy": 0.9,
                                                 "best_step": 20, "parameters": 1234},
                         params=params, defaults=defaults, lock=lock,
                         images=[(image, "DET")], confusions=[
                             {"speakers": ["a<b", "c"], "errors": 3, "a_as_b": 2, "b_as_a": 1}])
    assert base64.b64encode(image.read_bytes()).decode() in page
    assert "0.875" in page and "1.23 %" in page and "AS-norm" in page
    assert "<td class=l>verify_vox1_E</td>" in page and "4.56 %" in page
    assert "the trial list cal (1,500 trials) and measured on all of verify&#x27;s" in page
    assert "data.source" in page and "loss.m" in page and "loss.s" not in page
    assert "abc.dir" in page and "def.dir" in page
    assert "a&lt;b / c" in page  # speaker names are escaped
    assert "http" not in page.replace("http-equiv", "")
    assert changed_params(params, defaults) == [("data.source", "audio_dir", "synthetic"),
                                                ("loss.m", 0.35, 0.2)]
    assert data_version(None) == []
