"""Tests for spkid.models: every encoder with several poolings (shapes, padding invariance,
gradient flow), every pooling alone (padding, statistics vs numpy), the embedding options
and the two reference recipes against the homework's own models (tests/hw4_homework.py).
Small sizes, so the whole file runs in seconds on CPU."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hw4_homework import HOMEWORK, HW4_SPEAKERS, load_homework_weights, recipe_net, recipe_params
from spkid.core.params import SCHEMA, validate_params
from spkid.models import ENCODERS, HEADS, POOLINGS, SpeakerNet
from spkid.models.pooling import SelfAttentionPooling, weighted_mean_std
from spkid.models.speaker_net import frame_mask

N_MELS = 16
N_SPK = 5

# Small settings for every registered encoder; a new encoder must be added here.
ENCODER_SETTINGS = {
    "transformer": dict(d_model=16, heads=2, ffn_dim=32, layers=1),
    "conformer": dict(d_model=16, heads=2, ffn_dim=32, layers=1, conv_kernel=5),
    "ecapa_tdnn": dict(channels=16),
    "resnet34": dict(base_width=4),
    "campplus": dict(channels=16, base_width=4, growth_rate=8),
}


def make_params(loss=None, **model):
    model = {"dropout": 0.0, "attention_dim": 8, "embedding_dim": 12, **model}
    return validate_params({"model": model, "loss": loss or {"name": "am_softmax"}})


def make_net(n_mels=N_MELS, n_spk=N_SPK, loss=None, **model) -> SpeakerNet:
    p = make_params(loss, **model)
    return SpeakerNet(p.model, p.loss, n_mels, n_spk)


def randomize_norms(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics and affine terms: with the defaults (mean 0, var 1,
    bias 0) a zero padded frame stays zero after BN + ReLU and leaks would go unseen."""
    g = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            n = mod.num_features
            mod.running_mean.copy_(torch.randn(n, generator=g))
            mod.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            with torch.no_grad():
                mod.weight.copy_(torch.rand(n, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(n, generator=g))


def padded_batch(lengths, n_mels=N_MELS, seed=0, garbage=10.0):
    """(x, mask): padded frames hold large random values, which must not matter."""
    g = torch.Generator().manual_seed(seed)
    t = max(lengths)
    x = torch.randn(len(lengths), t, n_mels, generator=g)
    mask = torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]
    x = torch.where(mask[..., None], x, garbage * torch.randn(x.shape, generator=g))
    return x, mask


def test_settings_cover_the_schema_and_registries():
    assert set(ENCODER_SETTINGS) == set(ENCODERS) == set(SCHEMA["model"]["encoder"].choices)
    assert set(POOLINGS) == set(SCHEMA["model"]["pooling"].choices)
    assert set(HEADS) == set(SCHEMA["loss"]["name"].choices)


