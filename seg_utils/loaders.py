"""What feeds training and validation: the batch of iteration ``i`` depends only on ``(seed, i)``.

Which frames make up the batch of iteration ``i`` and how each is augmented depend only on ``(seed, i)`` (see
:class:`IterationSampler`), never on how many iterations this process has run, so a run stopped and resumed
computes the very same losses as one that never stopped. Under ``torchrun`` every process takes its share of
each global batch (the same frames one process would use) and scores its shard of the val frames.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from .config import TrainConfig
from .device import default_num_workers, worker_context
from .images import DatasetError
from .layouts import Layout, open_layout
from .signals import ignore_stop_signals
from .transforms import TrainTransform

__all__ = ["IterationSampler", "SeededCrops", "ErrorsAsValues", "collate", "raise_error", "make_loaders"]


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
    """Training crops of a dataset (``layouts.SegmentationDataset``: either layout), indexed by ``(frame index,
    augmentation key)``.

    Each item gets its own ``TrainTransform`` drawing from ``numpy.random.default_rng(key)``: the crop
    depends on the key only, not on the worker process or on what was drawn before. Items are uint8
    (image (3, H, W), labels (H, W)): ``device.to_device`` normalises and widens them after the copy.
    """

    def __init__(self, dataset: torch.utils.data.Dataset, crop_size: tuple[int, int],
                 scale_range: tuple[float, float] = (0.5, 2.0), cat_max_ratio: float | None = None) -> None:
        self.dataset, self.crop_size, self.scale_range = dataset, tuple(crop_size), tuple(scale_range)
        self.cat_max_ratio = cat_max_ratio

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor, int]:
        index, key = item
        image, target = self.dataset.load(index)
        transform = TrainTransform(self.crop_size, self.scale_range, rng=np.random.default_rng(list(key)),
                                   cat_max_ratio=self.cat_max_ratio)
        image, target = transform(image, target)
        return image, target, index


class ErrorsAsValues(torch.utils.data.Dataset):
    """A dataset whose items that cannot be read come out as their DatasetError instead of being raised.

    A DataLoader re-raises a worker's error with the worker's traceback pasted into its message; a batch that is an
    error (``collate``) is raised by whoever reads it (``raise_error``) as it is: the same one line with or without
    workers."""

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item):
        try:
            return self.dataset[item]
        except DatasetError as err:
            return err


def collate(batch: list):
    """Return ``default_collate`` of the items, or the first of them that is a DatasetError (``ErrorsAsValues``)."""
    error = next((item for item in batch if isinstance(item, DatasetError)), None)
    return error if error is not None else torch.utils.data.default_collate(batch)


def raise_error(batch):
    """Return a batch of ``collate``, or raise it when it is an error."""
    if isinstance(batch, DatasetError):
        raise batch
    return batch


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
                 device: torch.device | None = None, layout: Layout | None = None
                 ) -> tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader | None]:
    """Return (endless train loader starting at iteration ``start``, val loader or None) for one process.

    Both send uint8 images and labels (see ``device.to_device``): a batch of 8 crops of 512x1024 is 17 MB
    instead of 84 MB of float32 and int64, which keeps workers within a container's small ``/dev/shm``.
    Every frame's files are looked at first (headers and sizes: ``Layout.check_headers``), so a broken file
    stops the run before its first iteration; one that fails later comes out of the loader as its DatasetError
    (``raise_error`` raises it). Without a val split (``Layout.has_split``) the run warns and trains without
    validation; a val split that is there but broken stops it too. ``layout``: the dataset folder's (None:
    ``config.data_root``'s, which ``train`` resolves once with ``cityscapes.dataset_root``). Workers leave SIGTERM
    and SIGINT to the training process (``signals``).
    """
    if layout is None:
        if config.data_root is None:
            raise ValueError("make_loaders needs config.data_root: the dataset folder (see cityscapes.dataset_root)")
        layout = open_layout(config.data_root, config.classes, config.label_mode)
    cuda = device is not None and device.type == "cuda"
    train_set = layout.dataset("train")
    layout.check_headers(train_set.samples)
    sampler = IterationSampler(len(train_set), config.batch_size, config.seed, start, rank, world_size)
    workers = config.num_workers if config.num_workers is not None else default_num_workers()
    train_loader = torch.utils.data.DataLoader(
        ErrorsAsValues(SeededCrops(train_set, config.crop_size, config.scale_range, config.cat_max_ratio)),
        batch_sampler=sampler, collate_fn=collate, num_workers=workers, pin_memory=cuda,
        persistent_workers=workers > 0, generator=_generator(config.seed), prefetch_factor=4 if workers > 0 else None,
        multiprocessing_context=worker_context() if workers else None, worker_init_fn=ignore_stop_signals)
    try:
        val_set = layout.dataset("val")
    except DatasetError as err:
        if layout.has_split("val"):  # there, but broken: an error, not hours of training without validation
            raise
        warnings.warn(f"training without validation: {err}", stacklevel=2)
        return train_loader, None
    frames = range(min(config.val_frames, len(val_set))) if config.val_frames is not None else range(len(val_set))
    layout.check_headers([val_set.samples[i] for i in frames])  # a corrupt val file now, not at the first validation
    if config.val_frames is not None:
        val_set = torch.utils.data.Subset(val_set, frames)
    val_workers = min(workers, 2)  # full frames, batch 1: two workers keep ahead of the model
    val_loader = torch.utils.data.DataLoader(
        ErrorsAsValues(val_set), batch_size=1, sampler=_Shard(len(val_set), rank, world_size), collate_fn=collate,
        num_workers=val_workers,
        pin_memory=cuda, persistent_workers=val_workers > 0, generator=_generator(config.seed),
        multiprocessing_context=worker_context() if val_workers else None, worker_init_fn=ignore_stop_signals)
    return train_loader, val_loader
