"""A stand-in for "your own data": a delivery robot's camera on a sidewalk, in a plain folder layout.

Notebook 05 trains on a dataset that is not Cityscapes. Few readers have one at hand, so this module writes a
small one, in the shape many labelling tools export::

    classes.json                            the class table: names and mask colours, the ignore index and colour
    images/{train,val,test}/walk_0003.png   8-bit RGB photos (about one in four a .jpg, as cameras save them)
    masks/{train,val}/walk_0003.png         RGB colour masks: one table colour per pixel, white = unsure
    synthetic.json                          the parameters, so that ``ensure_synthetic_folder`` can reuse the set

Six classes, chosen for what the robot must do: ``drivable`` (the paved path), ``kerb`` (the kerb stones between
path and road, and path edges), ``obstacle`` (bins, bollards, boxes, parked scooters), ``person``,
``vegetation`` (grass verges, hedges, trees) and ``background`` (houses, sky, the road). The masks are
colour masks, not index images, so that the reader's code must map colours to classes through the table,
and the test split has photos only, as a real delivery would.

Each frame is a scene seen by a pinhole camera about 0.6 m above the path, so everything shrinks fast towards
the vanishing point and persons tower over the robot. As for the Cityscapes stand-in (``render``), a scene is a
list of labelled polygons in drawing order, back to front; the photo is painted and the mask filled from the
same polygons with the same PIL rasteriser, so every photo pixel shows the class its mask says. The one
exception is the ignore colour: a 2-pixel "unsure" band around each person. The same seed gives the same bytes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from ..classes import CLASSES_FILE, ClassTable
from ..layouts import SPLITS
from ..outputs import bar_disabled, refuse_dataset
from .folders import MARKER_NAME, _check_reusable, _params, ensure_written
from .layout import _FACADE_COLORS, _person_adder, _tree_adder
from .painters import _facade_painter, _jitter, _lum, _sky_painter, _terrain_painter, _vegetation_painter
from .render import _index_map, _paint
from .scene import Painter, _box_corners, _Ctx, _hull, _Obj, _Scene

__all__ = ["SIDEWALK_CLASSES", "SIDEWALK_IGNORE_COLOR", "write_synthetic_folder", "ensure_synthetic_folder"]

#: The class table, in class-index order: names and mask colours.
SIDEWALK_CLASSES: tuple[dict, ...] = (
    {"name": "background", "color": [70, 70, 70]},
    {"name": "drivable", "color": [128, 64, 128]},
    {"name": "kerb", "color": [250, 170, 30]},
    {"name": "obstacle", "color": [0, 0, 142]},
    {"name": "person", "color": [220, 20, 60]},
    {"name": "vegetation", "color": [107, 142, 35]},
)
#: The mask colour of the pixels nobody was sure about (class index 255).
SIDEWALK_IGNORE_COLOR = (255, 255, 255)

_IGNORE_INDEX = 255
_FORMAT, _VERSION = "seg_utils.synthetic.sidewalk", 1  # bump the version when the output changes
_CLASS = {c["name"]: i for i, c in enumerate(SIDEWALK_CLASSES)}
_PALETTE = np.zeros((256, 3), np.uint8)
_PALETTE[: len(SIDEWALK_CLASSES)] = [c["color"] for c in SIDEWALK_CLASSES]
_PALETTE[_IGNORE_INDEX] = SIDEWALK_IGNORE_COLOR
_Z_FAR = 90.0  # metres: the far end of the street
_SCOOTER = np.array([  # side view, metres: deck and wheels, the stem, the handlebar; facing +x
    (-0.55, 0.0), (0.55, 0.0), (0.55, 0.16), (0.5, 0.16), (0.5, 0.98), (0.58, 1.02), (0.58, 1.1), (0.36, 1.1),
    (0.36, 1.02), (0.43, 0.98), (0.43, 0.16), (-0.55, 0.16)])


def write_synthetic_folder(root: str | os.PathLike, *, train: int = 24, val: int = 8, test: int = 4,
                           size: tuple[int, int] = (240, 320), seed: int = 0, progress: bool | None = False) -> Path:
    """Return ``root`` after writing a synthetic sidewalk set (photos, colour masks, ``classes.json``) into it.

    ``size`` is (height, width) of every frame. The same seed gives the same bytes. ``root`` must not exist,
    be empty, or hold a set written with the same parameters (then it is rewritten); any other folder is
    refused with a ValueError, and so is a folder inside a dataset (``outputs.OutputError``).
    """
    root = Path(root)
    params = _sidewalk_params(train=train, val=val, test=test, size=size, seed=seed)
    refuse_dataset(root.parent, option="folder for the synthetic set")
    if root.exists():
        _reusable(root, params)
    names = _frame_names(train=train, val=val, test=test, seed=seed)
    for kind, splits in (("images", SPLITS), ("masks", ("train", "val"))):
        for split in splits:
            if names[split]:  # an empty split is no folder: check would call an empty one a problem
                (root / kind / split).mkdir(parents=True, exist_ok=True)
    jobs = [(split, i, name) for split in SPLITS for i, name in enumerate(names[split])]
    from tqdm.auto import tqdm

    jobs = tqdm(jobs, desc="synthetic sidewalk", unit="frame", disable=bar_disabled(progress))
    for split, i, name in jobs:
        rgb, classes = _render_frame(np.random.default_rng([seed, 0x51DE, SPLITS.index(split), i]), params["size"])
        _write_frame(root, split, name, rgb, None if split == "test" else classes)
    table = {"classes": [dict(c) for c in SIDEWALK_CLASSES], "ignore_index": _IGNORE_INDEX,
             "ignore_color": list(SIDEWALK_IGNORE_COLOR)}
    ClassTable.from_dict(table).save(root / CLASSES_FILE)
    # written last: a folder without it is an interrupted or foreign one
    (root / MARKER_NAME).write_text(json.dumps(params, indent=2) + "\n")
    return root


def ensure_synthetic_folder(root: str | os.PathLike, *, train: int, val: int, test: int, size: tuple[int, int],
                            seed: int = 0) -> Path:
    """Return ``root`` holding a synthetic sidewalk set with these parameters, writing it only when missing.

    Written into a temporary sibling folder and renamed into place, so concurrent callers never see a
    half-written set (the first rename wins). A folder holding anything else raises ValueError, untouched.
    """
    params = _sidewalk_params(train=train, val=val, test=test, size=size, seed=seed)
    return ensure_written(Path(root), params, lambda tmp: write_synthetic_folder(
        tmp, train=train, val=val, test=test, size=params["size"], seed=seed))


def _reusable(root: Path, params: dict[str, Any]) -> bool:
    """Return True if root holds a set with these parameters, False if it is an empty folder; else ValueError."""
    if not root.is_dir():
        raise ValueError(f"{root}: expected a folder for the synthetic sidewalk set, found a file")
    return _check_reusable(root, params, allow_empty=True)


def _sidewalk_params(**kwargs: Any) -> dict[str, Any]:
    return {**_params(**kwargs), "format": _FORMAT, "version": _VERSION}


def _frame_names(*, train: int, val: int, test: int, seed: int) -> dict[str, list[str]]:
    """Return, per split, the sorted file names (stem + suffix): frames of one recording, numbered with gaps,
    shuffled into the splits; about one photo in four is a JPEG."""
    rng = np.random.default_rng([seed, 0x51DE])
    counts = {"train": train, "val": val, "test": test}
    numbers = np.cumsum(rng.integers(1, 13, sum(counts.values())))
    order = rng.permutation(np.repeat(np.arange(3), list(counts.values())))
    digits = max(4, len(str(int(numbers[-1])))) if len(numbers) else 4
    names = {}
    for k, split in enumerate(SPLITS):
        stems = [f"walk_{int(n):0{digits}d}" for n in numbers[order == k]]
        jpeg = set(rng.choice(len(stems), size=(len(stems) + 1) // 4, replace=False).tolist())
        names[split] = [stem + (".jpg" if i in jpeg else ".png") for i, stem in enumerate(stems)]
    return names


def _write_frame(root: Path, split: str, name: str, rgb: np.ndarray, classes: np.ndarray | None) -> None:
    image_path = root / "images" / split / name
    if image_path.suffix == ".jpg":
        Image.fromarray(rgb, "RGB").save(image_path, quality=90, subsampling=2)  # 4:2:0, like most cameras
    else:
        Image.fromarray(rgb, "RGB").save(image_path, compress_level=1)
    if classes is not None:
        mask_path = root / "masks" / split / (image_path.stem + ".png")
        Image.fromarray(_PALETTE[classes], "RGB").save(mask_path, compress_level=3)


def _render_frame(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Return (RGB uint8 HxWx3, class indices uint8 HxW with 255 = ignore) of one scene."""
    objects, ctx = _build_scene(rng, size)
    _light(objects, ctx, rng)
    rgb = _paint(objects, ctx, rng)
    index = _index_map(objects, size)  # the same polygons, order and rasteriser as the photo
    classes = np.array([0] + [_CLASS[o.label] for o in objects], np.uint8)[index]
    ring = np.ones((3, 3), np.uint8)
    for k, obj in enumerate(objects, 1):
        if obj.label == "person":  # the unsure band: a pixel outside the outline (and one inside, if wide enough)
            seen = (index == k).astype(np.uint8)
            inner = cv2.erode(seen, ring) if size[1] >= 256 else seen
            classes[cv2.dilate(seen, ring) != inner] = _IGNORE_INDEX
    return rgb, classes


