"""The synthetic set against the official Cityscapes layout, formats and tools (cityscapesscripts)."""

from __future__ import annotations

import hashlib
import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from cityscapesscripts.helpers.annotation import Annotation
from cityscapesscripts.helpers.labels import id2label, name2label
from cityscapesscripts.helpers.labels import labels as official_labels
from cityscapesscripts.preparation import createTrainIdLabelImgs
from cityscapesscripts.preparation.json2labelImg import createLabelImage, json2labelImg
from PIL import Image

from seg_utils.synthetic import (
    MARKER_NAME,
    SPLIT_CITIES,
    VOID_LABELS,
    ensure_synthetic,
    frame_names,
    render_frame,
    write_synthetic_cityscapes,
)
from seg_utils.synthetic.layout import _build_scene
from seg_utils.synthetic.render import _annotation, _index_map

SMALL = dict(train=6, val=3, test=2, size=(64, 128), seed=0)
GT_SUFFIXES = ("_gtFine_polygons.json", "_gtFine_labelIds.png", "_gtFine_color.png", "_gtFine_instanceIds.png")
INSTANCE_IDS = {lab.id for lab in official_labels if lab.hasInstances and lab.id >= 0}
EVALUATED_IDS = {lab.id for lab in official_labels if 0 <= lab.trainId < 19}


@pytest.fixture(scope="module")
def small_set(module_tmp) -> Path:
    return write_synthetic_cityscapes(module_tmp("synth") / "set", **SMALL)


def _stems(root: Path, split: str) -> list[tuple[str, str]]:
    return sorted((p.parent.name, p.name[: -len("_leftImg8bit.png")])
                  for p in (root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))


def _gt_jsons(root: Path, split: str) -> list[Path]:
    return sorted((root / "gtFine" / split).glob("*/*_gtFine_polygons.json"))


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


def test_layout_and_names(small_set):
    for split, count in (("train", 6), ("val", 3), ("test", 2)):
        stems = _stems(small_set, split)
        assert len(stems) == count
        for city, stem in stems:
            assert city in SPLIT_CITIES[split]
            assert re.fullmatch(rf"{city}_\d{{6}}_\d{{6}}", stem)
            for suffix in GT_SUFFIXES:
                assert (small_set / "gtFine" / split / city / f"{stem}{suffix}").is_file(), (stem, suffix)
        assert len(list((small_set / "gtFine" / split).glob("*/*"))) == 4 * count  # nothing else
    # the real download ships no trainId images: csCreateTrainIdLabelImgs makes them
    assert not list(small_set.rglob("*labelTrainIds*"))
    assert json.loads((small_set / MARKER_NAME).read_text())["size"] == [64, 128]


def test_names_spread_over_cities_and_frames():
    names = frame_names(train=20, val=5, test=5, seed=0)
    for split in ("train", "val", "test"):
        cities = {city for city, _ in names[split]}
        assert 1 < len(cities) <= 5 and cities <= set(SPLIT_CITIES[split])
        assert len({stem for _, stem in names[split]}) == len(names[split])
    frames = {stem[-6:] for split in names.values() for _, stem in split}
    assert "000019" in frames and len(frames) > 3


