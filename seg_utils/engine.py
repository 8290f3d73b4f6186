"""Training and validation: the iteration-based recipe of mmsegmentation, on one CPU, one GPU or many.

``train(config)`` runs the whole loop and returns the history (loss and lr per iteration, val mIoU every
``val_every``); ``validate(model, loader, device)`` scores a model with one confusion matrix over a split.

The recipe (mmsegmentation's DeepLabV3 R-50-D8 on Cityscapes): SGD with momentum 0.9 and weight decay
5e-4, lr 0.01, a linear warm-up, then poly decay (power 0.9) to a floor of 1e-4, cross-entropy with
ignore index 255 plus 0.4 x the auxiliary head's loss, random scale 0.5-2.0 / crop / flip / photometric
jitter, SyncBatchNorm over all GPUs.

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
import shutil
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .data import CityscapesDataset, DatasetError
from .labels import IGNORE_INDEX, num_classes
from .transforms import TrainTransform

__all__ = [
    "TrainConfig",
    "TrainingDiverged",
    "IterationSampler",
    "WarmupPolyLR",
    "train",
    "validate",
    "compute_loss",
    "load_checkpoint",
    "train_from_args",
    "CHECKPOINT_FORMAT",
]

CHECKPOINT_FORMAT = "seg_utils.engine/1"
LAST, BEST, HISTORY = "last.pt", "best.pt", "history.json"


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
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    power: float = 0.9
    min_lr: float = 1e-4
    warmup_iters: int = 1_000
    warmup_ratio: float = 0.1  # the warm-up starts at lr x warmup_ratio
    aux_weight: float = 0.4
    val_every: int = 4_000  # also how often last.pt is written; 0 = only at the end
    val_frames: int | None = None  # score only the first N val frames (None = all)
    output_stride: int = 8
    weights: str | None = "imagenet"  # imagenet | coco | none | a checkpoint path
    amp: bool | None = None  # None: on with CUDA (bf16 where supported, else fp16 + GradScaler)
    channels_last: bool | None = None  # None: on with CUDA (see benchmarks/bench_train.py for CPU)
    num_workers: int = 4
    scale_range: tuple[float, float] = (0.5, 2.0)
    seed: int = 0
    resume: bool = False
    overwrite: bool = False  # a fresh start may replace the checkpoints already in out_dir
    stop_at: int | None = None  # stop after this iteration (schedule still for `iters`); resume later
    label_mode: str = "trainId"
    device: str | None = None  # None: cuda (this process's GPU) when available, else cpu

    def __post_init__(self) -> None:
        self.crop_size = tuple(int(v) for v in self.crop_size)
        self.scale_range = tuple(float(v) for v in self.scale_range)
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

    @classmethod
    def from_profile(cls, profile: Any = None, **overrides: Any) -> TrainConfig:
        """Return a config with the training sizes of ``profile`` (a Profile, its name, or None = the
        current one: ``SEG_PROFILE``), then ``overrides`` (None values are skipped)."""
        from .profile import get_profile

        if profile is None or isinstance(profile, str):
            profile = get_profile(profile)
        values = {name: getattr(profile, name) for name in (
            "crop_size", "batch_size", "iters", "val_every", "warmup_iters", "lr", "output_stride", "weights",
            "num_workers")}
        values.update({k: v for k, v in overrides.items() if v is not None})
        if overrides.get("warmup_iters") is None and values["warmup_iters"] >= values["iters"]:
            # a short run with a long profile's warm-up (e.g. full's 1000 of 80k): warm up for a tenth of it
            values["warmup_iters"] = values["iters"] // 10
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


def make_optimizer(model: nn.Module, config: TrainConfig) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.LambdaLR]:
    """Return (SGD, LambdaLR) of the recipe; step the scheduler once per iteration."""
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
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
    depends on the key only, not on the worker process or on what was drawn before.
    """

    def __init__(self, dataset: CityscapesDataset, crop_size: tuple[int, int],
                 scale_range: tuple[float, float] = (0.5, 2.0)) -> None:
        self.dataset, self.crop_size, self.scale_range = dataset, tuple(crop_size), tuple(scale_range)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor, int]:
        index, key = item
        image, target = self.dataset.load_image(index), self.dataset.load_target(index)
        if image.shape[:2] != target.shape:
            sample = self.dataset.samples[index]
            raise DatasetError(f"{sample.label_path}: label is {target.shape[1]}x{target.shape[0]}, "
                               f"its image is {image.shape[1]}x{image.shape[0]} (expected equal sizes)")
        transform = TrainTransform(self.crop_size, self.scale_range, rng=np.random.default_rng(list(key)))
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
    """Return (endless train loader starting at iteration ``start``, val loader or None) for one process."""
    if config.data_root is None:
        raise ValueError("no dataset: set data_root (CITYSCAPES_DATASET, or a synthetic set from "
                         "`python -m seg_utils synth` / seg_utils.setup())")
    cuda = device is not None and device.type == "cuda"
    train_set = CityscapesDataset(config.data_root, "train", label_mode=config.label_mode)
    sampler = IterationSampler(len(train_set), config.batch_size, config.seed, start, rank, world_size)
    workers = config.num_workers
    train_loader = torch.utils.data.DataLoader(
        SeededCrops(train_set, config.crop_size, config.scale_range), batch_sampler=sampler, num_workers=workers,
        pin_memory=cuda, persistent_workers=workers > 0, generator=_generator(config.seed),
        prefetch_factor=4 if workers > 0 else None)
    try:
        val_set = CityscapesDataset(config.data_root, "val", label_mode=config.label_mode)
    except DatasetError as err:
        warnings.warn(f"training without validation: {err}", stacklevel=2)
        return train_loader, None
    if config.val_frames is not None:
        val_set = torch.utils.data.Subset(val_set, range(min(config.val_frames, len(val_set))))
    val_workers = min(workers, 2)
    val_loader = torch.utils.data.DataLoader(
        val_set, batch_size=1, sampler=_Shard(len(val_set), rank, world_size), num_workers=val_workers,
        pin_memory=cuda, persistent_workers=val_workers > 0, generator=_generator(config.seed))
    return train_loader, val_loader


