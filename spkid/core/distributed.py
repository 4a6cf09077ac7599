"""Running one stage as several processes under `torchrun` (one or many machines).

Without torchrun's environment everything here is a no-op for a single process, so a
stage calls the same functions either way."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from spkid.core.device import pick_device


def start(requested_device: str = "cpu") -> tuple[int, int, torch.device]:
    """(rank, world size, device) from torchrun's environment; (0, 1, device) otherwise.
    CUDA ranks talk over NCCL, CPU ranks over gloo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(requested_device)
    if world == 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return torch.distributed.get_rank(), world, device


def broadcast(value: Any, world: int) -> Any:
    """Rank 0's `value` on every rank."""
    if world == 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: Any, world: int) -> list:
    """Every rank's `value`, in rank order, on every rank."""
    if world == 1:
        return [value]
    out = [None] * world
    torch.distributed.all_gather_object(out, value)
    return out


def share_buffers(model: torch.nn.Module, world: int) -> None:
    """Rank 0's buffers (BatchNorm's running statistics) on every rank. DDP sends them at
    each forward, after which every rank's forward moves its own: ranks that score a model
    together first take rank 0's, the model rank 0 saves."""
    if world == 1:
        return
    for buffer in model.buffers():
        torch.distributed.broadcast(buffer.data, src=0)


def add_up(array: np.ndarray | None, world: int) -> np.ndarray | None:
    """The sum of every rank's `array` (same shape and dtype), on every rank. Ranks that
    each fill their own rows of a zero array so assemble the whole exactly (x + 0 is x)."""
    if world == 1 or array is None:
        return array
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if torch.distributed.get_backend() == "nccl":
        tensor = tensor.cuda()
    torch.distributed.all_reduce(tensor)
    return tensor.cpu().numpy()


def finish(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
