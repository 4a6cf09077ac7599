"""The HW4 homework's own models, their layer calls as the homework wrote them, and the map
onto spkid's recipe nets: tests/test_models.py checks that the recipes compute exactly these
models, bench/hw4_best_speed.py times recipe (b) against the students' model."""

from __future__ import annotations

import torch
from torch import nn

HW4_SPEAKERS = 600


class HomeworkSample(nn.Module):
    """The ML2022Spring HW4 sample code's Classifier (the unused `dropout` argument and the
    commented-out nn.TransformerEncoder left out)."""

    def __init__(self, d_model=80, n_spks=600):
        super().__init__()
        self.prenet = nn.Linear(40, d_model)
        self.encoder_layer = nn.TransformerEncoderLayer(
            d_model=d_model, dim_feedforward=256, nhead=2
        )
        self.pred_layer = nn.Sequential(
            nn.Linear(d_model, d_model),
            nn.ReLU(),
            nn.Linear(d_model, n_spks),
        )

    def forward(self, mels):
        out = self.prenet(mels)
        out = out.permute(1, 0, 2)
        out = self.encoder_layer(out)
        out = out.transpose(0, 1)
        stats = out.mean(dim=1)
        out = self.pred_layer(stats)
        return out


class HomeworkBest(nn.Module):
    """The students' best: the sample's prenet, torchaudio's Conformer as they called it,
    self-attention pooling (Linear-Tanh-Linear scores, softmax over time) and one Linear."""

    def __init__(self, d_model=160, n_spks=600):
        super().__init__()
        import torchaudio
        self.prenet = nn.Linear(40, d_model)
        self.conformer = torchaudio.models.Conformer(
            input_dim=d_model, num_layers=3, num_heads=4, ffn_dim=256,
            depthwise_conv_kernel_size=31)
        self.attention = nn.Sequential(nn.Linear(d_model, 64), nn.Tanh(), nn.Linear(64, 1))
        self.pred_layer = nn.Linear(d_model, n_spks)

    def forward(self, mels):
        out = self.prenet(mels)
        lengths = torch.full((mels.shape[0],), mels.shape[1], device=mels.device)
        out, _ = self.conformer(out, lengths)
        weights = torch.softmax(self.attention(out), dim=1)
        stats = torch.sum(out * weights, dim=1)
        return self.pred_layer(stats)


# Recipe name -> the homework's model and where each of its modules lives in spkid's
# SpeakerNet (what follows the prefix is the same on both sides).
HOMEWORK = {
    "hw4_sample": (HomeworkSample, {"prenet.": "encoder.prenet.",
                                    "encoder_layer.": "encoder.layers.layers.0.",
                                    "pred_layer.0.": "embedding.", "pred_layer.2.": "head.fc."}),
    "hw4_best": (HomeworkBest, {"prenet.": "encoder.prenet.", "conformer.": "encoder.conformer.",
                                "attention.": "pooling.score.", "pred_layer.": "head.fc."}),
}


def recipe_params(name: str, overrides: dict | None = None):
    """The full params of a recipe, with optional dotted-key overrides on top."""
    from spkid.core.params import defaults, validate_params
    from spkid.core.recipes import RECIPES, apply
    return validate_params(apply(defaults(), {**RECIPES[name], **(overrides or {})}))


def recipe_net(name: str, overrides: dict | None = None, n_spks: int = HW4_SPEAKERS):
    from spkid.models import SpeakerNet
    p = recipe_params(name, overrides)
    return SpeakerNet(p.model, p.loss, 40, n_spks)


def load_homework_weights(name: str, theirs: nn.Module, ours: nn.Module) -> None:
    """Copy the homework model's parameters and buffers into spkid's recipe net, renamed by
    HOMEWORK's prefixes. Fails unless both have the same parameter shapes in the same order
    and every entry of each state_dict lands on exactly one of the other's."""
    prefixes = HOMEWORK[name][1]
    assert [t.shape for t in ours.parameters()] == [t.shape for t in theirs.parameters()]
    renamed = {}
    for key, value in theirs.state_dict().items():
        (prefix,) = [k for k in prefixes if key.startswith(k)]
        renamed[prefixes[prefix] + key.removeprefix(prefix)] = value
    assert list(renamed) == list(ours.state_dict())
    ours.load_state_dict(renamed, strict=True)
