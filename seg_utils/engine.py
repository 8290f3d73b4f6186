"""Training and validation: the iteration-based recipe of mmsegmentation, on one CPU, one GPU or many.

``train_step`` is one optimisation step (forward under autocast, loss with the aux term, backward, step);
``train(config)`` runs the whole loop around it and returns the history (loss and lr per iteration, val mIoU
every ``val_every``); ``validate(model, loader, device)`` scores a model with one confusion matrix over a split.

The recipe (mmsegmentation's ``deeplabv3_r50-d8_512x1024_80k_cityscapes``, its ``schedule_80k``): SGD with
momentum 0.9 and weight decay 5e-4, lr 0.01, poly decay (power 0.9) to a floor of 1e-4 from iteration 0 with
no warm-up, cross-entropy with ignore index 255 plus 0.4 x the auxiliary head's loss, random scale 0.5-2.0 /
crop (``cat_max_ratio`` 0.75) / flip / photometric jitter, SyncBatchNorm over all GPUs, batch 8 for 80k
iterations. Three options serve runs from random weights on a CPU (the demo profile; measured in the README):
a linear warm-up (``warmup_iters``: the first steps are otherwise large enough to blow up), AdamW
(``optimizer``) and square-root inverse-frequency class weights in the loss (``class_weights``).
Two differences from the recipe remain and are documented in the README: mmsegmentation averages the loss
over all pixels of the crop (void ones count as zero), here over the labelled ones, as
``nn.CrossEntropyLoss(ignore_index=255)`` does; and its model is not torchvision's (ResNetV1c deep stem,
512-channel ASPP).

Resuming is exact. Which frames make up the batch of iteration ``i`` and how each is augmented depend only
on ``(seed, i)`` (see :class:`IterationSampler`), never on how many iterations this process has run, and
``last.pt`` holds every random-number state, so a run stopped and resumed on CPU computes the very same
losses as one that never stopped. Checkpoints are written atomically: a crash while saving leaves the
previous file as it was.

Under ``torchrun --nproc_per_node K`` every process takes ``batch_size / K`` of each global batch (the
same frames a single process would use), BatchNorm becomes SyncBatchNorm, gradients are averaged by
DistributedDataParallel, validation frames are sharded and the confusion matrices summed; only rank 0
prints and writes files.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .checkpoint import (
    CHECKPOINT_FORMAT,
    atomic_write,
    link_or_copy,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from .data import CityscapesDataset, DatasetError, check_headers
from .device import (
    autocast,
    configure,
    cpu_cores,
    default_num_workers,
    grad_scaler,
    local_processes,
    memory_format,
    pick_device,
    resolve_amp,
    to_device,
)
from .labels import IGNORE_INDEX, num_classes
from .outputs import OutputError, bar_disabled, is_input, output_folder
from .transforms import EvalTransform, TrainTransform

__all__ = [
    "TrainConfig",
    "TrainingDiverged",
    "IterationSampler",
    "WarmupPolyLR",
    "train",
    "validate",
    "compute_loss",
    "train_step",
    "make_loaders",
    "load_checkpoint",
    "train_from_args",
    "CHECKPOINT_FORMAT",
]

LAST, BEST, HISTORY = "last.pt", "best.pt", "history.json"
RUN_FILES = (LAST, BEST, HISTORY)  # a folder holding any of them holds a run
# Losses stay on the device and are brought to the host (one sync) this often, and before every checkpoint.
LOG_EVERY = 10


OPTIMIZERS = ("sgd", "adamw")
CLASS_WEIGHTS = (None, "sqrt_inv_freq")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the iteration. Checkpoints already on disk are
    left as they were (the last good one is ``last.pt``)."""


