"""Pixels per class of a training set: counted once, then kept.

Class weights (``losses.sqrt_inv_freq_weights``) need the labelled pixels of every class over the whole train split:
every label file decoded once. That is kept in ``workspace()/cache/class-counts/<key>.json``, where the key is a
digest of the label files' paths, sizes and modification times (and the label mode and class count), so a resumed
run or a second run on the same files reads 19 numbers instead of decoding every label again, and an edited label
file is counted afresh. Nothing is written into the dataset; a cache that cannot be written is skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

import numpy as np

from .env import workspace
from .layouts import SegmentationDataset as Dataset  # either layout
from .outputs import OutputError, atomic_write, refuse_dataset

__all__ = ["count_class_pixels", "class_pixel_counts", "counts_key"]


def count_class_pixels(dataset: Dataset, num_classes: int = 19) -> np.ndarray:
    """Return the labelled pixels of each class over every frame of ``dataset`` (void excluded), decoding every
    label file."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for i in range(len(dataset)):
        target = dataset.load_target(i)
        counts += np.bincount(target[target < num_classes], minlength=num_classes)
    return counts


def counts_key(dataset: Dataset, num_classes: int) -> str:
    """Return the digest that names a set's counts: its label files (resolved path, size, modification time),
    label mode, class count and class table (a colour mask decodes by it). Any change to a label file changes it."""
    digest = hashlib.sha256(f"{dataset.label_mode} {num_classes}\n".encode())
    digest.update(json.dumps(dataset.table.to_dict()).encode())
    for sample in dataset.samples:
        path = sample.target_path(dataset.label_mode).resolve()
        stat = path.stat()
        digest.update(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def _cache_file(key: str) -> Path:
    return workspace() / "cache" / "class-counts" / f"{key}.json"


def class_pixel_counts(dataset: Dataset, num_classes: int = 19, cache: bool = True) -> np.ndarray:
    """Return ``count_class_pixels(dataset, num_classes)``, from the cache when the same label files were counted
    before (``cache``: read and write it)."""
    if not cache:
        return count_class_pixels(dataset, num_classes)
    path = _cache_file(counts_key(dataset, num_classes))
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        counts = np.asarray(json.loads(path.read_text())["counts"], dtype=np.int64)
        if counts.shape == (num_classes,) and (counts >= 0).all():
            return counts
    counts = count_class_pixels(dataset, num_classes)
    text = json.dumps({"frames": len(dataset), "label_mode": dataset.label_mode, "counts": counts.tolist()}) + "\n"
    with contextlib.suppress(OSError, OutputError):  # a read-only workspace: counted again next time
        refuse_dataset(path, dataset.root)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: f.write(text.encode()), fsync=False)
    return counts
