"""Name -> class tables, so params.yaml chooses encoders, poolings and heads by name.

Encoders take (n_mels, model_params) and expose `out_dim` (and `frame_mask(mask)` when
their output has fewer frames than their input); poolings take
(in_dim, model_params) and expose `out_dim`; heads take (embedding_dim, n_classes,
loss_params)."""

from __future__ import annotations

from typing import Callable

ENCODERS: dict[str, type] = {}
POOLINGS: dict[str, type] = {}
HEADS: dict[str, type] = {}


def register(table: dict[str, type], name: str) -> Callable[[type], type]:
    def add(cls: type) -> type:
        if name in table:
            raise ValueError(f"{name!r} is registered twice")
        table[name] = cls
        return cls
    return add


def lookup(table: dict[str, type], name: str, what: str) -> type:
    try:
        return table[name]
    except KeyError:
        raise KeyError(f"unknown {what} {name!r} (known: {', '.join(sorted(table))})") from None
