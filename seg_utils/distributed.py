"""One process of a run, alone or under ``torchrun``: its device, rank and precision, and the few collective steps
the engine needs.

Under ``torchrun --nproc_per_node K`` the process group is joined here (NCCL on GPUs, gloo on CPUs), BatchNorm
becomes SyncBatchNorm (GPUs only), the model is wrapped in DistributedDataParallel, and only rank 0 prints and
touches the run folder (``on_rank0`` hands its answer, or its error, to every process: nodes need no shared disk).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from .config import TrainConfig
from .device import configure, cpu_cores, local_processes, memory_format, pick_device, resolve_amp

__all__ = ["Runtime", "start_runtime", "log", "on_rank0", "wrap", "gather_indices"]


@dataclass
class Runtime:
    """This process's place in a run: device, rank among ``world_size`` processes, precision, memory format."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    owns_group: bool = False  # we called init_process_group, so we destroy it
    amp_dtype: torch.dtype | None = None
    fmt: torch.memory_format = torch.contiguous_format

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def sync_bn(self) -> bool:
        # torch's SyncBatchNorm runs on GPUs only: on CPU (gloo) each process normalises its own share.
        return self.world_size > 1 and self.device.type == "cuda"


def start_runtime(config: TrainConfig) -> Runtime:
    """Return the device, rank and precision of this process, joining the process group under torchrun."""
    device = pick_device(config.device)  # under torchrun: the GPU of LOCAL_RANK
    owns = False
    if dist.is_available() and not dist.is_initialized() and dist.is_torchelastic_launched():
        # torchrun sets RANK / WORLD_SIZE / MASTER_ADDR; init_process_group reads them itself (env://).
        # Naming the GPU binds NCCL's communicator to it at once (no guessing of the device by rank).
        if device.type == "cuda":
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
        owns = True
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    configure(device)  # current GPU, cudnn.benchmark (fixed crop size), TF32
    if device.type == "cpu" and world > 1:
        # K processes on one machine share its cores; more threads than cores slows every one of them.
        torch.set_num_threads(max(1, cpu_cores() // local_processes()))
    return Runtime(device, rank, world, owns, resolve_amp(device, config.amp),
                   memory_format(device, config.channels_last))


def log(rt: Runtime, message: str) -> None:
    """Print a line on rank 0, above the progress bar, at once (a log file sees it when it happens)."""
    if rt.main:
        tqdm.write(message)
        sys.stdout.flush()


def on_rank0(rt: Runtime, work: Callable[[], Any]) -> Any:
    """Return what ``work()`` returns on rank 0, handed to every process (or raise its error everywhere): rank 0
    alone touches the run folder, and nodes need not share a filesystem."""
    answer: tuple[str, Any] = ("ok", None)
    if rt.main:
        try:
            answer = ("ok", work())
        except (ValueError, OSError) as err:  # FileExistsError, OutputError, CheckpointError among them
            answer = ("error", err)
    if rt.world_size > 1:
        box = [answer]
        dist.broadcast_object_list(box, src=0)
        answer = box[0]
    if answer[0] == "error":
        raise answer[1]
    return answer[1]


def wrap(model: nn.Module, rt: Runtime) -> tuple[nn.Module, nn.Module]:
    """Return (model on the device, the network to call): DistributedDataParallel over several processes."""
    if rt.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif rt.world_size > 1:
        log(rt, "CPU processes: plain BatchNorm per process (SyncBatchNorm needs GPUs)")
    model = model.to(rt.device, memory_format=rt.fmt)
    if rt.world_size == 1:
        return model, model
    net = nn.parallel.DistributedDataParallel(
        model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
        broadcast_buffers=not rt.sync_bn,  # SyncBatchNorm already keeps the statistics equal everywhere
        gradient_as_bucket_view=True)  # gradients live in DDP's buckets: one copy fewer per step
    return model, net


def all_gather(rt: Runtime, mine: Any) -> list[Any]:
    """Return every process's ``mine`` (a picklable object), in rank order."""
    if rt.world_size == 1:
        return [mine]
    everyone: list[Any] = [None] * rt.world_size
    dist.all_gather_object(everyone, mine)
    return everyone


def gather_indices(indices: torch.Tensor, rt: Runtime) -> list[list[int]]:
    """Return the frame indices of every process's share of a batch, one list per process."""
    return all_gather(rt, [int(i) for i in indices])
