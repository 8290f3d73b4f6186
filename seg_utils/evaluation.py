"""Scoring a folder of prediction PNGs the way the official server does: ``evaluate_predictions``.

Cityscapes: the ground truth is ``gtFine/{split}/{city}/{stem}_gtFine_labelIds.png``; one prediction
``{city}_{seq}_{frame}*.png`` per frame anywhere under the prediction folder (the official ``getPrediction`` rule), read
as the official evaluator reads PNGs (``images.read_label``). Each frame becomes a (labelId, prediction value)
histogram, the histograms are summed over the split and folded into one trainId confusion matrix
(``metrics.compute_metrics``): the same numbers as cityscapesscripts' evaluator (``official``), many times faster.

A plain folder of your own (``folder``) is scored the same way: one ``<name>.png`` per mask, holding class indices as
an index mask does (or the table's colours). Which files pair up, how they are read and folded is the folder's layout's
(``layouts.Layout``); the official evaluator is for Cityscapes only.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .cityscapes import LABEL_FORMATS
from .classes import ClassTable
from .device import cpu_cores
from .images import DatasetError
from .layouts import open_layout
from .metrics import compute_metrics

__all__ = ["EvaluationError", "LABEL_FORMATS", "evaluate_predictions"]


class EvaluationError(ValueError):
    """A prediction folder or ground-truth file cannot be scored; the message names the file."""


def evaluate_predictions(data_root: str | Path, split: str, predictions_dir: str | Path,
                         label_format: str = "labelIds", workers: int | None = None,
                         classes: str | Path | ClassTable | None = None) -> dict[str, Any]:
    """Return the scores of a folder of prediction PNGs (plus ``num_frames``): for Cityscapes the official ones.

    Cityscapes: ground truth ``gtFine/{split}/{city}/{stem}_gtFine_labelIds.png``; predictions one
    ``{city}_{seq}_{frame}*.png`` per frame anywhere under ``predictions_dir`` (like the official getPrediction),
    full size, single channel:

    * ``label_format="labelIds"`` (the official submission format): ids 0..33; a non-evaluated id on an
      evaluated pixel is a miss (false negative);
    * ``label_format="trainIds"``: 0..18, and 255 for "no prediction", which is a miss. This scores the same
      as converting with ``labels.TRAIN_ID_TO_LABEL_ID`` (255 -> 0) and evaluating officially.

    A plain folder (``images/`` + ``masks/``): ``predictions_dir/<name>.png``, one per mask, holding class indices as
    an index mask does (``predict --format index`` writes them) or the table's colours; ignored mask pixels are not
    scored, a predicted ignore value is a miss; ``classes``: its class table (or its file; default
    ``classes.json``); ``label_format`` does not apply.

    Raises EvaluationError naming the file: test split, missing or duplicate prediction, wrong size,
    multi-channel image, ids out of range. Agrees with the official evaluator to float rounding.
    """
    if label_format not in LABEL_FORMATS:
        raise EvaluationError(f"label_format must be one of {LABEL_FORMATS}, got {label_format!r}")
    try:
        layout = open_layout(data_root, classes)
        pairs = layout.prediction_pairs(split, Path(predictions_dir))
        # PNG decoding dominates and cv2 releases the GIL: decode frames in parallel, sum in order.
        total = np.zeros((256, 256), np.int64)
        with ThreadPoolExecutor(max_workers=workers or max(1, min(cpu_cores(), 8))) as pool:
            for hist in pool.map(lambda pair: layout.pair_histogram(*pair, label_format), pairs):
                total += hist
    except DatasetError as err:
        raise EvaluationError(str(err)) from None
    result = compute_metrics(layout.confusion(total, label_format), class_names=layout.table.names)
    result["num_frames"] = len(pairs)
    return result
