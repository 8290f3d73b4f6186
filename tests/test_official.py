"""Our evaluate_predictions against the official cityscapesscripts evaluator, run through seg_utils.official."""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from seg_utils.evaluation import evaluate_predictions
from seg_utils.labels import LABEL_ID_TO_TRAIN_ID, LABELS, TRAIN_ID_NAMES, TRAIN_ID_TO_LABEL_ID
from seg_utils.official import OfficialEvaluationError, official_evaluate

BUS, TRAIN, CAR, PERSON = 28, 31, 26, 24
NOT_EVALUATED = np.array([0, 1, 4, 9])  # unlabeled, ego vehicle, static, parking
SIZE = (64, 128)


def _listing(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def dataset(module_tmp) -> tuple[Path, dict[str, np.ndarray]]:
    """A 5-frame val split (2 cities) with instanceIds; no bus and no train pixel in the ground truth."""
    root = module_tmp("cityscapes")
    rng = np.random.default_rng(0)
    frames = {}
    for i in range(5):
        city = ("frankfurt", "lindau")[i % 2]
        stem = f"{city}_{i:06d}_{19 + i:06d}"
        cells = rng.integers(0, 34, (SIZE[0] // 8, SIZE[1] // 8)).astype(np.uint8)
        cells[np.isin(cells, [BUS, TRAIN])] = CAR
        gt = cv2.resize(cells, SIZE[::-1], interpolation=cv2.INTER_NEAREST)
        inst = gt.astype(np.uint16)
        for label_id in (CAR, PERSON):  # each cell of an instance class is one instance
            ys, xs = np.nonzero(cells == label_id)
            for k, (y, x) in enumerate(zip(ys, xs)):
                inst[y * 8:(y + 1) * 8, x * 8:(x + 1) * 8] = label_id * 1000 + k
        folder = root / "gtFine" / "val" / city
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{stem}_gtFine_labelIds.png"), gt)
        cv2.imwrite(str(folder / f"{stem}_gtFine_instanceIds.png"), inst)
        frames[stem] = gt
    return root, frames


def _predict(frames: dict[str, np.ndarray], folder: Path, seed: int = 1) -> dict[str, np.ndarray]:
    """Write noisy labelIds predictions: wrong classes, non-evaluated ids on evaluated pixels, train
    (absent from the ground truth: IoU 0), never bus (absent everywhere: NaN)."""
    rng = np.random.default_rng(seed)
    evaluated = np.array([lab.id for lab in LABELS if lab.trainId < 19 and lab.id != BUS])
    preds = {}
    for stem, gt in frames.items():
        pred = gt.copy()
        pred[pred == BUS] = CAR
        noise = rng.random(gt.shape)
        pred = np.where(noise < 0.2, rng.choice(evaluated, gt.shape), pred)
        pred = np.where((noise >= 0.2) & (noise < 0.3), rng.choice(NOT_EVALUATED, gt.shape), pred)
        pred = np.where((noise >= 0.3) & (noise < 0.32), TRAIN, pred).astype(np.uint8)
        city = stem.split("_")[0]
        (folder / city).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / city / f"{stem}_leftImg8bit.png"), pred)
        preds[stem] = pred
    return preds


def _assert_same_scores(ours: dict, official: dict) -> None:
    for name in TRAIN_ID_NAMES:
        a, b = ours["class_iou"][name], official["classScores"][name]
        assert (a is None and math.isnan(b)) or a == pytest.approx(b, abs=1e-9, rel=0), name
    for name, a in ours["category_scores"].items():
        b = official["categoryScores"][name]
        assert (a is None and math.isnan(b)) or a == pytest.approx(b, abs=1e-9, rel=0), name
    assert ours["miou"] == pytest.approx(official["averageScoreClasses"], abs=1e-9, rel=0)
    assert ours["category_miou"] == pytest.approx(official["averageScoreCategories"], abs=1e-9, rel=0)


def test_labelid_predictions_match_official(dataset, tmp_path):
    root, frames = dataset
    _predict(frames, tmp_path / "pred")
    ours = evaluate_predictions(root, "val", tmp_path / "pred")
    official = official_evaluate(root, "val", tmp_path / "pred", instance_scores=False)
    _assert_same_scores(ours, official)
    assert ours["class_iou"]["bus"] is None and ours["class_iou"]["train"] == 0.0
    assert ours["num_frames"] == official["numFrames"] == 5
    assert int(ours["matrix"][:, -1].sum()) > 0  # the non-evaluated ids did land as misses
    # the counts themselves: fold the official 34x34 labelId matrix into our (19, 20) trainId one
    conf = np.array(official["confMatrix"], dtype=np.int64)
    folded = np.zeros((19, 20), np.int64)
    for g in range(34):
        for p in range(34):
            if LABEL_ID_TO_TRAIN_ID[g] < 19:
                folded[LABEL_ID_TO_TRAIN_ID[g], min(int(LABEL_ID_TO_TRAIN_ID[p]), 19)] += conf[g, p]
    np.testing.assert_array_equal(ours["matrix"], folded)


def test_trainid_predictions_match_official_on_their_labelid_conversion(dataset, tmp_path):
    root, frames = dataset
    preds = _predict(frames, tmp_path / "lid", seed=2)
    for stem, pred in preds.items():
        train_ids = LABEL_ID_TO_TRAIN_ID[pred]  # non-evaluated ids become 255
        cv2.imwrite(str(tmp_path / "lid" / stem.split("_")[0] / f"{stem}_leftImg8bit.png"),
                    TRAIN_ID_TO_LABEL_ID[train_ids])
        (tmp_path / "tid").mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / "tid" / f"{stem}.png"), train_ids)
    ours = evaluate_predictions(root, "val", tmp_path / "tid", label_format="trainIds")
    _assert_same_scores(ours, official_evaluate(root, "val", tmp_path / "lid", instance_scores=False))


