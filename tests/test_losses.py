"""Tests for spkid.models.heads: the heads' logits against hand-worked formulas, the AAM margin's
monotonicity, float32 margin maths under autocast, the margin schedule, and that each head
learns a toy separable problem."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from spkid.core.params import validate_params
from spkid.models import HEADS
from spkid.models.heads import AAMSoftmaxHead, AMSoftmaxHead, SoftmaxHead, margin_schedule


def loss_params(**kw):
    return validate_params({"loss": kw}).loss


def unit(angle):
    """Unit vectors in the plane at the given angles (radians) -> (N, 2)."""
    a = torch.as_tensor(angle, dtype=torch.float32)
    return torch.stack([torch.cos(a), torch.sin(a)], dim=-1)


def test_softmax_head_is_linear_and_ignores_labels_and_margin():
    torch.manual_seed(0)
    head = SoftmaxHead(6, 4)
    emb = torch.randn(3, 6)
    y = torch.tensor([0, 2, 3])
    expected = emb @ head.fc.weight.T + head.fc.bias
    torch.testing.assert_close(head(emb), expected)
    torch.testing.assert_close(head(emb, y), expected)
    torch.testing.assert_close(head(emb, y, margin=0.5), expected)


def test_am_softmax_without_margin_is_scaled_cosine():
    torch.manual_seed(0)
    head = AMSoftmaxHead(6, 4, loss_params(name="am_softmax", s=20.0, m=0.0))
    emb = torch.randn(5, 6)
    y = torch.tensor([0, 1, 2, 3, 0])
    cos = F.normalize(emb, dim=-1) @ F.normalize(head.weight, dim=-1).T
    torch.testing.assert_close(head(emb), 20.0 * cos)
    torch.testing.assert_close(head(emb, y), 20.0 * cos)
    expected_ce = -torch.log_softmax(20.0 * cos, dim=1)[torch.arange(5), y].mean()
    torch.testing.assert_close(F.cross_entropy(head(emb, y), y), expected_ce)


@pytest.mark.parametrize("margin", [None, 0.1, 0.35])
def test_am_margin_lowers_only_the_target_logit_by_s_m(margin):
    torch.manual_seed(1)
    head = AMSoftmaxHead(6, 4, loss_params(name="am_softmax", s=30.0, m=0.2))
    emb = torch.randn(4, 6)
    y = torch.tensor([3, 0, 0, 2])
    plain, with_margin = head(emb), head(emb, y, margin=margin)
    m = 0.2 if margin is None else margin
    onehot = F.one_hot(y, 4).bool()
    torch.testing.assert_close((plain - with_margin)[onehot], torch.full((4,), 30.0 * m))
    torch.testing.assert_close(with_margin[~onehot], plain[~onehot], rtol=0, atol=0)


def aam_with_class_angles(angles, s=10.0, m=0.3):
    """An AAM head whose class weights lie in the plane at `angles`."""
    head = AAMSoftmaxHead(2, len(angles), loss_params(name="aam_softmax", s=s, m=m))
    with torch.no_grad():
        head.weight.copy_(3.0 * unit(angles))  # the norm must not matter
    return head


@pytest.mark.parametrize("theta", [0.1, 0.7, 1.3, 2.0])
def test_aam_target_logit_is_s_cos_theta_plus_m(theta):
    head = aam_with_class_angles([0.0, 1.0, 2.5], s=10.0, m=0.3)
    emb = 0.5 * unit([theta, theta])
    y = torch.tensor([0, 2])
    logits = head(emb, y)
    plain = head(emb)
    targets = [math.cos(theta + 0.3), math.cos(abs(theta - 2.5) + 0.3)]
    torch.testing.assert_close(logits[torch.arange(2), y], 10.0 * torch.tensor(targets))
    onehot = F.one_hot(y, 3).bool()
    torch.testing.assert_close(logits[~onehot], plain[~onehot], rtol=0, atol=0)
    torch.testing.assert_close(plain[0], 10.0 * torch.cos(torch.tensor([theta, theta - 1, theta - 2.5])))


@pytest.mark.parametrize("m", [0.2, 0.5])
def test_aam_target_logit_decreases_over_the_whole_half_turn(m):
    head = aam_with_class_angles([0.0], s=1.0, m=m)
    thetas = torch.linspace(0.0, math.pi, 721, dtype=torch.float64)
    logits = head(unit(thetas), torch.zeros(721, dtype=torch.long))[:, 0].double()
    assert torch.isfinite(logits).all()
    assert (logits.diff() < 0).all()  # strictly, including past theta = pi - m
    # Past pi - m: cos(theta) - m sin(m) (WeSpeaker's threshold branch).
    late = thetas > math.pi - m + 0.01
    torch.testing.assert_close(logits[late], torch.cos(thetas[late]) - m * math.sin(m),
                               rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["am_softmax", "aam_softmax"])
def test_zero_margin_equals_plain_logits(name):
    torch.manual_seed(2)
    head = HEADS[name](6, 4, loss_params(name=name, s=30.0, m=0.2))
    emb = torch.randn(8, 6)
    y = torch.randint(0, 4, (8,))
    torch.testing.assert_close(head(emb, y, margin=0.0), head(emb), rtol=0, atol=1e-5)


def test_aam_gradient_is_finite_when_embedding_matches_its_class():
    head = aam_with_class_angles([0.0, 2.0])
    emb = unit([0.0, math.pi]).requires_grad_()  # theta = 0 and theta = pi for class 0
    F.cross_entropy(head(emb, torch.tensor([0, 0])), torch.tensor([0, 0])).backward()
    assert torch.isfinite(emb.grad).all() and torch.isfinite(head.weight.grad).all()


@pytest.mark.parametrize("name", ["am_softmax", "aam_softmax"])
def test_margin_maths_stay_float32_under_bf16_autocast(name):
    torch.manual_seed(3)
    head = HEADS[name](16, 10, loss_params(name=name, s=30.0, m=0.2))
    proj = torch.nn.Linear(8, 16)
    x = torch.randn(32, 8)
    y = torch.randint(0, 10, (32,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        emb = proj(x)
        assert emb.dtype == torch.bfloat16
        logits = head(emb, y)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    reference = head(emb.float(), y)
    # bf16 cosines would be off by ~s * 4e-3 = 0.1; float32 ones agree to rounding.
    torch.testing.assert_close(logits, reference, rtol=0, atol=1e-4)


def test_margin_schedule_without_warmup_is_constant():
    schedule = margin_schedule(loss_params(m=0.25))
    assert [schedule(s) for s in (1, 10, 10_000)] == [0.25, 0.25, 0.25]


def test_margin_schedule_ramps_linearly():
    schedule = margin_schedule(loss_params(m=0.2, margin_warmup=[10, 30]))
    values = {s: schedule(s) for s in (1, 9, 10, 15, 20, 29, 30, 31, 1000)}
    assert values[1] == values[9] == values[10] == 0.0
    assert values[15] == pytest.approx(0.05) and values[20] == pytest.approx(0.1)
    assert values[29] == pytest.approx(0.19)
    assert values[30] == values[31] == values[1000] == 0.2
    steps = range(1, 40)
    assert all(schedule(a) <= schedule(b) for a, b in zip(steps, steps[1:]))


def test_margin_schedule_with_a_step_jump():
    schedule = margin_schedule(loss_params(m=0.3, margin_warmup=[5, 5]))
    assert [schedule(s) for s in (4, 5, 6)] == [0.0, 0.3, 0.3]


@pytest.mark.parametrize("name", sorted(HEADS))
def test_cross_entropy_decreases_on_a_separable_toy_problem(name):
    torch.manual_seed(4)
    n_classes, dim = 4, 8
    centres = 3.0 * F.normalize(torch.randn(n_classes, dim), dim=-1)
    y = torch.arange(n_classes).repeat(16)
    emb = centres[y] + 0.3 * torch.randn(len(y), dim)
    head = HEADS[name](dim, n_classes, loss_params(name=name, s=10.0, m=0.2))
    opt = torch.optim.SGD(head.parameters(), lr=0.5)
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(head(emb, y), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert (head(emb).argmax(1) == y).float().mean() == 1.0
