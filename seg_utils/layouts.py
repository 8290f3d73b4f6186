"""Dataset folders: one ``Layout`` object per kind of folder, and a torch dataset of any layout's frames.

* ``cityscapes.CityscapesLayout``: ``leftImg8bit/`` + ``gtFine/``, the official layout; its classes are Cityscapes'
  19 evaluated ones (or the 34 label ids in ``label_mode="labelId"``).
* ``folder.FolderLayout``: ``images/`` + ``masks/`` + ``classes.json``, a plain folder of your own.

What differs between them (their files' names, how a label is read, where a prediction goes, how it is scored) is a
method of their class; what does not (listing a split's files, raising the first problem, the frame size, the header
check, the dataset) is written once here. ``open_layout`` returns the layout of a folder, and a folder that is neither
is one line saying what was expected. A third layout is one more subclass, in a module the package imports
(``seg_utils/__init__``). Nothing here writes into a dataset folder.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from .classes import ClassTable
from .images import DatasetError, header_size, read_image, size_text

__all__ = ["SPLITS", "Sample", "Part", "Layout", "SegmentationDataset", "raise_first", "open_layout", "layout_at",
           "open_dataset"]

SPLITS = ("train", "val", "test")  # every layout's splits


@dataclass(frozen=True)
class Sample:
    """One frame of a dataset: where its files are, in either layout. Files the dataset does not hold are None."""

    split: str
    stem: str  # its name: Cityscapes' "{city}_{seq:06d}_{frame:06d}", a plain folder's file name without suffix
    image_path: Path
    label_path: Path | None  # None: a split without masks (a plain folder's test)
    city: str = ""  # Cityscapes' city folder; "" in a plain folder
    train_ids_path: Path | None = None  # Cityscapes' optional files (the real download ships no labelTrainIds)
    instance_path: Path | None = None
    polygons_path: Path | None = None
    color_path: Path | None = None

    def target_path(self, label_mode: str = "trainId") -> Path | None:
        """Return the file training targets are read from: the trainIds file when there is one and trainIds
        are wanted, else the label file (Cityscapes' label ids are then mapped on the fly)."""
        return self.train_ids_path if label_mode == "trainId" and self.train_ids_path is not None else self.label_path


@dataclass(frozen=True)
class Part:
    """The files of one kind in a split: ``root/top/<split>/`` + ``pattern`` (a glob), not hidden, and (when
    ``suffixes`` is given) ending in one of them, in any case."""

    top: str
    pattern: str
    suffixes: tuple[str, ...] = ()
    names: str = ""  # the files' names in words, for messages (default: ``pattern``)


def raise_first(problems: list[str], root: Path) -> None:
    """Raise DatasetError with the first of ``problems`` (if any), saying how many more ``check`` would list."""
    if problems:
        more = len(problems) - 1
        raise DatasetError(problems[0] + (f" (and {more} more problem{'s' * (more > 1)}: run `python -m seg_utils "
                                          f"check {root}`)" if more else ""))


class Layout:
    """A dataset folder of one kind: its splits and their files, its class table, its samples and how they are read,
    where a prediction of a frame goes and how a folder of predictions is scored."""

    name: ClassVar[str]
    description: ClassVar[str]  # what the folder holds, for the error of a folder that is no dataset
    parts: ClassVar[tuple[Part, Part]]  # the image files and the label files of a split
    photos: ClassVar[bool]  # images read as photos (any format, EXIF turn applied), not strictly as frames
    label_word: ClassVar[str]  # what errors call a label file
    prediction_format: ClassVar[str]  # what ``predict`` writes by default: what the layout's scorer reads
    optional_splits: ClassVar[dict[str, str]]  # a split that may be missing: the note ``check`` prints

    def __init__(self, root: str | Path, classes: str | Path | ClassTable | None = None,
                 label_mode: str = "trainId") -> None:
        self.root = Path(root)
        self.label_mode = label_mode
        self.table = self.class_table(classes)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, classes={len(self.table)})"

    # what each layout says for itself
    @classmethod
    def holds(cls, folder: Path) -> bool:
        """Return whether ``folder`` is a dataset of this layout (the one test of what a dataset folder is)."""
        raise NotImplementedError

    def class_table(self, classes: str | Path | ClassTable | None) -> ClassTable:
        """Return the class table: ``classes`` (a table or its ``classes.json``) where the layout takes one, else
        its own."""
        raise NotImplementedError

    @staticmethod
    def given_table(classes: str | Path | ClassTable) -> ClassTable:
        """Return a class table given as a table or as its file."""
        return classes if isinstance(classes, ClassTable) else ClassTable.load(classes)

    def scan(self, split: str, with_images: bool = True) -> tuple[list[Sample], list[str]]:
        """Return the paired frames of a split and one line per problem found in names and pairs
        (``with_images=False``: the labels alone, as a scorer reads them)."""
        raise NotImplementedError

    def read(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        """Return a frame's checked (image, target): (H, W, 3) RGB uint8, (H, W) uint8 class indices, 255 = ignore;
        DatasetError names a file that cannot be read, holds values outside the table or has another size."""
        raise NotImplementedError

    def read_target(self, sample: Sample) -> np.ndarray:
        """Return a frame's checked target alone, as ``read`` gives it."""
        raise NotImplementedError

    def require(self) -> None:
        """Raise DatasetError when the folder as a whole lacks what every split needs (``check`` says it once)."""

    def labelled(self, split: str, samples: list[Sample]) -> bool:
        """Return whether a split's labels can be trained on and scored."""
        return all(s.label_path is not None for s in samples)

    def prediction_path(self, sample: Sample, out_dir: Path) -> Path:
        """Return where ``predict`` writes the prediction of a frame: the name this layout's scorer looks for."""
        raise NotImplementedError

    def prediction_pairs(self, split: str, predictions_dir: Path) -> list[tuple[Path, Path]]:
        """Return (label file, prediction file) for every frame of a split, or raise DatasetError naming a frame
        without a prediction."""
        raise NotImplementedError

    def pair_histogram(self, label_path: Path, prediction_path: Path, label_format: str) -> np.ndarray:
        """Return the (256, 256) count of (label value, prediction value) pairs of one frame."""
        raise NotImplementedError

    def confusion(self, histogram: np.ndarray, label_format: str) -> np.ndarray:
        """Return the (K, K + 1) confusion of summed ``pair_histogram``'s: truth in rows, the last column misses."""
        raise NotImplementedError

    def decode_problems(self, sample: Sample) -> list[str]:
        """Return one line per fault found decoding a frame's files (``check``)."""
        try:
            self.read(sample)
        except DatasetError as err:
            return [str(err)]
        return []

    # written once for every layout
    def split_files(self, split: str, parts: tuple[Part, ...] | None = None) -> Iterator[tuple[Path, Part]]:
        """Yield (file, its part) for the files ``scan`` reads in a split: images first, then labels."""
        for part in self.parts if parts is None else parts:
            folder = self.root / part.top / split
            if not folder.is_dir():
                continue
            for path in sorted(folder.glob(part.pattern)):
                hidden = any(p.startswith(".") for p in path.relative_to(folder).parts)
                if not hidden and path.is_file() and (not part.suffixes or path.suffix.lower() in part.suffixes):
                    yield path, part

    def has_split(self, split: str) -> bool:
        """Whether a split is there at all: a file its scanner would take, image or label. An optional split that
        is not there is skipped (``train`` without val warns, ``check`` notes it); one that is there is used, so
        its problems are errors."""
        return next(self.split_files(split), None) is not None

    def samples(self, split: str, with_images: bool = True) -> list[Sample]:
        """Return the frames of a split sorted by name, or raise DatasetError on its first problem (``check``
        lists them all)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        samples, problems = self.scan(split, with_images)
        raise_first(problems, self.root)
        if not samples:
            part = self.parts[0 if with_images else 1]
            raise DatasetError(f"{self.root / part.top / split}: no frames found (expected "
                               f"{part.names or part.pattern} files)")
        return samples

    def frame_size(self, split: str = "train") -> tuple[int, int]:
        """Return the (height, width) most of a split's frames have (read from the headers of about 100 of them,
        a photo's EXIF turn applied): what a checkpoint records, so that photos are predicted at its pixel scale."""
        samples = self.samples(split)
        sizes = Counter(header_size(s.image_path, self.photos) for s in samples[:: max(1, len(samples) // 100)])
        width, height = sizes.most_common(1)[0][0]
        return height, width

    def check_headers(self, samples: list[Sample]) -> None:
        """Raise DatasetError naming the first file of ``samples`` whose header is unreadable or whose size
        differs from its image's: headers only (a fraction of a millisecond a file), so a run checks every frame
        before its first iteration instead of failing at its first validation."""
        from PIL import UnidentifiedImageError

        for sample in samples:
            sizes = {}
            for path in (sample.image_path, sample.label_path, sample.train_ids_path):
                if path is None:
                    continue
                try:
                    sizes[path] = header_size(path, self.photos and path == sample.image_path)
                except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
                    kind = "a PNG or JPEG" if path == sample.image_path else "a PNG"
                    raise DatasetError(f"{path}: unreadable or corrupt image header (expected {kind})") from None
            image_size = sizes.pop(sample.image_path)
            for path, size in sizes.items():
                if size != image_size:
                    raise DatasetError(size_text(path, size, image_size, self.label_word))

    def read_image(self, sample: Sample) -> np.ndarray:
        """Return a frame's image as (H, W, 3) uint8 RGB (a photo in any format OpenCV reads, or strictly a frame)."""
        return read_image(sample.image_path, strict=not self.photos)

    def dataset(self, split: str, transforms: Callable | None = None) -> SegmentationDataset:
        """Return the frames of a split as a torch dataset."""
        return SegmentationDataset(self, split, transforms)


class SegmentationDataset(torch.utils.data.Dataset):
    """The frames of a split of any layout as ``(image, target)`` pairs.

    ``image`` is a uint8 (3, H, W) RGB tensor (``device.to_device`` normalises it on the model's device);
    ``target`` a uint8 (H, W) tensor of class indices, 255 = ignore: for Cityscapes trainIds 0..18 (label ids 0..33
    in ``label_mode="labelId"``), equal pixel for pixel to the official ``*_gtFine_labelTrainIds.png`` when no
    ``transforms`` are given. ``has_labels`` is False for a split without labels (Cityscapes' test split loads,
    its targets void).
    """

    def __init__(self, layout: Layout, split: str = "train", transforms: Callable | None = None) -> None:
        from .transforms import EvalTransform

        self.layout = layout
        self.root = layout.root
        self.split = split
        self.table = layout.table
        self.label_mode = layout.label_mode
        self.transforms = transforms if transforms is not None else EvalTransform()
        self.samples = layout.samples(split)
        self.has_labels = layout.labelled(split, self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        cities = len({s.city for s in self.samples} - {""})
        where = f", cities={cities}" if cities else ""
        classes = f"label_mode={self.label_mode!r}" if self.table.cityscapes_mode else f"classes={len(self.table)}"
        return (f"{type(self).__name__}(split={self.split!r}, frames={len(self)}{where}, {classes}, "
                f"transforms={self.transforms!r})")

    def load_image(self, index: int) -> np.ndarray:
        """Return the untransformed image of a frame as an (H, W, 3) uint8 RGB array."""
        return self.layout.read_image(self.samples[index])

    def load_target(self, index: int) -> np.ndarray:
        """Return the untransformed target of a frame as an (H, W) uint8 array."""
        return self.layout.read_target(self.samples[index])

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Return the untransformed (image, target) of a frame, checked to be the same size."""
        return self.layout.read(self.samples[index])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transforms(*self.load(index))


def _kinds() -> list[type[Layout]]:
    """The layouts the package knows: every subclass of ``Layout`` its modules define, in the order the package
    imports them (``seg_utils/__init__``: Cityscapes first, so a folder holding both kinds is read as Cityscapes)."""
    return Layout.__subclasses__()


def layout_at(folder: str | Path) -> type[Layout] | None:
    """Return the layout of a dataset folder, or None when ``folder`` is no dataset."""
    folder = Path(folder)
    return next((kind for kind in _kinds() if kind.holds(folder)), None)


def open_layout(root: str | Path, classes: str | Path | ClassTable | None = None, label_mode: str = "trainId"
                ) -> Layout:
    """Return the layout of the dataset folder ``root`` (``classes``: a class table file, where the layout takes
    one), or raise DatasetError saying what was expected."""
    root = Path(root)
    kinds = [kind.description for kind in _kinds()]
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found (expected {' or '.join(kinds)})")
    kind = layout_at(root)
    if kind is None:
        raise DatasetError(f"{root}: neither {' nor '.join(kinds)}; found {_listing(root)}")
    return kind(root, classes, label_mode)


def _listing(root: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir() if not p.name.startswith("."))
    if not names:
        return "an empty folder"
    return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")


def open_dataset(root: str | Path, split: str, *, classes: str | Path | None = None, label_mode: str = "trainId",
                 transforms: Callable | None = None) -> SegmentationDataset:
    """Return the dataset of a split of a folder of either layout (``classes``: a ``classes.json`` overriding a
    plain folder's; refused for Cityscapes, whose classes are fixed by the official evaluator)."""
    return open_layout(root, classes, label_mode).dataset(split, transforms)
