"""Memory: keeping a long inference loop's memory flat, and refusing a training batch that
cannot fit before it is allocated (check_batch_fits).

Scoring thousands of utterances allocates activation tensors of a different size for
every batch. glibc's malloc raises its mmap threshold as large blocks are freed, so those
tensors move onto the heap, whose freed space fragments and is not returned: at HW4 size
`evaluate` grew to 3.7 GB resident against 0.6 GB on a tiny data set (measured; the
model and batch size were the same). A fixed threshold keeps large blocks in their own
mappings, returned to the system when freed: 1,500 val utterances peaked at 0.44 GB
instead of 1.43 GB at about the same speed."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

from spkid.core.errors import ParamsError

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
THRESHOLD = 8 << 20
CGROUP = Path("/sys/fs/cgroup")  # a container's memory limit, where one is set


def keep_large_blocks_mapped(threshold: int = THRESHOLD) -> bool:
    """Fix glibc's mmap threshold (a no-op returning False on other C libraries)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False


def release_free_memory() -> None:
    """Give the heap's free pages back to the system (glibc's malloc_trim; a no-op
    elsewhere). Reading the footers of thousands of shards leaves a few hundred MB of
    small freed blocks that glibc keeps: 230 MB for VoxCeleb2's 2,477 shards, 71 MB after
    this (measured)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


# Values per crop frame that the backward pass certainly keeps, by encoder: a lower bound
# counted from the layers (each keeps at least these outputs for backward), at 2 bytes a
# value (what bf16/fp16 autocast keeps). Measured with saved_tensors_hooks, float32, 40
# mels: the default ECAPA-TDNN keeps 21.5 kB a frame (this bound: 4.1 kB), hw4_best's
# Conformer 50.7 kB (3.8 kB), ResNet34 134 kB (21 kB); tests/test_memory.py checks that the
# bound stays under half of what each encoder keeps, so a batch that fits is never refused.
def _activation_values_per_frame(model, n_mels: int) -> int:
    if model.encoder in ("transformer", "conformer"):
        # the prenet's output; per layer its input, the attention's output, the FFN's hidden
        return model.d_model + model.layers * (2 * model.d_model + model.ffn_dim)
    if model.encoder == "ecapa_tdnn":
        # stem; per block the two 1x1 convs' and the Res2Net convs' outputs; the concatenation
        # and the aggregation (3 x channels each)
        return 16 * model.channels
    if model.encoder == "resnet34":
        # stem and two convs per block (16 blocks); each stage halves the mels and doubles the
        # channels, so every layer keeps about base_width x n_mels values a frame
        return 33 * model.base_width * n_mels
    if model.encoder == "campplus":
        # the front end's stem at full resolution; each of the 52 dense layers' bottleneck
        # (4 x growth_rate) at half the frame rate
        return model.base_width * n_mels + 104 * model.growth_rate
    return 0


def crop_frames(p) -> int:
    """The longest training crop of params `p` (fine-tuning's, when that phase is on)."""
    t = p.train
    return max(p.index.segment_len, t.finetune.crop_frames if t.finetune.steps else 0)


def training_batch_bytes(p, n_mels: int) -> tuple[int, int]:
    """(crops, activations): bytes of one training batch's float32 crops and a lower bound of
    what its forward pass keeps for backward, for params `p`."""
    frames = p.train.batch_size * crop_frames(p)
    return frames * n_mels * 4, frames * _activation_values_per_frame(p.model, n_mels) * 2


def available_memory() -> int | None:
    """Bytes a new allocation can still get on this machine without swapping: MemAvailable,
    or less where a cgroup (a container's memory limit) caps the process; None if unknown."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            pass
    for limit, usage in (("memory.max", "memory.current"),  # cgroup v2, then v1
                         ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        try:
            cap = (CGROUP / limit).read_text().strip()
            if cap.isdigit():
                found.append(int(cap) - int((CGROUP / usage).read_text()))
                break
        except (OSError, ValueError):
            continue
    return min(found) if found else None


def check_batch_fits(p, n_mels: int, device) -> None:
    """Refuse, naming train.batch_size, a training batch that cannot fit: its crops and
    activations in this machine's available memory (on a CPU; with every local rank of a
    torchrun job holding its own), or on a CUDA device, the crops in the machine's memory
    and crops plus activations in the device's free memory. The activations are a lower
    bound, so a refused batch would certainly have run out of memory; a batch within a few
    times of the limit is left to fail as it would."""
    crops, activations = training_batch_bytes(p, n_mels)
    cuda = getattr(device, "type", device) == "cuda"
    ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    held = crops if cuda else crops + activations
    _refuse_unless(p, n_mels, ranks * held, available_memory(), "available on this machine",
                   crops, 0 if cuda else activations, ranks)
    if cuda:
        import torch  # here: only a CUDA run asks, and it has torch loaded already
        free, _ = torch.cuda.mem_get_info(device)
        _refuse_unless(p, n_mels, crops + activations, free,
                       f"free on {torch.cuda.get_device_name(device)}", crops, activations)


def _refuse_unless(p, n_mels, need: int, have: int | None, where: str, crops: int,
                   activations: int, ranks: int = 1) -> None:
    if have is None or need <= have:
        return
    parts = f"the crops {_gib(crops)}" + (f", the model's activations at least {_gib(activations)}"
                                          if activations else "")
    if ranks > 1:
        parts += f", for each of {ranks} ranks on this machine"
    raise ParamsError(f"params: train.batch_size = {p.train.batch_size}: a batch of "
                      f"{crop_frames(p)}-frame crops of {n_mels} mels needs at least "
                      f"{_gib(need)} ({parts}), more than the {_gib(have)} {where}; "
                      "lower train.batch_size")


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**28 else f"{n / 2**20:.0f} MiB"
