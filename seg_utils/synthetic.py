"""An offline stand-in for Cityscapes: synthetic street scenes in the exact official layout and formats.

The real dataset needs a login and 11 GB. This module writes a small set that every notebook and test
can read with the very code that reads the real one::

    leftImg8bit/{split}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png     RGB 8-bit
    gtFine/{split}/{city}/{stem}_gtFine_polygons.json                            official polygon format
    gtFine/{split}/{city}/{stem}_gtFine_labelIds.png                             8-bit, label ids 0..33
    gtFine/{split}/{city}/{stem}_gtFine_color.png                                RGBA, official palette
    gtFine/{split}/{city}/{stem}_gtFine_instanceIds.png                          16-bit, id*1000+k

Each frame is a scene built in 3-D (a pinhole camera 1.3 m above a street, so everything shrinks towards
a vanishing point) as a list of labelled polygons in drawing order, back to front. The polygons are the
ground truth: they go into the json file, and the three label images are drawn from that json by the
official ``cityscapesscripts`` functions, exactly as the Cityscapes team drew theirs. The RGB image is
painted from the same polygons in the same order with the same PIL rasteriser, so every image pixel
shows the class its label says. ``_gtFine_labelTrainIds.png`` is not written, as the real download
does not ship it: ``csCreateTrainIdLabelImgs`` draws it from the json files on either set.

The test split gets normal images but dummy labels holding only void regions, like the real one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from cityscapesscripts.helpers.annotation import Annotation
from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
from cityscapesscripts.preparation.json2labelImg import createLabelImage
from PIL import Image, ImageDraw

__all__ = [
    "SPLIT_CITIES",
    "FORMAT_VERSION",
    "MARKER_NAME",
    "VOID_LABELS",
    "write_synthetic_cityscapes",
    "ensure_synthetic",
    "render_frame",
    "frame_names",
]

#: The real cities of each split (the official README's lists).
SPLIT_CITIES: dict[str, tuple[str, ...]] = {
    "train": ("aachen", "bochum", "bremen", "cologne", "darmstadt", "dusseldorf", "erfurt", "hamburg",
              "hanover", "jena", "krefeld", "monchengladbach", "strasbourg", "stuttgart", "tubingen", "ulm",
              "weimar", "zurich"),
    "val": ("frankfurt", "lindau", "munster"),
    "test": ("berlin", "bielefeld", "bonn", "leverkusen", "mainz", "munich"),
}
SPLITS = ("train", "val", "test")
#: Bump when the generator's output changes, so that ensure_synthetic does not reuse an older set.
FORMAT_VERSION = 1
MARKER_NAME = "synthetic.json"
_MARKER_FORMAT = "seg_utils.synthetic"
#: The only labels the (dummy) test-split annotations hold, as in the real test split.
VOID_LABELS = ("unlabeled", "ego vehicle", "rectification border", "out of roi")

_PNG_IMAGE_LEVEL = 1  # noisy RGB compresses poorly anyway; level 1 is ~4x faster than the default
_PNG_LABEL_LEVEL = 3

Painter = Callable[["_Ctx", tuple[slice, slice], np.ndarray, np.ndarray, np.ndarray], np.ndarray]


# --------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------


def frame_names(*, train: int, val: int, test: int, seed: int = 0) -> dict[str, list[tuple[str, str]]]:
    """Return, per split, the (city, stem) of every frame, sorted by stem.

    Frames are spread over a few real cities per split; sequence numbers grow with gaps and frame
    numbers are often, but not always, 000019 (the real set has e.g. frankfurt_000000_000294).
    """
    rng = np.random.default_rng([seed, 0x5EED])
    names: dict[str, list[tuple[str, str]]] = {}
    for split, count in zip(SPLITS, (train, val, test)):
        pool = SPLIT_CITIES[split]
        n_cities = min(len(pool), max(1, math.ceil(count / 4)))
        cities = sorted(rng.choice(len(pool), size=n_cities, replace=False).tolist())
        seq = {c: int(rng.integers(0, 3)) for c in cities}
        frames = []
        for i in range(count):
            city = pool[cities[i % n_cities]]
            seq[cities[i % n_cities]] += 1 + int(rng.integers(0, 40))
            frame = 19 if rng.random() < 0.5 else int(rng.integers(0, 1200))
            frames.append((city, f"{city}_{seq[cities[i % n_cities]]:06d}_{frame:06d}"))
        names[split] = sorted(frames, key=lambda cs: cs[1])
    return names


def write_synthetic_cityscapes(
    root: str | os.PathLike,
    *,
    train: int = 20,
    val: int = 5,
    test: int = 5,
    size: tuple[int, int] = (1024, 2048),
    seed: int = 0,
    progress: bool = False,
) -> Path:
    """Return ``root`` after writing a synthetic Cityscapes-format set of train/val/test frames into it.

    ``size`` is (height, width) of every frame. The same seed gives the same bytes. ``root`` must not
    exist, be empty, or hold a synthetic set written with the same parameters (then it is rewritten);
    any other folder is refused with a ValueError, so real data is never overwritten.
    """
    root = Path(root)
    params = _params(train=train, val=val, test=test, size=size, seed=seed)
    if root.exists():
        _check_reusable(root, params, allow_empty=True)
    names = frame_names(train=train, val=val, test=test, seed=seed)
    jobs = [(split, i, city, stem) for split in SPLITS for i, (city, stem) in enumerate(names[split])]
    if progress:
        from tqdm.auto import tqdm

        jobs = tqdm(jobs, desc="synthetic Cityscapes", unit="frame")
    for split, i, city, stem in jobs:
        rng = np.random.default_rng([seed, SPLITS.index(split), i])
        rgb, annotation = render_frame(rng, params["size"], labelled=split != "test")
        _write_frame(root, split, city, stem, rgb, annotation)
    # written last: a folder without it is an interrupted or foreign one
    (root / MARKER_NAME).write_text(json.dumps(params, indent=2) + "\n")
    return root


def ensure_synthetic(
    root: str | os.PathLike,
    *,
    train: int,
    val: int,
    test: int,
    size: tuple[int, int],
    seed: int = 0,
) -> Path:
    """Return ``root`` holding a synthetic set with these parameters, writing it only when missing.

    The set is written into a temporary sibling folder and renamed into place, so concurrent callers
    (pytest-xdist workers, two notebooks) never see a half-written set: the first rename wins and the
    others discard their copy. A folder holding anything else raises ValueError and is left untouched.
    """
    root = Path(root)
    params = _params(train=train, val=val, test=test, size=size, seed=seed)
    if root.exists() and _check_reusable(root, params, allow_empty=True):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        write_synthetic_cityscapes(tmp, train=train, val=val, test=test, size=params["size"], seed=seed)
        try:
            os.replace(tmp, root)  # atomic; replaces root only if it is an empty folder
        except OSError:
            if not root.exists():
                raise
            # another process won the race (or root is a foreign folder): keep theirs, check it
            if not _check_reusable(root, params, allow_empty=False):
                raise ValueError(f"{root}: could not move the new synthetic set into place") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


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


# --------------------------------------------------------------------------------------------------
# folder handling
# --------------------------------------------------------------------------------------------------


def _params(*, train: int, val: int, test: int, size: tuple[int, int], seed: int) -> dict[str, Any]:
    for name, count in (("train", train), ("val", val), ("test", test)):
        if not isinstance(count, (int, np.integer)) or count < 0:
            raise ValueError(f"synthetic set: {name} must be a frame count >= 0, got {count!r}")
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"synthetic set: size must be (height, width), got {size!r}") from None
    if height < 16 or width < 16:
        raise ValueError(f"synthetic set: size must be at least 16x16, got {height}x{width}")
    return {"format": _MARKER_FORMAT, "version": FORMAT_VERSION, "train": int(train), "val": int(val),
            "test": int(test), "size": [height, width], "seed": int(seed)}


def _check_reusable(root: Path, params: dict[str, Any], *, allow_empty: bool) -> bool:
    """Return True if root holds a set with exactly these parameters, False if it is an empty folder.

    Raise ValueError for anything else (a file, a foreign folder, a set with other parameters).
    """
    if not root.is_dir():
        raise ValueError(f"{root}: expected a folder for the synthetic Cityscapes set, found a file")
    marker = root / MARKER_NAME
    if marker.is_file():
        try:
            found = json.loads(marker.read_text())
        except (OSError, ValueError):
            found = None
        if found == params:
            return True
        raise ValueError(f"{root} holds a synthetic set written with other parameters ({marker.name}: "
                         f"{found}); expected {params}: delete the folder or choose another one")
    if allow_empty and not any(root.iterdir()):
        return False
    raise ValueError(f"{root} is not empty and is not a synthetic set (no {MARKER_NAME}): "
                     "refusing to write into it; choose another folder")


def _write_frame(root: Path, split: str, city: str, stem: str, rgb: np.ndarray, annotation: dict) -> None:
    img_dir = root / "leftImg8bit" / split / city
    gt_dir = root / "gtFine" / split / city
    img_dir.mkdir(parents=True, exist_ok=True)
    gt_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb, "RGB").save(img_dir / f"{stem}_leftImg8bit.png", compress_level=_PNG_IMAGE_LEVEL)
    text = json.dumps(annotation, indent=4)
    (gt_dir / f"{stem}_gtFine_polygons.json").write_text(text)
    # The label images are drawn from the json text just written, by the official functions.
    ann = Annotation()
    ann.fromJsonText(text)
    base = gt_dir / f"{stem}_gtFine"
    createLabelImage(ann, "ids").save(f"{base}_labelIds.png", compress_level=_PNG_LABEL_LEVEL)
    createLabelImage(ann, "color").save(f"{base}_color.png", compress_level=_PNG_LABEL_LEVEL)
    # The official json2instanceImg saves its mode "I" image directly, which Pillow >= 11 refuses for
    # PNG ("cannot write mode I as PNG"); the real files are 16-bit grayscale, so convert to I;16.
    instance_ids = np.asarray(createInstanceImage(ann, "ids"), dtype=np.int32).astype(np.uint16)
    Image.fromarray(instance_ids).save(f"{base}_instanceIds.png", compress_level=_PNG_LABEL_LEVEL)


# --------------------------------------------------------------------------------------------------
# scene model
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# painters: each returns the (h, w, 3) float colours of a crop; only the object's own pixels are kept
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# scene builder
# --------------------------------------------------------------------------------------------------

_FACADE_COLORS = [[200, 190, 170], [180, 170, 150], [150, 95, 75], [215, 205, 185], [160, 160, 160],
                  [120, 115, 110], [220, 210, 160], [190, 150, 120], [230, 225, 215], [175, 185, 190]]


def _blob(rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float, n: int = 24) -> np.ndarray:
    """Return a bumpy ellipse (a tree crown) as an (n, 2) polygon."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, 1)
    r = 1 + 0.12 * rng.standard_normal(n)
    r = np.clip(np.convolve(np.r_[r[-1], r, r[0]], [0.25, 0.5, 0.25], "valid"), 0.7, 1.3)
    return np.stack([cx + rx * r * np.cos(t), cy + ry * r * np.sin(t)], axis=1)


