"""Training in several processes with PyTorch's own launcher: `torchrun --nproc-per-node N -m
matching_cli train ...`.

torchrun starts the processes and tells each its place in environment variables (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR/PORT); this module turns them into a process group (gloo on a CPU, NCCL on
CUDA) and a `ProcessShard`, the training loop's hook. Every process holds the whole item matrix and
every split, draws the same batch order, trains on its slice of each batch, and DDP averages the
gradients, so a step is the step of one process with a batch N times as large. Validation is
computed by every process and the first one's figures are used by all, so that early stopping and
the best epoch are decided alike. Only the first process writes files and talks to MLflow.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from matching_cli.model.train import Shard, StopFlag

log = logging.getLogger(__name__)


def launched() -> bool:
    """Whether torchrun started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


class ProcessShard(Shard):
    """One process's share: its slice of every batch, its place among the others."""

    device: torch.device

    def __init__(
        self, rank: int, processes: int, device: torch.device, cpu_group: dist.ProcessGroup | None
    ) -> None:
        self.rank, self.processes, self.device = rank, processes, device
        self.cpu_group = cpu_group  # for the stop flag: gloo, beside NCCL's GPU group

    def wrap(self, model: nn.Module) -> nn.Module:
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def take(self, batch: torch.Tensor) -> torch.Tensor:
        # Contiguous, near-equal slices; a process whose slice is empty still steps, with zero loss.
        return batch.tensor_split(self.processes)[self.rank]

    def total(self, value: torch.Tensor) -> torch.Tensor:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value

    def from_main(self, *values: float) -> tuple[float, ...]:
        shared = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.broadcast(shared, src=0)
        return tuple(shared.tolist())

    def stop_flag(self) -> StopFlag:
        return AgreedStop(self.cpu_group)


class AgreedStop(StopFlag):
    """A stop flag the processes agree on: each reading asks all of them, so all stop after the
    same batch when Ctrl-C (or torchrun's SIGTERM) reaches them at different moments.

    The question goes through a CPU (gloo) group: asked through NCCL, reading the answer would wait
    for the GPU to finish every batch."""

    def __init__(self, group: dist.ProcessGroup | None) -> None:
        super().__init__()
        self.group = group

    def __bool__(self) -> bool:
        flag = torch.tensor([float(self.signal is not None)])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        return bool(flag.item())


@contextmanager
def process_group(device: torch.device) -> Iterator[ProcessShard]:
    """Join the processes torchrun started, on `device` (each its own GPU); leave on exit."""
    rank, processes = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    cpu_group = dist.new_group(backend="gloo") if device.type == "cuda" else None
    if rank != 0:  # one process tells the story
        logging.getLogger("matching_cli").setLevel(logging.WARNING)
    log.info("Process %d of %d on %s", rank, processes, device)
    try:
        yield ProcessShard(rank, processes, device, cpu_group)
    finally:
        dist.destroy_process_group()


@contextmanager
def main_first(shard: Shard) -> Iterator[None]:
    """The first process goes ahead (preparing data, say) while the others wait, then they follow."""
    if shard.processes == 1:
        yield
        return
    if shard.rank != 0:
        dist.barrier()
    try:
        yield
    finally:
        if shard.rank == 0:
            dist.barrier()
