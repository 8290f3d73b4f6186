"""Which dataset a folder holds, and opening it: the one place ``--data-root`` is worked out.

* ``leftImg8bit/`` + ``gtFine/``: Cityscapes, in the official layout (``data``); its class table is Cityscapes'
  19 evaluated classes (or the 34 label ids in ``label_mode="labelId"``).
* ``images/`` + ``masks/``: a plain folder of your own (``folder``), with its ``classes.json``.

Anything else is one line saying what was expected.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

from .classes import ClassTable
from .data import IMAGE_DIR, LABEL_DIR, CityscapesDataset, DatasetError, find_samples, header_size, require_dataset
from .data import split_files as cityscapes_split_files
from .env import cityscapes_root
from .folder import IMAGES_DIR, MASKS_DIR, FolderDataset, load_class_table
from .folder import split_files as folder_split_files

__all__ = ["LAYOUTS", "dataset_root", "layout_of", "class_table", "cityscapes_classes", "open_dataset", "has_split",
           "frame_size"]

LAYOUTS = ("cityscapes", "folder")


def dataset_root(path: str | Path | None = None) -> Path:
    """Return the dataset to use: ``path`` when given, else ``CITYSCAPES_DATASET`` (checked: DatasetError says
    what the folder lacks); raise ValueError naming both ways (and the synthetic set) when there is neither."""
    if path is not None:
        return Path(path)
    root = cityscapes_root()
    if root is not None:
        return require_dataset(root, "CITYSCAPES_DATASET folder")
    raise ValueError("no dataset: pass --data-root (data_root=...) or set CITYSCAPES_DATASET (or write a "
                     "synthetic set with `python -m seg_utils synth DIR` / seg_utils.notebook.setup(); predict: "
                     "--images)")


def layout_of(root: str | Path) -> str:
    """Return ``"cityscapes"`` or ``"folder"`` for a dataset folder, or raise DatasetError saying what was
    expected."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found (expected {IMAGE_DIR}/ + {LABEL_DIR}/ for Cityscapes, "
                           f"or {IMAGES_DIR}/ + {MASKS_DIR}/ + classes.json for your own data)")
    if (root / IMAGE_DIR).is_dir() or (root / LABEL_DIR).is_dir():
        return "cityscapes"  # data.require_dataset then names a missing half
    if (root / IMAGES_DIR).is_dir():
        return "folder"  # a missing masks/ is named per split (a test split needs none)
    raise DatasetError(f"{root}: neither Cityscapes ({IMAGE_DIR}/ and {LABEL_DIR}/) nor a plain folder "
                       f"({IMAGES_DIR}/ and {MASKS_DIR}/, each with train/ and optionally val/, and classes.json); "
                       f"found {_listing(root)}")


def _listing(root: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir() if not p.name.startswith("."))
    if not names:
        return "an empty folder"
    return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")


def class_table(root: str | Path, classes: str | Path | None = None, label_mode: str = "trainId") -> ClassTable:
    """Return the class table of the dataset at ``root``: ``classes`` (a ``classes.json`` path) when given, else
    the folder's own ``classes.json``, or Cityscapes' for the official layout."""
    if classes is not None:
        return ClassTable.load(classes)
    if layout_of(root) == "folder":
        return load_class_table(root)
    return ClassTable.cityscapes(label_mode)


def cityscapes_classes(root: str | Path, classes: str | Path | None, label_mode: str = "trainId") -> None:
    """Raise DatasetError when a class table file is given for a Cityscapes folder and is not Cityscapes' own: its
    classes are fixed by the official evaluator."""
    if classes is not None and ClassTable.load(classes) != ClassTable.cityscapes(label_mode):
        raise DatasetError(f"{classes}: a class table for a Cityscapes folder ({root}), whose classes are fixed "
                           f"(its {len(ClassTable.cityscapes(label_mode))} evaluated classes): drop --classes")


def open_dataset(root: str | Path, split: str, *, classes: str | Path | None = None, label_mode: str = "trainId",
                 transforms: Callable | None = None) -> CityscapesDataset | FolderDataset:
    """Return the dataset of a split of either layout (``classes``: a ``classes.json`` overriding the folder's;
    refused for Cityscapes, whose classes are fixed by the official evaluator)."""
    if layout_of(root) == "folder":
        return FolderDataset(root, split, classes=classes, transforms=transforms)
    cityscapes_classes(root, classes, label_mode)
    return CityscapesDataset(root, split, label_mode=label_mode, transforms=transforms)


def has_split(root: str | Path, split: str) -> bool:
    """Whether a split is there at all: a file its scanner would take, photo or label (``folder.split_files``,
    ``data.split_files``). An optional split that is not there is skipped (``train`` without val warns, ``check``
    notes it); one that is there is used, so its problems are errors."""
    return any(folder_split_files(root, split) if layout_of(root) == "folder" else cityscapes_split_files(root, split))


def frame_size(root: str | Path, split: str = "train") -> tuple[int, int]:
    """Return the (height, width) most of a split's frames have (read from the headers of about 100 of them, a
    photo's EXIF turn applied): what a checkpoint records, so that photos are predicted at its pixel scale."""
    from .folder import find_folder_samples

    samples = find_folder_samples(root, split) if layout_of(root) == "folder" else find_samples(root, split)
    if not samples:
        raise DatasetError(f"{root}: no frames in the {split} split")
    sizes = Counter(header_size(s.image_path, s.photos) for s in samples[:: max(1, len(samples) // 100)])
    width, height = sizes.most_common(1)[0][0]
    return height, width