_PERSON = np.array([  # (lateral in widths, height in statures), feet at 0, head at 1
    (0.0, 1.0), (0.13, 0.975), (0.16, 0.91), (0.1, 0.855), (0.42, 0.8), (0.5, 0.52), (0.38, 0.5),
    (0.34, 0.66), (0.3, 0.46), (0.3, 0.0), (0.08, 0.0), (0.03, 0.42), (-0.03, 0.42), (-0.08, 0.0),
    (-0.3, 0.0), (-0.3, 0.46), (-0.34, 0.66), (-0.38, 0.5), (-0.5, 0.52), (-0.42, 0.8), (-0.1, 0.855),
    (-0.16, 0.91), (-0.13, 0.975)])
_RIDER = np.array([  # side view, metres from the bicycle's centre, facing +x
    (0.0, 1.8), (0.13, 1.75), (0.16, 1.64), (0.3, 1.5), (0.62, 1.08), (0.52, 1.02), (0.24, 1.3),
    (0.16, 1.05), (0.34, 0.72), (0.26, 0.38), (0.14, 0.38), (0.2, 0.66), (-0.2, 0.95), (-0.2, 1.45),
    (-0.1, 1.62), (-0.12, 1.74)])


def _build_scene(rng: np.random.Generator, size: tuple[int, int]) -> tuple[list[_Obj], _Ctx]:
    height, width = int(size[0]), int(size[1])
    ctx = _Ctx(height=height, width=width, f=width * rng.uniform(0.95, 1.15),
               vx=width * (0.5 + rng.uniform(-0.07, 0.07)), vy=height * rng.uniform(0.36, 0.45), hc=1.3)
    overcast = rng.random() < 0.4
    ctx.sky_top = _jitter(rng, [165, 175, 185] if overcast else [90, 135, 200], 0.05)
    ctx.sky_horizon = _jitter(rng, [215, 220, 225] if overcast else [190, 210, 230], 0.03)
    scene = _Scene(ctx)
    W, H = width, height
    z_far = 160.0

    # road geometry (metres): the camera drives in the right lane
    left = -rng.uniform(3.5, 9.0)
    park = {-1: left < -5.5 and rng.random() < 0.75, 1: rng.random() < 0.6}  # parking lanes
    right = rng.uniform(3.8, 4.8) if park[1] else rng.uniform(1.9, 2.6)
    walk_l, walk_r = rng.uniform(2.5, 5.5), rng.uniform(2.5, 5.5)
    outer = {-1: left - walk_l, 1: right + walk_r}

    # sky, then the far end of the street, then ground behind everything
    scene.add("sky", np.array([(0, 0), (W - 1, 0), (W - 1, ctx.vy + 2), (0, ctx.vy + 2)]), _sky_painter(ctx, rng))
    x_span = (np.array([0, W]) - ctx.vx) * z_far / ctx.f
    xb = x_span[0] - 5
    while xb < x_span[1] + 5:
        wb = rng.uniform(8, 35)
        hb = rng.uniform(6, 30)
        label = "building" if rng.random() < 0.7 else "vegetation"
        pts = ctx.project([xb, xb + wb, xb + wb, xb], [0, 0, hb, hb], [z_far] * 4)
        if label == "building":
            scene.add(label, pts, _facade_painter(rng, _FACADE_COLORS[rng.integers(10)], hb, depth=z_far,
                                                  haze=0.35))
        else:
            tops = ctx.project(np.linspace(xb + wb, xb, 8), hb * (1 + 0.25 * rng.standard_normal(8)), [z_far] * 8)
            scene.add(label, np.vstack([pts[:2], tops]), _vegetation_painter(rng, dark=True))
        xb += wb
    scene.add("terrain", np.array([(0, ctx.vy), (W - 1, ctx.vy), (W - 1, H - 1), (0, H - 1)]),
              _terrain_painter(rng))

    # both sides of the street, far to near: buildings, parks (terrain, trees, hedges), walls, fences
    side_items: list[tuple[float, Callable[[], None]]] = []
    for side in (-1, 1):
        xo = outer[side]
        z = 1.0
        while z < z_far:
            z0, z1 = z, min(z_far, z + rng.uniform(10, 45))
            kind = rng.choice(["building", "park", "wall"], p=[0.68, 0.2, 0.12])
            if kind == "building" or z0 > 100:
                hb = rng.uniform(9, 25)
                pts = ctx.project([xo] * 4, [0, hb, hb, 0], [z0, z0, z1, z1])
                painter = _facade_painter(rng, _FACADE_COLORS[rng.integers(10)], hb, plane_x=xo)
                side_items.append((z0, lambda p=pts, q=painter: scene.add("building", p, q)))
            else:
                xb_ = xo + side * rng.uniform(3, 8)
                hv = rng.uniform(4, 14)
                n = 10
                zz = np.linspace(z1, z0, n)
                bumps = np.convolve(rng.standard_normal(n + 2), [0.3, 0.4, 0.3], "valid")
                band = ctx.project(np.r_[xb_, xb_, [xb_] * n], np.r_[0, 0, hv * (1 + 0.15 * bumps)],
                                   np.r_[z0, z1, zz])
                veg = _vegetation_painter(rng, dark=True)
                side_items.append((z1 + 0.01, lambda p=band, q=veg: scene.add("vegetation", p, q)))
                strip = ctx.project([xo, xb_, xb_, xo], [0, 0, 0, 0], [z0, z0, z1, z1])
                ter = _terrain_painter(rng)
                side_items.append((z0 + 0.02, lambda p=strip, q=ter: scene.add("terrain", p, q)))
                for _ in range(int(rng.integers(2, 6))):
                    zt = rng.uniform(z0 + 2, max(z0 + 2.5, z1))
                    xt = xo + side * rng.uniform(1, 3)
                    side_items.append((zt, _tree_adder(scene, rng, xt, zt)))
                if kind == "wall" or rng.random() < 0.35:
                    label = "wall" if kind == "wall" else "fence"
                    top = rng.uniform(1.2, 3.0) if label == "wall" else rng.uniform(1.0, 2.0)
                    pts = ctx.project([xo] * 4, [0, top, top, 0], [z0, z0, z1, z1])
                    painter = _wall_painter(rng, xo) if label == "wall" else _fence_painter(rng, xo, top)
                    side_items.append((z0 + 0.01, lambda p=pts, q=painter, lab=label: scene.add(lab, p, q)))
            z = z1
    for _, add in sorted(side_items, key=lambda item: -item[0]):
        add()

    # the ground in front: sidewalks and the road
    for side, x_in in ((-1, left), (1, right)):
        pts = ctx.project([x_in, outer[side], outer[side], x_in], [0] * 4, [0.5, 0.5, z_far, z_far])
        scene.add("sidewalk", pts, _sidewalk_painter(rng, x_in))
    pts = ctx.project([left, right, right, left], [0] * 4, [0.5, 0.5, z_far, z_far])
    scene.add("road", pts, _road_painter(rng, left, right))

    # street furniture, vehicles and people, far to near
    items: list[tuple[float, Callable[[], None]]] = []
    for side, x_in in ((-1, left), (1, right)):
        z = rng.uniform(3, 15)
        while z < 90:
            xp = x_in + side * rng.uniform(0.3, 0.7)
            items.append((z, _pole_adder(scene, rng, xp, z)))
            z += rng.uniform(10, 35)
        if rng.random() < 0.45:  # an avenue of trees along the sidewalk
            z = rng.uniform(4, 12)
            step = rng.uniform(7, 14)
            while z < 80:
                items.append((z + 0.3, _tree_adder(scene, rng, x_in + side * rng.uniform(0.9, 1.6), z)))
                z += step * rng.uniform(0.8, 1.2)
        if park[side]:
            z = rng.uniform(6, 14)
            while z < 70:
                kind = "car" if rng.random() < 0.95 else "truck"
                items.append((z, _vehicle_adder(scene, rng, kind, x_in - side * 1.1, z, front=False)))
                z += rng.uniform(5.0, 14.0)
        for _ in range(int(rng.poisson(2.0))):  # pedestrians on the sidewalk
            zp = rng.uniform(5, 45)
            items.append((zp, _person_adder(scene, rng, x_in + side * rng.uniform(0.5, walk_l if side < 0 else walk_r),
                                            zp)))
    for lane_x, front in ((0.0, False), (left / 2 - 0.5, True)):  # traffic ahead and oncoming
        if lane_x < left + 1.5:
            continue
        for _ in range(int(rng.integers(0, 3))):
            zv = rng.uniform(8, 60)
            kind = rng.choice(["car"] * 6 + ["truck", "bus"])
            items.append((zv, _vehicle_adder(scene, rng, kind, lane_x + rng.uniform(-0.3, 0.3), zv, front)))
    if rng.random() < 0.15 and left < -6:
        zv = rng.uniform(15, 50)
        items.append((zv, _vehicle_adder(scene, rng, "train", left / 2 - 0.5, zv, front=True)))
    for _ in range(int(rng.poisson(0.8))):  # cyclists and motorcyclists
        zc = rng.uniform(8, 35)
        xc = rng.uniform(left + 0.5, right - 0.5) if rng.random() < 0.5 else right + rng.uniform(0.5, 1.5)
        items.append((zc, _cycle_adder(scene, rng, xc, zc, rider=True, motor=rng.random() < 0.35)))
    if rng.random() < 0.4:  # a parked bicycle
        zc = rng.uniform(5, 25)
        items.append((zc, _cycle_adder(scene, rng, right + rng.uniform(0.5, 1.5), zc, rider=False, motor=False)))
    for _, add in sorted(items, key=lambda item: -item[0]):
        add()

    # the ego vehicle's bonnet and the rectification border, as in every Cityscapes frame
    mid = H * (1 - rng.uniform(0.05, 0.09))
    drop = H * rng.uniform(0.02, 0.05)
    cx = W * rng.uniform(0.45, 0.55)

    def hood_top(xx: np.ndarray) -> np.ndarray:
        return mid + drop * ((xx - cx) / (W / 2)) ** 2

    xs = np.linspace(0, W - 1, 17)
    hood = np.vstack([[(0, H - 1)], np.stack([xs, hood_top(xs)], axis=1), [(W - 1, H - 1)]])
    scene.add("ego vehicle", hood, _ego_painter(rng, hood_top))
    if rng.random() < 0.5:
        a, b = H * rng.uniform(0.02, 0.06), W * rng.uniform(0.01, 0.04)
        scene.add("rectification border", np.array([(0, H - 1), (0, H - 1 - a), (b, H - 1)]), _black)
        scene.add("rectification border", np.array([(W - 1, H - 1), (W - 1 - b, H - 1), (W - 1, H - 1 - a)]),
                  _black)
    return scene.objects, ctx


