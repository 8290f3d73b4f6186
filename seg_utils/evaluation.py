"""Scoring a folder of prediction PNGs the way the official server does: ``evaluate_predictions``.

The ground truth is ``gtFine/{split}/{city}/{stem}_gtFine_labelIds.png``; one prediction ``{city}_{seq}_{frame}*.png``
per frame anywhere under the prediction folder (the official ``getPrediction`` rule), read as the official
evaluator reads PNGs (``data.read_label``). Each frame becomes a (labelId, prediction value) histogram, the
histograms are summed over the split and folded into one trainId confusion matrix (``metrics.compute_metrics``):
the same numbers as cityscapesscripts' evaluator (``official``), many times faster.

A plain folder of your own (``folder``) is scored the same way with the project's confusion matrix: one
``<name>.png`` per mask, holding class indices as an index mask does (or the table's colours). The official
evaluator is for Cityscapes only.
"""

from __future__ import annotations

import fnmatch
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .classes import ClassTable
from .data import DatasetError, find_samples, read_label, require_labels
from .datasets import cityscapes_classes, layout_of
from .device import cpu_cores
from .folder import find_folder_samples, load_class_table, read_mask
from .labels import IGNORE_INDEX, LABEL_ID_TO_TRAIN_ID, NUM_LABEL_IDS, NUM_TRAIN_IDS
from .metrics import _pair_histogram_u8, compute_metrics

__all__ = ["EvaluationError", "LABEL_FORMATS", "evaluate_predictions"]

LABEL_FORMATS = ("labelIds", "trainIds")


class EvaluationError(ValueError):
    """A prediction folder or ground-truth file cannot be scored; the message names the file."""


# The official getPrediction matches "{city}_{seq}_{frame}*.png"; cities hold no "_", seq/frame 6 digits.
_PRED_KEY = re.compile(r"^([^_]+_\d{6}_\d{6})")

# Column maps from a prediction value (0..255) to the (K, K+1) column: a class, or K = miss.
_K = NUM_TRAIN_IDS
_LABEL_ID_COLUMNS = np.where(LABEL_ID_TO_TRAIN_ID < _K, LABEL_ID_TO_TRAIN_ID, _K).astype(np.int64)
_TRAIN_ID_COLUMNS = np.where(np.arange(256) < _K, np.arange(256), _K).astype(np.int64)


def _read_label_png(path: Path) -> np.ndarray:
    """Read a ground-truth or prediction PNG as the official evaluator does (``data.read_label``)."""
    try:
        return read_label(path)
    except DatasetError as err:
        raise EvaluationError(str(err)) from None


