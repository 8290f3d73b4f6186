"""Cityscapes on disk: the official layout (``CityscapesLayout``), its file names, and its labels read and checked.

::

    leftImg8bit/{train,val,test}/<city>/<city>_<seq:06d>_<frame:06d>_leftImg8bit.png       the frames (8-bit RGB)
    gtFine/{train,val,test}/<city>/<city>_<seq:06d>_<frame:06d>_gtFine_labelIds.png        label ids 0..33

The real dataset (``CITYSCAPES_DATASET``) and the synthetic one are read by the same code, which never writes into
the dataset folder. Predictions are named and scored as the official evaluator names and scores them.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from .classes import ClassTable
from .env import cityscapes_root
from .images import DatasetError, read_image, read_label, size_problem
from .labels import (
    IGNORE_INDEX,
    LABEL_ID_TO_TRAIN_ID,
    LABEL_MODES,
    NUM_LABEL_IDS,
    NUM_TRAIN_IDS,
    label_ids_to_train_ids,
)
from .layouts import Layout, Part, Sample, SegmentationDataset
from .metrics import pair_histogram_u8

__all__ = ["IMAGE_DIR", "LABEL_DIR", "LABEL_FORMATS", "CityscapesLayout", "CityscapesDataset", "sample_at",
           "find_samples",
           "read_target", "check_label_ids", "check_train_ids", "require_dataset", "require_labels", "dataset_root"]

# The official layout, declared once: {IMAGE_DIR | LABEL_DIR}/{split}/{city}/{city}_{seq}_{frame}{suffix}
IMAGE_DIR, LABEL_DIR = "leftImg8bit", "gtFine"
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"
INSTANCE_SUFFIX = "_gtFine_instanceIds.png"
POLYGONS_SUFFIX = "_gtFine_polygons.json"
COLOR_SUFFIX = "_gtFine_color.png"
# The files a frame may or may not have (the real download ships no labelTrainIds; the test split no polygons).
OPTIONAL_FILES = ("train_ids_path", "instance_path", "polygons_path", "color_path")
STEM_PATTERN = re.compile(r"^(?P<city>[^/]+)_(?P<seq>\d{6})_(?P<frame>\d{6})$")
LABEL_FORMATS = ("labelIds", "trainIds")  # what a prediction PNG may hold

# The official getPrediction matches "{city}_{seq}_{frame}*.png"; cities hold no "_", seq/frame 6 digits.
_PRED_KEY = re.compile(r"^([^_]+_\d{6}_\d{6})")
# Column maps from a prediction value (0..255) to the (K, K+1) column: a class, or K = miss.
_K = NUM_TRAIN_IDS
_LABEL_ID_COLUMNS = np.where(LABEL_ID_TO_TRAIN_ID < _K, LABEL_ID_TO_TRAIN_ID, _K).astype(np.int64)
_TRAIN_ID_COLUMNS = np.where(np.arange(256) < _K, np.arange(256), _K).astype(np.int64)


def sample_at(root: str | Path, split: str, city: str, stem: str) -> Sample:
    """Return where the official layout puts every file of a frame (whether or not they exist)."""
    root = Path(root)
    gt = root / LABEL_DIR / split / city / stem
    return Sample(split, stem, root / IMAGE_DIR / split / city / f"{stem}{IMAGE_SUFFIX}", Path(f"{gt}{LABEL_SUFFIX}"),
                  city, Path(f"{gt}{TRAIN_IDS_SUFFIX}"), Path(f"{gt}{INSTANCE_SUFFIX}"), Path(f"{gt}{POLYGONS_SUFFIX}"),
                  Path(f"{gt}{COLOR_SUFFIX}"))


class CityscapesLayout(Layout):
    """The official layout: frames in ``leftImg8bit/``, label ids in ``gtFine/``; classes fixed by the evaluator."""

    name = "cityscapes"
    description = f"Cityscapes ({IMAGE_DIR}/ and {LABEL_DIR}/)"
    parts = (Part(IMAGE_DIR, f"*/*{IMAGE_SUFFIX}", names=f"<city>/<city>_<seq>_<frame>{IMAGE_SUFFIX}"),
             Part(LABEL_DIR, f"*/*{LABEL_SUFFIX}", names=f"<city>/<city>_<seq>_<frame>{LABEL_SUFFIX}"))
    photos = False
    label_word = "label"
    prediction_format = "labelIds"  # the official submission format
    optional_splits = {"test": "no test split (optional: it has no public labels)"}

    @classmethod
    def holds(cls, folder: Path) -> bool:
        return (folder / IMAGE_DIR).is_dir() or (folder / LABEL_DIR).is_dir()  # require_dataset names a missing half

    def class_table(self, classes: str | Path | ClassTable | None) -> ClassTable:
        table = ClassTable.cityscapes(self.label_mode)
        if classes is not None and self.given_table(classes) != table:
            raise DatasetError(f"{classes}: a class table for a Cityscapes folder ({self.root}), whose classes are "
                               f"fixed (its {len(table)} evaluated classes): drop --classes")
        return table

    def require(self) -> None:
        require_dataset(self.root)

    def scan(self, split: str, with_images: bool = True) -> tuple[list[Sample], list[str]]:
        """``with_images=False``: the ground truth alone (``gtFine``) is scanned, as the official evaluator does;
        every frame's ``image_path`` is then where its image would be."""
        if not self.root.is_dir():
            return [], [f"{self.root}: dataset folder not found (expected {IMAGE_DIR}/ and {LABEL_DIR}/ inside; set "
                        "CITYSCAPES_DATASET or write a synthetic set with `python -m seg_utils synth`)"]
        parts = self.parts if with_images else self.parts[1:]
        problems = [f"{self.root / p.top / split}: no such folder (expected {p.top}/{split}/<city>/)"
                    for p in parts if not (self.root / p.top / split).is_dir()]
        if problems:
            return [], problems
        images, labels = {}, {}
        for path, part in self.split_files(split, parts):
            suffix = IMAGE_SUFFIX if part.top == IMAGE_DIR else LABEL_SUFFIX
            stem = path.name[: -len(suffix)]
            match = STEM_PATTERN.match(stem)
            if match is None or match["city"] != path.parent.name:
                problems.append(f"{path}: name does not follow the official pattern "
                                f"{part.top}/{split}/<city>/<city>_<seq:06d>_<frame:06d>{suffix}")
                continue
            (images if part.top == IMAGE_DIR else labels)[stem] = path
        samples = []
        for stem in sorted(images.keys() | labels.keys()):
            city = STEM_PATTERN.match(stem)["city"]
            if stem not in labels:
                problems.append(f"{images[stem]}: an image without a label (expected "
                                f"{LABEL_DIR}/{split}/{city}/{stem}{LABEL_SUFFIX})")
                continue
            if with_images and stem not in images:
                problems.append(f"{labels[stem]}: a label without an image (expected "
                                f"{IMAGE_DIR}/{split}/{city}/{stem}{IMAGE_SUFFIX})")
                continue
            full = sample_at(self.root, split, city, stem)
            absent = {key: None for key in OPTIONAL_FILES if not getattr(full, key).is_file()}
            samples.append(replace(full, **absent))
        return samples, problems

    def read_target(self, sample: Sample) -> np.ndarray:
        return read_target(sample, self.label_mode)

    def read(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        image, target = self.read_image(sample), self.read_target(sample)
        problem = size_problem(sample.target_path(self.label_mode), image, target)
        if problem:
            raise DatasetError(problem)
        return image, target

    def labelled(self, split: str, samples: list[Sample]) -> bool:
        return split != "test"  # its gtFine files hold only void regions

    def decode_problems(self, sample: Sample) -> list[str]:
        """Each label file checked on its own: a frame's labelIds and labelTrainIds may both be wrong."""
        problems = []
        try:
            image = read_image(sample.image_path)
        except DatasetError as err:
            problems.append(str(err))
            image = None
        checks = [(sample.label_path, check_label_ids)]
        if sample.train_ids_path is not None:
            checks.append((sample.train_ids_path, check_train_ids))
        for path, check in checks:
            try:
                label = read_label(path)
                check(label, path)
            except DatasetError as err:
                problems.append(str(err))
                continue
            problem = size_problem(path, image, label) if image is not None else None
            if problem:
                problems.append(problem)
        return problems

    def prediction_path(self, sample: Sample, out_dir: Path) -> Path:
        return out_dir / sample.city / sample.image_path.name  # the names the official evaluator looks for

    def prediction_pairs(self, split: str, predictions_dir: Path) -> list[tuple[Path, Path]]:
        """Ground truth ``gtFine/{split}/{city}/{stem}_gtFine_labelIds.png`` (the labels alone, as the official
        script reads them); one ``{city}_{seq}_{frame}*.png`` per frame anywhere under ``predictions_dir`` (the
        official ``getPrediction`` rule)."""
        require_labels(split)
        stems = {s.stem: s.label_path for s in self.samples(split, with_images=False)}
        if not predictions_dir.is_dir():
            raise DatasetError(f"{predictions_dir}: no such prediction folder")
        found: dict[str, Path] = {}
        for folder, _dirs, files in os.walk(predictions_dir):
            for name in sorted(fnmatch.filter(files, "*.png")):
                match = _PRED_KEY.match(name)
                if match is None or match.group(1) not in stems:
                    continue
                stem = match.group(1)
                if stem in found:
                    raise DatasetError(f"two predictions for {stem}: {found[stem]} and {Path(folder) / name}")
                found[stem] = Path(folder) / name
        for stem, gt_path in stems.items():
            if stem not in found:
                raise DatasetError(f"{predictions_dir}: no prediction for {stem} (expected {stem}*.png, for the "
                                   f"ground truth {gt_path})")
        return [(stems[s], found[s]) for s in sorted(stems)]

    def pair_histogram(self, label_path: Path, prediction_path: Path, label_format: str) -> np.ndarray:
        """The (labelId, prediction value) pairs of a frame, both read as the official evaluator reads PNGs."""
        gt, pred = read_label(label_path), read_label(prediction_path)
        if pred.shape != gt.shape:
            raise DatasetError(f"{prediction_path}: prediction is {pred.shape[1]}x{pred.shape[0]} but the ground "
                               f"truth {label_path.name} is {gt.shape[1]}x{gt.shape[0]} (predict at full size)")
        hist = pair_histogram_u8(gt, pred)
        bad_gt = np.flatnonzero(hist[NUM_LABEL_IDS:].sum(1))
        if bad_gt.size:
            raise DatasetError(f"{label_path}: holds label id {bad_gt[0] + NUM_LABEL_IDS}; expected 0..33")
        used = np.flatnonzero(hist.sum(0))
        bad = used[used >= NUM_LABEL_IDS] if label_format == "labelIds" else \
            used[(used >= NUM_TRAIN_IDS) & (used != IGNORE_INDEX)]
        if bad.size:
            expected = "labelIds 0..33" if label_format == "labelIds" else "trainIds 0..18 or 255"
            raise DatasetError(f"{prediction_path}: holds id {bad[0]}; expected {expected}")
        return hist

    def confusion(self, histogram: np.ndarray, label_format: str) -> np.ndarray:
        """Fold (labelId, prediction value) pairs into the (19, 20) trainId confusion: rows of void labelIds are
        dropped (ignored); prediction values that are not an evaluated class go to the miss column (a labelIds
        prediction of a void id, a trainIds prediction of 255)."""
        columns = _LABEL_ID_COLUMNS if label_format == "labelIds" else _TRAIN_ID_COLUMNS
        counts = np.zeros((_K, _K + 1), np.int64)
        for label_id in range(NUM_LABEL_IDS):
            if LABEL_ID_TO_TRAIN_ID[label_id] < _K:
                np.add.at(counts[LABEL_ID_TO_TRAIN_ID[label_id]], columns, histogram[label_id])
        return counts


def check_label_ids(label_ids: np.ndarray, path: str | Path) -> None:
    """Raise DatasetError naming ``path`` when a labelIds map holds an id outside the official table (0..33)."""
    if label_ids.size and label_ids.max() >= NUM_LABEL_IDS:  # one max: about 1 ms at 1024x2048
        bad = np.unique(label_ids[label_ids >= NUM_LABEL_IDS])
        raise DatasetError(f"{path}: label ids {bad.tolist()} outside the official table "
                           f"(expected 0..{NUM_LABEL_IDS - 1})")


def check_train_ids(train_ids: np.ndarray, path: str | Path) -> None:
    """Raise DatasetError naming ``path`` when a trainIds map holds a value other than 0..18 and 255."""
    if train_ids.size and train_ids.max() >= NUM_TRAIN_IDS:
        bad = np.unique(train_ids[(train_ids >= NUM_TRAIN_IDS) & (train_ids != IGNORE_INDEX)])
        if bad.size:
            raise DatasetError(f"{path}: trainIds {bad.tolist()[:5]} outside 0..{NUM_TRAIN_IDS - 1} and "
                               f"{IGNORE_INDEX} (delete the *{TRAIN_IDS_SUFFIX} files to map label ids on the "
                               f"fly, or recreate them with csCreateTrainIdLabelImgs)")


def read_target(sample: Sample, label_mode: str = "trainId") -> np.ndarray:
    """Return a frame's checked labels as (H, W) uint8: trainIds (its trainIds file when the dataset has one,
    else its label ids mapped) or label ids; DatasetError names a file holding values outside the table."""
    if sample.target_path(label_mode) == sample.train_ids_path:
        train_ids = read_label(sample.train_ids_path)
        check_train_ids(train_ids, sample.train_ids_path)
        return train_ids
    label_ids = read_label(sample.label_path)
    check_label_ids(label_ids, sample.label_path)
    return label_ids_to_train_ids(label_ids) if label_mode == "trainId" else label_ids


def require_dataset(root: str | Path, what: str = "dataset folder") -> Path:
    """Return ``root`` if it holds the official layout's two folders, ``leftImg8bit/`` and ``gtFine/``, else
    raise DatasetError saying which are missing (a quick look; each command then names any missing split, and
    ``check`` decodes every file)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: {what} not found (expected {IMAGE_DIR}/ and {LABEL_DIR}/ inside)")
    missing = [f"{top}/" for top in (IMAGE_DIR, LABEL_DIR) if not (root / top).is_dir()]
    if missing:
        raise DatasetError(f"{root}: {what} has no {' and no '.join(missing)} (expected the official zips "
                           f"leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip unzipped into it)")
    return root


def require_labels(split: str, error: type[Exception] = DatasetError) -> None:
    """Raise ``error`` (DatasetError, or the caller's own kind) when a split cannot be scored: the test split
    has no public labels."""
    if split == "test":
        raise error("the test split has no public labels (its gtFine files hold only void regions): "
                           "test scores come only from the official server; score the val split instead")


def find_samples(root: str | Path, split: str, with_images: bool = True) -> list[Sample]:
    """Return the frames of a Cityscapes split sorted by name, or raise DatasetError on the first naming problem
    (``with_images=False``: the ground truth alone, as evaluation reads it)."""
    return CityscapesLayout(root).samples(split, with_images)


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


class CityscapesDataset(SegmentationDataset):
    """The frames of a Cityscapes split (``layouts.SegmentationDataset``): trainIds 0..18 (``label_mode="trainId"``,
    the default) or label ids 0..33 (``"labelId"``), 255 = ignore; the test split loads, its targets void."""

    def __init__(self, root: str | Path, split: str = "train", label_mode: str = "trainId",
                 transforms=None) -> None:
        if label_mode not in LABEL_MODES:
            raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
        super().__init__(CityscapesLayout(root, label_mode=label_mode), split, transforms)