@pytest.mark.parametrize("pooling", ["mean", "asp"])
@pytest.mark.parametrize("encoder", sorted(ENCODER_SETTINGS))
def test_encoder_shapes_and_padding_invariance(encoder, pooling):
    torch.manual_seed(0)
    net = make_net(encoder=encoder, pooling=pooling, input_norm="none", **ENCODER_SETTINGS[encoder])
    randomize_norms(net)
    net.eval()
    lengths = [29, 17, 6]
    x, mask = padded_batch(lengths)
    with torch.no_grad():
        frames = net.encoder(x, mask)
        out_mask = frame_mask(net.encoder, mask)  # CAM++ halves time: ceil(29 / 2) frames
        assert out_mask.shape == (3, 15 if encoder == "campplus" else 29)
        assert frames.shape == (3, out_mask.shape[1], net.encoder.out_dim)
        assert out_mask.sum(1).tolist() == [(n + 1) // 2 if encoder == "campplus" else n
                                            for n in lengths]
        if encoder in ("ecapa_tdnn", "resnet34", "campplus"):  # they zero padded frames
            assert not frames[~out_mask].any()
        assert net.pooling(frames, out_mask).shape == (3, net.pooling.out_dim)
        emb, logits = net(x, mask)
        assert emb.shape == (3, 12) and logits.shape == (3, N_SPK)
        for i, n in enumerate(lengths):
            alone, _ = net(x[i:i + 1, :n], mask[i:i + 1, :n])
            torch.testing.assert_close(emb[i:i + 1], alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("encoder", sorted(ENCODER_SETTINGS))
def test_padding_invariance_with_cmn_and_tstp(encoder):
    torch.manual_seed(1)
    net = make_net(encoder=encoder, pooling="tstp", input_norm="cmn", **ENCODER_SETTINGS[encoder])
    assert_embeds_as_alone(net, [8, 23], seed=1)


def assert_embeds_as_alone(net, lengths, seed):
    """In eval mode, with non-trivial BatchNorms, each utterance of a padded batch (garbage in
    the padding) gets the embedding it gets alone."""
    randomize_norms(net, seed=seed)
    net.eval()
    x, mask = padded_batch(lengths, seed=seed)
    with torch.no_grad():
        emb = net.embed(x, mask)
        for i, n in enumerate(lengths):
            torch.testing.assert_close(emb[i:i + 1], net.embed(x[i:i + 1, :n], mask[i:i + 1, :n]),
                                       rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("encoder", sorted(ENCODER_SETTINGS))
def test_whole_utterance_embedding_ignores_its_batch_mates(encoder):
    """Through the batching that evaluate, export and `spkid embed` use: an utterance's
    embedding is the same alone, in one padded batch with all others, or in another order."""
    from spkid.features.store import FeatureStore
    from spkid.models.embedding import embed_views
    torch.manual_seed(2)
    net = make_net(encoder=encoder, pooling="asp", **ENCODER_SETTINGS[encoder])
    randomize_norms(net, seed=2)
    rng = np.random.default_rng(2)
    lengths = [31, 7, 52, 18, 52, 3]
    mats = [rng.normal(size=(n, N_MELS)).astype(np.float32) for n in lengths]
    ids = [f"u{k}" for k in range(len(mats))]
    store = FeatureStore.from_matrices(ids, mats)

    def embed(order, batch_frames):
        views = {"source_id": [ids[k] for k in order], "start_frame": [0] * len(order),
                 "num_frames": [lengths[k] for k in order]}
        out = embed_views(net, store, views, batch_frames, torch.device("cpu")).embeddings
        return out[np.argsort(order)]
    together = embed(range(len(mats)), 10**6)
    np.testing.assert_allclose(embed(range(len(mats)), 1), together, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(embed([4, 1, 5, 0, 3, 2], 100), together, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("encoder", sorted(ENCODER_SETTINGS))
def test_every_parameter_gets_a_finite_gradient(encoder):
    torch.manual_seed(0)
    net = make_net(encoder=encoder, pooling="asp", **ENCODER_SETTINGS[encoder]).train()
    x, mask = padded_batch([20, 13, 7, 20])
    y = torch.tensor([0, 1, 2, 3])
    _, logits = net(x, mask, y)
    F.cross_entropy(logits, y).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


def test_ecapa_layout_and_channel_check():
    net = make_net(encoder="ecapa_tdnn", channels=32, pooling="mean")
    enc = net.encoder
    assert enc.out_dim == 96
    assert [b.res2[0].conv.dilation[0] for b in enc.blocks] == [2, 3, 4]
    assert all(len(b.res2) == 7 for b in enc.blocks)  # Res2Net scale 8
    assert enc.mfa.conv.in_channels == 96
    with pytest.raises(ValueError, match="divisible by 8"):
        make_net(encoder="ecapa_tdnn", channels=20)


@pytest.mark.parametrize(("n_mels", "freq"), [(40, 5), (80, 10), (23, 3)])
def test_resnet34_layout(n_mels, freq):
    enc = make_net(n_mels=n_mels, encoder="resnet34", base_width=4, pooling="mean").encoder
    assert len(enc.blocks) == 3 + 4 + 6 + 3
    assert enc.out_freq == freq and enc.out_dim == 32 * freq
    out = enc(torch.randn(2, 9, n_mels), torch.ones(2, 9, dtype=torch.bool))
    assert out.shape == (2, 9, 32 * freq)


def test_campplus_context_is_3dspeakers_and_ignores_padding():
    """The context-aware masks' context: on an unpadded input exactly 3D-Speaker's
    x.mean(-1) + seg_pooling(x) (layers.py, written out here); in a padded batch, each
    utterance's own, across 100-frame segment boundaries and a partial last segment."""
    from spkid.models.campplus import SEGMENT, masked_time_mean, segment_means
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 250, generator=g)
    seg = F.avg_pool1d(x, SEGMENT, SEGMENT, ceil_mode=True)
    seg = seg.unsqueeze(-1).expand(*seg.shape, SEGMENT).reshape(1, 4, -1)[..., :250]
    torch.testing.assert_close(seg[..., 200:], x[..., 200:].mean(-1, keepdim=True).expand(1, 4, 50))
    ones = torch.ones(1, 1, 250)
    torch.testing.assert_close(masked_time_mean(x, ones) + segment_means(x, ones),
                               x.mean(-1, keepdim=True) + seg, rtol=0, atol=1e-6)
    lengths = [250, 201, 100, 37]
    mask = torch.arange(250)[None, :] < torch.tensor(lengths)[:, None]
    m = mask[:, None, :].float()
    xs = torch.randn(4, 4, 250, generator=g) * m
    context = masked_time_mean(xs, m) + segment_means(xs, m)
    for i, n in enumerate(lengths):
        alone = masked_time_mean(xs[i:i + 1, :, :n], m[i:i + 1, :, :n]) + segment_means(
            xs[i:i + 1, :, :n], m[i:i + 1, :, :n])
        torch.testing.assert_close(context[i:i + 1, :, :n], alone, rtol=1e-5, atol=1e-6)


def test_campplus_padding_invariance_across_segments():
    """Utterances longer than a context segment (100 frames after the stride), odd and even
    lengths: each embedding is the one it gets alone."""
    torch.manual_seed(4)
    net = make_net(encoder="campplus", pooling="tstp", **ENCODER_SETTINGS["campplus"])
    assert_embeds_as_alone(net, [431, 202, 201, 9], seed=4)


def campplus_3dspeaker_parameters(n_mels=80, m=32, init=128, growth=32, embedding=512) -> int:
    """Parameters of 3D-Speaker's CAMPPlus(feat_dim=n_mels, embedding_size=embedding), counted
    layer by layer from their DTDNN.py and layers.py (commit 09e7806), not from spkid's code."""
    def conv(cin, cout, k, bias=False):
        return cin * cout * k + (cout if bias else 0)

    def bn(c):
        return 2 * c
    n = conv(1, m, 9) + bn(m)  # FCM conv1, bn1
    for _ in range(2):  # layer1, layer2: a stride-2 block with a 1x1 shortcut, a plain block
        n += 2 * (conv(m, m, 9) + bn(m)) + conv(m, m, 1) + bn(m) + 2 * (conv(m, m, 9) + bn(m))
    n += conv(m, m, 9) + bn(m)  # FCM conv2, bn2
    n += conv(m * (n_mels // 8), init, 5) + bn(init)  # TDNNLayer
    c, b = init, 4 * growth
    for layers in (12, 24, 16):
        for i in range(layers):  # CAMDenseTDNNLayer: nonlinear1, linear1, nonlinear2, CAMLayer
            n += bn(c + i * growth) + conv(c + i * growth, b, 1) + bn(b) + conv(b, growth, 3)
            n += conv(b, b // 2, 1, bias=True) + conv(b // 2, growth, 1, bias=True)
        c += layers * growth
        n += bn(c) + conv(c, c // 2, 1)  # TransitLayer(bias=False)
        c //= 2
    n += bn(c)  # out_nonlinear
    return n + conv(2 * c, embedding, 1)  # dense; its BatchNorm is affine=False


def test_campplus_has_3dspeakers_parameter_count():
    """At the published widths: 3D-Speaker's CAMPPlus built from their code gives 6,848,544
    parameters at embedding_size 192 and 7,176,224 at 512 (their VoxCeleb config, the "7.2 M"
    of their README; WeSpeaker's README: 7.18 M). spkid's encoder + tstp + embedding layer
    has exactly those plus the embedding layer's bias (their dense layer has none)."""
    assert campplus_3dspeaker_parameters(embedding=192) == 6_848_544
    assert campplus_3dspeaker_parameters(embedding=512) == 7_176_224
    for dim in (192, 512):
        net = make_net(n_mels=80, encoder="campplus", channels=128, base_width=32, growth_rate=32,
                       pooling="tstp", embedding_dim=dim)
        ours = sum(p.numel() for name, p in net.named_parameters() if not name.startswith("head."))
        assert ours == campplus_3dspeaker_parameters(embedding=dim) + dim
        assert net.encoder.out_dim == 512


# ---- poolings alone -------------------------------------------------------------------------

@pytest.mark.parametrize("attention_dim", [0, 8])
@pytest.mark.parametrize("name", sorted(POOLINGS))
def test_pooling_ignores_padded_frames(name, attention_dim):
    torch.manual_seed(0)
    pool = POOLINGS[name](6, make_params(attention_dim=attention_dim).model)
    lengths = [11, 4, 1]
    h, mask = padded_batch(lengths, n_mels=6, seed=2, garbage=1e3)
    out = pool(h, mask)
    assert out.shape == (3, pool.out_dim)
    assert pool.out_dim == (12 if name in ("asp", "tstp") else 6)
    h2 = torch.where(mask[..., None], h, -h)  # other garbage: nothing may change
    torch.testing.assert_close(pool(h2, mask), out, rtol=0, atol=0)
    for i, n in enumerate(lengths):
        torch.testing.assert_close(pool(h[i:i + 1, :n], mask[i:i + 1, :n]), out[i:i + 1],
                                   rtol=1e-6, atol=1e-6)


def test_tstp_matches_numpy():
    pool = POOLINGS["tstp"](3, None)
    h, mask = padded_batch([7, 3], n_mels=3, seed=3)
    out = pool(h, mask).numpy()
    for i, n in enumerate([7, 3]):
        real = h[i, :n].double().numpy()
        np.testing.assert_allclose(out[i, :3], real.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out[i, 3:], real.std(0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("attention_dim", [0, 8])
def test_asp_matches_numpy_and_shares_sap_weights(attention_dim):
    torch.manual_seed(0)
    m = make_params(attention_dim=attention_dim).model
    asp, sap = POOLINGS["asp"](4, m), POOLINGS["sap"](4, m)
    assert isinstance(asp, SelfAttentionPooling)
    sap.load_state_dict(asp.state_dict())  # the same scoring module, parameter for parameter
    h, mask = padded_batch([9, 5], n_mels=4, seed=4)
    with torch.no_grad():
        out = asp(h, mask)
        w = asp.weights(h, mask).squeeze(-1).double().numpy()
        torch.testing.assert_close(out[:, :4], sap(h, mask), rtol=1e-5, atol=1e-6)
    for i, n in enumerate([9, 5]):
        real, wi = h[i, :n].double().numpy(), w[i, :n]
        assert np.allclose(w[i, n:], 0) and np.isclose(wi.sum(), 1)
        mean = (wi[:, None] * real).sum(0)
        std = np.sqrt((wi[:, None] * (real - mean) ** 2).sum(0))
        np.testing.assert_allclose(out[i, :4].numpy(), mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out[i, 4:].numpy(), std, rtol=1e-5, atol=1e-6)


def test_std_is_safe_on_constant_features():
    h = torch.ones(2, 5, 3, requires_grad=True)
    w = torch.full((2, 5, 1), 0.2)
    out = weighted_mean_std(h, w)
    assert torch.isfinite(out).all() and (out[:, 3:] < 1e-3).all()
    out.sum().backward()
    assert torch.isfinite(h.grad).all()


# ---- embedding options and the SpeakerNet API ---------------------------------------------

def test_embedding_dim_zero_uses_the_pooled_vector():
    net = make_net(encoder="transformer", pooling="tstp", embedding_dim=0, input_norm="cmn",
                   **ENCODER_SETTINGS["transformer"]).eval()
    assert isinstance(net.embedding, nn.Identity)
    assert net.embedding_dim == net.pooling.out_dim == 32
    assert net.head.weight.shape == (N_SPK, 32)
    x, mask = padded_batch([10, 6])
    with torch.no_grad():
        emb, logits = net(x, mask)
        assert emb.shape == (2, 32) and logits.shape == (2, N_SPK)
        net.input_norm = "none"
        xn = x - (x * mask[..., None]).sum(1, keepdim=True) / mask.sum(1)[:, None, None]
        pooled = net.pooling(net.encoder(xn * mask[..., None], mask), mask)
        torch.testing.assert_close(emb, pooled, rtol=1e-5, atol=1e-5)
    assert "embedding.weight" not in net.state_dict()


def test_relu_embedding_keeps_the_state_dict_key():
    net = make_net(encoder="transformer", pooling="mean", embedding_activation="relu",
                   **ENCODER_SETTINGS["transformer"])
    assert net.embedding_dim == 12 and net.embedding.weight.shape == (12, 16)
    assert "embedding.weight" in net.state_dict()
    x, mask = padded_batch([10, 6, 8, 3])
    emb = net.embed(x, mask)
    assert (emb >= 0).all() and (emb == 0).any()
    plain = make_net(encoder="transformer", pooling="mean", **ENCODER_SETTINGS["transformer"])
    plain.load_state_dict(net.state_dict())
    torch.testing.assert_close(F.relu(plain.embed(x, mask)), emb)


def test_forward_passes_the_margin_to_the_head():
    torch.manual_seed(0)
    net = make_net(encoder="transformer", pooling="mean", **ENCODER_SETTINGS["transformer"],
                   loss={"name": "am_softmax", "s": 10.0, "m": 0.3}).eval()
    x, mask = padded_batch([10, 6])
    y = torch.tensor([1, 3])
    with torch.no_grad():
        emb, plain = net(x, mask)
        _, full = net(x, mask, y)
        _, none = net(x, mask, y, margin=0.0)
        _, half = net(x, mask, y, margin=0.15)
    torch.testing.assert_close(none, plain)
    rows = torch.arange(2)
    torch.testing.assert_close(plain[rows, y] - full[rows, y], torch.full((2,), 3.0))
    torch.testing.assert_close(plain[rows, y] - half[rows, y], torch.full((2,), 1.5))


# ---- the reference recipes against the homework's own code -------------------------------

def homework_and_recipe(name):
    """The homework's model with every parameter and BatchNorm statistic perturbed (so no
    two LayerNorms or biases are alike and a swapped mapping shows), and spkid's recipe net
    holding the same weights."""
    torch.manual_seed(0)
    theirs = HOMEWORK[name][0](n_spks=HW4_SPEAKERS)
    with torch.no_grad():
        for param in theirs.parameters():
            param.add_(0.1 * torch.randn_like(param))
    randomize_norms(theirs)
    ours = recipe_net(name)
    load_homework_weights(name, theirs, ours)
    return theirs, ours


def dropout_rates(model):
    return ([mod.p for mod in model.modules() if isinstance(mod, nn.Dropout)]
            + [mod.dropout for mod in model.modules() if isinstance(mod, nn.MultiheadAttention)])


@pytest.mark.parametrize("name", sorted(HOMEWORK))
def test_recipe_is_the_homework_model(name):
    theirs, ours = homework_and_recipe(name)
    assert dropout_rates(ours) == dropout_rates(theirs)
    # An unpadded batch of the recipe's crops, as in training.
    x = torch.randn(4, recipe_params(name).index.segment_len, 40,
                    generator=torch.Generator().manual_seed(1))
    mask = torch.ones(x.shape[:2], dtype=torch.bool)
    # Without dropout a training-mode forward is deterministic too (BatchNorm then uses the
    # batch's statistics, identically on both sides), so compare that as well.
    modes = ["eval", "train"] if max(dropout_rates(theirs)) == 0 else ["eval"]
    for mode in modes:
        theirs.train(mode == "train")
        ours.train(mode == "train")
        with torch.no_grad():
            expected = theirs(x)
            _, logits = ours(x, mask)
        assert expected.abs().max() > 0.1  # logits that could differ
        torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5, msg=mode)


def test_sample_recipe_is_post_norm():
    _, ours = homework_and_recipe("hw4_sample")
    x = torch.randn(2, 16, 40)
    mask = torch.ones(2, 16, dtype=torch.bool)
    ours.eval()
    with torch.no_grad():
        frames = ours.encoder(x, mask)
        ours.encoder.layers.layers[0].norm_first = True
        assert not torch.allclose(ours.encoder(x, mask), frames, atol=1e-3)
    # Post-norm: the last operation is norm2, so undoing its affine terms leaves every frame
    # with mean 0 and variance 1 (pre-norm ends in a residual sum instead).
    norm2 = ours.encoder.layers.layers[0].norm2
    standardised = (frames - norm2.bias) / norm2.weight
    torch.testing.assert_close(standardised.mean(-1), torch.zeros(2, 16), atol=1e-4, rtol=0)
    torch.testing.assert_close(standardised.var(-1, unbiased=False), torch.ones(2, 16),
                               atol=1e-3, rtol=0)


@pytest.mark.parametrize("name", sorted(HOMEWORK))
def test_recipe_trains_as_the_homework(name):
    import inspect
    p = recipe_params(name)
    # The sample's config: batch_size 32, valid_steps 2000, warmup_steps 1000,
    # total_steps 70000, segment_len 128; AdamW(lr=1e-3) and nn.CrossEntropyLoss().
    assert (p.train.batch_size, p.train.valid_every, p.train.warmup_steps, p.train.steps,
            p.index.segment_len, p.train.lr) == (32, 2000, 1000, 70000, 128, 1e-3)
    adamw = inspect.signature(torch.optim.AdamW).parameters
    assert p.train.weight_decay == adamw["weight_decay"].default
    assert p.train.clip_grad == 0 and p.loss.name == "softmax" and p.model.input_norm == "none"
    assert not p.train.augment.specaugment and p.train.augment.noise_dir is None


def homework_lr_lambda(current_step, num_warmup_steps=1000, num_training_steps=70000,
                       num_cycles=0.5):
    """The sample code's get_cosine_schedule_with_warmup factor."""
    if current_step < num_warmup_steps:
        return float(current_step) / float(max(1, num_warmup_steps))
    progress = float(current_step - num_warmup_steps) / float(
        max(1, num_training_steps - num_warmup_steps)
    )
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))


def test_recipe_schedule_is_the_homeworks_but_one_warmup_step_ahead():
    from spkid.train.schedule import warmup_cosine
    t = recipe_params("hw4_best").train
    ours = warmup_cosine(t.warmup_steps, t.steps)
    steps = np.arange(t.steps)
    # Optimizer step k uses factor(k) in both loops (LambdaLR); spkid's warmup starts at
    # 1/warmup where the homework's first step has lr 0.
    theirs = [homework_lr_lambda(k + 1 if k < t.warmup_steps else k) for k in steps]
    np.testing.assert_allclose([ours(k) for k in steps], theirs, rtol=0, atol=1e-12)


def test_transformer_norm_placement_respects_padding():
    torch.manual_seed(0)
    net = make_net(encoder="transformer", pooling="mean", norm="post",
                   **ENCODER_SETTINGS["transformer"]).eval()
    assert not net.encoder.layers.layers[0].norm_first
    lengths = [13, 5]
    x, mask = padded_batch(lengths)
    with torch.no_grad():
        emb = net.embed(x, mask)
        for i, n in enumerate(lengths):
            torch.testing.assert_close(emb[i:i + 1], net.embed(x[i:i + 1, :n], mask[i:i + 1, :n]),
                                       rtol=1e-4, atol=1e-5)


def test_model_json_without_norm_builds_pre_norm():
    from spkid.models.folder import build_model
    model = make_params(encoder="transformer", **ENCODER_SETTINGS["transformer"]).model.to_dict()
    del model["norm"]
    net = build_model({"model": model, "loss": {"name": "softmax"}, "n_mels": N_MELS,
                       "speakers": ["a", "b"]})
    assert net.encoder.layers.layers[0].norm_first


def test_parse_override_reads_values_as_yaml():
    from spkid.core.recipes import RECIPES, as_flags, parse_override
    assert parse_override("index.trial_seconds=1.0") == ("index.trial_seconds", 1.0)
    assert parse_override("train.augment.noise_dir=null") == ("train.augment.noise_dir", None)
    assert parse_override("data.path=a=b") == ("data.path", "a=b")  # first '=' splits
    # Round trip of what `spkid recipe` prints, each flag one shell word after -S.
    for name in RECIPES:
        printed = [f.removeprefix("-S ") for f in as_flags(name)]
        assert not any(any(c.isspace() for c in f) for f in printed), printed
        assert dict(parse_override(f) for f in printed) == RECIPES[name]
    assert parse_override("features.augment.speed=[0.9,1.1]")[1] == [0.9, 1.1]
    for bad in ("index.segment_len", "=3"):
        with pytest.raises(ValueError, match="expected key=value"):
            parse_override(bad)


def test_every_recipe_validates_over_the_defaults():
    from spkid.core.recipes import RECIPES
    for name in RECIPES:
        p = recipe_params(name)
        if name.startswith("voxceleb_"):
            start, end = p.loss.margin_warmup
            assert 0 < start < end < p.train.steps and p.train.finetune.steps > 0
            assert p.features.n_mels == 80 and p.index.segment_len == 200


# Parameters (classifier left out) of WeSpeaker's models built from their code (wespeaker/models
# at commit dfa7419) with examples/voxceleb/v2/conf/{resnet,ecapa_tdnn,campplus}.yaml; their
# README rounds them to 6.63 M, 6.19 M and 7.18 M.
WESPEAKER_PARAMETERS = {"voxceleb_resnet34": 6_634_336, "voxceleb_ecapa512": 6_190_720,
                        "voxceleb_campplus": 7_176_224}


@pytest.mark.parametrize("name", sorted(WESPEAKER_PARAMETERS))
def test_voxceleb_recipes_have_the_published_sizes(name):
    """Equal to WeSpeaker's but for named differences: ECAPA's pooling is spkid's asp (one
    weight a frame) instead of their channel-wise attention with global context, spkid's
    aggregation conv has a BatchNorm and their pooled vector has one; CAM++'s embedding layer
    has a bias."""
    p = recipe_params(name)
    net = SpeakerNet(p.model, p.loss, p.features.n_mels, 2)
    ours = sum(t.numel() for key, t in net.named_parameters() if not key.startswith("head."))
    theirs = WESPEAKER_PARAMETERS[name]
    if name == "voxceleb_ecapa512":
        c = 3 * 512
        their_pooling = (3 * c * 128 + 128) + (128 * c + c) + 2 * (2 * c)
        our_pooling = (c * 128 + 128) + (128 + 1)
        theirs += our_pooling - their_pooling + 2 * c
    if name == "voxceleb_campplus":
        theirs += 512
    assert ours == theirs


def test_resnet34_strided_over_time_keeps_an_utterance_s_embedding_whatever_its_padding():
    """model.time_stride 2 (WeSpeaker's ResNet34): stages 2-4 halve time too, ceil(T / 8)
    frames, the output mask every 8th input frame, padded frames zero; an utterance embeds
    alone as in a padded batch, at lengths on and off the stride."""
    torch.manual_seed(3)
    net = make_net(encoder="resnet34", base_width=4, time_stride=2, pooling="tstp")
    lengths = [29, 17, 6, 8]
    x, mask = padded_batch(lengths, seed=3)
    randomize_norms(net, seed=3)
    net.eval()
    with torch.no_grad():
        frames = net.encoder(x, mask)
        out_mask = frame_mask(net.encoder, mask)
    assert frames.shape == (4, 4, net.encoder.out_dim)  # ceil(29 / 8)
    assert out_mask.sum(1).tolist() == [-(-n // 8) for n in lengths]
    assert not frames[~out_mask].any()
    assert_embeds_as_alone(net, lengths, seed=3)
    full = make_net(encoder="resnet34", base_width=4, pooling="tstp")
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in full.parameters())
