"""Which device a stage computes on, and the mixed precision it uses there."""

from __future__ import annotations

import contextlib

import torch

from spkid.core.errors import ParamsError


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamsError("params: train.device = 'cuda' but no CUDA device is available "
                          "(allowed: auto, cpu, cuda)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def autocast(device: torch.device):
    """bf16 autocast where the GPU supports it, fp16 otherwise; full fp32 on CPU."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)