def _light(objects: list[_Obj], ctx: _Ctx, rng: np.random.Generator) -> None:
    """Give every painter the frame's light: a vignette, and on one frame in two a soft shadow (not on the sky)."""
    yy, xx = np.mgrid[0:ctx.height, 0:ctx.width].astype(np.float32)
    r2 = ((xx - ctx.width / 2) ** 2 + (yy - ctx.height / 2) ** 2) / (ctx.width / 2) ** 2
    vignette = 1 - np.float32(rng.uniform(0.0, 0.25)) * r2
    shadow = vignette
    if rng.random() < 0.5:  # a house's shadow: a soft-edged half-plane
        angle = rng.uniform(0, 2 * np.pi)
        px, py = ctx.vx + ctx.width * rng.uniform(-0.3, 0.3), rng.uniform(ctx.vy, ctx.height)
        side = np.clip((np.cos(angle) * (xx - px) + np.sin(angle) * (yy - py)) / max(ctx.width * 0.01, 1.0), -30, 30)
        shadow = vignette * (1 - rng.uniform(0.25, 0.45) / (1 + np.exp(-side))).astype(np.float32)
    for k, obj in enumerate(objects):
        obj.paint = _lit(obj.paint, vignette if k == 0 else shadow)  # objects[0] is the sky