# ----------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class TrainConfig:
    """Everything a training run depends on. ``from_profile`` fills the sizes from a Profile."""

    data_root: str | Path | None = None
    out_dir: str | Path = "runs/train"
    iters: int = 80_000
    crop_size: tuple[int, int] = (512, 1024)
    batch_size: int = 8  # total over all processes
    optimizer: str = "sgd"  # sgd (the recipe) | adamw (the demo profile: from random weights in minutes)
    lr: float = 0.01
    momentum: float = 0.9  # sgd only
    weight_decay: float = 5e-4
    power: float = 0.9
    min_lr: float = 1e-4
    warmup_iters: int = 0  # schedule_80k has none; runs from random weights want some (demo profile)
    warmup_ratio: float = 0.1  # the warm-up starts at lr x warmup_ratio
    aux_weight: float = 0.4  # 0: the model is built without the aux head
    class_weights: str | None = None  # None (the recipe) | "sqrt_inv_freq": loss weight 1/sqrt(pixel share)
    val_every: int = 4_000  # also how often last.pt is written; 0 = only at the end
    val_frames: int | None = None  # score only the first N val frames (None = all)
    output_stride: int = 8
    weights: str | None = "imagenet"  # imagenet | coco | none | a checkpoint path
    amp: bool | None = None  # None: on with CUDA (bf16 where supported, else fp16 + GradScaler)
    channels_last: bool | None = None  # None: on with CUDA (see benchmarks/bench_train.py for CPU)
    num_workers: int | None = None  # per process; None: default_num_workers() (from cores and processes)
    scale_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float | None = 0.75  # mmseg's crop rule: redraw crops one class dominates (None: off)
    seed: int = 0
    resume: bool = False
    overwrite: bool = False  # a fresh start may replace the checkpoints already in out_dir
    stop_at: int | None = None  # stop after this iteration (schedule still for `iters`); resume later
    label_mode: str = "trainId"
    device: str | None = None  # None: this process's GPU (LOCAL_RANK) when available, else cpu

    def __post_init__(self) -> None:
        self.crop_size = tuple(int(v) for v in self.crop_size)
        self.scale_range = tuple(float(v) for v in self.scale_range)
        for name in ("lr", "momentum", "weight_decay", "power", "min_lr", "warmup_ratio", "aux_weight"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
        if self.class_weights == "none":  # the command line's word for None
            self.class_weights = None
        if self.class_weights not in CLASS_WEIGHTS:
            raise ValueError(f"class_weights must be None or {CLASS_WEIGHTS[1]!r}, got {self.class_weights!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0 (the recipe: 0.01), got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1) (the recipe: 0.9), got {self.momentum}")
        if self.weight_decay < 0 or self.power <= 0:
            raise ValueError(f"weight_decay must be >= 0 and power > 0, got {self.weight_decay} and {self.power}")
        if not 0 < self.warmup_ratio <= 1:
            raise ValueError(f"warmup_ratio must be in (0, 1], got {self.warmup_ratio}")
        low, high = self.scale_range if len(self.scale_range) == 2 else (0.0, 0.0)
        if not (math.isfinite(high) and 0 < low <= high):
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {self.scale_range}")
        if self.iters < 1:
            raise ValueError(f"iters must be >= 1, got {self.iters}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if len(self.crop_size) != 2 or min(self.crop_size) < 1:
            raise ValueError(f"crop_size must be (height, width) > 0, got {self.crop_size}")
        if not 0 <= self.warmup_iters < self.iters:
            raise ValueError(f"warmup_iters must be in 0..iters-1 ({self.iters - 1}), got {self.warmup_iters}")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"min_lr must be in 0..lr ({self.lr}), got {self.min_lr}")
        if self.stop_at is not None and not 1 <= self.stop_at <= self.iters:
            raise ValueError(f"stop_at must be in 1..iters ({self.iters}), got {self.stop_at}")
        if self.cat_max_ratio is not None and not 0 < self.cat_max_ratio <= 1:  # also refuses NaN
            raise ValueError(f"cat_max_ratio must be in (0, 1] or None, got {self.cat_max_ratio}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0 or None, got {self.num_workers}")
        if self.aux_weight < 0:
            raise ValueError(f"aux_weight must be >= 0, got {self.aux_weight}")

    @classmethod
    def from_profile(cls, profile: Any = None, **overrides: Any) -> TrainConfig:
        """Return a config with the training sizes of ``profile`` (a Profile, its name, or None = the
        current one: ``SEG_PROFILE``), then ``overrides`` (None values are skipped)."""
        from .profile import get_profile

        if profile is None or isinstance(profile, str):
            profile = get_profile(profile)
        values = {**cls().to_dict(), **profile.train}  # the recipe's defaults, then the profile's sizes
        values.update({k: v for k, v in overrides.items() if v is not None})
        if overrides.get("warmup_iters") is None:
            # a shorter run than the profile's keeps its warm-up only if it fits: at most a tenth of the run
            values["warmup_iters"] = min(values["warmup_iters"], values["iters"] // 10)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Return the config as plain JSON types (paths as str, tuples as lists)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) \
                else value
        return out


# ----------------------------------------------------------------------------------------------------
# Learning rate


class WarmupPolyLR:
    """lr factor of iteration ``i``: mmsegmentation's poly decay to ``min_lr`` times a linear warm-up.

    ``lr_i = ((lr - min_lr) * (1 - i / iters) ** power + min_lr) * w_i``, ``w_i`` rising linearly from
    ``warmup_ratio`` to 1 over ``warmup_iters``. Used with ``torch.optim.lr_scheduler.LambdaLR``: torch's
    ``PolynomialLR`` has no floor (it decays to 0), and ``SequentialLR(LinearLR, PolynomialLR)`` would start
    the poly curve only after the warm-up, whereas mmsegmentation's poly counts from iteration 0. One closed
    form keeps the scheduler's state to an integer (``last_epoch``), which makes resuming trivial.
    """

    def __init__(self, iters: int, lr: float, min_lr: float = 1e-4, power: float = 0.9, warmup_iters: int = 0,
                 warmup_ratio: float = 0.1) -> None:
        self.iters, self.lr, self.min_lr, self.power = iters, lr, min_lr, power
        self.warmup_iters, self.warmup_ratio = warmup_iters, warmup_ratio

    def __call__(self, i: int) -> float:
        if self.lr <= 0:
            return 0.0
        progress = min(i, self.iters) / self.iters
        lr = (self.lr - self.min_lr) * (1 - progress) ** self.power + self.min_lr
        if i < self.warmup_iters:
            lr *= self.warmup_ratio + (1 - self.warmup_ratio) * i / self.warmup_iters
        return lr / self.lr


def make_optimizer(model: nn.Module, config: TrainConfig
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Return (optimizer, LambdaLR): the recipe's SGD with momentum, or AdamW (``config.optimizer``), both with
    the warm-up + poly schedule; step the scheduler once per iteration.

    AdamW is the demo profile's choice for a start from random weights: its per-weight step sizes get a
    network with no pretrained features to recognisable masks in a few hundred iterations (see the options
    table in the README), where SGD needs thousands. The published recipe, from ImageNet weights, is SGD.

    On a CPU or a CUDA GPU both use torch's fused kernels: the same update in one pass over the 42 M weights,
    where the default loops over the weight tensors with several operations each (``bench_train.py`` measures
    the step).
    """
    params = list(model.parameters())
    fused = True if all(p.device.type in ("cpu", "cuda") for p in params) else None
    if config.optimizer == "adamw":
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    else:
        optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay, fused=fused)
    factor = WarmupPolyLR(config.iters, config.lr, config.min_lr, config.power, config.warmup_iters,
                          config.warmup_ratio)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ----------------------------------------------------------------------------------------------------
# Data: the batch of iteration i depends only on (seed, i)


class IterationSampler(torch.utils.data.Sampler):
    """An endless batch sampler: batch ``i`` holds global slots ``i*B .. i*B+B-1`` of a stream of epochs.

    Epoch ``e`` is the permutation of the frames drawn from ``(seed, e)``; slot ``p`` is frame
    ``perm_{p // n}[p % n]``. Each process yields its share of every batch (slots ``rank*b .. rank*b+b-1``
    of the ``B = b * world_size`` global ones), so K processes together see exactly the frames one process
    would. Every item is ``(frame index, augmentation key)`` where the key ``(seed, i, slot)`` seeds the
    augmentation of that one crop. Starting at ``start`` needs no replay: a resumed run picks up the stream
    where it stopped. (It plays the role of DistributedSampler + ``set_epoch``, which would lose the position
    inside an epoch on resume.)
    """

    def __init__(self, num_frames: int, batch_size: int, seed: int = 0, start: int = 0, rank: int = 0,
                 world_size: int = 1, stop: int | None = None) -> None:
        if num_frames < 1:
            raise ValueError("IterationSampler needs at least one frame")
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} is not divisible by the {world_size} processes")
        self.num_frames, self.batch_size, self.seed = num_frames, batch_size, seed
        self.start, self.stop, self.rank, self.world_size = start, stop, rank, world_size
        self._epoch, self._perm = -1, np.empty(0, np.int64)

    def _frame(self, slot: int) -> int:
        epoch, pos = divmod(slot, self.num_frames)
        if epoch != self._epoch:
            self._epoch = epoch
            self._perm = np.random.default_rng([self.seed, 0, epoch]).permutation(self.num_frames)
        return int(self._perm[pos])

    def batch(self, iteration: int) -> list[tuple[int, tuple[int, int, int]]]:
        """Return this process's items of the batch of ``iteration``: (frame index, augmentation key)."""
        local = self.batch_size // self.world_size
        first = iteration * self.batch_size + self.rank * local
        return [(self._frame(slot), (self.seed, iteration, slot)) for slot in range(first, first + local)]

    def __iter__(self) -> Iterator[list[tuple[int, tuple[int, int, int]]]]:
        iteration = self.start
        while self.stop is None or iteration < self.stop:
            yield self.batch(iteration)
            iteration += 1

    def __len__(self) -> int:
        if self.stop is None:
            raise TypeError("IterationSampler is endless")
        return max(self.stop - self.start, 0)


class SeededCrops(torch.utils.data.Dataset):
    """Training crops of a CityscapesDataset, indexed by ``(frame index, augmentation key)``.

    Each item gets its own ``TrainTransform`` drawing from ``numpy.random.default_rng(key)``: the crop
    depends on the key only, not on the worker process or on what was drawn before. Items are uint8
    (image (3, H, W), labels (H, W)): ``device.to_device`` normalises and widens them after the copy.
    """

    def __init__(self, dataset: CityscapesDataset, crop_size: tuple[int, int],
                 scale_range: tuple[float, float] = (0.5, 2.0), cat_max_ratio: float | None = None) -> None:
        self.dataset, self.crop_size, self.scale_range = dataset, tuple(crop_size), tuple(scale_range)
        self.cat_max_ratio = cat_max_ratio

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor, int]:
        index, key = item
        image, target = self.dataset.load(index)
        transform = TrainTransform(self.crop_size, self.scale_range, rng=np.random.default_rng(list(key)),
                                   cat_max_ratio=self.cat_max_ratio, normalized=False)
        image, target = transform(image, target)
        return image, target, index


class _Shard(torch.utils.data.Sampler):
    """Frames rank, rank + world, ...: each val frame scored by exactly one process (no padding)."""

    def __init__(self, n: int, rank: int, world_size: int) -> None:
        self.indices = list(range(rank, n, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _generator(seed: int) -> torch.Generator:
    # DataLoader draws its worker base seed from this instead of torch's global RNG, so creating a loader
    # never shifts the global stream (which dropout uses): a resumed run stays on the same numbers.
    return torch.Generator().manual_seed(seed)


def make_loaders(config: TrainConfig, start: int = 0, rank: int = 0, world_size: int = 1,
                 device: torch.device | None = None
                 ) -> tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader | None]:
    """Return (endless train loader starting at iteration ``start``, val loader or None) for one process.

    Both send uint8 images and labels (see ``device.to_device``): a batch of 8 crops of 512x1024 is 17 MB
    instead of 84 MB of float32 and int64, which keeps workers within a container's small ``/dev/shm``.
    Every frame's files are looked at first (headers and sizes: ``data.check_headers``), so a broken file
    stops the run before its first iteration.
    """
    from .profile import dataset_root

    root = dataset_root(config.data_root)
    cuda = device is not None and device.type == "cuda"
    train_set = CityscapesDataset(root, "train", label_mode=config.label_mode)
    check_headers(train_set.samples)
    sampler = IterationSampler(len(train_set), config.batch_size, config.seed, start, rank, world_size)
    workers = config.num_workers if config.num_workers is not None else default_num_workers()
    train_loader = torch.utils.data.DataLoader(
        SeededCrops(train_set, config.crop_size, config.scale_range, config.cat_max_ratio), batch_sampler=sampler,
        num_workers=workers, pin_memory=cuda, persistent_workers=workers > 0, generator=_generator(config.seed),
        prefetch_factor=4 if workers > 0 else None)
    try:
        val_set = CityscapesDataset(root, "val", label_mode=config.label_mode,
                                    transforms=EvalTransform(normalized=False))
    except DatasetError as err:
        warnings.warn(f"training without validation: {err}", stacklevel=2)
        return train_loader, None
    frames = range(min(config.val_frames, len(val_set))) if config.val_frames is not None else range(len(val_set))
    check_headers([val_set.samples[i] for i in frames])  # a corrupt val file found now, not at the first validation
    if config.val_frames is not None:
        val_set = torch.utils.data.Subset(val_set, frames)
    val_workers = min(workers, 2)  # full frames, batch 1: two workers keep ahead of the model
    val_loader = torch.utils.data.DataLoader(
        val_set, batch_size=1, sampler=_Shard(len(val_set), rank, world_size), num_workers=val_workers,
        pin_memory=cuda, persistent_workers=val_workers > 0, generator=_generator(config.seed))
    return train_loader, val_loader


# ----------------------------------------------------------------------------------------------------
# Processes: device, rank, precision


@dataclass
class _Runtime:
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


def _start_runtime(config: TrainConfig) -> _Runtime:
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
    return _Runtime(device, rank, world, owns, resolve_amp(device, config.amp),
                    memory_format(device, config.channels_last))


def _log(rt: _Runtime, message: str) -> None:
    """Print a line on rank 0, above the progress bar, at once (a log file sees it when it happens)."""
    if rt.main:
        from tqdm.auto import tqdm

        tqdm.write(message)
        sys.stdout.flush()


# ----------------------------------------------------------------------------------------------------
# One step, the loss, validation


def class_pixel_counts(dataset: CityscapesDataset, num_classes: int = 19) -> np.ndarray:
    """Return the labelled pixels of each class over every frame of ``dataset`` (void excluded)."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for i in range(len(dataset)):
        target = dataset.load_target(i)
        counts += np.bincount(target[target < num_classes], minlength=num_classes)
    return counts


def sqrt_inv_freq_weights(counts: np.ndarray) -> torch.Tensor:
    """Return loss weights ``1 / sqrt(share)`` per class, scaled so that the median present class has 1.

    The square root is the mild form of inverse-frequency weighting: a class 100 times rarer than road
    weighs 10 times more, not 100 (which would make a few pixels of a rare class dominate the loss). Only
    the ratios matter: the weighted cross-entropy divides by the weights of the pixels it averages. A
    class absent from the training labels gets weight 1 (it never occurs as a target).
    """
    share = counts / max(counts.sum(), 1)
    weights = np.ones(len(counts))
    present = share > 0
    weights[present] = 1 / np.sqrt(share[present])
    weights[present] /= np.median(weights[present])
    return torch.tensor(weights, dtype=torch.float32)


def make_criterion(config: TrainConfig, train_set: CityscapesDataset | None = None,
                   device: str | torch.device = "cpu") -> nn.CrossEntropyLoss:
    """Return the loss of a run: cross-entropy ignoring void (255), weighted per class when
    ``config.class_weights`` says so (the weights come from the pixel shares of ``train_set``)."""
    weight = None
    if config.class_weights == "sqrt_inv_freq":
        if train_set is None:
            raise ValueError("class_weights='sqrt_inv_freq' needs the train set to count its pixels")
        counts = class_pixel_counts(train_set, num_classes(config.label_mode))
        weight = sqrt_inv_freq_weights(counts).to(device)
    return nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX, weight=weight)


def compute_loss(outputs: dict[str, torch.Tensor], target: torch.Tensor, criterion: nn.Module,
                 aux_weight: float = 0.4) -> torch.Tensor:
    """Return the training loss: CE of "out" plus ``aux_weight`` x CE of "aux" (when the model has it).

    A batch whose pixels are all ignored (a crop inside the ego-vehicle strip, say) has no mean: its loss is
    0 with zero gradients instead of NaN, so it neither stops training nor moves the weights.
    """
    loss = criterion(outputs["out"].float(), target)
    if "aux" in outputs and aux_weight:
        loss = loss + aux_weight * criterion(outputs["aux"].float(), target)
    ignore = getattr(criterion, "ignore_index", IGNORE_INDEX)
    return torch.where((target != ignore).any(), loss, torch.zeros_like(loss))


def train_step(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, criterion: nn.Module, aux_weight: float = 0.4,
               amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Run one optimisation step on a batch already on the model's device; return the loss (detached, still on
    the device: reading it with ``float()`` would wait for the GPU, so the caller does that only now and then)."""
    with autocast(images.device, amp_dtype):  # convolutions in bf16 / fp16 on a GPU, float32 without amp
        outputs = model(images)
    loss = compute_loss(outputs, targets, criterion, aux_weight)  # in float32: CE + aux_weight x aux CE
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()  # fp16: the loss is scaled up so small gradients do not underflow
    scaler.step(optimizer)  # unscales first; skips the step if a gradient overflowed
    scaler.update()
    return loss.detach()


@contextmanager
def _without_aux(model: nn.Module) -> Iterator[None]:
    """Run a DeepLabV3 without its auxiliary head (an extra head and a full-size upsample nobody scores)."""
    aux = getattr(model, "aux_classifier", None)
    if aux is not None:
        model.aux_classifier = None
    try:
        yield
    finally:
        if aux is not None:
            model.aux_classifier = aux


@torch.no_grad()
def validate(model: nn.Module, loader: torch.utils.data.DataLoader, device: str | torch.device,
             num_classes: int = 19, amp: bool | None = None, channels_last: bool = False,
             progress: bool | None = False) -> dict[str, Any]:
    """Return the metrics dict of ``ConfusionMatrix.compute()`` (``miou``, ``iou``, ``pixel_acc`` ...) of
    ``model`` on ``loader``'s (image, target) batches, summed over all processes under torch.distributed.

    Images may be normalised float or uint8 (normalised on the device). Logits are upsampled to the label's
    size before the argmax, so labels stay at native resolution (batch 1 of full frames). ``amp`` None: the
    device's default precision (``device.autocast_dtype``). The aux head is skipped; the model's train/eval
    mode is restored afterwards.
    """
    from tqdm.auto import tqdm

    from .metrics import ConfusionMatrix

    device = torch.device(device)
    net = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    was_training = net.training
    net.eval()
    dtype = resolve_amp(device, amp)
    fmt = memory_format(device, channels_last)
    matrix = ConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX, device=device)
    main = not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
    try:
        with _without_aux(net):
            for batch in tqdm(loader, desc="validate", leave=False, disable=bar_disabled(progress, main)):
                image, target = to_device(batch[0], batch[1], device, fmt)
                with autocast(device, dtype):
                    logits = net(image)["out"]
                if logits.shape[-2:] != target.shape[-2:]:
                    logits = F.interpolate(logits.float(), size=target.shape[-2:], mode="bilinear",
                                           align_corners=False)
                matrix.update(logits.argmax(1), target)
    finally:
        net.train(was_training)
    return matrix.reduce().compute()


# ----------------------------------------------------------------------------------------------------
# Random-number state, for an exact resume


def _rng_state() -> dict[str, Any]:
    """Return every random-number state as tensors and plain lists (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


# ----------------------------------------------------------------------------------------------------
# The loop, in named pieces


def _empty_history() -> dict[str, Any]:
    return {"iter": [], "loss": [], "lr": [], "val_iter": [], "val_miou": [], "val_pixel_acc": []}


def _on_rank0(rt: _Runtime, work: Any) -> Any:
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


def _open_run(config: TrainConfig, rt: _Runtime) -> dict[str, Any] | None:
    """Return the state to resume from (None: a fresh start), after checking the run folder (on rank 0)."""
    return _on_rank0(rt, lambda: _read_run_folder(config, rt))


def _read_run_folder(config: TrainConfig, rt: _Runtime) -> dict[str, Any] | None:
    """Check the run folder and return the state of its ``last.pt`` on a resume. Nothing is created or removed
    here: the folder is made, and an old run cleared (``overwrite``), once the data and the model are ready
    (``_prepare_run_folder``)."""
    out_dir = output_folder(config.out_dir, data_root=config.data_root, option="--out (out_dir)", create=False)
    last_path = out_dir / LAST
    found = [name for name in RUN_FILES if (out_dir / name).is_file()]
    if not config.resume:
        if found and not config.overwrite:
            raise FileExistsError(
                f"{out_dir} holds a run ({', '.join(found)}): pass resume=True (--resume) to continue it, or "
                f"overwrite=True (--overwrite) to start again and replace it")
        weights = Path(str(config.weights))
        if found and weights.is_file() and is_input(weights, [out_dir / name for name in found]):
            raise OutputError(f"{weights}: --weights is a file of the run in {out_dir} that --overwrite would "
                              f"remove; copy it elsewhere first, or choose another --out")
        return None
    if not last_path.is_file():
        if found:
            raise FileExistsError(
                f"{out_dir} holds {', '.join(found)} but no {LAST} to resume from: pass overwrite=True "
                f"(--overwrite) instead of resume to start again and replace them, or choose another out_dir")
        _log(rt, f"no {last_path} to resume from: starting from iteration 0")
        return None
    state = load_checkpoint(last_path)
    if int(state["config"]["iters"]) != config.iters:
        raise ValueError(f"{last_path} was written by a run of {state['config']['iters']} iterations "
                         f"(the lr schedule depends on it); resume with iters={state['config']['iters']}")
    saved = state["config"].get("optimizer", "sgd")  # checkpoints older than the option were all SGD
    if saved != config.optimizer:
        raise ValueError(f"{last_path} was written by a run with optimizer {saved} (its state is in the file); "
                         f"resume with optimizer={saved} (--optimizer {saved}), not {config.optimizer}")
    return state


def _prepare_run_folder(config: TrainConfig, rt: _Runtime, fresh: bool) -> None:
    """Create ``out_dir`` and remove what a killed save left in it; on a fresh start (``overwrite``), remove the
    files of the earlier run it holds. On rank 0; its error reaches every process."""

    def prepare() -> None:
        out_dir = output_folder(config.out_dir, data_root=config.data_root, option="--out (out_dir)")
        for path in remove_stale_temporaries(out_dir, RUN_FILES):
            _log(rt, f"removed {path.name}: left by a save that did not finish")
        for name in RUN_FILES if fresh else ():
            (out_dir / name).unlink(missing_ok=True)

    _on_rank0(rt, prepare)


def _model_for(config: TrainConfig, rt: _Runtime, model: nn.Module | None,
               resume_state: dict[str, Any] | None) -> tuple[nn.Module, str]:
    """Return the model to train (built from ``config.weights``, or the one given; the checkpoint's weights
    on a resume) and a description of where its weights come from."""
    from .model import WeightsUnavailableError, build_model, load_weights

    # Same initial weights on every process (DDP broadcasts rank 0's anyway); different dropout streams after.
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    random.seed(config.seed)
    note = "given model"
    if model is None:
        k = num_classes(config.label_mode)
        # A resume overwrites every weight: no need to fetch pretrained ones.
        weights = None if resume_state is not None else config.weights
        try:
            model = build_model(k, weights=weights, aux_loss=config.aux_weight > 0, output_stride=config.output_stride)
            note = "none" if weights is None else str(weights)
        except WeightsUnavailableError as err:
            _log(rt, f"{err}\n-> training from random initialisation instead")
            model = build_model(k, weights=None, aux_loss=config.aux_weight > 0, output_stride=config.output_stride)
            note = f"none ({weights} unavailable)"
    elif not config.aux_weight:
        model.aux_classifier = None  # an unused head would leave DDP waiting for its gradients
    if resume_state is not None:
        load_weights(model, resume_state["model"], Path(config.out_dir) / LAST)
    torch.manual_seed(config.seed + rt.rank)
    return model, note


def _wrap(model: nn.Module, rt: _Runtime) -> tuple[nn.Module, nn.Module]:
    """Return (model on the device, the network to call): DistributedDataParallel over several processes."""
    if rt.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif rt.world_size > 1:
        _log(rt, "CPU processes: plain BatchNorm per process (SyncBatchNorm needs GPUs)")
    model = model.to(rt.device, memory_format=rt.fmt)
    if rt.world_size == 1:
        return model, model
    net = nn.parallel.DistributedDataParallel(
        model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
        broadcast_buffers=not rt.sync_bn,  # SyncBatchNorm already keeps the statistics equal everywhere
        gradient_as_bucket_view=True)  # gradients live in DDP's buckets: one copy fewer per step
    return model, net


@dataclass
class _Progress:
    """What the loop carries between iterations: the history, losses not yet read, the best score so far."""

    history: dict[str, Any]
    best_miou: float = -1.0
    saved: int | None = None  # iteration of the last.pt this run can vouch for
    pending: list[tuple[int, float, torch.Tensor]] = dataclasses.field(default_factory=list)
    tick: float = dataclasses.field(default_factory=time.perf_counter)
    rate: float | None = None


def _read_losses(progress: _Progress, rt: _Runtime, config: TrainConfig) -> float:
    """Move the pending losses to the history with one device sync (and one all-reduce); return the last one.

    Raises TrainingDiverged at the first NaN or infinite loss among them; the last good checkpoint is kept.
    """
    iterations, lrs, losses = zip(*progress.pending)
    progress.pending.clear()
    values = torch.stack(losses).float()
    if rt.world_size > 1:
        dist.all_reduce(values)  # every process sees the same means, so all stop together
        values /= rt.world_size
    values = values.tolist()
    for iteration, lr, value in zip(iterations, lrs, values):
        if not math.isfinite(value):
            out_dir = Path(config.out_dir)
            kept = f"{out_dir / LAST} (iteration {progress.saved})" if progress.saved is not None else \
                "none written yet"
            if rt.main:
                _write_history(out_dir, progress.history)
            raise TrainingDiverged(
                f"loss is {value} at iteration {iteration} (lr {lr:.3g}): training diverged; last good "
                f"checkpoint kept untouched: {kept}. Lower the lr or lengthen the warm-up.")
        progress.history["iter"].append(iteration)
        progress.history["loss"].append(value)
        progress.history["lr"].append(lr)
    now = time.perf_counter()
    speed = len(values) * config.batch_size / max(now - progress.tick, 1e-9)
    progress.rate = speed if progress.rate is None else 0.7 * progress.rate + 0.3 * speed
    progress.tick = now
    return values[-1]


def _save(iteration: int, improved: bool, progress: _Progress, rt: _Runtime, config: TrainConfig,
          model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: torch.amp.GradScaler) -> None:
    """Write last.pt (and best.pt when ``improved``) and history.json on rank 0; every process's RNG state."""
    rngs = [_rng_state()]
    if rt.world_size > 1:
        rngs = [None] * rt.world_size
        dist.all_gather_object(rngs, _rng_state())
    if rt.main:
        out_dir = Path(config.out_dir)
        state = {
            "format": CHECKPOINT_FORMAT,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "iteration": iteration,
            "rng": [{**r, "torch": r["torch"].cpu()} for r in rngs],
            "config": config.to_dict(),
            "history": progress.history,
            "best_miou": progress.best_miou,
        }
        save_checkpoint(out_dir / LAST, state)
        if improved:
            link_or_copy(out_dir / LAST, out_dir / BEST)
        _write_history(out_dir, progress.history)
    progress.saved = iteration
    if rt.world_size > 1:
        dist.barrier()  # no process runs ahead (or exits) while rank 0 is still writing


def _save_before_raising(iteration: int, what: str, progress: _Progress, rt: _Runtime, config: TrainConfig,
                         model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                         scaler: torch.amp.GradScaler) -> None:
    """On an error between steps (a frame that fails to load, a failed validation), write last.pt at the last
    finished ``iteration`` so the error does not cost the training since the last checkpoint. One process only
    (several would wait for each other in collectives); the caller re-raises its error, which a failed save
    here does not hide."""
    if rt.world_size > 1 or iteration <= (progress.saved or 0):
        return
    try:
        if progress.pending:
            _read_losses(progress, rt, config)
        _save(iteration, False, progress, rt, config, model, optimizer, scheduler, scaler)
        _log(rt, f"{what}: {Path(config.out_dir) / LAST} holds iteration {iteration}; fix it and resume")
    except Exception as err:  # TrainingDiverged, a full disk: the last good checkpoint stays as it was
        _log(rt, f"{what}, and last.pt was not updated ({err})")


def _validate_into(iteration: int, progress: _Progress, net: nn.Module, val_loader: Any, rt: _Runtime,
                   config: TrainConfig, show: bool | None) -> bool:
    """Score the val split, record it in the history; return whether the best mIoU improved."""
    metrics = validate(net, val_loader, rt.device, num_classes(config.label_mode), amp=rt.amp_dtype is not None,
                       channels_last=rt.fmt == torch.channels_last, progress=show)
    miou = float(metrics["miou"])
    progress.history["val_iter"].append(iteration)
    progress.history["val_miou"].append(miou)
    progress.history["val_pixel_acc"].append(float(metrics["pixel_acc"]))
    improved = miou > progress.best_miou
    progress.best_miou = max(progress.best_miou, miou)
    _log(rt, f"iteration {iteration}/{config.iters}: val mIoU {100 * miou:.2f}% "
             f"(best {100 * progress.best_miou:.2f}%), pixel acc {100 * metrics['pixel_acc']:.2f}%")
    return improved


def train(config: TrainConfig | None = None, *, model: nn.Module | None = None, progress: bool | None = True,
          **overrides: Any) -> dict[str, Any]:
    """Return the training history after training DeepLabV3-ResNet50 as ``config`` says.

    History keys: ``iter``, ``loss``, ``lr`` (one entry per iteration), ``val_iter``, ``val_miou`` (fraction
    0..1), ``val_pixel_acc``, and ``weights``, ``world_size``, ``first_batch`` (the frame indices of this
    call's first batch, one list per process). Written to ``out_dir``: ``history.json``, ``last.pt`` (every
    ``val_every`` iterations and at the end) and ``best.pt`` (best val mIoU).

    ``config`` None: ``TrainConfig.from_profile(None, **overrides)``. ``model``: train this model instead of
    building one from ``config.weights`` (its weights are replaced by the checkpoint's on resume).
    ``config.resume``: continue from ``out_dir/last.pt`` (a fresh start when the folder holds no run). A fresh
    start in a folder that holds a run (``last.pt``, ``best.pt`` or ``history.json``) raises FileExistsError
    unless ``config.overwrite`` (then the old run's files are removed once the data and model are ready).
    ``out_dir`` may not be inside a dataset (``outputs.OutputError``). ``progress`` None: a bar on a terminal
    only.

    Raises TrainingDiverged when the loss is NaN or infinite (last.pt is then the last good state).
    """
    if config is None:
        config = TrainConfig.from_profile(None, **overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    rt = _start_runtime(config)
    try:
        return _train(config, rt, model, progress)
    finally:
        if rt.owns_group:
            dist.destroy_process_group()


def _train(config: TrainConfig, rt: _Runtime, model: nn.Module | None, show: bool | None) -> dict[str, Any]:
    from tqdm.auto import tqdm

    # Start or resume, each check before anything is changed: the run folder (and last.pt), the data (every
    # frame's headers), the model (its weights); only then is the folder made and an old run cleared (overwrite).
    resume_state = _open_run(config, rt)
    start = int(resume_state["iteration"]) if resume_state is not None else 0
    if start >= config.iters:
        _log(rt, f"{Path(config.out_dir) / LAST} is at iteration {start} of {config.iters}: the run is finished, "
                 f"nothing to train; {_best_text(resume_state['history'])}")
        return {**_empty_history(), **resume_state["history"]}
    train_loader, val_loader = make_loaders(config, start, rt.rank, rt.world_size, rt.device)
    model, weights_note = _model_for(config, rt, model, resume_state)
    _prepare_run_folder(config, rt, fresh=resume_state is None)
    model, net = _wrap(model, rt)
    optimizer, scheduler = make_optimizer(model, config)
    scaler = grad_scaler(rt.device, rt.amp_dtype)
    progress = _Progress(_empty_history())
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        if resume_state.get("scaler"):
            scaler.load_state_dict(resume_state["scaler"])
        progress.saved = start
        progress.history = {**_empty_history(), **resume_state["history"]}
        progress.best_miou = float(resume_state["best_miou"])
        rng = resume_state["rng"]
        _set_rng_state(rng[rt.rank] if rt.rank < len(rng) else rng[0])
        _log(rt, f"resumed from {os.path.relpath(Path(config.out_dir) / LAST)} at iteration {start}")
    del resume_state  # its tensors are in the model and optimizer now; free the copy

    stop = config.stop_at if config.stop_at is not None else config.iters
    criterion = make_criterion(config, train_loader.dataset.dataset, rt.device)
    progress.history.update(weights=progress.history.get("weights", weights_note), world_size=rt.world_size)

    net.train()
    # show None: a bar only on a terminal (tqdm's own rule), so a log redirected to a file holds no cursor codes
    bar = tqdm(total=stop, initial=start, desc="train", unit="it", dynamic_ncols=True,
               disable=bar_disabled(show, rt.main))
    batches = iter(train_loader)
    log_lines_every = LOG_EVERY * max(1, min(10, config.iters // (10 * LOG_EVERY)))  # no bar: 10 to 100 its a line
    logged = start
    try:
        for iteration in range(start + 1, stop + 1):
            # Step.
            try:
                images, targets, indices = next(batches)
            except Exception:  # a training frame that fails to load: keep the iterations done so far
                _save_before_raising(iteration - 1, "a training batch failed to load", progress, rt, config, model,
                                     optimizer, scheduler, scaler)
                raise
            if iteration == start + 1:
                progress.history["first_batch"] = _gather_indices(indices, rt)
            images, targets = to_device(images, targets, rt.device, rt.fmt)
            lr = optimizer.param_groups[0]["lr"]
            loss = train_step(net, images, targets, optimizer, scaler, criterion, config.aux_weight, rt.amp_dtype)
            scheduler.step()
            progress.pending.append((iteration, lr, loss))
            bar.update(1)

            # Log: the losses reach the host every LOG_EVERY iterations and before every checkpoint.
            at_end = iteration == stop
            checkpoint_now = bool(config.val_every and iteration % config.val_every == 0) or at_end
            if len(progress.pending) >= LOG_EVERY or checkpoint_now:
                value = _read_losses(progress, rt, config)
                bar.set_postfix(loss=f"{value:.3f}", lr=f"{lr:.2e}", img_s=f"{progress.rate:.1f}", refresh=False)
                if bar.disable and show is None and iteration // log_lines_every > logged // log_lines_every:
                    logged = iteration  # a log file: a line instead of the bar
                    _log(rt, f"iteration {iteration}/{stop}: loss {value:.3f}, lr {lr:.2e}, {progress.rate:.1f} img/s")

            # Validate and save: last.pt is written even when validation fails, so it never costs the training.
            if checkpoint_now:
                improved = False
                try:
                    if val_loader is not None:
                        improved = _validate_into(iteration, progress, net, val_loader, rt, config, show)
                except BaseException:
                    _save_before_raising(iteration, "validation failed", progress, rt, config, model, optimizer,
                                         scheduler, scaler)
                    raise
                _save(iteration, improved, progress, rt, config, model, optimizer, scheduler, scaler)
                progress.tick = time.perf_counter()  # validation time is not training speed
    finally:
        bar.close()
    if progress.history["val_miou"]:
        _log(rt, f"{_best_text(progress.history)}; checkpoints in {os.path.relpath(config.out_dir)}")
    return progress.history


def _best_text(history: dict[str, Any]) -> str:
    if not history.get("val_miou"):
        return "no validation score"
    best = int(np.argmax(history["val_miou"]))
    return f"best val mIoU {100 * history['val_miou'][best]:.2f}% at iteration {history['val_iter'][best]}"


def _gather_indices(indices: torch.Tensor, rt: _Runtime) -> list[list[int]]:
    mine = [int(i) for i in indices]
    if rt.world_size == 1:
        return [mine]
    everyone: list[Any] = [None] * rt.world_size
    dist.all_gather_object(everyone, mine)
    return everyone


def _write_history(out_dir: Path, history: dict[str, Any]) -> None:
    text = json.dumps(history, indent=1) + "\n"
    atomic_write(out_dir / HISTORY, lambda f: f.write(text.encode()))


# ----------------------------------------------------------------------------------------------------
# Command line


def train_from_args(args: Any) -> dict[str, Any]:
    """Return the history of a run configured by the ``train`` command's arguments (unset = the profile's)."""
    from .profile import dataset_root

    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    options["data_root"] = dataset_root(options.get("data_root"))
    return train(TrainConfig.from_profile(args.profile, **options), progress=None)
