"""Your own data: a plain folder of images and masks with a class table, the layout labelling-tool exports convert to.

::

    my_data/classes.json                        the class table (``classes``)
    my_data/images/{train,val,test}/<name>.png  RGB photos, PNG or JPEG (.png, .jpg, .jpeg)
    my_data/masks/{train,val}/<name>.png        one mask per photo: same <name>, same size, always PNG

A mask is either an **index mask** (single channel: class indices 0..N-1 and the table's ``ignore_index``) or a
**colour mask** (RGB: the table's colours and its ``ignore_color``); which one is decided per file, from the PNG's
header. ``images/test/`` may come without masks. Targets come out exactly as ``CityscapesDataset``'s (uint8 class
indices, 255 = ignore), so the engine, metrics and viewer do not know which layout they read. Nothing is ever
written into the folder.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .classes import CLASSES_FILE, ClassTable
from .data import DatasetError, _png_format, _size_problem, raise_first, read_image, read_label
from .labels import IGNORE_INDEX

__all__ = ["IMAGES_DIR", "MASKS_DIR", "FolderSample", "split_files", "scan_folder", "find_folder_samples", "read_mask",
           "read_pair", "FolderDataset"]

IMAGES_DIR, MASKS_DIR = "images", "masks"
FOLDER_SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_JPEG_SUFFIXES = (".jpg", ".jpeg")
_MASK_SUFFIXES = (".png", *_JPEG_SUFFIXES)  # JPEG masks are read only to be refused by name
_PHOTO_TYPES = ", ".join(IMAGE_SUFFIXES[:-1]) + " or " + IMAGE_SUFFIXES[-1]  # ".png, .jpg or .jpeg", for messages


@dataclass(frozen=True)
class FolderSample:
    """One photo and its mask (None: a split without masks, such as test)."""

    split: str
    name: str
    image_path: Path
    label_path: Path | None
    train_ids_path = None  # what data.check_headers looks at besides the image and its label file
    label_word = "mask"  # what errors call its label file
    photos = True  # read as photos (any PNG or JPEG, EXIF orientation applied: data.read_image(strict=False))

    def target_path(self, label_mode: str | None = None) -> Path | None:
        return self.label_path


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def split_files(root: str | Path, split: str) -> Iterator[Path]:
    """The files ``scan_folder`` reads for a split: photos in ``images/<split>/``, masks (PNG, or the JPEG ones it
    refuses) in ``masks/<split>/``."""
    for folder, suffixes in ((IMAGES_DIR, IMAGE_SUFFIXES), (MASKS_DIR, _MASK_SUFFIXES)):
        if (Path(root) / folder / split).is_dir():
            yield from (p for p in _files(Path(root) / folder / split) if p.suffix.lower() in suffixes)


def scan_folder(root: str | Path, split: str) -> tuple[list[FolderSample], list[str]]:
    """Return the photos of a split paired with their masks, and one line per problem (unpaired files, a JPEG
    mask, two photos of one name, an empty split)."""
    if split not in FOLDER_SPLITS:
        raise ValueError(f"split must be one of {FOLDER_SPLITS}, got {split!r}")
    root = Path(root)
    image_dir, mask_dir = root / IMAGES_DIR / split, root / MASKS_DIR / split
    if not image_dir.is_dir():
        return [], [f"{image_dir}: no such folder (expected {IMAGES_DIR}/{split}/<name>{_PHOTO_TYPES})"]
    problems: list[str] = []
    images: dict[str, Path] = {}
    masks: dict[str, Path] = {}
    refused: set[str] = set()  # names whose mask is a JPEG: that one problem, not also "a photo without a mask"
    for path in split_files(root, split):  # photos first, then masks
        if path.parent == image_dir:
            if path.stem in images:
                problems.append(f"{path}: a second photo named {path.stem!r} (also "
                                f"{images[path.stem]}); expected one photo per name")
                continue
            images[path.stem] = path
        elif path.suffix.lower() in _JPEG_SUFFIXES:
            problems.append(_jpeg_mask_text(path))
            refused.add(path.stem)
        else:
            masks[path.stem] = path
    if not images:
        return [], [f"{image_dir}: no photos (expected <name>{_PHOTO_TYPES} files)"]
    labelled = mask_dir.is_dir() or split != "test"
    samples = []
    for name in sorted(images.keys() | masks.keys()):
        if name in refused and name not in masks:
            continue
        if name not in images:
            problems.append(f"{masks[name]}: a mask without a photo (expected "
                            f"{IMAGES_DIR}/{split}/{name}{_PHOTO_TYPES})")
        elif labelled and name not in masks:
            problems.append(f"{images[name]}: a photo without a mask (expected "
                            f"{MASKS_DIR}/{split}/{name}.png)")
        else:
            samples.append(FolderSample(split, name, images[name], masks.get(name)))
    return samples, problems


def find_folder_samples(root: str | Path, split: str) -> list[FolderSample]:
    """Return the samples of a split, or raise DatasetError on its first problem (``check`` reports the rest)."""
    samples, problems = scan_folder(root, split)
    raise_first(problems, root)
    return samples


def _jpeg_mask_text(where: str | Path) -> str:
    return (f"{where}: a JPEG mask; masks must be PNG (lossy JPEG compression changes the class values at every "
            f"edge): export the masks as PNG")


def _rgb_key(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _colors_to_indices(rgb: np.ndarray, table: ClassTable, path: Path) -> np.ndarray:
    colors = list(table.colors) + ([table.ignore_color] if table.ignore_color is not None else [])
    values = np.array(list(range(len(table))) + [IGNORE_INDEX] * (len(colors) - len(table)), dtype=np.uint8)
    keys = _rgb_key(np.array(colors, dtype=np.uint8))
    order = np.argsort(keys)
    keys, values = keys[order], values[order]
    pixel_keys = _rgb_key(rgb)
    pos = np.searchsorted(keys, pixel_keys).clip(max=len(keys) - 1)
    found = keys[pos] == pixel_keys
    if not found.all():
        unknown, counts = np.unique(pixel_keys[~found], return_counts=True)
        top = int(np.argmax(counts))
        color = [int(unknown[top]) >> 16, (int(unknown[top]) >> 8) & 255, int(unknown[top]) & 255]
        more = len(unknown) - 1
        others = f" and {more} more unknown colour{'s' * (more > 1)} on {int(counts.sum()) - int(counts[top]):,} " \
            f"pixels" if more else ""
        raise DatasetError(f"{path}: colour {color} on {int(counts[top]):,} pixels is not in the class table"
                           f"{others} (expected the {len(table)} class colours"
                           f"{' or the ignore_color' if table.ignore_color is not None else ''} of {table.source})")
    return values[pos]


def read_mask(path: str | Path, table: ClassTable) -> np.ndarray:
    """Return a mask as (H, W) uint8 class indices, 255 = ignore, or raise DatasetError naming the file.

    An index mask (8-bit, 16-bit or 1-bit grey, or a palette PNG: its indices) holds class indices and the table's
    ``ignore_index``; a colour mask (RGB or RGBA PNG; alpha ignored) the table's colours and ``ignore_color``."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DatasetError(f"{path}: cannot read this mask ({err.strerror})") from None
    if data[:3] == b"\xff\xd8\xff" or path.suffix.lower() in _JPEG_SUFFIXES:
        raise DatasetError(_jpeg_mask_text(path))
    fmt = _png_format(data)
    if fmt is None:
        raise DatasetError(f"{path}: not a PNG (expected a PNG mask of class indices or class colours)")
    if fmt[1] in (2, 6):  # RGB or RGBA: a colour mask
        import cv2

        array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if array is None or array.dtype != np.uint8:
            raise DatasetError(f"{path}: unreadable or not 8-bit colour mask (expected an 8-bit RGB PNG)")
        return _colors_to_indices(cv2.cvtColor(array[..., :3], cv2.COLOR_BGR2RGB), table, path)
    if fmt[1] == 4:
        raise DatasetError(f"{path}: grey + alpha; expected a single-channel PNG of class indices or an RGB PNG "
                           f"of class colours")
    mask = read_label(path)
    bad = mask >= len(table)
    if bad.any():
        values = np.unique(mask[bad])
        values = values[values != table.ignore_index]
        if values.size:
            raise DatasetError(f"{path}: mask values {values.tolist()[:5]} outside the class table (expected "
                               f"class indices 0..{len(table) - 1} and ignore_index {table.ignore_index})")
        if table.ignore_index != IGNORE_INDEX:
            mask = np.where(mask == table.ignore_index, np.uint8(IGNORE_INDEX), mask)
    return mask


