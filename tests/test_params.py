import re
import subprocess
import sys
from pathlib import Path

import pytest

from spkid.core.errors import ParamsError
from spkid.core.params import defaults, iter_fields, load_params, validate_params

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_params_equal_schema_defaults():
    assert load_params(ROOT / "params.yaml").to_dict() == defaults()


def test_contract_defaults():
    p = validate_params({})
    assert (p.features.sample_rate, p.features.n_mels, p.features.n_fft, p.features.hop_length) == (16000, 40, 400, 160)
    assert (p.index.segment_len, p.loss.name, p.loss.s, p.loss.m) == (64, "aam_softmax", 30.0, 0.2)
    assert p.data.source == "synthetic" and p.train.device == "auto"


@pytest.mark.parametrize("raw,pattern", [
    ({"loss": {"m": -0.1}}, r"loss\.m = -0\.1: must be >= 0"),
    ({"model": {"encoder": "lstm"}}, r"model\.encoder = 'lstm': unknown value \(allowed: transformer, conformer"),
    ({"model": {"pooling": "max"}}, r"model\.pooling.*allowed: mean, sap"),
    ({"loss": {"name": "triplet"}}, r"loss\.name.*allowed: softmax, am_softmax"),
    ({"train": {"steps": "many"}}, r"train\.steps = 'many': must be a whole number"),
    ({"train": {"steps": 10.5}}, r"train\.steps"),
    ({"train": {"lr": "fast"}}, r"train\.lr = 'fast': must be a number"),
    ({"train": {"device": "tpu"}}, r"train\.device.*allowed: auto, cpu, cuda"),
    ({"train": {"compile": 1}}, r"train\.compile = 1: must be true or false"),
    ({"trian": {"steps": 1}}, r"unknown key trian \(allowed under params file: data, features"),
    ({"loss": {"margin": 0.3}}, r"unknown key loss\.margin \(allowed under loss: name, s, m"),
    ({"model": {"d_model": 30, "heads": 4}}, r"model\.heads = 4: model\.d_model must be divisible"),
    ({"index": {"val_fraction": 0.5, "test_fraction": 0.45}}, r"index\.test_fraction"),
    ({"data": {"source": "hw4"}}, r"data\.path = None: is required"),
    ({"data": {"synthetic": {"min_seconds": 5, "max_seconds": 2}}}, r"data\.synthetic\.max_seconds"),
    ({"features": {"f_max": 9000.0}}, r"features\.f_max"),
    ({"loss": {"margin_warmup": [500, 100]}}, r"loss\.margin_warmup.*low must not exceed high"),
    ({"model": "big"}, r"model must be a mapping"),
    # Edges the synthetic corpus cannot make: refused here, by name, not later in download.
    ({"data": {"synthetic": {"min_seconds": 0.1, "max_seconds": 0.2}}},
     r"data\.synthetic\.min_seconds = 0\.1: must be >= 0\.25"),
    ({"data": {"synthetic": {"max_seconds": 601}}}, r"data\.synthetic\.max_seconds = 601\.0: must be <= 600"),
    ({"features": {"sample_rate": 4000}},
     r"features\.sample_rate = 4000: must lie in \[8000, 48000\] when data\.source is synthetic"),
    # Mel bands narrower than an FFT bin are constant features (all of them here: a model
    # that learns from nothing), refused rather than trained on.
    ({"features": {"f_min": 7990.0}}, r"features\.n_mels = 40: a mel band .* holds no FFT bin"),
    ({"features": {"n_mels": 128}}, r"features\.n_mels = 128: a mel band"),
])
def test_bad_params_fail_with_one_line_naming_the_key(raw, pattern):
    with pytest.raises(ParamsError) as err:
        validate_params(raw)
    message = str(err.value)
    assert "\n" not in message
    assert re.search(pattern, message), message


def test_low_sample_rates_are_for_real_audio():
    assert validate_params({"data": {"source": "audio_dir", "path": "a"},
                            "features": {"sample_rate": 4000, "n_fft": 200, "hop_length": 40}})


def test_numeric_strings_and_ints_accepted_for_floats():
    p = validate_params({"train": {"lr": "1e-3"}, "loss": {"s": 16}})
    assert p.train.lr == 0.001 and isinstance(p.loss.s, float)


