"""The scene model: a pinhole camera over a street, and the labelled polygons of a scene in drawing order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

Painter = Callable[["_Ctx", tuple[slice, slice], np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass
class _Obj:
    label: str
    polygon: list[tuple[int, int]]
    paint: Painter | None
    deferred: bool = False  # painted after the others, because it shows what lies behind it


@dataclass
class _Ctx:
    """The camera, the image size and the shared noise fields every painter draws from."""

    height: int
    width: int
    f: float  # focal length in pixels
    vx: float  # vanishing point
    vy: float
    hc: float  # camera height in metres
    noise: dict[str, np.ndarray] = field(default_factory=dict)
    sky_top: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))
    sky_horizon: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))

    def project(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Return the (N, 2) pixel coordinates of world points (x right, y up, z forward, metres)."""
        x, y, z = (np.asarray(a, np.float64) for a in (x, y, z))
        return np.stack([self.vx + self.f * x / z, self.vy + self.f * (self.hc - y) / z], axis=-1)

    def ground_depth(self, yy: np.ndarray) -> np.ndarray:
        """Return the depth of the ground plane seen at image rows yy (large above the horizon)."""
        return self.f * self.hc / np.maximum(yy - self.vy, 0.25)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Return (H, W) float32 noise with unit-ish variance and features about ``cell`` pixels wide."""
    gh, gw = max(2, int(height / cell) + 2), max(2, int(width / cell) + 2)
    small = rng.standard_normal((gh, gw)).astype(np.float32)
    big = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    return big / max(float(big.std()), 1e-3)


def _clip_polygon(points: np.ndarray, width: int, height: int) -> list[tuple[int, int]] | None:
    """Return the polygon clipped to the image (Sutherland-Hodgman) with integer vertices, or None."""
    poly = [tuple(p) for p in np.asarray(points, np.float64)]
    bounds = ((0, 0.0, 1), (0, width - 1.0, -1), (1, 0.0, 1), (1, height - 1.0, -1))
    for axis, limit, sign in bounds:
        if not poly:
            return None
        out = []
        for i, cur in enumerate(poly):
            prev = poly[i - 1]
            cur_in = (cur[axis] - limit) * sign >= 0
            prev_in = (prev[axis] - limit) * sign >= 0
            if cur_in != prev_in:
                t = (limit - prev[axis]) / (cur[axis] - prev[axis])
                out.append((prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])))
            if cur_in:
                out.append(cur)
        poly = out
    ints: list[tuple[int, int]] = []
    for x, y in poly:
        p = (int(round(x)), int(round(y)))
        if not ints or ints[-1] != p:
            ints.append(p)
    while len(ints) > 1 and ints[0] == ints[-1]:
        ints.pop()
    if len(ints) < 3:
        return None
    return ints


class _Scene:
    """Collects labelled polygons in drawing order."""

    def __init__(self, ctx: _Ctx):
        self.ctx = ctx
        self.objects: list[_Obj] = []

    def add(self, label: str, points: np.ndarray, paint: Painter | None, deferred: bool = False) -> bool:
        poly = _clip_polygon(points, self.ctx.width, self.ctx.height)
        if poly is None:
            return False
        self.objects.append(_Obj(label, poly, paint, deferred))
        return True


def _hull(points: np.ndarray) -> np.ndarray:
    hull = cv2.convexHull(np.asarray(points, np.float32).reshape(-1, 1, 2))
    return hull.reshape(-1, 2).astype(np.float64)


def _box_corners(x0: float, x1: float, y0: float, y1: float, z0: float, z1: float) -> tuple[np.ndarray, ...]:
    xs, ys, zs = np.meshgrid([x0, x1], [y0, y1], [z0, z1], indexing="ij")
    return xs.ravel(), ys.ravel(), zs.ravel()