def _tree_adder(scene: _Scene, rng: np.random.Generator, x: float, z: float) -> Callable[[], None]:
    ctx = scene.ctx
    trunk_w = rng.uniform(0.2, 0.45)
    crown_y, crown_r = rng.uniform(3.5, 7.0), rng.uniform(1.6, 3.2)
    trunk = ctx.project([x - trunk_w / 2, x + trunk_w / 2, x + trunk_w / 2, x - trunk_w / 2],
                        [0, 0, crown_y, crown_y], [z] * 4)
    (cx, cy), = ctx.project([x], [crown_y + crown_r * 0.5], [z])
    r = ctx.f * crown_r / z
    crown = _blob(rng, cx, cy, r * rng.uniform(0.85, 1.1), r * rng.uniform(0.9, 1.25))
    trunk_paint, crown_paint = _trunk_painter(rng), _vegetation_painter(rng)

    def add() -> None:
        scene.add("vegetation", trunk, trunk_paint)
        scene.add("vegetation", crown, crown_paint)

    return add


def _pole_adder(scene: _Scene, rng: np.random.Generator, x: float, z: float) -> Callable[[], None]:
    ctx = scene.ctx
    kind = rng.choice(["lamp", "sign", "light"], p=[0.35, 0.4, 0.25])
    top = {"lamp": rng.uniform(5, 8), "sign": rng.uniform(2.4, 3.2), "light": rng.uniform(3.0, 4.2)}[kind]
    w = rng.uniform(0.1, 0.2)
    pole = ctx.project([x - w / 2, x + w / 2, x + w / 2, x - w / 2], [0, 0, top, top], [z] * 4)
    xc = ctx.vx + ctx.f * x / z
    pole_paint = _pole_painter(rng, xc, ctx.f * w / z / 2)
    extras: list[tuple[str, np.ndarray, Painter]] = []
    if kind == "lamp":
        arm = rng.uniform(0.8, 2.0) * (1 if x < 0 else -1)
        pts = ctx.project([x, x + arm, x + arm, x], [top - 0.12, top - 0.12, top, top], [z] * 4)
        extras.append(("pole", pts, _pole_painter(rng, xc, 1e3)))
    if kind in ("sign", "light") or rng.random() < 0.2:
        s = rng.uniform(0.5, 0.8)
        yc = top - s / 2 if kind == "sign" else rng.uniform(2.0, 2.6)
        shape = rng.choice(["round", "triangle", "rect", "diamond"])
        colour = {"round": rng.choice(["red", "blue"]), "triangle": "red",
                  "rect": rng.choice(["blue", "white", "yellow"]), "diamond": "yellow"}[shape]
        if shape == "round":
            t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
            local = np.stack([np.cos(t), np.sin(t)], 1) * s / 2
        elif shape == "triangle":
            local = np.array([(-0.5, -0.43), (0.5, -0.43), (0, 0.43)]) * s
        elif shape == "rect":
            local = np.array([(-0.5, -0.35), (0.5, -0.35), (0.5, 0.35), (-0.5, 0.35)]) * s
        else:
            local = np.array([(0, -0.5), (0.5, 0), (0, 0.5), (-0.5, 0)]) * s
        pts = ctx.project(x + local[:, 0], yc + local[:, 1], [z - 0.05] * len(local))
        extras.append(("traffic sign", pts, _sign_painter(rng, colour, ctx.f * s / z)))
    if kind == "light":
        bw, bh = 0.35, 0.95
        pts = ctx.project([x - bw / 2, x + bw / 2, x + bw / 2, x - bw / 2], [top - bh, top - bh, top, top],
                          [z - 0.1] * 4)
        box = (pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max())
        extras.append(("traffic light", pts, _light_painter(rng, box, facing=rng.random() < 0.75)))

    def add() -> None:
        scene.add("pole", pole, pole_paint)
        for label, pts, paint in extras:
            scene.add(label, pts, paint)

    return add


