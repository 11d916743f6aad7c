"""Running under ``torchrun``: the process group, its rank and world size, and a few collectives.

``torchrun --nproc_per_node N`` starts N processes with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in their environment. :func:`process_group`
reads them, starts the process group (NCCL on CUDA, gloo on the CPU) unless the caller already
did, pins each rank to GPU ``LOCAL_RANK``, and destroys the group on exit only if it created it.
Without those variables (or with ``WORLD_SIZE=1``) it is a no-op and the run is single-process.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import SetupError
from ..method.runtime import resolve_device

__all__ = ["DistInfo", "env_world", "process_group"]

# A rank that finishes its shard early waits at a barrier for the slowest rank; the default
# collective timeout (10-30 min) is shorter than one shard of the full protocol on a CPU.
TIMEOUT = datetime.timedelta(hours=12)


def env_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment; ``(0, 1, 0)`` without."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as err:
        raise ValueError(f"bad torchrun environment (RANK/WORLD_SIZE/LOCAL_RANK): {err}") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    return rank, world, local


@dataclass
class DistInfo:
    """Where this process stands: its rank, the world size, its device, the backend."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    created: bool = False

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            if self.backend == "nccl":
                dist.barrier(device_ids=[self.device.index or 0])
            else:
                dist.barrier()

    def any_true(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any rank (an all-reduce of one number).

        Lets a rank that failed tell the others, so that they raise too instead of waiting at
        the next barrier until the timeout.
        """
        if not self.active:
            return bool(flag)
        t = torch.tensor([1 if flag else 0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def gather(self, obj):
        """Every rank's ``obj`` in rank order on rank 0 (``None`` on the others)."""
        if not self.active:
            return [obj]
        out = [None] * self.world if self.rank == 0 else None
        dist.gather_object(obj, out, dst=0)
        return out


@contextlib.contextmanager
def process_group(device: str | torch.device = "auto") -> Iterator[DistInfo]:
    """The process group of a torchrun launch, or a single-process :class:`DistInfo`.

    The device is resolved as :func:`upx_core.method.runtime.resolve_device` does; under torchrun
    a CUDA device becomes ``cuda:LOCAL_RANK`` (each rank its own GPU) and the backend NCCL,
    otherwise gloo.
    """
    rank, world, local = env_world()
    dev = resolve_device(device)
    if world == 1 and not (dist.is_available() and dist.is_initialized()):
        yield DistInfo(device=dev)
        return
    if not dist.is_available():
        raise SetupError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if dev.type == "cuda":
        if dev.index is None:
            if local >= torch.cuda.device_count():
                raise ValueError(
                    f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA device(s)"
                )
            dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    created = False
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs = {"device_id": dev} if backend == "nccl" else {}
        dist.init_process_group(backend=backend, timeout=TIMEOUT, **kwargs)
        created = True
    info = DistInfo(rank=dist.get_rank(), world=dist.get_world_size(), device=dev,
                    backend=dist.get_backend(), created=created)
    try:
        yield info
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()