def test_official_bridge_writes_nothing_prints_nothing_and_leaves_numpy_alone(dataset, tmp_path, capsys,
                                                                                monkeypatch):
    root, frames = dataset
    _predict(frames, tmp_path / "pred")
    monkeypatch.setenv("CITYSCAPES_DATASET", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("CITYSCAPES_RESULTS", str(tmp_path / "elsewhere"))
    before, had_in1d = _listing(root), hasattr(np, "in1d")
    result = official_evaluate(root, "val", tmp_path / "pred")  # instanceIds exist: iIoU runs (np.in1d)
    assert _listing(root) == before and not (tmp_path / "elsewhere").exists()
    assert hasattr(np, "in1d") == had_in1d
    assert capsys.readouterr().out == ""
    assert not math.isnan(result["classInstScores"]["car"])
    assert not math.isnan(result["averageScoreInstClasses"])


def test_official_errors_become_exceptions(dataset, tmp_path):
    root, frames = dataset
    _predict(frames, tmp_path / "pred")
    stems = sorted(frames)
    os.remove(tmp_path / "pred" / "lindau" / f"{stems[-1]}_leftImg8bit.png")
    with pytest.raises(OfficialEvaluationError, match="Found no prediction"):
        official_evaluate(root, "val", tmp_path / "pred")
    with pytest.raises(OfficialEvaluationError, match="official server"):
        official_evaluate(root, "test", tmp_path / "pred")
    _predict(frames, tmp_path / "p255")
    cv2.imwrite(str(tmp_path / "p255" / "lindau" / f"{stems[-1]}_leftImg8bit.png"),
                np.full(SIZE, 255, np.uint8))
    with pytest.raises(OfficialEvaluationError, match="labelIds 0..33"):
        official_evaluate(root, "val", tmp_path / "p255", instance_scores=False)


def test_synthetic_set_matches_official_with_instance_scores(synthetic_root, tmp_path):
    # The shared synthetic set (conftest), whose instanceIds make the official script run its iIoU code.
    rng = np.random.default_rng(3)
    before = _listing(synthetic_root)
    for gt_path in sorted((synthetic_root / "gtFine" / "val").glob("*/*_gtFine_labelIds.png")):
        gt = cv2.imread(str(gt_path), cv2.IMREAD_UNCHANGED)
        pred = np.where(rng.random(gt.shape) < 0.2, rng.choice([*NOT_EVALUATED, 7, CAR], gt.shape), gt)
        cv2.imwrite(str(tmp_path / gt_path.name.replace("gtFine_labelIds", "leftImg8bit")), pred.astype(np.uint8))
    ours = evaluate_predictions(synthetic_root, "val", tmp_path)
    official = official_evaluate(synthetic_root, "val", tmp_path)
    _assert_same_scores(ours, official)
    assert not math.isnan(official["averageScoreInstClasses"])
    assert _listing(synthetic_root) == before


def _image_of_mode(pred: np.ndarray, mode: str):
    """Return a PIL image holding the labelIds ``pred`` in a PNG mode (1-bit: only ids 0 and 1 survive)."""
    from PIL import Image

    from seg_utils.labels import palette

    if mode == "1":
        return Image.fromarray(pred % 2 == 1)
    if mode == "P":
        image = Image.frombytes("P", pred.shape[::-1], pred.tobytes())
        image.putpalette(palette("labelId").tobytes())
        return image
    if mode == "I;16":
        return Image.fromarray(pred.astype(np.uint16))
    channels = {"L": [pred], "LA": [pred, np.full_like(pred, 255)], "RGB": [pred] * 3,
                "RGBA": [pred] * 3 + [np.full_like(pred, 255)]}[mode]
    return Image.fromarray(channels[0] if mode == "L" else np.dstack(channels))


@pytest.mark.parametrize("mode", ["1", "P", "I;16", "L", "LA", "RGB", "RGBA"])
def test_prediction_png_modes_are_read_as_the_official_evaluator_reads_them(dataset, tmp_path, mode):
    # The official evaluator reads with PIL: 1-bit as ids 0/1, palette as its indices, 16-bit as its values; it
    # refuses what has channels. evaluate_predictions must accept and refuse the same, and score the same.
    from seg_utils.evaluation import EvaluationError

    root, frames = dataset
    preds = _predict(frames, tmp_path / "pred")
    for stem, pred in preds.items():
        image = _image_of_mode(pred, mode)
        assert image.mode == mode
        image.save(tmp_path / "pred" / stem.split("_")[0] / f"{stem}_leftImg8bit.png")
    try:
        official = official_evaluate(root, "val", tmp_path / "pred", instance_scores=False)
    except OfficialEvaluationError:
        official = None
    if official is None:
        with pytest.raises(EvaluationError, match="channels"):
            evaluate_predictions(root, "val", tmp_path / "pred")
    else:
        _assert_same_scores(evaluate_predictions(root, "val", tmp_path / "pred"), official)
    assert (official is None) == (mode in ("LA", "RGB", "RGBA"))
