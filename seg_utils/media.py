"""How a label map becomes a picture or a mask: class indices, Cityscapes ids, colours, an overlay, a legend.

No model and no files here: ``inference`` predicts, ``predictions`` writes the files (``video`` reads and writes the
clips); both encode with this module, and ``viz`` draws with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from .classes import ClassTable, as_table
from .labels import IGNORE_INDEX, LABEL_ID_TO_TRAIN_ID, LABEL_MODES, TRAIN_ID_TO_LABEL_ID

__all__ = ["PREDICTION_FORMATS", "PICTURE_FORMATS", "overlay", "draw_legend", "check_format", "encode_prediction"]

PREDICTION_FORMATS = ("labelIds", "trainIds", "index", "color", "overlay")
PICTURE_FORMATS = ("color", "overlay")  # what a video is written in: pictures, not masks (a video codec blurs ids)


def overlay(image: np.ndarray, label_map, alpha: float = 0.5, mode: str | ClassTable = "trainId") -> np.ndarray:
    """Return the (H, W, 3) uint8 image with the label map's class colours blended over it (``alpha`` of the
    colour); ignore pixels (255) stay untouched."""
    labels = label_map.cpu().numpy() if isinstance(label_map, torch.Tensor) else np.asarray(label_map)
    colours = as_table(mode).palette[labels.astype(np.uint8)].astype(np.float32)
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colours
    return np.where((labels != IGNORE_INDEX)[..., None], blended, image).astype(np.uint8)


def draw_legend(picture: np.ndarray, ids: Sequence[int], classes: str | ClassTable) -> np.ndarray:
    """Return a copy of an (H, W, 3) RGB picture with a legend in its top-left corner: a colour swatch and the
    name of each class of ``ids``, on a dark box; the picture keeps its size."""
    table = as_table(classes)
    out = picture.copy()
    scale = float(np.clip(out.shape[0] / 900, 0.35, 1.2))
    row = int(round(28 * scale)) + 2
    ids = [i for i in ids if i != IGNORE_INDEX][:max(1, (out.shape[0] - 6) // row)]  # as many rows as fit
    if not ids:
        return out
    width = max(cv2.getTextSize(table.names[i], cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] for i in ids) + 2 * row
    box = out[:len(ids) * row + 6, :width + 6]
    box[:] = (box * 0.35).astype(np.uint8)  # darkened: the names stay readable on any scene
    for n, i in enumerate(ids):
        top = 4 + n * row
        colour = tuple(int(c) for c in table.palette[i])
        cv2.rectangle(out, (6, top + 2), (6 + row - 6, top + row - 4), colour, thickness=-1)
        cv2.putText(out, table.names[i], (row + 4, top + row - 8), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return out


def check_format(fmt: str, classes: str | ClassTable = "trainId") -> ClassTable:
    """Return the class table of ``classes`` (a table, or a Cityscapes label mode) if label maps of it can be encoded
    in ``fmt``, else raise ValueError saying why: ``encode_prediction``'s rule, for checking before any work."""
    if fmt not in PREDICTION_FORMATS:
        raise ValueError(f"format must be one of {PREDICTION_FORMATS}, got {fmt!r}")
    if isinstance(classes, str) and classes not in LABEL_MODES:
        raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {classes!r}")
    table = as_table(classes)
    if fmt in ("labelIds", "trainIds") and table.cityscapes_mode is None:
        raise ValueError(f"format {fmt} is Cityscapes' own; a model of other classes ({table.brief(3)}) writes "
                         f"index, color or overlay")
    return table


def encode_prediction(pred: np.ndarray | torch.Tensor, fmt: str = "labelIds", classes: str | ClassTable = "trainId",
                      image: np.ndarray | None = None, legend: bool = False) -> np.ndarray:
    """Return a label map encoded for saving: ``index`` (the model's class indices, as an index mask holds them),
    ``color`` (RGB, the table's colours), ``overlay`` (``image``, RGB, with the colours blended over it), and for
    Cityscapes ``labelIds`` (the official format) or ``trainIds``.

    ``classes`` says what ``pred`` holds: a class table (``classes_of(model)``), or a Cityscapes label mode:
    trainIds (a 19-class model, the default) or labelIds (34 classes). ``legend`` (color, overlay): the classes
    present named in a corner (``draw_legend``).
    """
    table = check_format(fmt, classes)
    if isinstance(pred, torch.Tensor):
        pred = pred.cpu().numpy()
    pred = pred.astype(np.uint8)
    if fmt == "index":
        return pred
    if fmt in PICTURE_FORMATS:
        if fmt == "overlay" and image is None:
            raise ValueError("format overlay blends the prediction over its image: give image=")
        picture = table.palette[pred] if fmt == "color" else overlay(image, pred, mode=table)
        return draw_legend(picture, np.unique(pred).tolist(), table) if legend else picture
    mode = table.cityscapes_mode
    train_ids = LABEL_ID_TO_TRAIN_ID[pred] if mode == "labelId" else pred  # trainIds: void ids become 255
    if fmt == "labelIds":
        return pred if mode == "labelId" else TRAIN_ID_TO_LABEL_ID[train_ids]
    return train_ids


