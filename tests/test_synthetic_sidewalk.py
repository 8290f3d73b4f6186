"""The synthetic sidewalk set ("your own data" in notebook 05): its plain folder layout, masks and class table."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from seg_utils.synthetic.folders import MARKER_NAME
from seg_utils.synthetic.sidewalk import (
    SIDEWALK_CLASSES,
    SIDEWALK_IGNORE_COLOR,
    _render_frame,
    ensure_synthetic_folder,
    write_synthetic_folder,
)

SMALL = dict(train=5, val=3, test=2, size=(72, 96), seed=0)
NAMES = ["background", "drivable", "kerb", "obstacle", "person", "vegetation"]
COLORS = [[70, 70, 70], [128, 64, 128], [250, 170, 30], [0, 0, 142], [220, 20, 60], [107, 142, 35]]


@pytest.fixture(scope="module")
def small_set(module_tmp) -> Path:
    return write_synthetic_folder(module_tmp("sidewalk") / "set", **SMALL)


def _files(root: Path, kind: str, split: str) -> list[Path]:
    return sorted((root / kind / split).glob("*")) if (root / kind / split).is_dir() else []


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


def _class_map(mask: np.ndarray) -> np.ndarray:
    """Return HxW class indices (255 = ignore, 254 = a colour not in the table)."""
    out = np.full(mask.shape[:2], 254, np.uint8)
    for k, color in enumerate(COLORS):
        out[(mask == color).all(axis=-1)] = k
    out[(mask == SIDEWALK_IGNORE_COLOR).all(axis=-1)] = 255
    return out


def test_layout_and_names(small_set):
    assert sorted(p.name for p in small_set.iterdir()) == ["classes.json", "images", "masks", MARKER_NAME]
    assert sorted(p.name for p in (small_set / "masks").iterdir()) == ["train", "val"]  # the test split: photos only
    stems = []
    for split in ("train", "val", "test"):
        images = _files(small_set, "images", split)
        assert len(images) == SMALL[split]
        assert all(re.fullmatch(r"walk_\d{4}\.(png|jpg)", p.name) for p in images), images
        stems += [p.stem for p in images]
        if split != "test":
            assert [p.name for p in _files(small_set, "masks", split)] == [p.stem + ".png" for p in images]
    assert len(set(stems)) == len(stems)  # one recording: no name twice across the splits
    text = (small_set / "classes.json").read_text()
    table = json.loads(text)
    assert text.splitlines()[2] == '    {"name": "background", "color": [70, 70, 70]},'  # a class a line
    assert table == {"classes": [{"name": n, "color": c} for n, c in zip(NAMES, COLORS)],
                     "ignore_index": 255, "ignore_color": [255, 255, 255]}
    assert [dict(c) for c in SIDEWALK_CLASSES] == table["classes"]


def test_photos_and_masks(small_set):
    suffixes = []
    for split in ("train", "val", "test"):
        for image in _files(small_set, "images", split):
            with Image.open(image) as img:
                assert (img.format, img.mode, img.size) == ({".png": "PNG", ".jpg": "JPEG"}[image.suffix], "RGB",
                                                           (96, 72))
            suffixes.append(image.suffix)
            if split == "test":
                continue
            with Image.open(small_set / "masks" / split / (image.stem + ".png")) as img:
                assert (img.format, img.mode, img.size) == ("PNG", "RGB", (96, 72))
                classes = _class_map(np.asarray(img))
            assert (classes != 254).all(), "a mask colour outside the class table"
    assert suffixes.count(".jpg") >= 2 and suffixes.count(".png") > suffixes.count(".jpg")


def test_every_class_present_and_ignore_small(small_set):
    counts = np.zeros(256, np.int64)
    for split in ("train", "val"):
        for mask in _files(small_set, "masks", split):
            counts += np.bincount(_class_map(_read(mask)).ravel(), minlength=256)
    shares = counts / counts.sum()
    assert (shares[:6] > 0).all(), shares[:6]
    assert shares[1] > 0.2 and shares[0] > 0.2  # drivable and background are the big classes
    assert 0 < shares[255] < 0.02


def test_photo_matches_mask():
    """Each class looks like itself: grey paving, bright kerb stones, green plants."""
    mean = {k: [] for k in range(6)}
    for i in range(6):
        rgb, classes = _render_frame(np.random.default_rng([3, i]), (120, 160))
        for k in range(6):
            if (classes == k).any():
                mean[k].append(rgb[classes == k].astype(float).mean(axis=0))
    mean = {k: np.mean(v, axis=0) for k, v in mean.items()}
    assert mean[2].sum() > mean[1].sum() + 60  # kerb stones are brighter than the paving
    green = {k: m[1] - (m[0] + m[2]) / 2 for k, m in mean.items()}
    assert max(green, key=green.get) == 5


@pytest.mark.parametrize("size", [(48, 64), (101, 133), (480, 640)])
def test_any_size(size):
    rgb, classes = _render_frame(np.random.default_rng(0), size)
    assert rgb.shape == (*size, 3) and rgb.dtype == np.uint8
    assert classes.shape == size and set(np.unique(classes)) <= {0, 1, 2, 3, 4, 5, 255}
    assert (classes == 1).mean() > 0.1


def test_deterministic(tmp_path):
    params = dict(train=2, val=1, test=1, size=(48, 64))
    a = write_synthetic_folder(tmp_path / "a", **params, seed=1)
    b = write_synthetic_folder(tmp_path / "b", **params, seed=1)
    c = write_synthetic_folder(tmp_path / "c", **params, seed=2)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    images = [sorted((root / "images" / "train").iterdir()) for root in (a, c)]
    assert not np.array_equal(_read(images[0][0]), _read(images[1][0]))


# What the generator wrote for these parameters on 2026-12-04: a digest of every file's relative path and content
# (photos and masks as decoded by OpenCV, other files' bytes). Bump sidewalk._VERSION when a change is meant.
REFERENCE = dict(train=3, val=2, test=1, size=(101, 133), seed=7)
REFERENCE_DIGEST = "489181f58beb4436074c6cdd4f53583b4ca459d1384332de5e6e2c958a0832c7"


def test_output_equals_the_reference_set(tmp_path):
    root = write_synthetic_folder(tmp_path / "ref", **REFERENCE)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        decoded = path.suffix in (".png", ".jpg")
        data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED).tobytes() if decoded else path.read_bytes()
        digest.update(hashlib.sha256(data).digest())
    assert digest.hexdigest() == REFERENCE_DIGEST


def test_ensure_reuses_and_refuses(tmp_path):
    params = dict(train=1, val=1, test=1, size=(48, 64), seed=0)
    root = ensure_synthetic_folder(tmp_path / "set", **params)
    marker = root / MARKER_NAME
    assert json.loads(marker.read_text())["format"] == "seg_utils.synthetic.sidewalk"
    stamp = marker.stat().st_mtime_ns
    assert ensure_synthetic_folder(tmp_path / "set", **params) == root
    assert marker.stat().st_mtime_ns == stamp  # reused, not rewritten
    assert [p.name for p in tmp_path.iterdir()] == ["set"]  # no temporary folder left behind
    with pytest.raises(ValueError, match="other parameters"):
        ensure_synthetic_folder(root, **{**params, "seed": 1})
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"not ours")
    for make in (ensure_synthetic_folder, write_synthetic_folder):
        with pytest.raises(ValueError, match="not a synthetic set"):
            make(foreign, **params)
    assert [p.name for p in foreign.iterdir()] == ["holiday.jpg"]
    with pytest.raises(ValueError, match="found a file"):
        write_synthetic_folder(foreign / "holiday.jpg", **params)
