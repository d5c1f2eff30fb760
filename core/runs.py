"""The run prologue every training entry point starts with, written once.

    run = start_run(cfg.device, cfg.seed, threads=cfg.training.threads, log=log)
    run.device, run.rank, run.world, run.log   # run.log is silent on ranks > 0

In this order: the device (``auto`` = the local rank's GPU when present, see
``core.cli.resolve_device``), the process group when started by torchrun (``core.dist``), the
CPU thread count (only when ``threads`` is given: 0 = torch's default), the seeds of Python,
NumPy and torch, and a ``log`` that only rank 0 speaks through. Data loading stays with each
pipeline: what it reads differs (prepared sequences, two-domain views, JSON tables).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from core.cli import resolve_device, seed_everything
from core.dist import init_distributed
from core.train import set_threads


def quiet(*_args, **_kwargs) -> None:
    """The log of ranks > 0: rank 0 speaks for all ranks."""


@dataclass(frozen=True)
class RunContext:
    device: torch.device
    rank: int
    world: int
    log: Callable[..., None]

    @property
    def main(self) -> bool:
        return self.rank == 0


def start_run(device: str = "auto", seed: int | None = None, *, threads: int | None = None,
              log: Callable[..., None] = print) -> RunContext:
    """Device, distributed init, threads (when given), seeds (when given), rank-0 log."""
    dev = resolve_device(device)
    rank, world, _ = init_distributed(dev)
    if threads is not None:
        set_threads(threads)  # before data and evaluation, not only the fit loop
    if seed is not None:
        seed_everything(seed)
    return RunContext(dev, rank, world, log if rank == 0 else quiet)
