"""Training and inference on a CUDA device: mixed precision through the real training loop,
CPU and CUDA embeddings of one model, NCCL with one rank, ONNX export of a CUDA model.

The tests marked `cuda` skip where torch sees no CUDA device; bench/gpu_check.sh runs them
on a GPU machine (`pytest -m cuda`). The last test runs everywhere: train.precision fp16 on
a CPU, which takes the loss-scaling branch a GPU without native bf16 takes."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spkid.core.errors import ParamsError
from spkid.core.install import onnx_missing
from spkid.core.memory import check_batch_fits
from spkid.core.params import validate_params
from spkid.models.embedding import embed_views
from spkid.models.folder import build_model
from spkid.train.batches import SegmentBatches
from spkid.train.loop import RunHooks, train
from spkid.train.state import RunState
from spkid.train.validation import Validation
from test_models import padded_batch, randomize_norms
from test_training import N_MELS, segments_for, toy_store, views_for

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device")
SMALL = {"ecapa_tdnn": {"channels": 16}, "conformer": {"d_model": 16, "heads": 2, "ffn_dim": 32,
                                                       "layers": 1, "conv_kernel": 5}}


def params(encoder="ecapa_tdnn", precision="auto", steps=6):
    return validate_params({
        "model": {"encoder": encoder, "pooling": "asp", "embedding_dim": 16, "attention_dim": 8,
                  **SMALL[encoder]},
        "train": {"steps": steps, "batch_size": 8, "valid_every": steps, "warmup_steps": 1,
                  "checkpoint_every": 1, "lr": 3e-3, "precision": precision},
        "loss": {"name": "aam_softmax", "s": 10.0}})


def net(p):
    torch.manual_seed(0)
    return build_model({"model": p.model.to_dict(), "loss": p.loss.to_dict(), "n_mels": N_MELS,
                        "speakers": ["a", "b", "c"], "features": {}})


def train_on_cuda(p):
    """A few steps of spkid.train.loop.train on the GPU: (result, weights before and after,
    the last resumable snapshot)."""
    store, labels = toy_store()
    model = net(p)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    snapshots = []
    result = train(model, SegmentBatches(store, segments_for(store, labels), 8, 0, p.train.steps),
                   Validation.sample(store, views_for(store, labels), p.train, 400), p,
                   device=torch.device("cuda"), hooks=RunHooks(save_checkpoint=snapshots.append),
                   progress=False)
    after = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return result, before, after, snapshots[-1]


def changed(before, after):
    return [k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])]


@pytest.mark.parametrize("encoder", sorted(SMALL))
@pytest.mark.skipif(CUDA and not torch.cuda.is_bf16_supported(including_emulation=False),
                    reason="no native bf16 on this GPU")
@pytest.mark.cuda
@needs_cuda
def test_bf16_autocast_training_steps(encoder):
    result, before, after, snapshot = train_on_cuda(params(encoder, "bf16"))
    assert np.isfinite(result.final_train_loss) and result.step == 6
    assert len(changed(before, after)) > len(before) // 2  # every trained weight moved
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    assert all(v.dtype != torch.bfloat16 for v in after.values())  # float32 master weights
    assert snapshot["scaler"] == {}  # bf16 needs no loss scaling
    assert 0 <= result.best_val_accuracy <= 1


@pytest.mark.parametrize("encoder", sorted(SMALL))
@pytest.mark.cuda
@needs_cuda
def test_fp16_training_steps_with_the_grad_scaler(encoder):
    result, before, after, snapshot = train_on_cuda(params(encoder, "fp16"))
    assert np.isfinite(result.final_train_loss) and result.step == 6
    assert len(changed(before, after)) > len(before) // 2
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    assert snapshot["scaler"]["scale"] > 0


@pytest.mark.cuda
@needs_cuda
def test_cpu_and_cuda_embed_the_same_model_alike():
    store, labels = toy_store()
    model = net(params())
    randomize_norms(model)
    views = views_for(store, labels)
    on_cpu = embed_views(model, store, views, 400, torch.device("cpu")).embeddings
    on_gpu = embed_views(model.cuda(), store, views, 400, torch.device("cuda")).embeddings
    # cuDNN convolutions may run in TF32 (torch's default): agreement to about 1e-3.
    np.testing.assert_allclose(on_gpu, on_cpu, rtol=0, atol=1e-2 * np.abs(on_cpu).max())
    cosine = (on_gpu * on_cpu).sum(1) / np.linalg.norm(on_gpu, axis=1) / np.linalg.norm(on_cpu, axis=1)
    assert cosine.min() > 0.9999


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA or not torch.distributed.is_nccl_available(), reason="no CUDA/NCCL")
def test_nccl_with_one_rank(tmp_path):
    """What spkid.core.distributed and DistributedDataParallel use under torchrun, over NCCL,
    with a world of one (a file rendezvous: no port)."""
    dist = torch.distributed
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0,
                            world_size=1)
    try:
        x = torch.full((4,), 3.0, device="cuda")
        dist.all_reduce(x)
        assert x.tolist() == [3.0] * 4
        box = [{"step": 7}]
        dist.broadcast_object_list(box, src=0)
        gathered = [None]
        dist.all_gather_object(gathered, "rank0")
        assert box == [{"step": 7}] and gathered == ["rank0"]
        model = net(params()).cuda()
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[0])
        x, mask = padded_batch([20, 12], n_mels=N_MELS)
        _, logits = ddp(x.cuda(), mask.cuda(), torch.tensor([0, 1], device="cuda"))
        F.cross_entropy(logits.float(), torch.tensor([0, 1], device="cuda")).backward()
        grads = [w.grad for w in model.parameters() if w.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.cuda
@needs_cuda
@pytest.mark.skipif(onnx_missing() is not None, reason=f"ONNX export unavailable: {onnx_missing()}")
def test_onnx_export_of_a_cuda_model_matches_torch(tmp_path):
    from spkid.serve.onnx import OnnxEmbedder, export_onnx
    model = net(params())
    randomize_norms(model)
    model = model.cuda().eval()
    export_onnx(model, tmp_path / "model.onnx", N_MELS)
    assert next(model.parameters()).is_cuda  # the export works on a copy
    x, mask = padded_batch([40, 23, 9], n_mels=N_MELS)
    got = OnnxEmbedder(tmp_path / "model.onnx").embed(x, mask).numpy()
    with torch.no_grad():
        on_gpu = model.embed(x.cuda(), mask.cuda()).cpu().numpy()
        on_cpu = model.cpu().embed(x, mask).numpy()
    np.testing.assert_allclose(got, on_cpu, rtol=0, atol=1e-4)
    np.testing.assert_allclose(got, on_gpu, rtol=0, atol=1e-2 * np.abs(on_cpu).max())


@pytest.mark.cuda
@needs_cuda
def test_the_batch_memory_check_reads_the_gpu():
    gpu = torch.device("cuda")
    check_batch_fits(validate_params({}), 40, gpu)
    huge = validate_params({"model": {"encoder": "resnet34"}, "train": {
        "batch_size": 65536, "finetune": {"steps": 1, "crop_frames": 400}}})
    with pytest.raises(ParamsError, match=r"train\.batch_size = 65536: .* free on "
                       + re.escape(torch.cuda.get_device_name(gpu))):
        check_batch_fits(huge, 40, gpu)


def test_fp16_on_cpu_scales_the_loss_and_skips_a_step_with_an_inf_gradient():
    """train.precision fp16 on a CPU: autocast in float16 with the GradScaler enabled (the
    branch a GPU without native bf16 takes). A finite step updates the weights and records
    the scale; a step whose gradient is inf leaves them as they were and halves the scale."""
    p = params("ecapa_tdnn", "fp16")
    run = RunState(net(p), p.train, torch.device("cpu"))
    assert run.dtype == torch.float16 and run.scaler.is_enabled()
    x, mask = padded_batch([30, 24, 17, 30], n_mels=N_MELS)
    y = torch.tensor([0, 1, 2, 0])

    def loss():
        with torch.autocast("cpu", dtype=run.dtype):
            emb, logits = run.model(x, mask, y)
        assert emb.dtype == torch.float16  # the encoder ran in fp16
        return F.cross_entropy(logits.float(), y)
    def weights():  # the parameters (BatchNorm's running statistics move in any forward)
        return {k: w.detach().clone() for k, w in run.model.named_parameters()}
    scale = run.scaler.get_scale()
    assert scale == 65536.0  # GradScaler's first scale
    for _ in range(8):  # fp16 gradients overflow at the first scales: those steps are skipped
        before = weights()
        run.update(loss(), p.train.clip_grad)
        if changed(before, weights()):
            break
        assert run.scaler.get_scale() == scale / 2
        scale /= 2
    else:
        pytest.fail("no fp16 step went through")
    assert run.snapshot([run.rng_state()])["scaler"]["scale"] == scale  # a resumable run keeps it
    after = weights()
    run.update(loss() * float("inf"), p.train.clip_grad)
    assert not changed(after, weights())  # the step was skipped
    assert run.snapshot([run.rng_state()])["scaler"]["scale"] == scale / 2