def _vehicle_adder(scene: _Scene, rng: np.random.Generator, kind: str, xc: float, z0: float,
                   front: bool) -> Callable[[], None]:
    ctx = scene.ctx
    dims = {"car": (1.8, rng.uniform(4.0, 4.8), rng.uniform(1.4, 1.6)), "truck": (2.5, 9.0, rng.uniform(3.2, 3.8)),
            "bus": (2.55, 12.0, 3.1), "train": (2.4, 30.0, 3.4)}
    width, length, height = dims[kind]
    if kind == "car":  # a body and a narrower, shorter cabin: the hull of both looks like a car
        body = _box_corners(xc - width / 2, xc + width / 2, 0, 0.95, z0, z0 + length)
        cabin = _box_corners(xc - width / 2 + 0.12, xc + width / 2 - 0.12, 0.95, height, z0 + 0.9, z0 + length - 1.3)
        pts = np.vstack([ctx.project(*body), ctx.project(*cabin)])
    else:
        pts = ctx.project(*_box_corners(xc - width / 2, xc + width / 2, 0, height, z0, z0 + length))
    hull = _hull(pts)
    paint = _vehicle_painter(rng, kind, xc, width, z0, z0 + length, height, front)
    return lambda: (scene.add(kind, hull, paint), None)[1]