# ----------------------------------------------------------------------------------------------------
# Devices, precision, processes


@dataclass
class _Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    owns_group: bool = False  # we called init_process_group, so we destroy it
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)


def _start_runtime(config: TrainConfig) -> _Runtime:
    """Return the device, rank and precision of this process, joining the process group under torchrun."""
    owns = False
    if dist.is_available() and not dist.is_initialized() and dist.is_torchelastic_launched():
        # torchrun sets RANK / WORLD_SIZE / MASTER_ADDR; init_process_group reads them itself (env://).
        backend = "nccl" if torch.cuda.is_available() and config.device in (None, "cuda") else "gloo"
        dist.init_process_group(backend)
        owns = True
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    if config.device is not None:
        device = torch.device(config.device)
    elif torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", rank)) if world > 1 else 0  # torchrun sets LOCAL_RANK
        device = torch.device("cuda", local % torch.cuda.device_count())
    else:
        device = torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick the fastest kernels once
    elif world > 1:
        # K processes on one machine share its cores; more threads than cores slows every one of them.
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(max(1, cores // world))

    amp = config.amp if config.amp is not None else device.type == "cuda"
    dtype = None
    if amp:
        if device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            dtype = torch.bfloat16  # CPU autocast knows bf16 only; fast only with AMX/AVX512-BF16
    channels_last = config.channels_last if config.channels_last is not None else device.type == "cuda"
    return _Runtime(device, rank, world, owns, dtype, channels_last)


def _log(rt: _Runtime, message: str) -> None:
    if rt.main:
        from tqdm.auto import tqdm

        tqdm.write(message)


# ----------------------------------------------------------------------------------------------------
# Loss and validation


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


@torch.no_grad()
def validate(model: nn.Module, loader: torch.utils.data.DataLoader, device: str | torch.device,
             num_classes: int = 19, amp: bool | None = None, channels_last: bool = False,
             progress: bool = False) -> dict[str, Any]:
    """Return the metrics dict of ``ConfusionMatrix.compute()`` (``miou``, ``iou``, ``pixel_acc`` ...) of
    ``model`` on ``loader``'s (image, target) batches, summed over all processes under torch.distributed.

    Logits are upsampled to the label's size before the argmax, so labels stay at native resolution (batch 1
    of full frames). The model's train/eval mode is restored afterwards.
    """
    from tqdm.auto import tqdm

    from .metrics import ConfusionMatrix

    device = torch.device(device)
    net = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    was_training = net.training
    net.eval()
    use_amp = amp if amp is not None else device.type == "cuda"
    dtype = (torch.bfloat16 if device.type != "cuda" or torch.cuda.is_bf16_supported() else torch.float16)
    autocast = torch.autocast(device.type, dtype=dtype) if use_amp else nullcontext()
    matrix = ConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX, device=device)
    main = not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
    try:
        for batch in tqdm(loader, desc="validate", leave=False, disable=not (progress and main)):
            image, target = batch[0], batch[1]
            image = image.to(device, non_blocking=True)
            if channels_last:
                image = image.contiguous(memory_format=torch.channels_last)
            target = target.to(device, non_blocking=True)
            with autocast:
                logits = net(image)["out"]
            if logits.shape[-2:] != target.shape[-2:]:
                logits = F.interpolate(logits.float(), size=target.shape[-2:], mode="bilinear", align_corners=False)
            matrix.update(logits.argmax(1), target)
    finally:
        net.train(was_training)
    return matrix.reduce().compute()


# ----------------------------------------------------------------------------------------------------
# Checkpoints


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, write) -> None:
    """Write ``path`` through a temporary file in the same folder: either the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically (temp file, fsync, rename): a crash leaves the previous file intact."""
    _atomic_write(Path(path), lambda f: torch.save(state, f))


