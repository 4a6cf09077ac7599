"""Speaker models. Importing this package registers every encoder, pooling and head."""

from spkid import losses  # noqa: F401  (registers heads)
from spkid.models import (  # noqa: F401  (register themselves)
    conformer, ecapa_tdnn, pooling, resnet34, transformer)
from spkid.models.registry import ENCODERS, HEADS, POOLINGS
from spkid.models.speaker_net import SpeakerNet

__all__ = ["ENCODERS", "HEADS", "POOLINGS", "SpeakerNet"]
