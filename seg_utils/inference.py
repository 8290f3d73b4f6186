"""Prediction: whole-image, sliding-window and multi-scale + flip, and writing prediction PNGs.

Scores are computed elsewhere (``metrics``); this module only turns images into label maps, always at
the input's native resolution, and writes them in the official submission format (label ids).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models.segmentation import DeepLabV3

from .data import DatasetError, find_samples, read_image
from .labels import LABEL_ID_TO_TRAIN_ID, LABEL_MODES, TRAIN_ID_TO_LABEL_ID, num_classes, palette
from .transforms import normalize

__all__ = [
    "PREDICTION_FORMATS",
    "load_model",
    "predict_logits",
    "predict",
    "label_mode_of",
    "encode_prediction",
    "save_prediction",
    "predict_split",
    "predict_images",
    "predict_from_args",
]

PREDICTION_FORMATS = ("labelIds", "trainIds", "color")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def load_model(checkpoint: str | Path, device: str | torch.device = "cpu") -> DeepLabV3:
    """Return the model of a training checkpoint, in eval mode on ``device``, without its auxiliary head."""
    from .model import CheckpointError, build_model, load_checkpoint_state

    state, meta = load_checkpoint_state(checkpoint)
    if "classifier.4.weight" not in state:
        raise CheckpointError(f"checkpoint {checkpoint}: no DeepLabV3 head (classifier.4.weight) in its state dict")
    num_classes = state["classifier.4.weight"].shape[0]
    config = meta.get("config") or {}
    model = build_model(num_classes=num_classes, weights=checkpoint, aux_loss=False,
                        output_stride=int(config.get("output_stride", 8)))
    return model.to(device).eval()


def _autocast(device: torch.device):
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def _windows(size: int, crop: int, stride: int) -> list[int]:
    """Return window starts that cover 0..size with windows of ``crop`` (the last one flush with the end)."""
    if size <= crop:
        return [0]
    starts = list(range(0, size - crop, stride)) + [size - crop]
    return sorted(set(starts))


def _forward(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    return model(images)["out"].float()


def _slide(model: torch.nn.Module, images: torch.Tensor, crop: tuple[int, int], stride: tuple[int, int],
           num_classes: int) -> torch.Tensor:
    n, _, h, w = images.shape
    logits = images.new_zeros((n, num_classes, h, w), dtype=torch.float32)
    counts = images.new_zeros((1, 1, h, w), dtype=torch.float32)
    for y in _windows(h, crop[0], stride[0]):
        for x in _windows(w, crop[1], stride[1]):
            window = images[:, :, y:y + crop[0], x:x + crop[1]]
            logits[:, :, y:y + window.shape[2], x:x + window.shape[3]] += _forward(model, window)
            counts[:, :, y:y + window.shape[2], x:x + window.shape[3]] += 1
    return logits / counts


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images: torch.Tensor, *, mode: str = "whole",
                   crop: tuple[int, int] = (512, 1024), stride: tuple[int, int] | None = None,
                   scales: Sequence[float] = (1.0,), flip: bool = False) -> torch.Tensor:
    """Return class scores (N, K, H, W) at the input resolution for normalised images (N, 3, H, W).

    ``mode="whole"`` runs the frame at once; ``mode="slide"`` runs overlapping ``crop`` windows
    (``stride`` defaults to two thirds of the crop) and averages their logits where they overlap.
    Several ``scales`` and/or ``flip`` average the softmax probabilities of every resized and
    mirrored view (test-time augmentation); with one scale and no flip, logits are returned.
    On CUDA, the forward passes run under autocast; the result is float32.
    """
    if mode not in ("whole", "slide"):
        raise ValueError(f"mode must be 'whole' or 'slide', got {mode!r}")
    model.eval()
    device = next(model.parameters()).device
    images = images.to(device, non_blocking=True)
    h, w = images.shape[-2:]
    stride = stride or (max(1, crop[0] * 2 // 3), max(1, crop[1] * 2 // 3))
    num_classes = model.classifier[-1].out_channels
    augmented = len(scales) > 1 or flip or scales[0] != 1.0
    total = None
    with _autocast(device):
        for scale in scales:
            scaled = images if scale == 1.0 else F.interpolate(
                images, scale_factor=scale, mode="bilinear", align_corners=False)
            for mirrored in ((False, True) if flip else (False,)):
                view = scaled.flip(-1) if mirrored else scaled
                out = _forward(model, view) if mode == "whole" else _slide(model, view, crop, stride, num_classes)
                if mirrored:
                    out = out.flip(-1)
                if out.shape[-2:] != (h, w):
                    out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
                if augmented:
                    out = out.softmax(dim=1)
                total = out if total is None else total + out
    return total


def predict(model: torch.nn.Module, images: torch.Tensor, **kwargs) -> torch.Tensor:
    """Return label maps (N, H, W) int64 for normalised images: the model's class indices, i.e. trainIds for a
    19-class model and labelIds for a 34-class one (see ``label_mode_of``); options as ``predict_logits``."""
    return predict_logits(model, images, **kwargs).argmax(dim=1)


def label_mode_of(model: torch.nn.Module) -> str:
    """Return what a model's class indices are: "trainId" (19 classes) or "labelId" (34, the original script)."""
    k = model.classifier[-1].out_channels
    for mode in LABEL_MODES:
        if num_classes(mode) == k:
            return mode
    raise ValueError(f"the model predicts {k} classes; Cityscapes prediction files need "
                     f"{' or '.join(f'{num_classes(m)} ({m}s)' for m in LABEL_MODES)}")