def _find_predictions(predictions_dir: Path, stems: set[str]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for root, _dirs, files in os.walk(predictions_dir):
        for name in sorted(fnmatch.filter(files, "*.png")):
            match = _PRED_KEY.match(name)
            if match is None or match.group(1) not in stems:
                continue
            stem = match.group(1)
            if stem in found:
                raise EvaluationError(f"two predictions for {stem}: {found[stem]} and {Path(root) / name}")
            found[stem] = Path(root) / name
    return found


def _frame_histogram(gt_path: Path, pred_path: Path, label_format: str) -> np.ndarray:
    """Return the (256, 256) count of (ground-truth labelId, prediction value) pairs of one frame."""
    gt, pred = _read_label_png(gt_path), _read_label_png(pred_path)
    if pred.shape != gt.shape:
        raise EvaluationError(f"{pred_path}: prediction is {pred.shape[1]}x{pred.shape[0]} but the ground "
                              f"truth {gt_path.name} is {gt.shape[1]}x{gt.shape[0]} (predict at full size)")
    hist = _pair_histogram_u8(gt, pred)
    bad_gt = np.flatnonzero(hist[NUM_LABEL_IDS:].sum(1))
    if bad_gt.size:
        raise EvaluationError(f"{gt_path}: holds label id {bad_gt[0] + NUM_LABEL_IDS}; expected 0..33")
    used = np.flatnonzero(hist.sum(0))
    bad = used[used >= NUM_LABEL_IDS] if label_format == "labelIds" else \
        used[(used >= NUM_TRAIN_IDS) & (used != IGNORE_INDEX)]
    if bad.size:
        raise EvaluationError(f"{pred_path}: holds id {bad[0]}; expected {_range_text(label_format)}")
    return hist


def _range_text(label_format: str) -> str:
    return "labelIds 0..33" if label_format == "labelIds" else "trainIds 0..18 or 255"


def evaluate_predictions(data_root: str | Path, split: str, predictions_dir: str | Path,
                         label_format: str = "labelIds", workers: int | None = None,
                         classes: str | Path | None = None) -> dict[str, Any]:
    """Return the official Cityscapes scores of a folder of prediction PNGs (plus ``num_frames``).

    Ground truth: ``gtFine/{split}/{city}/{stem}_gtFine_labelIds.png``. Predictions: one
    ``{city}_{seq}_{frame}*.png`` per frame anywhere under ``predictions_dir`` (like the official
    getPrediction), full size, single channel:

    * ``label_format="labelIds"`` (the official submission format): ids 0..33; a non-evaluated id on an
      evaluated pixel is a miss (false negative);
    * ``label_format="trainIds"``: 0..18, and 255 for "no prediction", which is a miss. This scores the same
      as converting with ``labels.TRAIN_ID_TO_LABEL_ID`` (255 -> 0) and evaluating officially.

    Raises EvaluationError naming the file: test split, missing or duplicate prediction, wrong size,
    multi-channel image, ids out of range. Agrees with the official evaluator to float rounding.

    A plain folder (``images/`` + ``masks/``) is scored by ``evaluate_folder`` (``classes``: its class table file;
    ``label_format`` does not apply).
    """
    try:
        if layout_of(data_root) == "folder":
            return evaluate_folder(data_root, split, predictions_dir, classes, workers)
        cityscapes_classes(data_root, classes)
    except DatasetError as err:
        raise EvaluationError(str(err)) from None
    if label_format not in LABEL_FORMATS:
        raise EvaluationError(f"label_format must be one of {LABEL_FORMATS}, got {label_format!r}")
    require_labels(split, EvaluationError)
    root, predictions_dir = Path(data_root), Path(predictions_dir)
    try:
        samples = find_samples(root, split, with_images=False)  # the ground truth alone, as the official script
    except DatasetError as err:
        raise EvaluationError(str(err)) from None
    if not predictions_dir.is_dir():
        raise EvaluationError(f"{predictions_dir}: no such prediction folder")
    stems = {s.stem: s.label_path for s in samples}
    preds = _find_predictions(predictions_dir, set(stems))
    for stem, gt_path in stems.items():
        if stem not in preds:
            raise EvaluationError(f"{predictions_dir}: no prediction for {stem} (expected {stem}*.png, for the "
                                  f"ground truth {gt_path})")

    # PNG decoding dominates and cv2 releases the GIL: decode frames in parallel, sum in order.
    workers = workers or max(1, min(cpu_cores(), 8))
    pairs = [(stems[s], preds[s]) for s in sorted(stems)]
    total = np.zeros((256, 256), np.int64)
    if workers == 1:
        for gt_path, pred_path in pairs:
            total += _frame_histogram(gt_path, pred_path, label_format)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for hist in pool.map(lambda gp: _frame_histogram(gp[0], gp[1], label_format), pairs):
                total += hist

    # Fold the (labelId, prediction value) pairs into the (19, 20) trainId confusion: rows of void labelIds
    # are dropped (ignored), prediction values that are not an evaluated class go to the miss column.
    columns = _LABEL_ID_COLUMNS if label_format == "labelIds" else _TRAIN_ID_COLUMNS
    counts = np.zeros((_K, _K + 1), np.int64)
    rows = LABEL_ID_TO_TRAIN_ID
    for label_id in range(NUM_LABEL_IDS):
        if rows[label_id] < _K:
            np.add.at(counts[rows[label_id]], columns, total[label_id])
    result = compute_metrics(counts)
    result["num_frames"] = len(pairs)
    return result


def _folder_histogram(gt_path: Path, pred_path: Path, table: ClassTable) -> np.ndarray:
    try:
        gt, pred = read_mask(gt_path, table), read_mask(pred_path, table)
    except DatasetError as err:
        raise EvaluationError(str(err)) from None
    if pred.shape != gt.shape:
        raise EvaluationError(f"{pred_path}: prediction is {pred.shape[1]}x{pred.shape[0]}, its mask {gt_path} is "
                              f"{gt.shape[1]}x{gt.shape[0]} (expected equal sizes: predict at the photo's full size; "
                              f"`check` says whether the mask is its photo's size)")
    return _pair_histogram_u8(gt, pred)


def evaluate_folder(data_root: str | Path, split: str, predictions_dir: str | Path,
                    classes: str | Path | ClassTable | None = None, workers: int | None = None) -> dict[str, Any]:
    """Return the scores of a folder of predictions of a plain folder's split (plus ``num_frames``): ``miou``,
    ``pixel_acc``, ``class_iou`` by class name..., as ``metrics.compute_metrics`` gives them.

    Predictions: ``predictions_dir/<name>.png``, one per mask, full size, holding class indices as an index mask
    does (``predict --format index`` writes them) or the table's colours; ignored mask pixels are not scored, and a
    predicted ignore value is a miss. ``classes``: the class table (or its file; default ``classes.json``).
    """
    root, predictions_dir = Path(data_root), Path(predictions_dir)
    table = classes if isinstance(classes, ClassTable) else load_class_table(root, classes)
    samples = find_folder_samples(root, split)
    unlabelled = [s for s in samples if s.label_path is None]
    if unlabelled:
        raise EvaluationError(f"{root / 'masks' / split}: no masks, nothing to score (expected "
                              f"{unlabelled[0].name}.png there)")
    if not predictions_dir.is_dir():
        raise EvaluationError(f"{predictions_dir}: no such prediction folder")
    pairs = [(s.label_path, predictions_dir / f"{s.name}.png") for s in samples]
    for gt_path, pred_path in pairs:
        if not pred_path.is_file():
            raise EvaluationError(f"{pred_path}: no prediction (expected one for the mask {gt_path})")
    workers = workers or max(1, min(cpu_cores(), 8))
    total = np.zeros((256, 256), np.int64)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for hist in pool.map(lambda gp: _folder_histogram(gp[0], gp[1], table), pairs):
            total += hist
    k = len(table)
    counts = np.concatenate([total[:k, :k], total[:k, k:].sum(1, keepdims=True)], axis=1)  # (K, K+1): misses last
    result = compute_metrics(counts, class_names=table.names)
    result["num_frames"] = len(pairs)
    return result