def test_file_formats(small_set):
    for split in ("train", "val", "test"):
        for city, stem in _stems(small_set, split):
            gt = small_set / "gtFine" / split / city / stem
            with Image.open(small_set / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png") as img:
                assert (img.format, img.mode, img.size) == ("PNG", "RGB", (128, 64))
            with Image.open(f"{gt}_gtFine_labelIds.png") as img:
                assert (img.mode, img.size) == ("L", (128, 64))
            with Image.open(f"{gt}_gtFine_color.png") as img:
                assert (img.mode, img.size) == ("RGBA", (128, 64))  # what the official tool writes
            with Image.open(f"{gt}_gtFine_instanceIds.png") as img:
                assert (img.mode, img.size) == ("I;16", (128, 64))  # 16-bit grayscale
            raw = json.loads(Path(f"{gt}_gtFine_polygons.json").read_text())
            assert (raw["imgHeight"], raw["imgWidth"]) == (64, 128)
            annotation = Annotation()
            annotation.fromJsonFile(f"{gt}_gtFine_polygons.json")
            assert annotation.objects and all(o.label in name2label for o in annotation.objects)
            assert all(len(o.polygon) >= 3 for o in annotation.objects)


@pytest.mark.parametrize("encoding, suffix", [("ids", "labelIds"), ("color", "color")])
def test_label_images_equal_official_json2labelImg(small_set, tmp_path, encoding, suffix):
    for split in ("train", "val", "test"):
        for path in _gt_jsons(small_set, split):
            out = tmp_path / f"{encoding}.png"
            json2labelImg(str(path), str(out), encoding)
            ours = str(path).replace("_polygons.json", f"_{suffix}.png")
            np.testing.assert_array_equal(_read(Path(ours)), _read(out), err_msg=path.name)


def test_instance_ids_decode_to_label_ids(small_set):
    seen_instances = 0
    for split in ("train", "val"):
        for path in _gt_jsons(small_set, split):
            label_ids = _read(Path(str(path).replace("_polygons.json", "_labelIds.png"))).astype(np.int64)
            inst = _read(Path(str(path).replace("_polygons.json", "_instanceIds.png"))).astype(np.int64)
            decoded = np.where(inst >= 1000, inst // 1000, inst)
            np.testing.assert_array_equal(decoded, label_ids)
            is_instance_class = np.isin(label_ids, list(INSTANCE_IDS))
            assert (inst[is_instance_class] >= 1000).all()  # no groups: every object is an instance
            assert (inst[~is_instance_class] < 1000).all()
            for class_id in np.unique(inst[inst >= 1000] // 1000):
                ks = np.unique(inst[inst // 1000 == class_id] % 1000)
                assert ks.max() < sum(o["label"] == id2label[int(class_id)].name
                                      for o in json.loads(path.read_text())["objects"])
                seen_instances += len(ks)
    assert seen_instances > 0


def test_color_is_official_palette_of_label_ids(small_set):
    palette = np.zeros((256, 3), np.uint8)
    for lab in official_labels:
        if lab.id >= 0:
            palette[lab.id] = lab.color
    for path in _gt_jsons(small_set, "train"):
        label_ids = _read(Path(str(path).replace("_polygons.json", "_labelIds.png")))
        color = _read(Path(str(path).replace("_polygons.json", "_color.png")))
        np.testing.assert_array_equal(color[..., :3], palette[label_ids])
        assert (color[..., 3] == 255).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_image_painted_from_the_labelled_polygons(seed):
    """The RGB painter rasterises the same polygons in the same order as the official label drawing."""
    objects, _ = _build_scene(np.random.default_rng(seed), (256, 512))
    lut = np.array([0] + [name2label[o.label].id for o in objects])
    painted = lut[_index_map(objects, (256, 512))]
    annotation = Annotation()
    annotation.fromJsonText(json.dumps(_annotation(objects, (256, 512), labelled=True)))
    np.testing.assert_array_equal(painted, np.asarray(createLabelImage(annotation, "ids")))


def test_classes_look_different():
    """Each class has its own colour: a nearest-class-mean pixel classifier is far above chance."""
    rgb, ann = render_frame(np.random.default_rng(3), (128, 256))
    annotation = Annotation()
    annotation.fromJsonText(json.dumps(ann))
    label_ids = np.asarray(createLabelImage(annotation, "ids")).ravel()
    pixels = rgb.reshape(-1, 3).astype(np.float32)
    classes = [c for c in np.unique(label_ids) if c in EVALUATED_IDS]
    means = np.stack([pixels[label_ids == c].mean(0) for c in classes])
    nearest = np.asarray(classes)[((pixels[:, None] - means[None]) ** 2).sum(-1).argmin(1)]
    evaluated = np.isin(label_ids, classes)
    assert (nearest[evaluated] == label_ids[evaluated]).mean() > 0.5


# What the generator wrote for these parameters when it was one module (2026-11-28): a digest of every file's
# relative path and content (PNG pixels as decoded, other files' bytes). The package must keep writing exactly
# this; FORMAT_VERSION is bumped when a change is meant.
REFERENCE = dict(train=3, val=2, test=1, size=(96, 192), seed=7)
REFERENCE_DIGEST = "fdd611699203018472a16cab374088672c9ae523ca867e5a680e0515d7704aa5"


def test_output_equals_the_reference_set(tmp_path):
    root = write_synthetic_cityscapes(tmp_path / "ref", **REFERENCE)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED).tobytes() if path.suffix == ".png" else path.read_bytes()
        digest.update(hashlib.sha256(data).digest())
    assert digest.hexdigest() == REFERENCE_DIGEST


def test_deterministic(tmp_path):
    params = dict(train=2, val=1, test=1, size=(64, 128))
    a = write_synthetic_cityscapes(tmp_path / "a", seed=7, **params)
    b = write_synthetic_cityscapes(tmp_path / "b", seed=7, **params)
    c = write_synthetic_cityscapes(tmp_path / "c", seed=8, **params)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    images_a = sorted(a.glob("leftImg8bit/train/*/*.png"))
    images_c = sorted(c.glob("leftImg8bit/train/*/*.png"))
    assert [p.read_bytes() for p in images_a] != [p.read_bytes() for p in images_c]


def test_class_coverage_and_pixel_shares():
    counts = np.zeros(256, np.int64)
    for i in range(20):
        _, ann = render_frame(np.random.default_rng([0, 0, i]), (128, 256))
        annotation = Annotation()
        annotation.fromJsonText(json.dumps(ann))
        counts += np.bincount(np.asarray(createLabelImage(annotation, "ids")).ravel(), minlength=256)
    present = {i for i in EVALUATED_IDS if counts[i] > 0}
    assert len(present) >= 15, sorted(id2label[i].name for i in EVALUATED_IDS - present)
    road, building, vegetation = (counts[name2label[n].id] for n in ("road", "building", "vegetation"))
    others = max(counts[i] for i in EVALUATED_IDS - {name2label[n].id for n in ("road", "building", "vegetation")})
    assert road > building > vegetation > others
    assert counts[name2label["ego vehicle"].id] > 0


def test_test_split_is_void_only(small_set):
    void_ids = {name2label[n].id for n in VOID_LABELS}
    for city, stem in _stems(small_set, "test"):
        gt = small_set / "gtFine" / "test" / city / stem
        labels = {o["label"] for o in json.loads(Path(f"{gt}_gtFine_polygons.json").read_text())["objects"]}
        assert labels <= set(VOID_LABELS) and "ego vehicle" in labels
        assert set(np.unique(_read(Path(f"{gt}_gtFine_labelIds.png")))) <= void_ids
        assert set(np.unique(_read(Path(f"{gt}_gtFine_instanceIds.png")))) <= void_ids
        image = _read(small_set / "leftImg8bit" / "test" / city / f"{stem}_leftImg8bit.png")
        assert image.std() > 20  # a normal street scene, only the labels are withheld


def test_official_create_train_id_label_imgs_runs(tmp_path, monkeypatch):
    root = write_synthetic_cityscapes(tmp_path / "set", train=2, val=1, test=1, size=(64, 128))
    monkeypatch.setenv("CITYSCAPES_DATASET", str(root))
    createTrainIdLabelImgs.main()
    lut = np.full(256, 255, np.uint8)
    for lab in official_labels:
        if lab.id >= 0:
            lut[lab.id] = lab.trainId if lab.trainId >= 0 else 255
    jsons = sorted(root.glob("gtFine/*/*/*_gtFine_polygons.json"))
    assert len(jsons) == 4
    for path in jsons:
        train_ids = _read(Path(str(path).replace("_polygons.json", "_labelTrainIds.png")))
        label_ids = _read(Path(str(path).replace("_polygons.json", "_labelIds.png")))
        np.testing.assert_array_equal(train_ids, lut[label_ids])


def test_ensure_synthetic_is_idempotent(tmp_path):
    params = dict(train=1, val=1, test=1, size=(64, 128), seed=0)
    root = ensure_synthetic(tmp_path / "data", **params)
    marker = root / MARKER_NAME
    stamp = marker.stat().st_mtime_ns
    image = next(root.glob("leftImg8bit/train/*/*.png"))
    image_stamp = image.stat().st_mtime_ns
    assert ensure_synthetic(tmp_path / "data", **params) == root
    assert marker.stat().st_mtime_ns == stamp and image.stat().st_mtime_ns == image_stamp
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # no temporary folders left behind


def test_ensure_synthetic_concurrent_callers(tmp_path):
    params = dict(train=2, val=1, test=1, size=(64, 128), seed=0)
    with ThreadPoolExecutor(3) as pool:
        roots = list(pool.map(lambda _: ensure_synthetic(tmp_path / "data", **params), range(3)))
    assert roots == [tmp_path / "data"] * 3
    assert [p.name for p in tmp_path.iterdir()] == ["data"]
    assert len(list((tmp_path / "data").glob("leftImg8bit/*/*/*.png"))) == 4


def test_ensure_synthetic_refuses_other_folders(tmp_path):
    params = dict(train=1, val=1, test=1, size=(64, 128), seed=0)
    foreign = tmp_path / "mine"
    (foreign / "leftImg8bit").mkdir(parents=True)
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match=r"mine.*not a synthetic set"):
        ensure_synthetic(foreign, **params)
    with pytest.raises(ValueError, match="not a synthetic set"):
        write_synthetic_cityscapes(foreign, **params)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in foreign.iterdir()) == ["leftImg8bit", "notes.txt"]

    ensure_synthetic(tmp_path / "data", **params)
    with pytest.raises(ValueError, match=r"data.*other parameters"):
        ensure_synthetic(tmp_path / "data", **{**params, "seed": 1})
    with pytest.raises(ValueError, match="size"):
        ensure_synthetic(tmp_path / "other", **{**params, "size": (8, 8)})
