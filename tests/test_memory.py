import platform

import pytest
import torch
import torch.nn.functional as F

import spkid.core.memory as memory
from spkid.core.errors import ParamsError
from spkid.core.memory import (available_memory, check_batch_fits, keep_large_blocks_mapped,
                               training_batch_bytes)
from spkid.core.params import defaults, validate_params
from spkid.core.recipes import RECIPES, apply
from spkid.models.folder import build_model

GiB = 2**30


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_mmap_threshold_is_fixed_on_glibc():
    assert keep_large_blocks_mapped() is True


def saved_for_backward(p, n_mels=40, batch=2) -> int:
    """Bytes of the tensors one float32 forward pass keeps for backward, weights left out."""
    net = build_model({"model": p.model.to_dict(), "loss": p.loss.to_dict(), "n_mels": n_mels,
                       "speakers": [str(i) for i in range(20)], "features": {}})
    weights = {w.untyped_storage().data_ptr() for w in net.parameters()}
    saved = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = max(saved.get(storage.data_ptr(), 0), storage.nbytes())
        return t
    frames = p.index.segment_len
    x, mask = torch.randn(batch, frames, n_mels), torch.ones(batch, frames, dtype=torch.bool)
    y = torch.arange(batch) % 20
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _, logits = net(x, mask, y)
        F.cross_entropy(logits.float(), y)
    return sum(saved.values())


SMALL = {"model.d_model": 8, "model.heads": 1, "model.ffn_dim": 8, "model.layers": 1,
         "model.conv_kernel": 3, "model.channels": 8, "model.base_width": 4, "model.growth_rate": 4,
         "model.embedding_dim": 0, "model.pooling": "mean", "index.segment_len": 16}


@pytest.mark.parametrize("config", [
    {}, RECIPES["hw4_best"], RECIPES["hw4_sample"], {"model.encoder": "resnet34"},
    *({**SMALL, "model.encoder": e} for e in ("transformer", "conformer", "ecapa_tdnn", "resnet34",
                                               "campplus"))],
    ids=["default", "hw4_best", "hw4_sample", "resnet34", "small-transformer", "small-conformer",
         "small-ecapa", "small-resnet34", "small-campplus"])
def test_the_activation_estimate_is_a_lower_bound(config):
    """Under half of what backward keeps in float32, so it holds under bf16/fp16 autocast
    too: check_batch_fits never refuses a batch that would fit."""
    p = validate_params(apply(defaults(), {**config, "train.batch_size": 2}))
    _, activations = training_batch_bytes(p, 40)
    assert 0 < activations <= saved_for_backward(p) / 2


def test_a_batch_that_cannot_fit_is_refused_naming_the_key(monkeypatch):
    p = validate_params({})
    check_batch_fits(p, 40, torch.device("cpu"))  # the default fits anywhere
    assert 0 < available_memory() < 2**50
    big = validate_params({"train": {"batch_size": 65536}})
    crops, activations = training_batch_bytes(big, 40)
    assert crops == 65536 * 64 * 40 * 4 and activations > 10 * crops
    monkeypatch.setattr(memory, "available_memory", lambda: 4 * GiB)
    with pytest.raises(ParamsError, match=r"^params: train\.batch_size = 65536: a batch of "
                       r"64-frame crops of 40 mels needs at least .* GiB \(the crops 0\.6 GiB, "
                       r"the model's activations at least .*\), more than the 4\.0 GiB "
                       r"available on this machine; lower train\.batch_size$"):
        check_batch_fits(big, 40, torch.device("cpu"))
    # Fine-tuning's longer crops count; every rank of torchrun on this machine holds a batch.
    check_batch_fits(validate_params({"train": {"batch_size": 8192}}), 40, torch.device("cpu"))
    tune = validate_params({"train": {"batch_size": 8192, "finetune": {"steps": 1}}})
    with pytest.raises(ParamsError, match="200-frame crops"):
        check_batch_fits(tune, 40, torch.device("cpu"))
    fits = validate_params({"train": {"batch_size": 2048}})
    check_batch_fits(fits, 40, torch.device("cpu"))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    with pytest.raises(ParamsError, match="for each of 8 ranks on this machine"):
        check_batch_fits(fits, 40, torch.device("cpu"))


def test_on_cuda_the_device_memory_counts(monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda: 64 * GiB)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2 * GiB, 80 * GiB))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some GPU")
    check_batch_fits(validate_params({}), 40, torch.device("cuda"))
    with pytest.raises(ParamsError, match=r"train\.batch_size = 8192: .* more than the 2\.0 GiB "
                       "free on Some GPU; lower train.batch_size"):
        check_batch_fits(validate_params({"train": {"batch_size": 8192}}), 40, torch.device("cuda"))


def test_a_container_limit_caps_the_available_memory(monkeypatch, tmp_path):
    monkeypatch.setattr(memory, "CGROUP", tmp_path)
    (tmp_path / "memory.max").write_text("max\n")  # no limit
    unlimited = available_memory()
    (tmp_path / "memory.max").write_text(f"{3 * GiB}\n")
    (tmp_path / "memory.current").write_text(f"{GiB}\n")
    assert available_memory() == min(unlimited, 2 * GiB)