def _person_adder(scene: _Scene, rng: np.random.Generator, x: float, z: float) -> Callable[[], None]:
    ctx = scene.ctx
    tall, wide = rng.uniform(1.55, 1.95), rng.uniform(0.45, 0.6)
    shape = _PERSON.copy()
    stride = rng.uniform(-0.12, 0.12)
    shape[9:11, 0] += stride
    shape[13:15, 0] -= stride
    pts = ctx.project(x + shape[:, 0] * wide, shape[:, 1] * tall, [z] * len(shape))
    paint = _person_painter(rng, z, tall, rider=False)
    return lambda: (scene.add("person", pts, paint), None)[1]


def _cycle_adder(scene: _Scene, rng: np.random.Generator, x: float, z: float, rider: bool,
                 motor: bool) -> Callable[[], None]:
    ctx = scene.ctx
    facing = 1 if rng.random() < 0.5 else -1
    r = 0.32 if motor else 0.34
    half = 0.7 if motor else 0.55
    t = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    circle = np.stack([np.cos(t), np.sin(t)], 1) * r
    local = np.vstack([circle + (-half, r), circle + (half, r),
                       [(half - 0.1, 1.05), (half + 0.05, 1.05)] if not motor else [(half - 0.2, 1.1), (-0.4, 0.95)]])
    local[:, 0] *= facing
    pts = _hull(ctx.project(x + local[:, 0], local[:, 1], [z] * len(local)))
    wheels = []
    for wx in (-half, half):
        (px, py), = ctx.project([x + wx], [r], [z])
        wheels.append((px, py, ctx.f * r / z))
    frame_local = np.array([(-half, r), (-0.1, 0.95), (0.0, r), (half - 0.1, 1.0), (half, r)])
    frame_local[:, 0] *= facing
    frame_pts = ctx.project(x + frame_local[:, 0], frame_local[:, 1], [z] * len(frame_local))
    paint = _cycle_painter(rng, wheels, frame_pts, motor)
    label = "motorcycle" if motor else "bicycle"
    rider_pts = rider_paint = None
    if rider:
        shape = _RIDER.copy()
        shape[:, 0] *= facing
        rider_pts = ctx.project(x + shape[:, 0], shape[:, 1] - (0.1 if motor else 0.0), [z - 0.05] * len(shape))
        rider_paint = _person_painter(rng, z, 1.8, rider=True)

    def add() -> None:
        scene.add(label, pts, paint, deferred=not motor)
        if rider_pts is not None:
            scene.add("rider", rider_pts, rider_paint)

    return add


# --------------------------------------------------------------------------------------------------
# painting and annotation
# --------------------------------------------------------------------------------------------------


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

