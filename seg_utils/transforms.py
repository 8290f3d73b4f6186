"""Joint image + label transforms for training and evaluation.

Labels are never interpolated: every geometric step samples them with nearest neighbour and fills
what lies outside the frame with 255 (ignore), never 0 (which is a class: road in trainIds).

The training pipeline (random scale 0.5-2.0, random crop, horizontal flip) is one OpenCV
``warpAffine`` per array: scale, crop offset and flip are folded into a single 2x3 matrix that maps
each output pixel to the source frame. The result is what resizing the whole frame, padding and
cropping would give, but only the crop's pixels are ever computed, so the cost follows the crop size,
not the frame size (see ``benchmarks/bench_data.py``).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from .labels import IGNORE_INDEX

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "normalize", "normalize_batch", "image_tensor", "denormalize",
           "TrainTransform", "EvalTransform"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Image padding is the mean colour, which normalises to zero: the network sees "no signal" there.
_PAD_PIXEL = tuple(round(255 * m) for m in IMAGENET_MEAN)


def _affine_table(alpha: float, beta: float) -> np.ndarray:
    """Return the uint8 table of ``x -> clip(x * alpha + beta, 0, 255)`` computed in float32 and truncated: the
    rule of mmsegmentation's ``PhotoMetricDistortion.convert``, for every uint8 value at once."""
    values = np.arange(256, dtype=np.float32) * np.float32(alpha) + np.float32(beta)
    return np.clip(values, 0, 255).astype(np.uint8)


# OpenCV's 8-bit hue runs 0..179 (degrees / 2); a shift by d is (h + d) % 180: one table per d in -18..17.
_HUE_TABLES = {d: ((np.arange(256) + d) % 180).astype(np.uint8) for d in range(-18, 18)}


def _in_hsv(image: np.ndarray, channel: int, table: np.ndarray) -> np.ndarray:
    """Return the RGB image with one HSV channel (0 hue, 1 saturation) passed through ``table``."""
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    hsv[..., channel] = cv2.LUT(hsv[..., channel], table)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """Return the uint8 (3, H, W) tensor of an (H, W, 3) uint8 image, unnormalised (``normalize_batch`` later)."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def normalize_batch(images: torch.Tensor) -> torch.Tensor:
    """Return float32 (N, 3, H, W) images normalised with ImageNet statistics, ``(x / 255 - mean) / std``, from
    uint8 (N, 3, H, W) ones: the one place the package normalises.

    Datasets and data loaders send uint8 (a quarter of float32's bytes through shared memory and the
    host-to-device copy); ``device.to_device`` calls this on the device, in one fused pass.
    """
    scale = torch.tensor([1.0 / (255.0 * s) for s in IMAGENET_STD], device=images.device).view(1, 3, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)], device=images.device).view(1, 3, 1, 1)
    return torch.addcmul(shift, images.float(), scale)


def normalize(image: np.ndarray) -> torch.Tensor:
    """Return the float32 (3, H, W) tensor ``normalize_batch`` makes of one (H, W, 3) uint8 image."""
    return normalize_batch(image_tensor(image)[None])[0]


def denormalize(image: torch.Tensor) -> np.ndarray:
    """Return the (H, W, 3) uint8 RGB picture of a normalised (3, H, W) image tensor."""
    mean = torch.tensor(IMAGENET_MEAN, device=image.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=image.device).view(3, 1, 1)
    pixels = (image.detach().float() * std + mean).clamp(0, 1) * 255
    return pixels.round().byte().permute(1, 2, 0).cpu().numpy()


def _to_tensors(image: np.ndarray, target: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (image, target) as uint8 tensors, (3, H, W) and (H, W): ``device.to_device`` normalises the image
    and widens the target on the device (``normalize_batch``)."""
    return image_tensor(image), torch.from_numpy(np.ascontiguousarray(target))