def _lit(paint: Painter, light: np.ndarray) -> Painter:
    def lit(ctx, sl, yy, xx, mask):
        return paint(ctx, sl, yy, xx, mask) * light[sl][..., None]

    return lit


def _build_scene(rng: np.random.Generator, size: tuple[int, int]) -> tuple[list[_Obj], _Ctx]:
    """Return (the objects of a sidewalk scene in drawing order, its camera), drawing from ``rng`` step by step.

    The cross-section, x in metres right of the camera: the path from ``edge[-1]`` to ``edge[1]``; on the
    road side a grass verge (sometimes), the kerb and the road, with houses across it; on the other side an
    edging strip and a verge with hedges (sometimes), then the houses.
    """
    height, width = int(size[0]), int(size[1])
    ctx = _Ctx(height=height, width=width, f=width * rng.uniform(0.7, 0.95),
               vx=width * (0.5 + rng.uniform(-0.08, 0.08)), vy=height * rng.uniform(0.36, 0.48),
               hc=rng.uniform(0.55, 0.65))
    overcast = rng.random() < 0.4
    ctx.sky_top = _jitter(rng, [165, 175, 185] if overcast else [90, 135, 200], 0.05)
    ctx.sky_horizon = _jitter(rng, [215, 220, 225] if overcast else [190, 210, 230], 0.03)
    scene = _Scene(ctx)
    road = 1 if rng.random() < 0.5 else -1  # the side of the road
    half, centre = rng.uniform(0.8, 1.7), rng.uniform(-0.35, 0.35)
    edge = {-1: centre - half, 1: centre + half}
    verge_r = rng.uniform(0.6, 2.0) if rng.random() < 0.4 else 0.0
    kerb_in = edge[road] + road * verge_r
    kerb_out = kerb_in + road * rng.uniform(0.18, 0.32)
    road_w = rng.uniform(6.0, 11.0)
    verge_h = rng.uniform(0.6, 3.0) if rng.random() < 0.6 else 0.0
    edging = edge[-road] - road * (rng.uniform(0.08, 0.15) if verge_h and rng.random() < 0.7 else 0.0)
    houses = edging - road * verge_h

    _add_backdrop(scene, rng)
    scene.add("background", np.array([(0, ctx.vy), (width - 1, ctx.vy), (width - 1, height - 1), (0, height - 1)]),
              _road_painter(rng, kerb_out + road * road_w / 2))
    strips = [("drivable", edge[-1], edge[1], _paving_painter(rng)), ("kerb", kerb_in, kerb_out, _kerb_painter(rng)),
              ("kerb", edge[-road], edging, _kerb_painter(rng))]
    if verge_r:
        strips.append(("vegetation", edge[road], kerb_in, _terrain_painter(rng)))
    if verge_h:
        strips.append(("vegetation", edging, houses, _terrain_painter(rng)))
    for label, x0, x1, paint in strips:
        if x0 != x1:
            scene.add(label, ctx.project([x0, x1, x1, x0], [0.0] * 4, [0.3, 0.3, _Z_FAR, _Z_FAR]), paint)
    for x_plane in (kerb_out + road * (road_w + rng.uniform(2.0, 4.0)), houses):
        z = 0.3
        while z < _Z_FAR:
            z1, top = min(_Z_FAR, z + rng.uniform(8, 30)), rng.uniform(6, 20)
            pts = ctx.project([x_plane] * 4, [-0.2, top, top, -0.2], [z, z, z1, z1])
            scene.add("background", pts, _facade_painter(rng, _FACADE_COLORS[rng.integers(10)], top, plane_x=x_plane))
            z = z1
    z = 0.5
    while verge_h and z < 40:  # hedges in front of the houses: the path's objects are never behind them
        z1 = z + rng.uniform(4, 15)
        if rng.random() < 0.6:
            x_in = houses + road * min(0.7, 0.8 * verge_h)
            box = _box_corners(min(houses, x_in), max(houses, x_in), 0.0, rng.uniform(0.6, 1.6), z, z1)
            scene.add("vegetation", _hull(ctx.project(*box)), _vegetation_painter(rng))
        z = z1
    _add_standing(scene, rng, edge, road, {road: (edge[road], kerb_in), -road: (edging, houses)})
    return scene.objects, ctx


