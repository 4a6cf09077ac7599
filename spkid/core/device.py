"""Which device a stage computes on, and the arithmetic training uses there."""

from __future__ import annotations

import contextlib

import torch

from spkid.core.errors import ParamsError

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamsError("params: train.device = 'cuda' but no CUDA device is available "
                          "(allowed: auto, cpu, cuda)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def training_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """The autocast dtype of training (`train.precision`); float32 means no autocast.

    auto: float32 on CPU; on CUDA bf16 only where the GPU computes it natively (compute
    capability 8.0 and later: torch.cuda.is_bf16_supported() alone also counts the slow
    emulation of a V100 or T4), else fp16, which needs loss scaling (needs_loss_scaling)."""
    if precision != "auto":
        return _DTYPES[precision]
    if device.type != "cuda":
        return torch.float32
    native = torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.bfloat16 if native else torch.float16


def needs_loss_scaling(dtype: torch.dtype) -> bool:
    """fp16's small range underflows small gradients unless the loss is scaled first."""
    return dtype == torch.float16


def autocast(device: torch.device, dtype: torch.dtype):
    """Mixed precision in `dtype` on `device` (float32: none)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