class EvalTransform:
    """Evaluation transform: the image and label as uint8 tensors, the label as it is (native resolution).

    ``size=(H, W)`` resizes both, the image bilinearly and the label with nearest neighbour. Scores
    must still be computed against native-resolution labels: resize the logits back up instead.
    """

    def __init__(self, size: tuple[int, int] | None = None) -> None:
        self.size = size

    def __repr__(self) -> str:
        return f"EvalTransform(size={self.size})"

    def __call__(self, image: np.ndarray, target: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        if self.size is not None:
            h, w = self.size
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
            target = cv2.resize(target, (w, h), interpolation=cv2.INTER_NEAREST)
        return _to_tensors(image, target)


class TrainTransform:
    """Training transform: random scale, random crop (labels padded with 255), flip, photometric jitter.

    The defaults are mmsegmentation's Cityscapes recipe: scale 0.5-2.0 of the frame, a 512x1024 crop,
    flip with probability 0.5, and mmsegmentation's photometric distortion (brightness, contrast, saturation
    and hue, see ``photometric``). ``cat_max_ratio`` (the recipe
    uses 0.75; None = off) is mmsegmentation's crop rule: a crop in which one class covers that share of the
    labelled pixels or more (or which holds one class only) is drawn again, so that fewer crops are all road or
    all sky. Here at most ``CROP_TRIES`` = 10 crops are drawn (9 checked, the 10th kept as it is);
    mmsegmentation's ``RandomCrop`` checks up to 10 and keeps the 11th, one crop more.
    Returns uint8 tensors, like ``EvalTransform`` (``device.to_device`` normalises).
    """

    CROP_TRIES = 10  # crops drawn at most; mmsegmentation's RandomCrop draws up to 11 (10 checked)

    def __init__(self, crop_size: tuple[int, int] = (512, 1024), scale_range: tuple[float, float] = (0.5, 2.0),
                 flip: bool = True, jitter: bool = True, base_size: tuple[int, int] | None = None,
                 rng: np.random.Generator | None = None, cat_max_ratio: float | None = None) -> None:
        """``base_size=(H, W)``: the frame size that scale 1.0 means (mmseg: 1024x2048); None = each frame's own."""
        self.crop_size = tuple(crop_size)
        self.scale_range = tuple(scale_range)
        self.flip = flip
        self.jitter = jitter
        self.base_size = base_size
        self.cat_max_ratio = cat_max_ratio
        self._rng = rng

    def __repr__(self) -> str:
        return (f"TrainTransform(crop_size={self.crop_size}, scale_range={self.scale_range}, flip={self.flip}, "
                f"jitter={self.jitter}, cat_max_ratio={self.cat_max_ratio})")

    @property
    def rng(self) -> np.random.Generator:
        # Drawn lazily from torch's seed so that each DataLoader worker gets its own stream.
        if self._rng is None:
            self._rng = np.random.default_rng(torch.initial_seed() % 2**63)
        return self._rng

    def _draw_corner(self, scaled_h: int, scaled_w: int) -> tuple[int, int]:
        crop_h, crop_w = self.crop_size
        y0 = int(self.rng.integers(0, max(scaled_h - crop_h, 0) + 1))
        x0 = int(self.rng.integers(0, max(scaled_w - crop_w, 0) + 1))
        return y0, x0

    def sample_params(self, height: int, width: int) -> tuple[float, int, int, bool]:
        """Return a random (scale, y0, x0, flip) for a frame: the crop's top-left corner in the scaled frame."""
        rng = self.rng
        scale = float(rng.uniform(*self.scale_range))
        if self.base_size is not None:
            scale *= self.base_size[0] / height
        y0, x0 = self._draw_corner(round(height * scale), round(width * scale))
        flip = bool(self.flip and rng.random() < 0.5)
        return scale, y0, x0, flip

    def crop_is_varied(self, target: np.ndarray) -> bool:
        """Return whether a label crop passes ``cat_max_ratio``: at least two classes, none covering that share
        of the labelled (non-255) pixels or more. Always True when the rule is off."""
        if self.cat_max_ratio is None:
            return True
        counts = np.bincount(target.ravel(), minlength=256)[:IGNORE_INDEX]
        counts = counts[counts > 0]
        return len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio

    def _matrix(self, height: int, width: int, scale: float, y0: int, x0: int, flip: bool) -> np.ndarray:
        # Where a crop pixel lies in the scaled frame, then in the source (pixel-centre convention).
        # Crops larger than the scaled frame keep it at the top-left; the rest is padding.
        scaled_w = round(width * scale)
        sx = sy = 1.0 / scale
        if flip:  # mirror inside the scaled frame: x_scaled -> scaled_w - 1 - x_scaled
            return np.array([[-sx, 0.0, (scaled_w - 1 - x0 + 0.5) * sx - 0.5],
                             [0.0, sy, (y0 + 0.5) * sy - 0.5]])
        return np.array([[sx, 0.0, (x0 + 0.5) * sx - 0.5],
                         [0.0, sy, (y0 + 0.5) * sy - 0.5]])

    def _valid(self, height: int, width: int, scale: float, y0: int, x0: int) -> tuple[int, int]:
        """Return the (rows, columns) of the crop that lie inside the scaled frame; the rest is padding."""
        crop_h, crop_w = self.crop_size
        return min(crop_h, round(height * scale) - y0), min(crop_w, round(width * scale) - x0)

    def _warp(self, array: np.ndarray, scale: float, y0: int, x0: int, flip: bool, interpolation: int,
              fill: int | tuple[int, ...]) -> np.ndarray:
        crop_h, crop_w = self.crop_size
        height, width = array.shape[:2]
        matrix = self._matrix(height, width, scale, y0, x0, flip)
        out = cv2.warpAffine(array, matrix, (crop_w, crop_h), flags=cv2.WARP_INVERSE_MAP | interpolation,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
        # Outside the scaled frame is padding, even where bilinear sampling would still reach the edge.
        valid_h, valid_w = self._valid(height, width, scale, y0, x0)
        out[valid_h:] = fill
        out[:, valid_w:] = fill
        return out

    def warp_label(self, target: np.ndarray, scale: float, y0: int, x0: int, flip: bool) -> np.ndarray:
        """Return the label crop of the scaled (and maybe flipped) frame: nearest neighbour, padding 255."""
        return self._warp(target, scale, y0, x0, flip, cv2.INTER_NEAREST, IGNORE_INDEX)

    def warp_image(self, image: np.ndarray, scale: float, y0: int, x0: int, flip: bool) -> np.ndarray:
        """Return the image crop of the scaled (and maybe flipped) frame: bilinear, padding the mean colour."""
        return self._warp(image, scale, y0, x0, flip, cv2.INTER_LINEAR, _PAD_PIXEL)

    def geometry(self, image: np.ndarray, target: np.ndarray, scale: float, y0: int, x0: int,
                 flip: bool) -> tuple[np.ndarray, np.ndarray]:
        """Return the crop of the scaled (and maybe flipped) frame: image bilinear, label nearest, pad 255."""
        return self.warp_image(image, scale, y0, x0, flip), self.warp_label(target, scale, y0, x0, flip)

    def photometric(self, image: np.ndarray) -> np.ndarray:
        """Return the image after mmsegmentation's ``PhotoMetricDistortion`` (uint8 in, uint8 out).

        Its definition, step by step, each step with probability 0.5: brightness (add a delta in -32..32),
        contrast (multiply by 0.5..1.5) either here or last (a coin decides), saturation (multiply HSV's S by
        0.5..1.5), hue (add -18..17 to HSV's H, modulo 180: OpenCV's 8-bit hue is degrees / 2, so up to 36
        degrees), contrast if it was not applied first. Every step computes in float32 and stores uint8 as
        mmsegmentation does: clipped to 0..255, then truncated. Saturation and hue each go to HSV and back
        (two round trips when both apply, as there). Each per-value step is a 256-entry table (``cv2.LUT``):
        the same numbers as the float32 arithmetic, a table look-up per pixel.
        """
        rng = self.rng
        if rng.integers(2):
            image = cv2.LUT(image, _affine_table(1.0, rng.uniform(-32, 32)))
        contrast_first = bool(rng.integers(2))  # mmsegmentation's "mode"
        if contrast_first and rng.integers(2):
            image = cv2.LUT(image, _affine_table(rng.uniform(0.5, 1.5), 0.0))
        if rng.integers(2):
            image = _in_hsv(image, 1, _affine_table(rng.uniform(0.5, 1.5), 0.0))
        if rng.integers(2):
            image = _in_hsv(image, 0, _HUE_TABLES[int(rng.integers(-18, 18))])
        if not contrast_first and rng.integers(2):
            image = cv2.LUT(image, _affine_table(rng.uniform(0.5, 1.5), 0.0))
        return image

    def augment(self, image: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return the augmented (image, target) as uint8 arrays: scale, crop (re-drawn while ``cat_max_ratio``
        fails, up to ``CROP_TRIES``), flip, jitter."""
        height, width = target.shape
        scale, y0, x0, flip = self.sample_params(height, width)
        label = self.warp_label(target, scale, y0, x0, flip)
        for _ in range(self.CROP_TRIES - 1):
            if self.crop_is_varied(label):
                break
            y0, x0 = self._draw_corner(round(height * scale), round(width * scale))
            label = self.warp_label(target, scale, y0, x0, flip)
        image = self.warp_image(image, scale, y0, x0, flip)
        if self.jitter:
            image = self.photometric(image)
        return image, label

    def __call__(self, image: np.ndarray, target: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return _to_tensors(*self.augment(image, target))
