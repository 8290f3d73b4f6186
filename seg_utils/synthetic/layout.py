"""The street layout: what stands where in a scene, built far to near from one random generator.

Each step of ``_build_scene`` adds one layer (backdrop, street sides, ground, traffic, ego vehicle) and
draws its random numbers in a fixed order: the same seed gives the same scene, byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .painters import (
    _black,
    _cycle_painter,
    _ego_painter,
    _facade_painter,
    _fence_painter,
    _jitter,
    _light_painter,
    _person_painter,
    _pole_painter,
    _road_painter,
    _sidewalk_painter,
    _sign_painter,
    _sky_painter,
    _terrain_painter,
    _trunk_painter,
    _vegetation_painter,
    _vehicle_painter,
    _wall_painter,
)
from .scene import Painter, _box_corners, _Ctx, _hull, _Obj, _Scene

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


@dataclass
class _Street:
    """The street's cross-section in metres (x right of the camera): kerbs, parking lanes, house fronts."""

    left: float  # the left kerb (negative)
    right: float  # the right kerb
    park: dict[int, bool]  # a parking lane on side -1 / 1
    walk: dict[int, float]  # sidewalk widths
    outer: dict[int, float]  # where the houses stand
    z_far: float = 160.0  # the far end of the street


def _build_scene(rng: np.random.Generator, size: tuple[int, int]) -> tuple[list[_Obj], _Ctx]:
    """Return (the objects of a scene in drawing order, its camera), drawing from ``rng`` step by step."""
    ctx = _camera(rng, size)
    scene = _Scene(ctx)
    street = _street(rng)
    _add_backdrop(scene, rng, street)
    _add_street_sides(scene, rng, street)
    _add_ground(scene, rng, street)
    _add_traffic(scene, rng, street)
    _add_ego_vehicle(scene, rng)
    return scene.objects, ctx


def _camera(rng: np.random.Generator, size: tuple[int, int]) -> _Ctx:
    """Return the camera: focal length, vanishing point, 1.3 m above the road, and the sky's colours."""
    height, width = int(size[0]), int(size[1])
    ctx = _Ctx(height=height, width=width, f=width * rng.uniform(0.95, 1.15),
               vx=width * (0.5 + rng.uniform(-0.07, 0.07)), vy=height * rng.uniform(0.36, 0.45), hc=1.3)
    overcast = rng.random() < 0.4
    ctx.sky_top = _jitter(rng, [165, 175, 185] if overcast else [90, 135, 200], 0.05)
    ctx.sky_horizon = _jitter(rng, [215, 220, 225] if overcast else [190, 210, 230], 0.03)
    return ctx


def _street(rng: np.random.Generator) -> _Street:
    """Return the road geometry (metres): the camera drives in the right lane."""
    left = -rng.uniform(3.5, 9.0)
    park = {-1: left < -5.5 and rng.random() < 0.75, 1: rng.random() < 0.6}  # parking lanes
    right = rng.uniform(3.8, 4.8) if park[1] else rng.uniform(1.9, 2.6)
    walk_l, walk_r = rng.uniform(2.5, 5.5), rng.uniform(2.5, 5.5)
    return _Street(left, right, park, {-1: walk_l, 1: walk_r}, {-1: left - walk_l, 1: right + walk_r})


def _add_backdrop(scene: _Scene, rng: np.random.Generator, street: _Street) -> None:
    """Add the sky, then the far end of the street, then ground behind everything."""
    ctx, z_far = scene.ctx, street.z_far
    W, H = ctx.width, ctx.height
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


def _add_street_sides(scene: _Scene, rng: np.random.Generator, street: _Street) -> None:
    """Add both sides of the street, far to near: buildings, parks (terrain, trees, hedges), walls, fences."""
    ctx, z_far = scene.ctx, street.z_far
    side_items: list[tuple[float, Callable[[], None]]] = []
    for side in (-1, 1):
        xo = street.outer[side]
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


def _add_ground(scene: _Scene, rng: np.random.Generator, street: _Street) -> None:
    """Add the ground in front: sidewalks and the road."""
    ctx, z_far, left, right = scene.ctx, street.z_far, street.left, street.right
    for side, x_in in ((-1, left), (1, right)):
        pts = ctx.project([x_in, street.outer[side], street.outer[side], x_in], [0] * 4, [0.5, 0.5, z_far, z_far])
        scene.add("sidewalk", pts, _sidewalk_painter(rng, x_in))
    pts = ctx.project([left, right, right, left], [0] * 4, [0.5, 0.5, z_far, z_far])
    scene.add("road", pts, _road_painter(rng, left, right))


def _add_traffic(scene: _Scene, rng: np.random.Generator, street: _Street) -> None:
    """Add street furniture, vehicles and people, far to near."""
    left, right = street.left, street.right
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
        if street.park[side]:
            z = rng.uniform(6, 14)
            while z < 70:
                kind = "car" if rng.random() < 0.95 else "truck"
                items.append((z, _vehicle_adder(scene, rng, kind, x_in - side * 1.1, z, front=False)))
                z += rng.uniform(5.0, 14.0)
        for _ in range(int(rng.poisson(2.0))):  # pedestrians on the sidewalk
            zp = rng.uniform(5, 45)
            items.append((zp, _person_adder(scene, rng, x_in + side * rng.uniform(0.5, street.walk[side]), zp)))
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


def _add_ego_vehicle(scene: _Scene, rng: np.random.Generator) -> None:
    """Add the ego vehicle's bonnet and the rectification border, as in every Cityscapes frame."""
    W, H = scene.ctx.width, scene.ctx.height
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
