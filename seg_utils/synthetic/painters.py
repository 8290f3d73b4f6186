"""Painters: each returns the (h, w, 3) float colours of a crop of one object; only the object's own pixels
are kept. Textures come from the noise fields the camera context shares.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from .scene import Painter, _Ctx


def _jitter(rng: np.random.Generator, color, spread: float = 0.08) -> np.ndarray:
    c = np.asarray(color, np.float32) * rng.uniform(1 - spread, 1 + spread, 3).astype(np.float32)
    return c * np.float32(rng.uniform(0.85, 1.15))


def _lum(ctx: _Ctx, sl, fine=0.0, leaf=0.0, med=0.0, coarse=0.0) -> np.ndarray:
    """Return a multiplicative brightness field (h, w) from the shared noise fields."""
    n = ctx.noise
    out = 1.0 + fine * n["fine"][sl]
    if leaf:
        out = out + leaf * n["leaf"][sl]
    if med:
        out = out + med * n["med"][sl]
    if coarse:
        out = out + coarse * n["coarse"][sl]
    return out


def _flat(color, fine=0.05, leaf=0.0, med=0.05, coarse=0.05) -> Painter:
    color = np.asarray(color, np.float32)

    def paint(ctx, sl, yy, xx, mask):
        return color * _lum(ctx, sl, fine, leaf, med, coarse)[..., None]

    return paint


def _sky_painter(ctx: _Ctx, rng: np.random.Generator) -> Painter:
    cloud = np.float32(rng.uniform(0.0, 0.5))

    def paint(ctx, sl, yy, xx, mask):
        t = np.clip(yy / max(ctx.vy, 1.0), 0, 1)[..., None]
        base = ctx.sky_top * (1 - t) + ctx.sky_horizon * t
        clouds = np.clip(ctx.noise["coarse"][sl] * 0.5 + ctx.noise["med"][sl] * 0.2, 0, None)[..., None]
        white = np.float32([235, 238, 242])
        return base + cloud * clouds * (white - base) + 2.0 * ctx.noise["fine"][sl][..., None]

    return paint


def _plane_coords(ctx: _Ctx, yy, xx, plane_x: float | None, depth: float | None):
    """Return (along, height) metres on a wall: side plane x=plane_x, or front plane at depth."""
    if plane_x is not None:
        dx = xx - ctx.vx
        dx = np.where(np.abs(dx) < 1e-3, 1e-3, dx)
        z = np.clip(ctx.f * plane_x / dx, 0.3, 1e4)
        along = z
    else:
        z = np.float32(depth)
        along = (xx - ctx.vx) * z / ctx.f
    height = ctx.hc - (yy - ctx.vy) * z / ctx.f
    return along, height


def _facade_painter(rng: np.random.Generator, color, top: float, plane_x: float | None = None,
                    depth: float | None = None, haze: float = 0.0) -> Painter:
    color = _jitter(rng, color, 0.06)
    floor = np.float32(rng.uniform(2.8, 3.6))
    spacing = np.float32(rng.uniform(2.0, 3.6))
    win_w = np.float32(rng.uniform(0.35, 0.6))
    win_lo, win_hi = np.float32(rng.uniform(0.7, 1.0)), np.float32(rng.uniform(2.0, 2.5))
    ground = np.float32(rng.uniform(0.0, 1.0) < 0.5) * floor  # shops: the ground floor is different
    frame_col = np.float32(rng.choice([235, 200, 90]))
    glass = np.float32([45, 55, 70]) * np.float32(rng.uniform(0.7, 1.3))
    phase = np.float32(rng.uniform(0, 10))

    def paint(ctx, sl, yy, xx, mask):
        along, height = _plane_coords(ctx, yy, xx, plane_x, depth)
        along = along + phase
        out = color * _lum(ctx, sl, 0.04, 0.0, 0.05, 0.08)[..., None]
        fy = np.mod(height, floor) / floor
        fz = np.mod(along, spacing) / spacing
        lo, hi = win_lo / floor, win_hi / floor
        in_y = (fy > lo) & (fy < hi)
        in_z = np.abs(fz - 0.5) < win_w / 2
        ok = (height > ground + 0.2) & (height < top - 0.8)
        frame_y = (fy > lo - 0.03) & (fy < hi + 0.03)
        frame_z = np.abs(fz - 0.5) < win_w / 2 + 0.04
        frame = frame_y & frame_z & ok
        win = in_y & in_z & ok
        # a different pseudo-random look (curtains, light, reflection) per window
        cell = np.floor(height / floor) * 7.13 + np.floor(along / spacing) * 3.71
        tone = (np.sin(cell * 12.9898) * 43758.5453) % 1.0
        glass_px = glass * (0.7 + 0.8 * tone[..., None]) * _lum(ctx, sl, 0.03, 0, 0.0, 0.15)[..., None]
        out = np.where(frame[..., None], frame_col * _lum(ctx, sl, 0.03)[..., None], out)
        out = np.where(win[..., None], glass_px, out)
        shop = (height < ground) & (height > 0.3) & (np.abs(fz - 0.5) < 0.42)
        out = np.where(shop[..., None], glass_px * 0.8, out)
        cornice = height > top - 0.5
        out = np.where(cornice[..., None], out * 0.7, out)
        if haze:
            out = out * (1 - haze) + ctx.sky_horizon * haze
        return out

    return paint


def _road_painter(rng: np.random.Generator, left: float, right: float) -> Painter:
    color = _jitter(rng, [92, 90, 96], 0.04) * np.float32(rng.uniform(0.8, 1.15))
    lines = []  # (x centre, half width, dash period or 0)
    if rng.random() < 0.8:
        lines += [(left + 0.35, 0.07, 0.0), (right - 0.35, 0.07, 0.0)]
    if left < -3.5:
        lines.append((-1.7, 0.07, 9.0))
    if left < -7.0:
        lines.append((-5.0, 0.07, 9.0))
    phase = rng.uniform(0, 9)
    zebra = rng.uniform(12, 40) if rng.random() < 0.3 else -1.0
    paint_col = np.float32([225, 225, 218])

    def paint(ctx, sl, yy, xx, mask):
        z = ctx.ground_depth(yy)
        x = (xx - ctx.vx) * z / ctx.f
        out = color * _lum(ctx, sl, 0.05, 0.02, 0.025, 0.04)[..., None]
        marks = np.zeros(np.broadcast_shapes(z.shape, x.shape), bool)
        for cx, hw, period in lines:
            m = np.abs(x - cx) < hw
            if period:
                m &= np.mod(z + phase, period) < period / 3
            marks |= m
        if zebra > 0:
            marks |= (z > zebra) & (z < zebra + 4) & (np.mod(x, 1.0) < 0.5) & (x > left) & (x < right)
        worn = np.clip(0.85 + 0.1 * ctx.noise["med"][sl], 0.5, 1)[..., None]
        return np.where(marks[..., None], paint_col * worn, out)

    return paint


def _sidewalk_painter(rng: np.random.Generator, edge: float) -> Painter:
    color = _jitter(rng, [[165, 160, 158], [170, 140, 130], [150, 150, 145]][rng.integers(3)], 0.05)
    tile = np.float32(rng.uniform(0.3, 0.8))

    def paint(ctx, sl, yy, xx, mask):
        z = ctx.ground_depth(yy)
        x = (xx - ctx.vx) * z / ctx.f
        out = color * _lum(ctx, sl, 0.05, 0.0, 0.05, 0.07)[..., None]
        joints = (np.mod(x, tile) < tile * 0.08) | (np.mod(z, tile) < tile * 0.08)
        out = np.where(joints[..., None], out * 0.82, out)
        curb = np.abs(x - edge) < 0.2
        return np.where(curb[..., None], out * 1.12, out)

    return paint


def _vegetation_painter(rng: np.random.Generator, dark: bool = False) -> Painter:
    base = _jitter(rng, [[70, 100, 35], [85, 115, 45], [60, 85, 40], [95, 120, 55]][rng.integers(4)], 0.08)
    if dark:
        base = base * 0.8
    light = np.float32([150, 170, 70])

    def paint(ctx, sl, yy, xx, mask):
        leaf = ctx.noise["leaf"][sl]
        b = _lum(ctx, sl, 0.12, 0.25, 0.12, 0.1)[..., None]
        out = base * b
        bright = np.clip(leaf * 0.5 + ctx.noise["med"][sl] * 0.3, 0, 1)[..., None] * 0.35
        return out * (1 - bright) + light * bright

    return paint


def _terrain_painter(rng: np.random.Generator) -> Painter:
    grass = _jitter(rng, [[135, 150, 80], [150, 150, 95], [120, 140, 70]][rng.integers(3)], 0.06)
    soil = np.float32([140, 120, 90])

    def paint(ctx, sl, yy, xx, mask):
        out = grass * _lum(ctx, sl, 0.15, 0.0, 0.08, 0.05)[..., None]
        patch = np.clip(ctx.noise["coarse"][sl] - 0.6, 0, 1)[..., None]
        return out * (1 - patch) + soil * _lum(ctx, sl, 0.1)[..., None] * patch

    return paint


def _trunk_painter(rng: np.random.Generator) -> Painter:
    color = _jitter(rng, [85, 72, 58], 0.08)

    def paint(ctx, sl, yy, xx, mask):
        return color * _lum(ctx, sl, 0.12, 0.1, 0.05)[..., None]

    return paint


def _wall_painter(rng: np.random.Generator, plane_x: float) -> Painter:
    color = _jitter(rng, [[170, 165, 155], [140, 135, 128], [185, 175, 150]][rng.integers(3)], 0.05)
    block = np.float32(rng.uniform(0.3, 0.7))

    def paint(ctx, sl, yy, xx, mask):
        along, height = _plane_coords(ctx, yy, xx, plane_x, None)
        out = color * _lum(ctx, sl, 0.05, 0.0, 0.08, 0.15)[..., None]
        joints = np.mod(height, block) < block * 0.08
        return np.where(joints[..., None], out * 0.8, out)

    return paint


def _fence_painter(rng: np.random.Generator, plane_x: float, top: float) -> Painter:
    bar = _jitter(rng, [[95, 100, 95], [140, 110, 80], [60, 70, 60]][rng.integers(3)], 0.05)
    gap = np.float32([70, 85, 55]) * np.float32(rng.uniform(0.8, 1.2))
    spacing = np.float32(rng.uniform(0.12, 0.25))

    def paint(ctx, sl, yy, xx, mask):
        along, height = _plane_coords(ctx, yy, xx, plane_x, None)
        bars = (np.mod(along, spacing) < spacing * 0.35) | (height > top - 0.1) | (np.abs(height - 0.3) < 0.05)
        b = _lum(ctx, sl, 0.05)[..., None]
        return np.where(bars[..., None], bar * b, (gap * 0.6 + bar * 0.4) * _lum(ctx, sl, 0.1, 0.2)[..., None])

    return paint


def _pole_painter(rng: np.random.Generator, x_centre: float, half_width: float) -> Painter:
    color = _jitter(rng, [[135, 138, 140], [110, 112, 110], [80, 95, 85]][rng.integers(3)], 0.05)

    def paint(ctx, sl, yy, xx, mask):
        t = np.clip((xx - x_centre) / max(half_width, 0.5), -1, 1)
        shade = 0.65 + 0.5 * np.sqrt(1 - t * t) - 0.15 * t
        return color * (shade * _lum(ctx, sl, 0.04))[..., None] * np.ones_like(yy)[..., None]

    return paint


def _sign_painter(rng: np.random.Generator, kind: str, size_px: float) -> Painter:
    faces = {"red": ([200, 30, 35], [240, 240, 240]), "blue": ([25, 70, 170], [240, 240, 240]),
             "yellow": ([235, 190, 40], [245, 245, 245]), "white": ([240, 240, 235], [30, 30, 30])}
    rim, inner = (np.float32(c) for c in faces[kind])
    if kind == "blue":
        rim, inner = inner, rim
    k = max(1, int(round(size_px * 0.12)))

    def paint(ctx, sl, yy, xx, mask):
        inside = cv2.erode(mask.astype(np.uint8), np.ones((2 * k + 1, 2 * k + 1), np.uint8)).astype(bool)
        out = np.where(inside[..., None], inner, rim) * _lum(ctx, sl, 0.03)[..., None]
        return out

    return paint


def _light_painter(rng: np.random.Generator, box: tuple[float, float, float, float], facing: bool) -> Painter:
    body = _jitter(rng, [[30, 32, 30], [55, 60, 45]][rng.integers(2)], 0.1)
    lit = int(rng.integers(3))
    lamps = np.float32([[255, 50, 40], [255, 185, 20], [60, 255, 150]])
    x0, y0, x1, y1 = box

    def paint(ctx, sl, yy, xx, mask):
        out = body * _lum(ctx, sl, 0.05)[..., None] * np.ones_like(xx)[..., None]
        if not facing:
            return out
        cx, w, h = (x0 + x1) / 2, max(x1 - x0, 1.0), max(y1 - y0, 1.0)
        for i in range(3):
            cy = y0 + h * (i + 0.5) / 3
            d = np.sqrt(((xx - cx) / (0.32 * w)) ** 2 + ((yy - cy) / (0.32 * w)) ** 2)
            col = lamps[i] if i == lit else np.float32([55, 55, 50])
            out = np.where((d < 1)[..., None], col, out)
        return out

    return paint


def _vehicle_painter(rng: np.random.Generator, kind: str, xc: float, width: float, z0: float, z1: float,
                     height: float, front: bool) -> Painter:
    palettes = {
        "car": [[235, 235, 235], [170, 172, 178], [35, 35, 40], [90, 92, 98], [150, 25, 25], [30, 50, 120],
                [40, 70, 50], [200, 190, 160]],
        "truck": [[225, 225, 220], [200, 200, 195], [40, 80, 150], [180, 40, 30]],
        "bus": [[235, 215, 150], [230, 230, 225], [200, 40, 40], [40, 90, 170]],
        "train": [[210, 40, 40], [235, 235, 230], [240, 200, 40]],
    }
    color = _jitter(rng, palettes[kind][rng.integers(len(palettes[kind]))], 0.05)
    glass = np.float32([40, 46, 56])
    win_lo, win_hi = {"car": (0.9, height - 0.1), "truck": (1.9, 2.7), "bus": (1.0, 2.7),
                      "train": (1.1, 2.6)}[kind]
    rear_windows = kind in ("car", "bus", "train") or front
    side_x = xc - width / 2 if xc > 0 else xc + width / 2
    lights = np.float32([240, 240, 220]) if front else np.float32([190, 20, 25])

    def paint(ctx, sl, yy, xx, mask):
        xr0 = ctx.vx + ctx.f * (xc - width / 2) / z0
        xr1 = ctx.vx + ctx.f * (xc + width / 2) / z0
        on_rear = (xx >= xr0 - 0.5) & (xx <= xr1 + 0.5)
        dx = xx - ctx.vx
        dx = np.where(np.abs(dx) < 1e-3, 1e-3, dx)
        zs = np.clip(ctx.f * side_x / dx, z0, z1)
        z = np.where(on_rear, np.float32(z0), zs)
        y = ctx.hc - (yy - ctx.vy) * z / ctx.f
        out = color * _lum(ctx, sl, 0.03, 0.0, 0.02, 0.05)[..., None]
        out = np.where(on_rear[..., None], out, out * 0.82)  # the side is in shade
        win = (y > win_lo) & (y < win_hi)
        if not rear_windows:
            win &= ~on_rear
        if kind in ("bus", "train"):
            win &= on_rear | (np.mod(z - z0, 1.6) > 0.15)
        refl = _lum(ctx, sl, 0.02, 0, 0.0, 0.25)[..., None]
        out = np.where(win[..., None], glass * refl, out)
        under = y < 0.3
        out = np.where(under[..., None], np.float32([25, 25, 27]), out)
        lamp = on_rear & (y > 0.65) & (y < 0.85) & (
            (np.abs(xx - xr0) < 0.18 * (xr1 - xr0)) | (np.abs(xx - xr1) < 0.18 * (xr1 - xr0)))
        out = np.where(lamp[..., None], lights, out)
        plate = on_rear & (y > 0.4) & (y < 0.55) & (np.abs(xx - (xr0 + xr1) / 2) < 0.13 * (xr1 - xr0))
        out = np.where(plate[..., None], np.float32([230, 230, 225]), out)
        # wheels on the visible side
        for zw in (z0 + 0.9, z1 - 0.9) if z1 - z0 > 2.5 else ():
            wheel = (~on_rear) & ((zs - zw) ** 2 + (y - 0.33) ** 2 < 0.33 ** 2)
            out = np.where(wheel[..., None], np.float32([20, 20, 22]), out)
        return out

    return paint


def _person_painter(rng: np.random.Generator, z: float, tall: float, rider: bool) -> Painter:
    skin = _jitter(rng, [[225, 185, 160], [185, 135, 105], [120, 85, 65]][rng.integers(3)], 0.05)
    shirt = rng.uniform(20, 230, 3).astype(np.float32)
    legs = _jitter(rng, [[40, 40, 55], [60, 60, 62], [55, 75, 115], [120, 110, 90]][rng.integers(4)], 0.1)
    hair = _jitter(rng, [[40, 30, 25], [90, 70, 40], [20, 20, 20]][rng.integers(3)], 0.1)
    helmet = rng.uniform(30, 240, 3).astype(np.float32)

    def paint(ctx, sl, yy, xx, mask):
        y = (ctx.hc - (yy - ctx.vy) * z / ctx.f) / tall + np.zeros_like(xx)
        out = np.where((y > 0.5)[..., None], shirt, legs)
        out = np.where((y > 0.84)[..., None], skin, out)
        out = np.where((y > 0.94)[..., None], helmet if rider else hair, out)
        out = np.where((y < 0.04)[..., None], np.float32([25, 25, 25]), out)
        return out * _lum(ctx, sl, 0.05, 0.05, 0.04)[..., None]

    return paint


def _cycle_painter(rng: np.random.Generator, wheels: list[tuple[float, float, float]], frame_pts: np.ndarray,
                   motor: bool) -> Painter:
    frame_col = rng.uniform(20, 220, 3).astype(np.float32)

    def paint(ctx, sl, yy, xx, mask):
        y0, x0 = sl[0].start, sl[1].start
        h, w = mask.shape
        if motor:
            out = np.broadcast_to(frame_col * 0.8, (h, w, 3)).astype(np.float32)
            out = out * _lum(ctx, sl, 0.04)[..., None]
        else:
            # see-through: the bicycle's polygon covers what lies between spokes and frame
            crop = ctx.noise["canvas"][sl]
            outside = ~mask
            bg = crop[outside].mean(axis=0) if outside.any() else np.float32([110, 110, 110])
            out = (bg * 0.85 * _lum(ctx, sl, 0.06)[..., None]).astype(np.float32)
        lines = np.zeros((h, w), np.uint8)
        thick = max(1, int(round(max(h, w) * 0.025)))
        pts = np.round(frame_pts - [x0, y0]).astype(np.int32)
        for a, b in zip(pts[:-1], pts[1:]):
            cv2.line(lines, tuple(int(v) for v in a), tuple(int(v) for v in b), 1, thick)
        out = np.where(lines[..., None] > 0, frame_col, out)
        for cx, cy, r in wheels:
            d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / max(r, 0.5)
            tyre = (d < 1.0) & (d > (0.55 if motor else 0.8))
            out = np.where(tyre[..., None], np.float32([22, 22, 22]), out)
            if motor:
                out = np.where((d <= 0.55)[..., None], np.float32([120, 120, 125]), out)
        return out

    return paint


def _ego_painter(rng: np.random.Generator, top_fn: Callable[[np.ndarray], np.ndarray]) -> Painter:
    color = _jitter(rng, [[28, 30, 36], [45, 45, 50], [20, 22, 25]][rng.integers(3)], 0.1)

    def paint(ctx, sl, yy, xx, mask):
        depth = (yy - top_fn(xx)) / max(ctx.height * 0.02, 1.0)
        refl = np.exp(-np.clip(depth, 0, None))[..., None]
        out = color * _lum(ctx, sl, 0.03, 0, 0.02, 0.05)[..., None]
        return out * (1 - 0.6 * refl) + ctx.sky_horizon * 0.6 * refl

    return paint


def _black(ctx, sl, yy, xx, mask):
    return np.float32([2, 2, 2]) * np.ones_like(xx)[..., None] * np.ones_like(yy)[..., None]
