"""The Cityscapes label table, taken from the official cityscapesscripts, and the lookups built on it.

Two label modes exist:

* ``"trainId"``: the 19 evaluated classes (trainIds 0..18); every other pixel is ``IGNORE_INDEX``.
  Every published Cityscapes number uses this mode.
* ``"labelId"``: the 34 label ids 0..33 as stored in ``*_gtFine_labelIds.png`` (the mode the original
  script trained in). Void classes are then ordinary outputs, which wastes capacity on classes that are
  never scored.
"""

from __future__ import annotations

import cv2
import numpy as np
from cityscapesscripts.helpers.labels import Label
from cityscapesscripts.helpers.labels import labels as _OFFICIAL_LABELS

__all__ = [
    "IGNORE_INDEX",
    "LABEL_MODES",
    "LABELS",
    "NUM_LABEL_IDS",
    "NUM_TRAIN_IDS",
    "TRAIN_LABELS",
    "TRAIN_ID_NAMES",
    "LABEL_ID_NAMES",
    "CATEGORY_NAMES",
    "CITYSCAPES_TRAIN_PIXEL_SHARES",
    "TRAIN_ID_TO_CATEGORY",
    "LABEL_ID_TO_TRAIN_ID",
    "TRAIN_ID_TO_LABEL_ID",
    "TRAIN_ID_PALETTE",
    "LABEL_ID_PALETTE",
    "num_classes",
    "class_names",
    "palette",
    "label_ids_to_train_ids",
    "train_ids_to_label_ids",
]

IGNORE_INDEX = 255
LABEL_MODES = ("trainId", "labelId")

#: Every label of the official table with a non-negative id (``license plate``, id -1, exists only in
#: polygon files and is never drawn into a label image).
LABELS: tuple[Label, ...] = tuple(lab for lab in _OFFICIAL_LABELS if lab.id >= 0)
#: The 19 evaluated classes, in trainId order.
TRAIN_LABELS: tuple[Label, ...] = tuple(
    sorted((lab for lab in LABELS if lab.trainId not in (255, -1)), key=lambda lab: lab.trainId)
)

NUM_LABEL_IDS = max(lab.id for lab in LABELS) + 1  # 34
NUM_TRAIN_IDS = len(TRAIN_LABELS)  # 19
assert [lab.trainId for lab in TRAIN_LABELS] == list(range(NUM_TRAIN_IDS))

TRAIN_ID_NAMES: tuple[str, ...] = tuple(lab.name for lab in TRAIN_LABELS)
LABEL_ID_NAMES: tuple[str, ...] = tuple(
    next(lab.name for lab in LABELS if lab.id == i) for i in range(NUM_LABEL_IDS)
)

#: The 7 evaluated categories in the official evaluator's order (``void`` is never scored).
CATEGORY_NAMES: tuple[str, ...] = tuple(dict.fromkeys(lab.category for lab in TRAIN_LABELS))
#: For each trainId, the index of its category in ``CATEGORY_NAMES``.
TRAIN_ID_TO_CATEGORY = np.array([CATEGORY_NAMES.index(lab.category) for lab in TRAIN_LABELS], dtype=np.int64)


def _lut(pairs: dict[int, int], fill: int) -> np.ndarray:
    lut = np.full(256, fill, dtype=np.uint8)
    for src, dst in pairs.items():
        lut[src] = dst
    return lut


#: 256-entry lookup table: ``LABEL_ID_TO_TRAIN_ID[label_ids]`` gives trainIds (255 for void and
#: for any value that is not a label id). Exactly what ``csCreateTrainIdLabelImgs`` writes.
LABEL_ID_TO_TRAIN_ID = _lut({lab.id: lab.trainId if lab.trainId != -1 else IGNORE_INDEX for lab in LABELS},
                            IGNORE_INDEX)
#: 256-entry lookup table from trainIds back to label ids, for the official submission format.
#: Ignore (255) maps to 0 (``unlabeled``): the official evaluator crashes on a 255 in a prediction.
TRAIN_ID_TO_LABEL_ID = _lut({lab.trainId: lab.id for lab in TRAIN_LABELS}, 0)

#: Colours as (K, 3) uint8 arrays, indexable by the label map itself.
TRAIN_ID_PALETTE = np.zeros((256, 3), dtype=np.uint8)
TRAIN_ID_PALETTE[:NUM_TRAIN_IDS] = [lab.color for lab in TRAIN_LABELS]
LABEL_ID_PALETTE = np.zeros((256, 3), dtype=np.uint8)
LABEL_ID_PALETTE[:NUM_LABEL_IDS] = [next(lab.color for lab in LABELS if lab.id == i) for i in range(NUM_LABEL_IDS)]


def _check_mode(mode: str) -> str:
    if mode not in LABEL_MODES:
        raise ValueError(f"label mode must be one of {LABEL_MODES}, got {mode!r}")
    return mode


def num_classes(mode: str = "trainId") -> int:
    """Return the number of network outputs for a label mode: 19 for trainId, 34 for labelId."""
    return NUM_TRAIN_IDS if _check_mode(mode) == "trainId" else NUM_LABEL_IDS


def class_names(mode: str = "trainId") -> tuple[str, ...]:
    """Return the class names in output order for a label mode."""
    return TRAIN_ID_NAMES if _check_mode(mode) == "trainId" else LABEL_ID_NAMES


def palette(mode: str = "trainId") -> np.ndarray:
    """Return the (256, 3) uint8 colour table for a label mode (official Cityscapes colours)."""
    return TRAIN_ID_PALETTE if _check_mode(mode) == "trainId" else LABEL_ID_PALETTE


def _lookup(table: np.ndarray, values: np.ndarray) -> np.ndarray:
    values = np.ascontiguousarray(values, dtype=np.uint8)
    if values.ndim == 2:  # OpenCV's table lookup is about 5x faster than numpy indexing on a full frame
        return cv2.LUT(values, table)
    return table[values]


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Return the trainId map (uint8, 255 = ignore) for a labelId map, with one table lookup."""
    return _lookup(LABEL_ID_TO_TRAIN_ID, label_ids)


def train_ids_to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    """Return the labelId map (uint8) for a trainId map: the official submission format."""
    return _lookup(TRAIN_ID_TO_LABEL_ID, train_ids)


#: Share of all pixels of the real train split per trainId, in percent: approximate figures collected in the
#: project's notes on Cityscapes, neither measured by this project nor traced to a published table (they sum to
#: 88.4%, leaving about 12% to void). What the synthetic set's class balance is compared with.
CITYSCAPES_TRAIN_PIXEL_SHARES = (32.7, 5.3, 20.1, 0.6, 0.8, 1.1, 0.2, 0.5, 14.3, 1.0, 3.5, 1.1, 0.1, 6.0, 0.2, 0.2,
                                 0.2, 0.1, 0.4)
