"""Your pictures in, prediction files out: which inputs are images and which videos, the scale a photo is predicted
at, and how a label map becomes a picture or a mask (class indices, Cityscapes ids, colours, an overlay).

No model here: ``inference`` predicts, ``predictions`` writes the files (``video`` reads and writes the clips);
both encode with this module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from .checkpoint import atomic_write
from .classes import ClassTable, as_table
from .data import DatasetError
from .labels import IGNORE_INDEX, LABEL_ID_TO_TRAIN_ID, LABEL_MODES, TRAIN_ID_TO_LABEL_ID
from .outputs import refuse_dataset

__all__ = ["IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "PREDICTION_FORMATS", "PICTURE_FORMATS", "is_video", "find_inputs",
           "video_format", "photo_scale", "overlay", "draw_legend", "encode_prediction", "save_prediction"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
PREDICTION_FORMATS = ("labelIds", "trainIds", "index", "color", "overlay")
PICTURE_FORMATS = ("color", "overlay")  # what a video is written in: pictures, not masks (a video codec blurs ids)


def is_video(path: str | Path) -> bool:
    """Return whether a path names a video (by its suffix: MP4, AVI, MOV, MKV, WebM)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def video_format(fmt: str | None, path: str | Path) -> str:
    """Return the format a video is written in for ``--format`` ``fmt``: ``overlay`` when none is given; ``color``
    or ``overlay`` as given; a mask format refused (ValueError naming the video): class ids do not survive a video
    codec's lossy compression."""
    if fmt is None:
        return "overlay"
    if fmt not in PICTURE_FORMATS:
        raise ValueError(f"{path}: a video is written in {' or '.join(PICTURE_FORMATS)}, not {fmt} (class ids do not "
                         f"survive a video codec's compression; predict its frames as images for masks)")
    return fmt


def find_inputs(paths: Sequence[str | Path]) -> list[tuple[Path, Path]]:
    """Return (input file, its output name relative to the output folder) for image and video files and for the
    images and videos found in folders (their sub-folders kept): ``<name>.png`` for an image, ``<stem>.mp4`` for a
    video. Raise DatasetError for a path that is neither, or a folder with none."""
    kinds = ", ".join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES
                           and not p.name.startswith("."))  # hidden: e.g. a video being written there
            if not files:
                raise DatasetError(f"{path}: no images or videos found (expected files ending in {kinds})")
            found.extend((p, _output_name(p.relative_to(path))) for p in files)
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES + VIDEO_SUFFIXES:
                raise DatasetError(f"{path}: not an image or video file (expected a name ending in {kinds})")
            found.append((path, _output_name(Path(path.name))))
        else:
            raise DatasetError(f"{path}: no such image or video file or folder")
    return found


def _output_name(relative: Path) -> Path:
    return relative.with_suffix(".mp4" if is_video(relative) else ".png")


def photo_scale(size: Sequence[int], frame_size: Sequence[int] | None,
                scale_range: Sequence[float] | None = None) -> float:
    """Return the factor that brings a picture of ``size`` (H, W) to the pixel scale a model was trained at: the
    long side of its training frames (``frame_size``, which its checkpoint records) times the middle of the random
    rescaling its training applied (``scale_range``: the geometric mean of its ends; 1 for the published recipe's
    0.5-2.0), made equal to the picture's long side.

    A camera's field of view is set along its long side, so two cameras that see about as wide a view show an
    object at about the same size once their long sides have as many pixels (a phone's 4032x3024 photo, for a model
    trained on Cityscapes' 1024x2048 frames: 0.51). Without a recorded frame size: 1, the picture as it is."""
    if not frame_size:
        return 1.0
    middle = math.sqrt(scale_range[0] * scale_range[1]) if scale_range else 1.0
    return max(frame_size) * middle / max(size)


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


def encode_prediction(pred: np.ndarray | torch.Tensor, fmt: str = "labelIds", classes: str | ClassTable = "trainId",
                      image: np.ndarray | None = None, legend: bool = False) -> np.ndarray:
    """Return a label map encoded for saving: ``index`` (the model's class indices, as an index mask holds them),
    ``color`` (RGB, the table's colours), ``overlay`` (``image``, RGB, with the colours blended over it), and for
    Cityscapes ``labelIds`` (the official format) or ``trainIds``.

    ``classes`` says what ``pred`` holds: a class table (``classes_of(model)``), or a Cityscapes label mode:
    trainIds (a 19-class model, the default) or labelIds (34 classes). ``legend`` (color, overlay): the classes
    present named in a corner (``draw_legend``).
    """
    if fmt not in PREDICTION_FORMATS:
        raise ValueError(f"format must be one of {PREDICTION_FORMATS}, got {fmt!r}")
    if isinstance(classes, str) and classes not in LABEL_MODES:
        raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {classes!r}")
    table = as_table(classes)
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
    if mode is None:
        raise ValueError(f"format {fmt} is Cityscapes' own; a model of other classes ({table.brief(3)}) writes "
                         f"index, color or overlay")
    train_ids = LABEL_ID_TO_TRAIN_ID[pred] if mode == "labelId" else pred  # trainIds: void ids become 255
    if fmt == "labelIds":
        return pred if mode == "labelId" else TRAIN_ID_TO_LABEL_ID[train_ids]
    return train_ids


def save_prediction(pred: np.ndarray | torch.Tensor, path: str | Path, fmt: str = "labelIds",
                    classes: str | ClassTable = "trainId", image: np.ndarray | None = None,
                    legend: bool = False) -> Path:
    """Write a label map (class indices of ``classes``: trainIds by default) as a PNG in the given format
    (written whole, then renamed into place); a path inside a dataset is refused (``outputs.OutputError``).

    The one-file writer under ``predict_split`` and ``predict_images`` (which refuse existing files unless told):
    it replaces ``path`` if it exists."""
    refuse_dataset(Path(path).parent)
    return write_prediction(pred, Path(path), fmt, classes, image, legend)


def write_prediction(pred: np.ndarray | torch.Tensor, path: Path, fmt: str, classes: str | ClassTable,
                     image: np.ndarray | None = None, legend: bool = False) -> Path:
    """``save_prediction`` without its check, for a pipeline whose output folder was checked once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    encoded = encode_prediction(pred, fmt, classes, image, legend)
    if encoded.ndim == 3:
        encoded = cv2.cvtColor(encoded, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".png", encoded)
    if not ok:
        raise RuntimeError(f"{path}: PNG encoding failed")
    atomic_write(path, lambda f: f.write(data.tobytes()), fsync=False)  # a prediction can be made again
    return path