def test_file_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ParamsError, match="nope.yaml"):
        load_params(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ParamsError, match=r"bad\.yaml.*not valid YAML"):
        load_params(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("loss:\n  m: -1\n")
    with pytest.raises(ParamsError, match=r"wrong\.yaml: params: loss\.m"):
        load_params(wrong)


@pytest.mark.parametrize("text,message", [
    ("train:\n  lr: 0.1\n  steps: 5\n  lr: 0.2\n", r"x\.yaml: duplicate key 'train\.lr' \(lines 2 and 4\)$"),
    ("train:\n  lr: 0.1\nloss:\n  m: 0.3\ntrain:\n  steps: 5\n",
     r"x\.yaml: duplicate key 'train' \(lines 1 and 5\)$"),
    ("train:\n  augment:\n    snr_db: [1, 2]\n    snr_db: [3, 4]\n",
     r"duplicate key 'train\.augment\.snr_db' \(lines 3 and 4\)$"),
], ids=["nested", "section", "deep"])
def test_duplicate_keys_are_refused_by_name(tmp_path, text, message):
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError, match=message):
        load_params(path)


def test_yaml_features_still_load(tmp_path):
    # Anchors, aliases and merge keys are not duplicates; a BOM is fine; empty = defaults.
    path = tmp_path / "x.yaml"
    path.write_text("\ufeffdata:\n  synthetic: &s {speakers: 3}\nmodel: &m {layers: 3}\n"
                    "train: {<<: {steps: 7, lr: 0.1}, lr: 0.5}\n", encoding="utf-8")
    p = load_params(path)
    assert (p.data.synthetic.speakers, p.model.layers, p.train.steps, p.train.lr) == (3, 3, 7, 0.5)
    path.write_text("")
    assert load_params(path).to_dict() == defaults()


def test_unreadable_params_file_is_one_line(tmp_path):
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("# params\ntrain:\n  lr: 0.1  # r\u00e9glage\n".encode("latin-1"))
    with pytest.raises(ParamsError, match=r"latin1\.yaml: line 3 is not UTF-8 text \(byte 0xe9\)"):
        load_params(latin1)
    with pytest.raises(ParamsError, match=rf"{tmp_path.name}: is a folder, not a params file"):
        load_params(tmp_path)


def test_cli_reports_a_bad_params_file_in_one_line(tmp_path):
    (tmp_path / "dup.yaml").write_text("loss:\n  m: 0.3\n  m: 0.4\n")
    for params, message in [(tmp_path, "is a folder, not a params file"),
                            (tmp_path / "dup.yaml", "dup.yaml: duplicate key 'loss.m' (lines 2 and 3)")]:
        out = subprocess.run([str(Path(sys.executable).parent / "spkid"), "download", "--params",
                              str(params)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
        assert message in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dup.yaml"]  # nothing written


def test_params_are_read_only():
    p = validate_params({})
    with pytest.raises(AttributeError):
        p.loss.m = 0.5


def test_readme_documents_every_key():
    readme = (ROOT / "README.md").read_text()
    missing = [key for key, _ in iter_fields() if f"`{key}`" not in readme]
    assert not missing, f"README params reference lacks {missing}"


def test_readme_params_blocks_are_valid_params():
    """Every ```yaml block of the README made of params sections (the recipes, such as
    "Train on VoxCeleb2-dev, test on VoxCeleb1-O") validates over the defaults, so a
    renamed key or a tightened bound cannot leave a recipe that no longer loads."""
    import yaml

    def merge(base: dict, over: dict) -> dict:
        return {**base, **{k: merge(base[k], v) if isinstance(v, dict) and isinstance(
            base.get(k), dict) else v for k, v in over.items()}}

    readme = (ROOT / "README.md").read_text()
    checked = []
    for block in re.findall(r"```yaml\n(.*?)```", readme, re.S):
        params = yaml.safe_load(block)
        if isinstance(params, dict) and set(params) <= set(defaults()):
            validate_params(merge(defaults(), params))
            checked.append(block)
    assert any("veri_test2.txt" in block for block in checked)
