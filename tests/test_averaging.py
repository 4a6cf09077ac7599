"""Tests for spkid.train.averaging: averaged weights are the mean of the checkpoints (BatchNorm
running statistics included), and the kept validation states on disk."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spkid.train.averaging import ValidationCheckpoints, average_state_dicts
from test_models import make_net, padded_batch


def _trained_states(count: int) -> list[dict]:
    """State dicts of a small ECAPA-TDNN (BatchNorm) after successive training steps."""
    torch.manual_seed(0)
    net = make_net(encoder="ecapa_tdnn", channels=16).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    x, mask = padded_batch([20, 20, 20, 20])
    y = torch.tensor([0, 1, 2, 3])
    states = []
    for _ in range(count):
        _, logits = net(x, mask, y)
        opt.zero_grad()
        F.cross_entropy(logits, y).backward()
        opt.step()
        states.append({k: v.detach().clone() for k, v in net.state_dict().items()})
    return states


def test_average_is_the_mean_of_the_checkpoints():
    states = _trained_states(3)
    avg = average_state_dicts(states)
    assert avg.keys() == states[0].keys()
    bn_stats = [k for k in avg if k.endswith("running_mean")]
    assert bn_stats and any(not torch.equal(states[0][k], states[2][k]) for k in bn_stats)
    for k, v in avg.items():
        assert v.dtype == states[0][k].dtype, k
        if k.endswith("num_batches_tracked"):
            assert v.item() == 3 and torch.equal(v, states[-1][k])  # the last state's count
        else:
            torch.testing.assert_close(v, (states[0][k] + states[1][k] + states[2][k]) / 3,
                                       rtol=1e-6, atol=1e-7)
    # The averaged state loads into the network.
    net = make_net(encoder="ecapa_tdnn", channels=16)
    net.load_state_dict(avg)


def test_average_keeps_half_precision_and_refuses_mismatches():
    a = {"w": torch.tensor([1.0, 2.0], dtype=torch.float16)}
    b = {"w": torch.tensor([2.0, 4.0], dtype=torch.float16)}
    out = average_state_dicts([a, b])["w"]
    assert out.dtype == torch.float16 and out.tolist() == [1.5, 3.0]
    with pytest.raises(ValueError, match="different keys"):
        average_state_dicts([a, {"v": b["w"]}])
    with pytest.raises(ValueError, match="no state dicts"):
        average_state_dicts([])


def test_validation_checkpoints_keep_the_last_n_and_average_them(tmp_path):
    states = _trained_states(5)
    kept = ValidationCheckpoints(tmp_path, 3)
    assert kept.enabled and not ValidationCheckpoints(tmp_path, 1).enabled
    for step, state in zip((20, 40, 60, 80, 100), states):
        kept.save(state, step)
    assert kept.steps() == [60, 80, 100]
    avg, steps = kept.average()
    assert steps == [60, 80, 100]
    expected = average_state_dicts(states[2:])
    assert all(torch.equal(avg[k], expected[k]) for k in expected)
    # A run resumed from step 70 redoes validations 80 and 100.
    kept.drop_after(70)
    assert kept.steps() == [60]
    kept.clear()
    assert kept.steps() == [] and not list(tmp_path.iterdir())