def _add_backdrop(scene: _Scene, rng: np.random.Generator) -> None:
    """Add the sky, then the houses and trees at the far end of the street."""
    ctx = scene.ctx
    width = ctx.width
    scene.add("background", np.array([(0, 0), (width - 1, 0), (width - 1, ctx.vy + 2), (0, ctx.vy + 2)]),
              _sky_painter(ctx, rng))
    x_span = (np.array([0, width]) - ctx.vx) * _Z_FAR / ctx.f
    xb = x_span[0] - 5
    while xb < x_span[1] + 5:
        wb, hb = rng.uniform(6, 25), rng.uniform(5, 25)
        pts = ctx.project([xb, xb + wb, xb + wb, xb], [0, 0, hb, hb], [_Z_FAR] * 4)
        if rng.random() < 0.75:
            color = _FACADE_COLORS[rng.integers(10)]
            scene.add("background", pts, _facade_painter(rng, color, hb, depth=_Z_FAR, haze=0.35))
        else:
            tops = ctx.project(np.linspace(xb + wb, xb, 8), hb * (1 + 0.25 * rng.standard_normal(8)), [_Z_FAR] * 8)
            scene.add("vegetation", np.vstack([pts[:2], tops]), _vegetation_painter(rng, dark=True))
        xb += wb


