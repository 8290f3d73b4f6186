"""Rendering: the RGB image painted from a scene's polygons, and its annotation in the official json format.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw

from .layout import _build_scene
from .scene import _Ctx, _Obj, _smooth_noise

#: The only labels the (dummy) test-split annotations hold, as in the real test split.
VOID_LABELS = ("unlabeled", "ego vehicle", "rectification border", "out of roi")


def render_frame(
    rng: np.random.Generator, size: tuple[int, int], *, labelled: bool = True
) -> tuple[np.ndarray, dict[str, Any]]:
    """Return (RGB uint8 HxWx3, annotation dict in the official gtFine polygon format) for one scene.

    With ``labelled=False`` (the test split) the annotation keeps only the void regions.
    """
    objects, ctx = _build_scene(rng, size)
    rgb = _paint(objects, ctx, rng)
    annotation = _annotation(objects, size, labelled=labelled)
    return rgb, annotation


def _index_map(objects: list[_Obj], size: tuple[int, int]) -> np.ndarray:
    """Return (H, W) int32: 1 + the index of the object seen at each pixel (0 = none).

    Drawn with the same PIL polygon fill, in the same order, as the official json2labelImg draws the
    label image, so the painted image and the labels agree pixel for pixel.
    """
    height, width = size
    img = Image.new("I", (width, height), 0)
    draw = ImageDraw.Draw(img)
    for k, obj in enumerate(objects, 1):
        draw.polygon(obj.polygon, fill=k)
    return np.asarray(img, dtype=np.int32)


def _paint(objects: list[_Obj], ctx: _Ctx, rng: np.random.Generator) -> np.ndarray:
    height, width = ctx.height, ctx.width
    ctx.noise = {
        "fine": rng.standard_normal((height, width), dtype=np.float32),
        "leaf": _smooth_noise(rng, height, width, max(1.5, width / 350)),
        "med": _smooth_noise(rng, height, width, max(2.0, width / 120)),
        "coarse": _smooth_noise(rng, height, width, max(3.0, width / 20)),
    }
    index = _index_map(objects, (height, width))
    canvas = np.zeros((height, width, 3), np.float32)
    ctx.noise["canvas"] = canvas
    order = [k for k, o in enumerate(objects, 1) if not o.deferred] + \
            [k for k, o in enumerate(objects, 1) if o.deferred]
    for k in order:
        obj = objects[k - 1]
        if obj.paint is None:
            continue
        poly = np.asarray(obj.polygon)
        x0, y0 = poly.min(axis=0)
        x1, y1 = poly.max(axis=0) + 1
        if obj.deferred:  # see-through objects look at their surroundings
            pad = max(2, (x1 - x0) // 4)
            x0, y0, x1, y1 = max(0, x0 - pad), max(0, y0 - pad), min(width, x1 + pad), min(height, y1 + pad)
        mask = index[int(y0):int(y1), int(x0):int(x1)] == k
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if not len(rows):
            continue
        if not obj.deferred:  # paint only the visible part of partly hidden objects
            y0, y1, x0, x1 = y0 + rows[0], y0 + rows[-1] + 1, x0 + cols[0], x0 + cols[-1] + 1
            mask = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        sl = (slice(int(y0), int(y1)), slice(int(x0), int(x1)))
        yy = np.arange(y0, y1, dtype=np.float32)[:, None]
        xx = np.arange(x0, x1, dtype=np.float32)[None, :]
        colours = obj.paint(ctx, sl, yy, xx, mask)
        np.copyto(canvas[sl], colours, where=mask[..., None])
    # lighting and camera: exposure, white balance, contrast, sensor noise, a little optical blur
    gain = rng.uniform(0.75, 1.2) * rng.uniform(0.93, 1.07, 3)
    canvas *= gain.astype(np.float32)
    contrast = np.float32(rng.uniform(0.85, 1.15))
    mean = np.float32(canvas.mean())
    canvas = (canvas - mean) * contrast + mean
    canvas += ctx.noise["fine"][..., None] * np.float32(rng.uniform(1.0, 3.0))
    if min(height, width) >= 256:
        canvas = cv2.GaussianBlur(canvas, (3, 3), 0.6)
    ctx.noise.clear()
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8)


def _annotation(objects: list[_Obj], size: tuple[int, int], *, labelled: bool) -> dict[str, Any]:
    height, width = size
    return {
        "imgHeight": int(height),
        "imgWidth": int(width),
        "objects": [{"label": o.label, "polygon": [[int(x), int(y)] for x, y in o.polygon]}
                    for o in objects if labelled or o.label in VOID_LABELS],
    }