def _link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` hold what ``src`` holds now (a hard link when possible: no second write), atomically."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
        os.replace(tmp, dst)  # last.pt is later replaced by a new inode, so best.pt keeps this content
        _fsync_dir(dst.parent)
    except OSError:
        tmp.unlink(missing_ok=True)
        _atomic_write(dst, lambda f: shutil.copyfileobj(open(src, "rb"), f))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Return the content of a training checkpoint (loaded with ``weights_only=True``: tensors and plain types)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a training checkpoint of seg_utils.engine (expected format "
                         f"{CHECKPOINT_FORMAT!r}; build_model(weights=path) loads bare weights)")
    return state


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
# The loop


def _empty_history() -> dict[str, Any]:
    return {"iter": [], "loss": [], "lr": [], "val_iter": [], "val_miou": [], "val_pixel_acc": []}


def _build(config: TrainConfig, rt: _Runtime) -> tuple[nn.Module, str]:
    """Return a fresh model for the config and a description of its starting weights."""
    from .model import WeightsUnavailableError, build_model

    k = num_classes(config.label_mode)
    weights = config.weights
    try:
        return build_model(k, weights=weights, aux_loss=True, output_stride=config.output_stride), str(weights)
    except WeightsUnavailableError as err:
        _log(rt, f"{err}\n-> training from random initialisation instead")
        return build_model(k, weights=None, aux_loss=True, output_stride=config.output_stride), \
            f"none ({weights} unavailable)"


def train(config: TrainConfig | None = None, *, model: nn.Module | None = None, progress: bool = True,
          **overrides: Any) -> dict[str, Any]:
    """Return the training history after training DeepLabV3-ResNet50 as ``config`` says.

    History keys: ``iter``, ``loss``, ``lr`` (one entry per iteration), ``val_iter``, ``val_miou`` (fraction
    0..1), ``val_pixel_acc``, and ``weights``, ``world_size``, ``first_batch`` (the frame indices of this
    call's first batch, one list per process). Written to ``out_dir``: ``history.json``, ``last.pt`` (every
    ``val_every`` iterations and at the end) and ``best.pt`` (best val mIoU).

    ``config`` None: ``TrainConfig.from_profile(None, **overrides)``. ``model``: train this model instead of
    building one from ``config.weights`` (its weights are replaced by the checkpoint's on resume).
    ``config.resume``: continue from ``out_dir/last.pt`` (a fresh start when there is none). A fresh start in
    a folder that holds a ``last.pt`` raises FileExistsError unless ``config.overwrite`` (then the old run's
    checkpoints and history are removed first).

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


def _train(config: TrainConfig, rt: _Runtime, model: nn.Module | None, progress: bool) -> dict[str, Any]:
    from tqdm.auto import tqdm

    out_dir = Path(config.out_dir)
    if rt.main:
        out_dir.mkdir(parents=True, exist_ok=True)
    last_path = out_dir / LAST
    if not config.resume and last_path.is_file():
        if not config.overwrite:
            raise FileExistsError(
                f"{last_path} exists: pass resume=True (--resume) to continue that run, or overwrite=True "
                f"(--overwrite) to start again and replace its checkpoints")
        if rt.main:
            for name in (LAST, BEST, HISTORY):
                (out_dir / name).unlink(missing_ok=True)
    if rt.world_size > 1:
        dist.barrier()  # no process looks at out_dir before rank 0 has cleared it
    resume_state = load_checkpoint(last_path) if config.resume and last_path.is_file() else None
    if config.resume and resume_state is None:
        _log(rt, f"no {last_path} to resume from: starting from iteration 0")
    if resume_state is not None and int(resume_state["config"]["iters"]) != config.iters:
        raise ValueError(f"{last_path} was written by a run of {resume_state['config']['iters']} iterations "
                         f"(the lr schedule depends on it); resume with iters={resume_state['config']['iters']}")

    # Same initial weights on every process (DDP broadcasts rank 0's anyway); different dropout streams.
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    random.seed(config.seed)
    weights_note = "checkpoint"
    if model is None:
        model, weights_note = _build(config, rt)
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
    torch.manual_seed(config.seed + rt.rank)
    if rt.world_size > 1 and rt.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif rt.world_size > 1:
        # torch's SyncBatchNorm runs on GPUs only: on CPU (gloo) each process normalises its own share.
        _log(rt, "CPU processes: plain BatchNorm per process (SyncBatchNorm needs GPUs)")
    model.to(rt.device)
    if rt.channels_last:
        model.to(memory_format=torch.channels_last)
    net = model
    if rt.world_size > 1:
        ids = [rt.device.index] if rt.device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)

    optimizer, scheduler = make_optimizer(model, config)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.amp_dtype == torch.float16)
    history, best_miou, start = _empty_history(), -1.0, 0
    saved = None  # iteration of the last.pt this run can vouch for
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        if resume_state.get("scaler"):
            scaler.load_state_dict(resume_state["scaler"])
        start = saved = int(resume_state["iteration"])
        history = {**_empty_history(), **resume_state["history"]}
        best_miou = float(resume_state["best_miou"])
        rng = resume_state["rng"]
        _set_rng_state(rng[rt.rank] if rt.rank < len(rng) else rng[0])
        _log(rt, f"resumed from {os.path.relpath(last_path)} at iteration {start}")
    del resume_state  # its tensors are in the model and optimizer now; free the copy
    if start >= config.iters:
        return history

    stop = config.stop_at if config.stop_at is not None else config.iters
    train_loader, val_loader = make_loaders(config, start, rt.rank, rt.world_size, rt.device)
    criterion = nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
    k = num_classes(config.label_mode)
    history.update(weights=history.get("weights", weights_note), world_size=rt.world_size)

    def checkpoint(iteration: int, improved: bool) -> None:
        nonlocal saved
        # Every process's RNG state, so each continues its own stream; only rank 0 writes.
        rngs = [_rng_state()]
        if rt.world_size > 1:
            rngs = [None] * rt.world_size
            dist.all_gather_object(rngs, _rng_state())
        if rt.main:
            state = {
                "format": CHECKPOINT_FORMAT,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                "iteration": iteration,
                "rng": [{**r, "torch": r["torch"].cpu()} for r in rngs],
                "config": config.to_dict(),
                "history": history,
                "best_miou": best_miou,
            }
            save_checkpoint(last_path, state)
            if improved:
                _link_or_copy(last_path, out_dir / BEST)
            _write_history(out_dir, history)
        saved = iteration
        if rt.world_size > 1:
            dist.barrier()  # no process runs ahead (or exits) while rank 0 is still writing

    net.train()
    bar = tqdm(total=stop, initial=start, desc="train", unit="it", disable=not (progress and rt.main),
               dynamic_ncols=True)
    batches = iter(train_loader)
    rate, tick = None, time.perf_counter()
    memory = torch.channels_last if rt.channels_last else torch.contiguous_format
    try:
        for iteration in range(start + 1, stop + 1):
            images, targets, indices = next(batches)
            if iteration == start + 1:
                history["first_batch"] = _gather_indices(indices, rt)
            images = images.to(rt.device, non_blocking=True, memory_format=memory)
            targets = targets.to(rt.device, non_blocking=True)
            lr = optimizer.param_groups[0]["lr"]
            with rt.autocast():
                outputs = net(images)
            loss = compute_loss(outputs, targets, criterion, config.aux_weight)
            value = loss.detach().clone()
            if rt.world_size > 1:
                dist.all_reduce(value)  # every process sees the same mean, so all stop together
                value /= rt.world_size
            value = float(value)
            if not math.isfinite(value):
                kept = f"{last_path} (iteration {saved})" if saved is not None else "none written yet"
                if rt.main:
                    _write_history(out_dir, history)
                raise TrainingDiverged(
                    f"loss is {value} at iteration {iteration} (lr {lr:.3g}): training diverged; last good "
                    f"checkpoint kept untouched: {kept}. Lower the lr or lengthen the warm-up.")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            history["iter"].append(iteration)
            history["loss"].append(value)
            history["lr"].append(lr)

            now = time.perf_counter()
            speed = config.batch_size / max(now - tick, 1e-9)
            rate = speed if rate is None else 0.9 * rate + 0.1 * speed
            tick = now
            bar.update(1)
            bar.set_postfix(loss=f"{value:.3f}", lr=f"{lr:.2e}", img_s=f"{rate:.1f}", refresh=False)

            at_end = iteration == stop
            if (config.val_every and iteration % config.val_every == 0) or at_end:
                improved = False
                if val_loader is not None:
                    metrics = validate(net, val_loader, rt.device, k, amp=rt.amp_dtype is not None,
                                       channels_last=rt.channels_last, progress=progress)
                    miou = float(metrics["miou"])
                    history["val_iter"].append(iteration)
                    history["val_miou"].append(miou)
                    history["val_pixel_acc"].append(float(metrics["pixel_acc"]))
                    improved = miou > best_miou
                    best_miou = max(best_miou, miou)
                    _log(rt, f"iteration {iteration}/{config.iters}: val mIoU {100 * miou:.2f}% "
                             f"(best {100 * best_miou:.2f}%), pixel acc {100 * metrics['pixel_acc']:.2f}%")
                checkpoint(iteration, improved)
                tick = time.perf_counter()  # validation time is not training speed
    finally:
        bar.close()
    if history["val_miou"]:
        best = int(np.argmax(history["val_miou"]))
        _log(rt, f"best val mIoU {100 * history['val_miou'][best]:.2f}% at iteration {history['val_iter'][best]}; "
                 f"checkpoints in {os.path.relpath(out_dir)}")
    return history


def _gather_indices(indices: torch.Tensor, rt: _Runtime) -> list[list[int]]:
    mine = [int(i) for i in indices]
    if rt.world_size == 1:
        return [mine]
    everyone: list[Any] = [None] * rt.world_size
    dist.all_gather_object(everyone, mine)
    return everyone


def _write_history(out_dir: Path, history: dict[str, Any]) -> None:
    text = json.dumps(history, indent=1) + "\n"
    _atomic_write(out_dir / HISTORY, lambda f: f.write(text.encode()))


# ----------------------------------------------------------------------------------------------------
# Command line


def train_from_args(args: Any) -> dict[str, Any]:
    """Return the history of a run configured by the ``train`` command's arguments (unset = the profile's)."""
    from .profile import cityscapes_root

    data_root = args.data_root if args.data_root is not None else cityscapes_root()
    if data_root is None:
        raise ValueError("no dataset: pass --data-root or set CITYSCAPES_DATASET "
                         "(or write a synthetic set with `python -m seg_utils synth DIR`)")
    weights = getattr(args, "weights", None)
    config = TrainConfig.from_profile(
        args.profile, data_root=data_root, out_dir=args.out, iters=args.iters, crop_size=args.crop,
        batch_size=args.batch, lr=args.lr, val_every=args.val_every, output_stride=args.output_stride,
        weights=weights, num_workers=args.workers, amp=args.amp, resume=args.resume, seed=args.seed,
        warmup_iters=args.warmup_iters, overwrite=args.overwrite)
    return train(config, progress=True)