def _add_standing(scene: _Scene, rng: np.random.Generator, edge: dict[int, float], road: int,
                  verges: dict[int, tuple[float, float]]) -> None:
    """Add what stands on the ground, far to near: trees on the verges, obstacles and persons on the path."""
    items = []
    for inner, outer in verges.values():
        if abs(outer - inner) >= 0.6 and rng.random() < 0.7:
            z = rng.uniform(2, 10)
            while z < 60:
                items.append((z, _tree_adder(scene, rng, (inner + outer) / 2, z)))
                z += rng.uniform(6, 14)
    lo, hi = edge[-1], edge[1]
    for _ in range(1 + int(rng.poisson(1.8))):
        kind = rng.choice(["bin", "bollard", "box", "scooter"], p=[0.35, 0.3, 0.15, 0.2])
        side = road if kind == "bollard" else (-road if kind == "bin" else (1 if rng.random() < 0.5 else -1))
        x = edge[side] - side * rng.uniform(0.25, 0.5) if kind != "box" else rng.uniform(lo + 0.3, hi - 0.3)
        z = rng.uniform(2.5, 18.0)
        if kind == "bollard" and rng.random() < 0.4:  # a row of bollards across the path
            for xb in np.arange(lo + 0.4, hi - 0.2, rng.uniform(1.0, 1.5)):
                items.append((z, _obstacle_adder(scene, rng, kind, xb, z)))
        else:
            items.append((z, _obstacle_adder(scene, rng, kind, x, z)))
    for _ in range(int(rng.choice([0, 1, 1, 2, 2, 3]))):
        z = rng.uniform(3.5, 25.0)
        items.append((z, _person_adder(scene, rng, rng.uniform(lo + 0.3, hi - 0.3), z)))
    for _, add in sorted(items, key=lambda item: -item[0]):
        add()


def _obstacle_adder(scene: _Scene, rng: np.random.Generator, kind: str, x: float, z: float):
    """Return a function adding a bin, bollard, box or parked scooter standing at (x, 0, z)."""
    ctx = scene.ctx
    black = np.float32([22, 22, 24])
    if kind == "scooter":
        local = _SCOOTER * [1 if rng.random() < 0.5 else -1, 1]
        pts = ctx.project(x + local[:, 0], local[:, 1], [z] * len(local))
        brand = np.float32([[120, 200, 40], [240, 120, 30], [230, 80, 150], [40, 170, 200]][rng.integers(4)])
        paint = _obstacle_painter(rng, [[35, 35, 38], [60, 62, 66]][rng.integers(2)], z, 1.1,
                                  [(0.0, 0.16, black), (0.55, 0.8, brand)], False)
        return lambda: scene.add("obstacle", pts, paint)
    if kind == "bin":
        w, d, h = rng.uniform(0.5, 0.6), rng.uniform(0.55, 0.7), rng.uniform(0.95, 1.1)
        color = [[35, 38, 40], [30, 62, 42], [38, 52, 95], [75, 78, 80], [95, 60, 30]][rng.integers(5)]
        bands = [(0.0, 0.12, black), (h - 0.07, h, np.float32(color) * 0.55)]
    elif kind == "bollard":
        w = d = rng.uniform(0.12, 0.2)
        h = rng.uniform(0.75, 1.05)
        color = [[45, 45, 48], [70, 70, 72], [30, 30, 30], [150, 150, 155]][rng.integers(4)]
        bands = [(h - 0.25, h - 0.15, np.float32([[225, 225, 215], [200, 40, 40]][rng.integers(2)]))]
    else:
        w, d, h = rng.uniform(0.35, 0.7), rng.uniform(0.3, 0.6), rng.uniform(0.25, 0.6)
        color, bands = [[165, 125, 80], [150, 110, 70], [180, 140, 95]][rng.integers(3)], []
    pts = _hull(ctx.project(*_box_corners(x - w / 2, x + w / 2, 0.0, h, z, z + d)))
    paint = _obstacle_painter(rng, color, z, h, bands, kind == "bollard")
    return lambda: scene.add("obstacle", pts, paint)