def read_pair(sample: FolderSample, table: ClassTable) -> tuple[np.ndarray, np.ndarray]:
    """Return a sample's (photo, target), each decoded once: (H, W, 3) RGB and (H, W) class indices (all 255 when it
    has no mask); DatasetError names a file that cannot be read or a mask of another size than its photo."""
    image = read_image(sample.image_path, strict=False)
    if sample.label_path is None:
        return image, np.full(image.shape[:2], IGNORE_INDEX, np.uint8)
    target = read_mask(sample.label_path, table)
    problem = _size_problem(sample.label_path, image, target, sample.label_word)
    if problem:
        raise DatasetError(problem)
    return image, target


def load_class_table(root: str | Path, classes: str | Path | None = None) -> ClassTable:
    """Return the class table of a folder: ``classes`` (a ``classes.json`` path) if given, else
    ``root/classes.json``."""
    return ClassTable.load(classes if classes is not None else Path(root) / CLASSES_FILE)


class FolderDataset(torch.utils.data.Dataset):
    """Photos and masks of a plain folder (``images/``, ``masks/``, ``classes.json``) as ``(image, target)``
    pairs: the same types as ``CityscapesDataset`` (uint8 (3, H, W) image, uint8 (H, W) class indices, 255 =
    ignore). ``table`` (or a ``classes`` file) overrides ``root/classes.json``."""

    label_mode = "classes"

    def __init__(self, root: str | Path, split: str = "train", table: ClassTable | None = None,
                 classes: str | Path | None = None, transforms: Callable | None = None) -> None:
        from .transforms import EvalTransform

        self.root = Path(root)
        self.split = split
        self.table = table if table is not None else load_class_table(self.root, classes)
        self.transforms = transforms if transforms is not None else EvalTransform()
        self.samples = find_folder_samples(self.root, split)
        self.has_labels = all(s.label_path is not None for s in self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return (f"FolderDataset(split={self.split!r}, frames={len(self)}, classes={len(self.table)}, "
                f"transforms={self.transforms!r})")

    def load_target(self, index: int) -> np.ndarray:
        """Return the untransformed target of a frame as (H, W) uint8 class indices (255 = ignore)."""
        sample = self.samples[index]
        if sample.label_path is None:
            image = self.load_image(index)
            return np.full(image.shape[:2], IGNORE_INDEX, np.uint8)
        return read_mask(sample.label_path, self.table)

    def load_image(self, index: int) -> np.ndarray:
        """Return the untransformed photo of a frame as (H, W, 3) uint8 RGB (any PNG or JPEG: ``read_image``)."""
        return read_image(self.samples[index].image_path, strict=False)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Return the untransformed (image, target) of a frame, checked to be the same size."""
        return read_pair(self.samples[index], self.table)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transforms(*self.load(index))