def encode_prediction(pred: np.ndarray | torch.Tensor, fmt: str = "labelIds",
                      label_mode: str = "trainId") -> np.ndarray:
    """Return a label map encoded for saving: label ids (the official format), trainIds, or RGB colours.

    ``label_mode`` says what ``pred`` holds: trainIds (a 19-class model, the default) or labelIds (34 classes).
    """
    if isinstance(pred, torch.Tensor):
        pred = pred.cpu().numpy()
    pred = pred.astype(np.uint8)
    if label_mode == "labelId":
        if fmt == "labelIds":
            return pred
        if fmt == "color":
            return palette("labelId")[pred]
        train_ids = LABEL_ID_TO_TRAIN_ID[pred]  # trainIds: void ids become 255
    elif label_mode == "trainId":
        train_ids = pred
    else:
        raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
    if fmt == "labelIds":
        return TRAIN_ID_TO_LABEL_ID[train_ids]
    if fmt == "trainIds":
        return train_ids
    if fmt == "color":
        return palette("trainId")[train_ids]
    raise ValueError(f"format must be one of {PREDICTION_FORMATS}, got {fmt!r}")


def save_prediction(pred: np.ndarray | torch.Tensor, path: str | Path, fmt: str = "labelIds",
                    label_mode: str = "trainId") -> Path:
    """Write a label map (trainIds, or labelIds with ``label_mode="labelId"``) as a PNG in the given format
    (written whole, then renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    encoded = encode_prediction(pred, fmt, label_mode)
    if encoded.ndim == 3:
        encoded = cv2.cvtColor(encoded, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".png", encoded)
    if not ok:
        raise RuntimeError(f"{path}: PNG encoding failed")
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data.tobytes())
    partial.replace(path)
    return path


def _predict_files(model, items: Iterable[tuple[Path, Path]], fmt: str, progress: bool, desc: str,
                   **kwargs) -> list[Path]:
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    mode = label_mode_of(model)
    written = []
    items = list(items)
    for image_path, out_path in tqdm(items, desc=desc, disable=not progress):
        image = normalize(read_image(image_path))[None].to(device)
        written.append(save_prediction(predict(model, image, **kwargs)[0], out_path, fmt, mode))
    return written


def predict_split(model: torch.nn.Module, data_root: str | Path, split: str, out_dir: str | Path,
                  fmt: str = "labelIds", progress: bool = True, **kwargs) -> list[Path]:
    """Write one prediction per frame of a split: ``OUT/{city}/{city}_{seq}_{frame}_leftImg8bit.png``.

    The names are the ones the official evaluator and the evaluation server look for. Works on the
    test split too (that is how a submission is made); scoring it is another matter.
    """
    out_dir = Path(out_dir)
    if out_dir.resolve().is_relative_to(Path(data_root).resolve()):
        raise ValueError(f"{out_dir}: inside the dataset folder {data_root}; write predictions elsewhere "
                         f"(nothing is ever written into the dataset)")
    items = [(s.image_path, out_dir / s.city / s.image_path.name) for s in find_samples(data_root, split)]
    return _predict_files(model, items, fmt, progress, f"predict {split}", **kwargs)


def _image_files(paths: Sequence[str | Path]) -> list[tuple[Path, Path]]:
    """Return (image file, its output name relative to the output folder) for files and searched folders."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DatasetError(f"{path}: no images found (expected files ending in {', '.join(IMAGE_SUFFIXES)})")
            files.extend((p, p.relative_to(path).with_suffix(".png")) for p in found)
        elif path.is_file():
            files.append((path, Path(f"{path.stem}.png")))
        else:
            raise DatasetError(f"{path}: no such image file or folder")
    return files


def predict_images(model: torch.nn.Module, paths: Sequence[str | Path], out_dir: str | Path,
                   fmt: str = "color", progress: bool = True, **kwargs) -> list[Path]:
    """Write one prediction PNG per image file: ``OUT/{name}.png``, a folder's sub-folders kept.

    Refuses, before writing anything, a set of inputs where two images would get the same output name or an
    output would replace an input image.
    """
    out_dir = Path(out_dir)
    items = [(p, out_dir / rel) for p, rel in _image_files(paths)]
    inputs = {p.resolve() for p, _ in items}
    seen: dict[Path, Path] = {}
    for image, out in items:
        key = out.resolve()
        if key in inputs:
            raise ValueError(f"{out}: the prediction of {image} would replace an input image; choose another --out")
        if key in seen:
            raise ValueError(f"{out}: both {seen[key]} and {image} would be written there; "
                             f"rename one or predict them separately")
        seen[key] = image
    return _predict_files(model, items, fmt, progress, "predict", **kwargs)


def predict_from_args(args) -> list[Path]:
    """Run ``python -m seg_utils predict`` with parsed arguments; return the files written."""
    from .profile import cityscapes_root

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(args.checkpoint, device)
    options = dict(mode="slide" if args.slide else "whole", crop=tuple(args.crop),
                   scales=(0.75, 1.0, 1.25) if args.multi_scale else (1.0,), flip=args.multi_scale)
    if args.images:
        written = predict_images(model, args.images, args.out, fmt=args.format, **options)
    else:
        data_root = args.data_root or cityscapes_root()
        if data_root is None:
            raise DatasetError("no dataset: pass --data-root, set CITYSCAPES_DATASET, or use --images")
        written = predict_split(model, data_root, args.split, args.out, fmt=args.format, **options)
    print(f"wrote {len(written)} {args.format} predictions to {args.out}")
    return written