def _obstacle_painter(rng: np.random.Generator, color, z: float, top: float, bands, rounded: bool) -> Painter:
    color = _jitter(rng, color, 0.08)

    def paint(ctx, sl, yy, xx, mask):
        y = ctx.hc - (yy - ctx.vy) * z / ctx.f + 0 * xx  # height above the ground, on the front face
        t = (xx - xx.mean()) / max(xx.shape[1] / 2, 1.0)
        shade = 1 - 0.35 * t * t if rounded else 1 - 0.1 * t
        out = color * (shade * _lum(ctx, sl, 0.05, 0.0, 0.04, 0.04))[..., None]
        out = np.where((y > top)[..., None], out * 1.2, out)  # the top, seen from above
        for lo, hi, band in bands:
            out = np.where(((y > lo) & (y < hi))[..., None], band * _lum(ctx, sl, 0.04)[..., None], out)
        return out

    return paint


def _paving_painter(rng: np.random.Generator) -> Painter:
    """Grey paving slabs in a running bond, each a little lighter or darker, with dark joints."""
    color = _jitter(rng, [[150, 148, 145], [165, 162, 155], [140, 138, 140], [160, 142, 132]][rng.integers(4)], 0.04)
    tile_x, tile_z = rng.uniform(0.3, 0.6), rng.uniform(0.3, 0.6)

    def paint(ctx, sl, yy, xx, mask):
        z = ctx.ground_depth(yy)
        row = np.floor(z / tile_z)
        x = (xx - ctx.vx) * z / ctx.f + 0.5 * tile_x * (row % 2)
        col = np.floor(x / tile_x)
        tone = (np.sin(row * 12.9898 + col * 78.233) * 43758.5453) % 1.0
        out = color * ((0.93 + 0.14 * tone) * _lum(ctx, sl, 0.05, 0.0, 0.04, 0.05))[..., None]
        joints = (np.mod(x, tile_x) < tile_x * 0.07) | (np.mod(z, tile_z) < tile_z * 0.07)
        return np.where(joints[..., None], out * 0.72, out)

    return paint


def _kerb_painter(rng: np.random.Generator) -> Painter:
    """Bright kerb stones, about a metre long."""
    color = _jitter(rng, [[215, 212, 205], [200, 200, 196], [225, 220, 205]][rng.integers(3)], 0.03)
    stone = rng.uniform(0.5, 1.0)

    def paint(ctx, sl, yy, xx, mask):
        z = ctx.ground_depth(yy) + 0 * xx
        out = color * _lum(ctx, sl, 0.04, 0.0, 0.04, 0.05)[..., None]
        return np.where((np.mod(z, stone) < stone * 0.06)[..., None], out * 0.7, out)

    return paint


def _road_painter(rng: np.random.Generator, centre: float) -> Painter:
    """Dark asphalt, sometimes with a dashed centre line."""
    color = _jitter(rng, [88, 88, 92], 0.04) * np.float32(rng.uniform(0.8, 1.1))
    dashed = rng.random() < 0.6

    def paint(ctx, sl, yy, xx, mask):
        z = ctx.ground_depth(yy)
        out = color * _lum(ctx, sl, 0.06, 0.02, 0.03, 0.05)[..., None]
        if dashed:
            line = (np.abs((xx - ctx.vx) * z / ctx.f - centre) < 0.06) & (np.mod(z, 6.0) < 2.5)
            out = np.where(line[..., None], np.float32([200, 200, 190]), out)
        return out

    return paint
