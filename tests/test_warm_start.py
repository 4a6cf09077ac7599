"""train.init_from and train.freeze_steps: what a run takes from a trained model."""

import pytest
import torch

from spkid.core.errors import ParamsError
from spkid.core.params import validate_params
from spkid.models.folder import build_model, save_model_dir, save_torch
from spkid.train.batches import SegmentBatches
from spkid.train.checkpoints import fingerprint
from spkid.train.loop import RunHooks, train
from spkid.train.validation import Validation
from spkid.train.warm_start import InitModel
from test_training import N_MELS, segments_for, toy_store, views_for

# ECAPA-TDNN: batch norm, whose running statistics a frozen encoder must keep too.
MODEL = {"encoder": "ecapa_tdnn", "channels": 16, "d_model": 16, "pooling": "asp",
         "attention_dim": 8, "embedding_dim": 16}
FEATURES = {"sample_rate": 16000, "n_mels": N_MELS, "precomputed": False}


def config_for(speakers, n_mels=N_MELS, **model):
    p = validate_params({"model": {**MODEL, **model}, "loss": {"name": "am_softmax", "s": 10.0}})
    return {"model": p.model.to_dict(), "loss": p.loss.to_dict(), "n_mels": n_mels,
            "speakers": list(speakers), "features": {**FEATURES, "n_mels": n_mels}}


def model_of(config, seed):
    torch.manual_seed(seed)
    return build_model(config)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A model folder of speakers a, b, c with (random) weights of seed 1."""
    folder = tmp_path_factory.mktemp("init") / "model"
    folder.mkdir()
    config = config_for("abc")
    model = model_of(config, 1)
    save_model_dir(folder, model.state_dict(), config)
    return folder, model.state_dict()


def equal(a: dict, b: dict, head: bool) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a if k.startswith("head.") == head)


def test_same_speakers_take_every_weight_others_a_fresh_head(source, tmp_path):
    folder, weights = source
    config = config_for("abc")
    model = model_of(config, 2)
    note = InitModel.read(folder).load_into(model, config)
    assert equal(model.state_dict(), weights, head=False) and equal(model.state_dict(), weights, head=True)
    assert "and head" in note

    other = config_for(["x", "y", "z"])  # as many speakers, other ones: the head starts fresh
    model, fresh = model_of(other, 2), model_of(other, 2).state_dict()
    note = InitModel.read(folder).load_into(model, other)
    assert equal(model.state_dict(), weights, head=False)
    assert equal(model.state_dict(), fresh, head=True) and not equal(fresh, weights, head=True)
    assert "head starts fresh" in note

    # A checkpoint carries its config (spkid.train.run); a bare state dict (best.pt) does not.
    save_torch(tmp_path / "last.pt", {"model": weights, "config": config, "fingerprint": "x"})
    model = model_of(config, 3)
    InitModel.read(tmp_path / "last.pt").load_into(model, config)
    assert equal(model.state_dict(), weights, head=True)
    save_torch(tmp_path / "best.pt", weights)
    with pytest.raises(ParamsError, match=r"^train\.init_from: .*best\.pt holds no model config"):
        InitModel.read(tmp_path / "best.pt")
    save_model_dir(tmp_path, None, config)  # the model.json training writes beside its checkpoints
    model = model_of(config, 3)
    InitModel.read(tmp_path / "best.pt").load_into(model, config)
    assert equal(model.state_dict(), weights, head=True)


def test_a_model_json_of_an_older_spkid_lacks_newer_keys_and_still_fits(tmp_path):
    """Keys added to model.* since (growth_rate, time_stride) read as their defaults, which
    keep what such models computed: the model builds, and init_from takes it."""
    config = config_for("abc")
    old = {**config, "model": {k: v for k, v in config["model"].items()
                               if k not in ("growth_rate", "time_stride")}}
    weights = model_of(config, 1).state_dict()
    save_model_dir(tmp_path / "old", weights, old)
    model = model_of(config, 2)
    InitModel.read(tmp_path / "old").load_into(model, config)
    assert equal(model.state_dict(), weights, head=False)
    assert model_of(old, 1).state_dict().keys() == weights.keys()


def test_other_features_or_architecture_are_refused_naming_the_key(source):
    folder, _ = source
    config = config_for("abc", n_mels=12)
    with pytest.raises(ParamsError, match=r"^train\.init_from: .* was trained with "
                                          r"features\.n_mels = 8 and this run has 12: "):
        InitModel.read(folder).load_into(model_of(config, 0), config)
    config = config_for("abc", channels=32)
    with pytest.raises(ParamsError, match=r"model\.channels = 16 and this run has 32"):
        InitModel.read(folder).load_into(model_of(config, 0), config)
    with pytest.raises(ParamsError, match=r"^train\.init_from: .*nowhere: not found"):
        InitModel.read(folder.parent / "nowhere")
    # Dropout shapes no weight: fine-tuning may change it.
    config = config_for("abc", dropout=0.3)
    InitModel.read(folder).load_into(model_of(config, 0), config)


def test_frozen_steps_train_the_head_alone(source):
    folder, weights = source
    store, labels = toy_store()
    config = config_for("abc")
    model = model_of(config, 0)
    InitModel.read(folder).load_into(model, config)
    p = validate_params({"model": MODEL, "loss": config["loss"], "train": {
        "steps": 6, "batch_size": 8, "valid_every": 2, "warmup_steps": 1, "lr": 3e-3,
        "checkpoint_every": 1, "init_from": str(folder), "freeze_steps": 4}})
    states = {}
    hooks = RunHooks(save_checkpoint=lambda snap: states.update(
        {snap["progress"]["step"]: {k: v.clone() for k, v in snap["model"].items()}}))
    train(model, SegmentBatches(store, segments_for(store, labels), 8, 0, 6),
          Validation.sample(store, views_for(store, labels), p.train, 400), p,
          device=torch.device("cpu"), hooks=hooks, progress=False)
    # Bit-identical through step 4 (batch-norm statistics included, across a validation at
    # step 2), while the head learnt; both train after.
    assert equal(states[4], weights, head=False) and not equal(states[4], weights, head=True)
    assert any("running_mean" in k for k in weights)
    assert not equal(states[6], weights, head=False)


def test_the_init_model_is_part_of_the_fingerprint(source, tmp_path):
    folder, weights = source
    copy = tmp_path / "model"
    copy.mkdir()
    config = config_for("abc")
    save_model_dir(copy, weights, config)
    p = validate_params({"train": {"init_from": str(copy)}})
    meta = {"features": FEATURES, "dtype": "float32", "precomputed": False}
    before = fingerprint(p, meta, [])
    assert fingerprint(p, meta, []) == before
    save_model_dir(copy, {**weights, "head.weight": weights["head.weight"] + 1}, config)
    assert fingerprint(p, meta, []) != before
    assert fingerprint(validate_params({}), meta, []) != before
    with pytest.raises(ParamsError, match=r"train\.freeze_steps = 5: needs train\.init_from"):
        validate_params({"train": {"freeze_steps": 5}})
