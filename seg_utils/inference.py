"""Prediction: a trained model turns images into label maps, whole-image, by sliding windows, or multi-scale + flip.

Scores are computed elsewhere (``metrics``), and files are written elsewhere (``predictions``: a split, photos and
videos): this module only turns image tensors into class indices, always at the input's native resolution, and says
at which scale a photo is best shown to a model (``photo_scale``).

Device and precision come from ``device``: on a GPU the model is stored ``channels_last`` and runs under
autocast (bfloat16 from compute capability 8.0, float16 before).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .checkpoint import load_checkpoint_state
from .classes import ClassTable
from .device import autocast, autocast_dtype, configure, memory_format, model_device, pick_device, to_device
from .model_info import ModelInfo

if TYPE_CHECKING:  # torchvision is imported with the model (``model``): a bad argument fails without waiting for it
    from torchvision.models.segmentation import DeepLabV3

__all__ = ["load_model", "sliding_windows", "predict_logits", "predict", "classes_of", "photo_scale"]


def load_model(checkpoint: str | Path, device: str | torch.device = "cpu") -> DeepLabV3:
    """Return the model of a training checkpoint, in eval mode on ``device``, without its auxiliary head; what it
    is (``model.info``: its class table, the frame size and random rescaling of its training frames, its output
    stride) is the record the checkpoint carries (``model_info.ModelInfo``).

    On CUDA the process is set up for the GPU (``device.configure``) and the model is stored ``channels_last``.
    """
    from .model import model_from_state

    device = pick_device(device)
    state, meta = load_checkpoint_state(checkpoint)  # one read: weights and what they are
    info = ModelInfo.from_checkpoint(meta, state, checkpoint)
    model = model_from_state(state, checkpoint, aux_loss=False, output_stride=info.output_stride)
    model.info = info
    configure(device)
    return model.to(device, memory_format=memory_format(device)).eval()


def _windows(size: int, crop: int, stride: int) -> list[int]:
    """Return window starts that cover 0..size with windows of ``crop`` (the last one flush with the end)."""
    if size <= crop:
        return [0]
    starts = list(range(0, size - crop, stride)) + [size - crop]
    return sorted(set(starts))


def default_stride(crop: tuple[int, int]) -> tuple[int, int]:
    """Return the sliding-window stride used when none is given: two thirds of the crop (mmsegmentation's)."""
    return max(1, crop[0] * 2 // 3), max(1, crop[1] * 2 // 3)


def sliding_windows(size: tuple[int, int], crop: tuple[int, int], stride: tuple[int, int] | None = None
                    ) -> list[tuple[int, int, int, int]]:
    """Return the windows ``predict(mode="slide")`` runs on a frame of ``size`` (H, W): (top, left, height,
    width) each, row by row; the last row and column are flush with the frame's edges."""
    h, w = size
    stride = stride or default_stride(crop)
    ch, cw = min(crop[0], h), min(crop[1], w)
    return [(y, x, ch, cw) for y in _windows(h, crop[0], stride[0]) for x in _windows(w, crop[1], stride[1])]


def _forward(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    return model(images)["out"].float()


def _slide(model: torch.nn.Module, images: torch.Tensor, crop: tuple[int, int], stride: tuple[int, int],
           window_batch: int = 4, fmt: torch.memory_format = torch.contiguous_format
           ) -> torch.Tensor:
    """Return float32 logits (N, K, H, W): the windows' logits summed where they overlap, divided by the count.

    The windows of a frame all have one size (the last one is flush with the edge), so ``window_batch`` of them
    run as one batch (N x window_batch images); the sums are added in the same order as one at a time.
    """
    n, _, h, w = images.shape
    windows = sliding_windows((h, w), crop, stride)
    ch, cw = windows[0][2:]
    starts = [(y, x) for y, x, _, _ in windows]
    logits = None
    counts = images.new_zeros((1, 1, h, w), dtype=torch.float32)
    for first in range(0, len(starts), window_batch):
        chunk = starts[first:first + window_batch]
        batch = torch.cat([images[:, :, y:y + ch, x:x + cw] for y, x in chunk]).contiguous(memory_format=fmt)
        out = _forward(model, batch)
        if logits is None:  # the class count is the model's output's
            logits = images.new_zeros((n, out.shape[1], h, w), dtype=torch.float32)
        for i, (y, x) in enumerate(chunk):
            logits[:, :, y:y + ch, x:x + cw] += out[i * n:(i + 1) * n]
            counts[:, :, y:y + ch, x:x + cw] += 1
    return logits / counts


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images: torch.Tensor, *, mode: str = "whole",
                   crop: tuple[int, int] = (512, 1024), stride: tuple[int, int] | None = None,
                   scales: Sequence[float] = (1.0,), flip: bool = False, window_batch: int = 4) -> torch.Tensor:
    """Return float32 class scores (N, K, H, W) at the input resolution for images (N, 3, H, W): normalised
    float32, or uint8 pixels (normalised on the model's device).

    ``mode="whole"`` runs the frame at once; ``mode="slide"`` runs overlapping ``crop`` windows
    (``stride`` defaults to two thirds of the crop), ``window_batch`` of them per forward pass, and averages
    their logits where they overlap. Several ``scales`` and/or ``flip`` average the softmax probabilities of
    every resized and mirrored view (test-time augmentation); with one scale and no flip, logits are returned.
    On CUDA, the forward passes run under autocast (``device.autocast_dtype``).
    """
    if mode not in ("whole", "slide"):
        raise ValueError(f"mode must be 'whole' or 'slide', got {mode!r}")
    if window_batch < 1:
        raise ValueError(f"window_batch must be at least 1, got {window_batch}")
    model.eval()
    device = model_device(model)  # a model of ours or an ONNX one (``export.OnnxModel``)
    fmt = memory_format(device)
    images, _ = to_device(images, None, device, fmt)
    h, w = images.shape[-2:]
    stride = stride or default_stride(crop)
    augmented = len(scales) > 1 or flip or scales[0] != 1.0
    total = None
    with autocast(device, autocast_dtype(device)):
        for scale in scales:
            scaled = images if scale == 1.0 else F.interpolate(
                images, scale_factor=scale, mode="bilinear", align_corners=False)
            for mirrored in ((False, True) if flip else (False,)):
                view = scaled.flip(-1) if mirrored else scaled
                if mode == "whole":
                    out = _forward(model, view)
                else:
                    out = _slide(model, view, crop, stride, window_batch, fmt)
                if mirrored:
                    out = out.flip(-1)
                if out.shape[-2:] != (h, w):
                    out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
                if augmented:
                    out = out.softmax(dim=1)
                total = out if total is None else total + out
    return total


def predict(model: torch.nn.Module, images: torch.Tensor, **kwargs) -> torch.Tensor:
    """Return label maps (N, H, W) int64 for images (normalised, or uint8): the model's class indices, i.e.
    trainIds for a 19-class model and labelIds for a 34-class one (``model.info.classes`` names them); options
    (``mode``, ``crop``, ``stride``, ``scales``, ``flip``, ``window_batch``) as ``predict_logits``."""
    return predict_logits(model, images, **kwargs).argmax(dim=1)


def classes_of(model: torch.nn.Module) -> ClassTable:
    """Return the class table of a model of the package (``model.info``): its names and colours."""
    return model.info.classes


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
