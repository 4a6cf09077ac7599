"""Random streams named by what they are for, so a draw depends on its name and a seed
param only: not on the order things are processed in, on which worker or machine does
it, or on Python's per-process string hashing."""

from __future__ import annotations

import hashlib

import numpy as np


def name_seed(name: str) -> int:
    """A 64-bit number fixed by `name` (the first 8 bytes of its SHA-256)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")


def named_rng(seed: int, name: str) -> np.random.Generator:
    """The generator of stream `name` under the seed param `seed`."""
    return np.random.default_rng([seed, name_seed(name)])
