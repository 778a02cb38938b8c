"""Data-parallel training under `torchrun` or `accelerate launch`: which rank this process is.

Both launchers start one process per device and tell it its place in the environment (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). Nothing else changes for the user: the same
code and the same command run in one process or in several. With more than one process,
`cpbook.fit` joins them into a process group (NCCL on GPUs, gloo on the CPU) the first time it
trains, each rank on its own device (`device`), drawing its own slice of every batch, its
gradients all-reduced by DistributedDataParallel; rank 0 alone writes checkpoints and cache
entries (`build_on_every_rank`), and every rank reads them.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def active() -> bool:
    """Whether this process is one of several ranks of a launched job."""
    return world_size() > 1


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes."""
    return rank() == 0


def device() -> torch.device:
    """This rank's device: GPU LOCAL_RANK when there are GPUs (GPU 0 for a single process), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def setup() -> None:
    """Join the launched job's process group (once), on this rank's device."""
    if not active() or dist.is_initialized():
        return
    here = device()
    if here.type == "cuda":
        torch.cuda.set_device(here)
    dist.init_process_group("nccl" if here.type == "cuda" else "gloo")


def teardown() -> None:
    """Leave the process group at the end of a job (a clean exit for every rank)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if active() and dist.is_initialized():
        dist.barrier()


def mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of `value` over the ranks (itself for one process)."""
    if not (active() and dist.is_initialized()):
        return value
    total = value.detach().clone()
    dist.all_reduce(total)
    return total / world_size()


def build_on_every_rank(kind: str, config: dict, make: Callable[[Path], dict | None]) -> Path:
    """`cache.build` for a data-parallel job. Rank 0 asks the cache; when the entry must be made,
    every rank runs `make` (its training steps are collective), rank 0 into the entry under its
    lock, the others into a folder that is thrown away. Every rank returns once the entry exists."""
    from . import cache  # noqa: PLC0415  cache imports console, which imports this module's callers

    setup()
    target = cache.entry_path(kind, config)
    missing = torch.tensor([is_main() and cache.lookup(kind, config) is None], dtype=torch.int64, device=device())
    dist.broadcast(missing, src=0)   # on this rank's device: NCCL moves only GPU tensors
    if int(missing.item()):
        if is_main():
            cache.build(kind, config, make)
        else:
            with tempfile.TemporaryDirectory(prefix="cpbook-rank-") as folder:
                make(Path(folder))
    barrier()
    return target
