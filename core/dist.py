"""torchrun / DDP helpers: one code path runs plain and distributed.

``init_distributed`` reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (set by torchrun),
starts the process group (NCCL on CUDA, gloo on CPU) and returns the info; with no such
variables it does nothing and every helper degrades to the single-process case.
"""
from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist


def dist_info() -> tuple[int, int, int]:
    """(rank, world_size, local_rank); (0, 1, 0) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0


def is_main() -> bool:
    return dist_info()[0] == 0


def init_distributed(device: torch.device) -> tuple[int, int, int]:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return dist_info()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(value: float, device: torch.device | None = None) -> float:
    if not (dist.is_available() and dist.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        # every rank tears down together: a rank that destroys its group while a peer still
        # writes its results was seen to abort the peer at exit under gloo ("terminate called
        # without an active exception", 3 of about 17 runs). Not while an exception unwinds (a `finally`):
        # the peers may be inside another collective, and the launcher stops them anyway
        if sys.exc_info()[0] is None:
            dist.barrier()
        dist.destroy_process_group()
