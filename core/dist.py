"""torchrun / DDP helpers: one code path runs plain and distributed.

``init_distributed`` reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (set by torchrun),
starts the process group (NCCL on CUDA, gloo on CPU) and returns the info; with no such
variables it does nothing and every helper degrades to the single-process case.
"""
from __future__ import annotations

import faulthandler
import logging
import os
import sys
from typing import NoReturn

import torch
import torch.distributed as dist


def dist_info() -> tuple[int, int, int]:
    """(rank, world_size, local_rank); (0, 1, 0) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0


def is_main() -> bool:
    return dist_info()[0] == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: torch.device) -> tuple[int, int, int]:
    if launched_by_torchrun() and dist.is_available() and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
        # a native abort in a worker then prints every thread's Python stack, not only a signal number
        if not faulthandler.is_enabled():
            faulthandler.enable()
    return dist_info()


def exit_worker(code: int) -> NoReturn:
    """End a torchrun worker now, without interpreter finalization.

    Finalization can abort a gloo worker after it finished cleanly: a backend thread that still
    holds a tensor takes the GIL while the interpreter shuts down, and Python ends that thread
    inside C++ code ("terminate called without an active exception", SIGABRT; pytorch PR #179291).
    It struck 1 README torchrun run in CI after ``cleanup``'s barrier had made it rare locally.
    Everything a run writes is closed by then; stdio and logging are flushed here.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing left to save
            pass
    os._exit(code)


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
