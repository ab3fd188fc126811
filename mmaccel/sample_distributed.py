"""The process group ``mmaccel sample`` runs in: one process, or the ranks that torchrun / accelerate launch start.

Both launchers export ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; that is all
this module reads, so ``accelerate launch -m mmaccel sample ...`` works like torchrun without accelerate being a
dependency.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Ranks:
    """Where this process sits: its rank among ``world`` processes and the device it generates on."""

    rank: int = 0
    world: int = 1
    device: str = "cpu"
    initialised: bool = False  # whether this process created the group (and so destroys it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (``[obj]`` alone)."""
        if self.world == 1:
            return [obj]
        gathered: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(gathered, obj)
        return gathered

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def close(self) -> None:
        if self.initialised and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def launched_ranks(device: str | None = None) -> Ranks:
    """Join the launcher's process group when ``WORLD_SIZE`` > 1 (gloo on CPU, nccl on CUDA), else run alone.

    ``device`` None picks ``cuda:LOCAL_RANK`` when CUDA is available and CPU otherwise; each rank gets its own GPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    if world == 1:
        return Ranks(0, 1, device)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(torch.device(device))
    initialised = False
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")
        initialised = True
    return Ranks(rank, world, device, initialised)
