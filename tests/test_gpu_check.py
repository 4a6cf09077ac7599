"""bench/gpu_check.sh, the check prepared for a bare CUDA machine: its --cpu dry run takes
the same path (wheels, the cuda tests, HW4-format features, default and hw4_best through
the training loop) on tiny data, so the script cannot rot between GPU loans."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import gpu_check  # noqa: E402


def dry_run(tmp_path, *args):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"),
           "TMPDIR": str(tmp_path), "OMP_NUM_THREADS": "2"}
    return subprocess.run(["bash", str(ROOT / "bench/gpu_check.sh"), "--cpu", *args], env=env,
                          capture_output=True, text=True, timeout=240)


def test_the_cpu_dry_run_prints_each_models_figures(tmp_path):
    out = dry_run(tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert re.search(r"^gpu_check: cuda tests: \d+ skipped", out.stdout, re.M)  # collected
    for model in ("default", "hw4_best"):
        line = next(l for l in lines if l.startswith(f"gpu_check: {model}: "))
        steps, rate = re.match(rf"gpu_check: {model}: (\d+) steps, ([\d.]+) steps/s, util n/a "
                               r"\(cpu\), peak n/a \(cpu\); fp32, ", line).groups()
        assert int(steps) == 3 and float(rate) > 0
    assert lines[-1].startswith("gpu_check: OK in ")
    figures = json.loads((tmp_path / "out/gpu_check.json").read_text())
    assert [f["model"] for f in figures] == ["default", "hw4_best"]
    assert all(f["steps_per_s"] > 0 and f["loss"] > 0 for f in figures)
    for recipe in ("voxceleb_resnet34", "voxceleb_ecapa512", "voxceleb_campplus"):
        assert re.search(rf"^voxceleb_cost: {recipe}: [\d.]+ M parameters, float32, 16-frame "
                         r"crops: .* a VoxCeleb2 epoch \(8,531 steps\)", out.stdout, re.M)
    vox = json.loads((tmp_path / "out/voxceleb_cost.json").read_text())
    assert [r["recipe"] for r in vox] == ["voxceleb_resnet34", "voxceleb_ecapa512",
                                          "voxceleb_campplus"]
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "gpu_check.json", "gpu_check_pytest.log", "gpu_check_train.log", "voxceleb_cost.json",
        "voxceleb_cost.log"}
    assert not list(tmp_path.glob("spkid-gpu-check.*"))  # the scratch folder is gone


def test_a_failing_part_fails_the_check_by_name(tmp_path, capsys):
    class Args:
        work, cpu, steps, data, set = str(tmp_path), True, 1, None, ["model.encoder=lstm"]
    assert gpu_check.train_check(Args) == 1  # each model fails, the check goes on to the next
    out = capsys.readouterr().out
    for model in ("default", "hw4_best"):
        assert f"gpu_check: {model}: FAILED: ParamsError: params: model.encoder = 'lstm'" in out
    # The script's last line names the part: here the wheels, with no python to check them.
    env = {**os.environ, "PYTHON": str(tmp_path / "no-python"), "TMPDIR": str(tmp_path)}
    out = subprocess.run(["bash", str(ROOT / "bench/gpu_check.sh"), "--cpu"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stdout.splitlines()[-1].startswith("gpu_check: FAILED: wheels (after ")


def test_missing_names_the_wheels_to_install(tmp_path, monkeypatch, capsys):
    class Args:
        wheels, which = str(tmp_path), "required"
    for name in ("pyyaml-6.0.4-cp312-cp312-manylinux_2_28_x86_64.whl", "tqdm-4.70.1-py3-none-any.whl"):
        (tmp_path / name).touch()
    monkeypatch.setattr(gpu_check, "importable", lambda module: module not in ("yaml", "tqdm", "cffi"))
    assert gpu_check.missing(Args) == 1  # cffi is required and has no wheel there
    out, err = capsys.readouterr()
    assert out.split() == ["PyYAML", "tqdm"] and "no wheel of cffi (cffi, for soundfile)" in err
    monkeypatch.setattr(gpu_check, "importable", lambda module: module != "onnxruntime")
    Args.which = "optional"
    assert gpu_check.missing(Args) == 0  # without ONNX Runtime its test is skipped
    assert "onnxruntime" in capsys.readouterr().err


def test_utilisation_is_read_from_nvidia_smi(tmp_path, monkeypatch):
    """The sampler's parsing, with a stand-in nvidia-smi (no GPU here): one GPU's lines."""
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\nfor u in 80 90 100; do echo \"GPU-1234, $u, 2048\"; done\nexec sleep 30\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with gpu_check.Utilisation(type("Device", (), {"type": "cuda", "index": 0})) as util:
        time.sleep(0.5)
    assert util.samples == [(80.0, 2048.0), (90.0, 2048.0), (100.0, 2048.0)]
    assert util.text() == ("util mean 90 % (max 100 %, 3 samples, nvidia-smi), 2.0 GiB used at "
                           "most")
