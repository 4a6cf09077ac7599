"""Speaker models. Importing this package registers every encoder, pooling and head."""

from spkid import losses  # noqa: F401  (registers heads)
from spkid.models import conformer, pooling, transformer  # noqa: F401  (register themselves)
from spkid.models.registry import ENCODERS, HEADS, POOLINGS
from spkid.models.speaker_net import SpeakerNet

__all__ = ["ENCODERS", "HEADS", "POOLINGS", "SpeakerNet"]
