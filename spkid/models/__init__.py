"""Speaker models; imports spkid.core and spkid.features (the feature store) only.

One file per encoder (transformer, conformer, ecapa_tdnn, resnet34, campplus), poolings and heads
as small classes chosen by name from a registry, SpeakerNet that assembles them, the model
folder (model.pt + model.json) and the one loop that embeds stored views with a model.
Importing this package registers every encoder, pooling and head.
"""

from spkid.models import (campplus, conformer, ecapa_tdnn,  # noqa: F401  (register themselves)
                          heads, pooling, resnet34, transformer)
from spkid.models.registry import ENCODERS, HEADS, POOLINGS
from spkid.models.speaker_net import SpeakerNet

__all__ = ["ENCODERS", "HEADS", "POOLINGS", "SpeakerNet"]
