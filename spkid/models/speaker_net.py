"""Encoder -> pooling -> embedding -> head, assembled from names in the params."""

from __future__ import annotations

import torch
from torch import nn

from spkid.models.pooling import masked_mean
from spkid.models.registry import ENCODERS, HEADS, POOLINGS, lookup


def frame_mask(encoder: nn.Module, mask: torch.Tensor) -> torch.Tensor:
    """The mask of an encoder's output frames: the input mask, unless the encoder subsamples
    time and says how (`frame_mask`, e.g. CAM++'s stride 2)."""
    subsampled = getattr(encoder, "frame_mask", None)
    return mask if subsampled is None else subsampled(mask)


class SpeakerNet(nn.Module):
    def __init__(self, model, loss, n_mels: int, n_speakers: int):
        super().__init__()
        self.input_norm = model.input_norm
        self.encoder = lookup(ENCODERS, model.encoder, "encoder")(n_mels, model)
        self.pooling = lookup(POOLINGS, model.pooling, "pooling")(self.encoder.out_dim, model)
        # embedding_dim 0: the pooled vector is the embedding. The layer and its activation
        # are separate modules so the state_dict key stays "embedding.weight" either way.
        if model.embedding_dim == 0:
            self.embedding = nn.Identity()
            self.embedding_dim = self.pooling.out_dim
        else:
            self.embedding = nn.Linear(self.pooling.out_dim, model.embedding_dim)
            self.embedding_dim = model.embedding_dim
        self.embedding_act = nn.ReLU() if model.embedding_activation == "relu" else nn.Identity()
        self.head = lookup(HEADS, loss.name, "loss")(self.embedding_dim, n_speakers, loss)

    def embed(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, n_mels) log-mels, mask (B, T) True on real frames -> (B, embedding_dim)."""
        if self.input_norm == "cmn":
            # Per-utterance mean removal cancels channel and loudness offsets.
            x = (x - masked_mean(x, mask).unsqueeze(1)) * mask.unsqueeze(-1).to(x.dtype)
        frames = self.encoder(x, mask)
        return self.embedding_act(self.embedding(self.pooling(frames, frame_mask(self.encoder, mask))))

    def forward(self, x, mask, labels=None, margin=None):
        """Embeddings and logits (with the training margin when labels are given; `margin`
        overrides loss.m, e.g. from spkid.models.heads.margin_schedule)."""
        emb = self.embed(x, mask)
        return emb, self.head(emb, labels, margin=margin)

