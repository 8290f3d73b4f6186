"""ConfusionMatrix / compute_metrics / evaluate_predictions against scikit-learn and hand-worked numbers."""

from __future__ import annotations

import math
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from seg_utils.evaluation import EvaluationError, evaluate_predictions
from seg_utils.labels import LABEL_ID_PALETTE, TRAIN_ID_TO_LABEL_ID
from seg_utils.metrics import (
    ConfusionMatrix,
    _as_uint8,
    _confusion_torch,
    _is_piecewise_constant,
    _run_histogram,
    compute_metrics,
    format_table,
    metrics_to_json,
    pair_histogram_u8,
)

K = 19


def _random_maps(rng: np.random.Generator, shape: tuple[int, ...], ignore: float = 0.1):
    target = rng.integers(0, K, shape)
    target[rng.random(shape) < ignore] = 255
    pred = rng.integers(0, K, shape)
    return target, pred


def _sklearn(target: np.ndarray, pred: np.ndarray) -> np.ndarray:
    # imported here: the distributed test's spawned workers import this module and need no sklearn
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix

    valid = (target >= 0) & (target < K)
    return sk_confusion_matrix(target[valid].ravel(), pred[valid].ravel(), labels=list(range(K)))


# ---------------------------------------------------------------------------------------------------------
# ConfusionMatrix
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(37, 53), (2, 31, 45), (2, 3, 17, 19), (600, 600)])
@pytest.mark.parametrize("dtype", ["int64", "uint8", "int32", "mixed"])
def test_numpy_and_torch_inputs_match_sklearn(shape, dtype):
    rng = np.random.default_rng(sum(shape))
    target, pred = _random_maps(rng, shape)
    if dtype == "uint8":
        target, pred = target.astype(np.uint8), pred.astype(np.uint8)
    elif dtype == "int32":
        target, pred = target.astype(np.int32), pred.astype(np.int32)
    elif dtype == "mixed":
        target = target.astype(np.uint8)
    expected = _sklearn(target, pred)
    for wrap in (np.asarray, torch.from_numpy):
        cm = ConfusionMatrix(K)
        cm.update(pred=wrap(pred), target=wrap(target))
        assert cm.matrix.dtype == torch.int64 and cm.matrix.shape == (K, K)
        np.testing.assert_array_equal(cm.matrix.numpy(), expected)
        assert int(cm.misses.sum()) == 0


def test_accumulates_over_batches_and_resets():
    rng = np.random.default_rng(1)
    cm = ConfusionMatrix(K)
    expected = np.zeros((K, K), np.int64)
    for _ in range(3):
        target, pred = _random_maps(rng, (2, 40, 50))
        cm.update(pred=torch.from_numpy(pred), target=torch.from_numpy(target))
        expected += _sklearn(target, pred)
    np.testing.assert_array_equal(cm.matrix.numpy(), expected)
    cm.reset()
    assert int(cm.counts.sum()) == 0


@pytest.mark.parametrize("wrap", [np.asarray, torch.from_numpy])
def test_logits_are_argmaxed_over_dim_1(wrap):
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((2, K, 23, 29)).astype(np.float32)
    target, _ = _random_maps(rng, (2, 23, 29))
    cm = ConfusionMatrix(K)
    cm.update(pred=wrap(logits), target=wrap(target))
    np.testing.assert_array_equal(cm.matrix.numpy(), _sklearn(target, logits.argmax(1)))


def test_negative_and_other_out_of_range_targets_are_ignored():
    rng = np.random.default_rng(3)
    target, pred = _random_maps(rng, (64, 64), ignore=0.0)
    target[:8] = -1
    target[8:16] = -100
    target[16:20] = K  # not a class: ignored, never an index error
    cm = ConfusionMatrix(K)
    cm.update(pred=pred, target=target)
    np.testing.assert_array_equal(cm.matrix.numpy(), _sklearn(target, pred))


@pytest.mark.parametrize("dtype", [np.int64, np.int16, np.uint8])
def test_out_of_range_predictions_count_as_misses(dtype):
    target = np.array([[0, 1, 2, 255], [1, 1, 2, 2]], dtype=np.int64)
    bad = 255 if dtype == np.uint8 else -1
    pred = np.array([[0, K, 2, 7], [bad, 1, 200, 2]], dtype=dtype)
    cm = ConfusionMatrix(K)
    cm.update(pred=pred, target=target.astype(dtype) if dtype == np.uint8 else target)
    m = cm.matrix.numpy()
    assert m[0, 0] == 1 and m[1, 1] == 1 and m[2, 2] == 2 and m.sum() == 4
    np.testing.assert_array_equal(cm.misses.numpy()[:3], [0, 2, 1])
    res = cm.compute()
    assert res["iou"][1] == pytest.approx(1 / 3)  # TP 1, FN 2 (both misses), FP 0
    assert res["iou"][2] == pytest.approx(2 / 3)
    assert res["pixel_acc"] == pytest.approx(4 / 7)


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.int32])
def test_device_kernel_matches_cpu_kernel(dtype):
    # The scatter_add_ kernel used for CUDA tensors, run on CPU tensors.
    rng = np.random.default_rng(4)
    target, pred = _random_maps(rng, (3, 41, 47))
    pred[0, :5] = K + 3
    if dtype != torch.uint8:
        pred[1, :5] = -2
        target[2, :5] = -100
    t, p = torch.from_numpy(target).to(dtype), torch.from_numpy(pred).to(dtype)
    cm = ConfusionMatrix(K)
    cm.update(pred=p, target=t)
    np.testing.assert_array_equal(_confusion_torch(t, p, K).numpy(), cm.counts.numpy())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_update_stays_on_device_without_sync():
    rng = np.random.default_rng(5)
    target, pred = _random_maps(rng, (2, 64, 96))
    pred[0, 0] = 99
    t, p = torch.from_numpy(target).cuda(), torch.from_numpy(pred).cuda()
    logits = torch.randn(2, K, 64, 96, device="cuda")
    cm, cm_logits = ConfusionMatrix(K), ConfusionMatrix(K)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        cm.update(pred=p, target=t)
        cm_logits.update(pred=logits, target=t)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert cm.counts.device.type == "cuda"
    ref = ConfusionMatrix(K)
    ref.update(pred=pred, target=target)
    np.testing.assert_array_equal(cm.counts.cpu().numpy(), ref.counts.numpy())
    np.testing.assert_array_equal(cm_logits.matrix.cpu().numpy(), _sklearn(target, logits.argmax(1).cpu().numpy()))


def test_bad_inputs_raise_clear_errors():
    cm = ConfusionMatrix(K)
    with pytest.raises(ValueError, match="differ in shape"):
        cm.update(pred=np.zeros((4, 5), np.int64), target=np.zeros((4, 6), np.int64))
    with pytest.raises(TypeError, match="integer class indices"):
        cm.update(pred=np.zeros((4, 5), np.float32), target=np.zeros((4, 5), np.int64))
    with pytest.raises(ValueError, match="logits"):
        cm.update(pred=np.zeros((1, K + 1, 4, 5), np.float32), target=np.zeros((1, 4, 5), np.int64))
    with pytest.raises(ValueError, match="ignore_index"):
        ConfusionMatrix(K, ignore_index=0)


def test_reduce_is_a_no_op_without_distributed():
    cm = ConfusionMatrix(K)
    cm.update(pred=np.ones((3, 3), np.int64), target=np.ones((3, 3), np.int64))
    assert cm.reduce() is cm and int(cm.matrix[1, 1]) == 9


def _dist_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        target, pred = _random_maps(np.random.default_rng(100 + rank), (2, 30, 40))
        cm = ConfusionMatrix(K)
        if rank == 0:  # rank 1 never updates: reduce must still work
            cm.update(pred=torch.from_numpy(pred), target=torch.from_numpy(target))
        cm.reduce()
        torch.save(cm.counts, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_distributed_reduce_sums_over_two_gloo_processes(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_dist_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    target, pred = _random_maps(np.random.default_rng(100), (2, 30, 40))
    expected = _sklearn(target, pred)
    for rank in range(2):
        np.testing.assert_array_equal(torch.load(tmp_path / f"rank{rank}.pt")[:, :K].numpy(), expected)


# ---------------------------------------------------------------------------------------------------------
# compute_metrics and format_table on hand-worked matrices
# ---------------------------------------------------------------------------------------------------------
def test_compute_metrics_hand_worked():
    # class 2 has neither ground truth nor prediction: NaN, left out of every mean
    m = np.array([[3, 1, 0],
                  [2, 4, 0],
                  [0, 0, 0]])
    res = compute_metrics(m, class_names=["a", "b", "c"])
    np.testing.assert_allclose(res["iou"][:2], [3 / 6, 4 / 7])
    assert math.isnan(res["iou"][2]) and math.isnan(res["acc"][2])
    assert res["miou"] == pytest.approx((3 / 6 + 4 / 7) / 2)
    assert res["pixel_acc"] == pytest.approx(7 / 10)
    assert res["mean_acc"] == pytest.approx((3 / 4 + 4 / 6) / 2)
    assert res["fw_iou"] == pytest.approx(0.4 * 3 / 6 + 0.6 * 4 / 7)
    assert res["class_iou"] == {"a": pytest.approx(0.5), "b": pytest.approx(4 / 7), "c": None}
    assert "category_miou" not in res


def test_compute_metrics_predicted_but_absent_class_scores_zero_and_misses_are_fn():
    # (K, K+1): the last column holds misses. Class 2: no ground truth but predicted once -> IoU 0.
    m = np.array([[3, 0, 1, 2],
                  [0, 4, 0, 0],
                  [0, 0, 0, 0]])
    res = compute_metrics(m)
    np.testing.assert_allclose(res["iou"], [3 / 6, 1.0, 0.0])
    assert res["miou"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert res["pixel_acc"] == pytest.approx(7 / 10)
    assert res["num_pixels"] == 10


def test_compute_metrics_categories_follow_official_definition():
    m = np.array([[5, 1, 2, 1],   # class 0 (cat X): 1 miss
                  [1, 3, 0, 0],   # class 1 (cat X)
                  [2, 0, 6, 0]])  # class 2 (cat Y)
    res = compute_metrics(m, categories=["X", "X", "Y"])
    # X: TP = 5+1+1+3 = 10, FN = (9 + 4) - 10 = 3, FP = rows of Y in cols of X = 2
    # Y: TP = 6, FN = 2, FP = 2
    np.testing.assert_allclose(res["category_iou"], [10 / 15, 6 / 10])
    assert res["category_names"] == ["X", "Y"]
    assert res["category_miou"] == pytest.approx((10 / 15 + 0.6) / 2)


def test_compute_metrics_cityscapes_defaults_and_empty_matrix():
    res = compute_metrics(torch.zeros(K, K, dtype=torch.int64))
    assert res["class_names"][0] == "road" and len(res["category_names"]) == 7
    assert math.isnan(res["miou"]) and math.isnan(res["category_miou"]) and math.isnan(res["pixel_acc"])
    assert metrics_to_json(res)["miou"] is None


def test_format_table_lists_classes_and_summary():
    m = np.diag(np.arange(1, K + 1))
    m[0, 0] = 0
    text = format_table(compute_metrics(m))
    assert "road" in text and "bicycle" in text and "mIoU" in text and "category mIoU" in text
    assert "pixel acc" in text and "100.00" in text
    # One row per class, straight under the header: road's "-" (no pixels) and every other class's 100.00 alike.
    rows = text.splitlines()[2:2 + K]
    assert {len(row) for row in rows} == {len(text.splitlines()[0])}


# ---------------------------------------------------------------------------------------------------------
# evaluate_predictions: every bad input gives one clear error naming the file
# ---------------------------------------------------------------------------------------------------------
def _gt_folder(root: Path, split: str = "val", n: int = 2, size=(32, 48)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    frames = {}
    for i in range(n):
        city = "aachen" if i % 2 == 0 else "bochum"
        stem = f"{city}_{i:06d}_000019"
        gt = rng.integers(0, 34, size).astype(np.uint8)
        (root / "gtFine" / split / city).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"), gt)
        frames[stem] = gt
    return frames


def _write_preds(folder: Path, frames: dict[str, np.ndarray], fn=lambda gt: gt) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, gt in frames.items():
        cv2.imwrite(str(folder / f"{stem}_leftImg8bit.png"), fn(gt))


def test_perfect_labelid_predictions_score_one(tmp_path):
    frames = _gt_folder(tmp_path / "ds")
    _write_preds(tmp_path / "pred" / "nested", frames)
    res = evaluate_predictions(tmp_path / "ds", "val", tmp_path / "pred")
    assert res["miou"] == 1.0 and res["pixel_acc"] == 1.0 and res["num_frames"] == 2


def test_palette_png_reads_indices_like_the_official_evaluator(tmp_path):
    frames = _gt_folder(tmp_path / "ds")
    (tmp_path / "pred").mkdir()
    for stem, gt in frames.items():
        img = Image.fromarray(gt, mode="L").convert("P")
        img.putpalette(LABEL_ID_PALETTE.ravel().tolist())
        img.putdata(gt.ravel().tolist())
        img.save(tmp_path / "pred" / f"{stem}.png")
    assert evaluate_predictions(tmp_path / "ds", "val", tmp_path / "pred")["miou"] == 1.0


@pytest.mark.parametrize("case, message", [
    ("test_split", "official server"),
    ("missing", "no prediction for bochum_000001_000019"),
    ("duplicate", "two predictions for aachen_000000_000019"),
    ("size", "prediction is 24x32"),
    ("rgb", "3 channels"),
    ("labelid_range", "holds id 34; expected labelIds 0..33"),
    ("labelid_255", "holds id 255; expected labelIds 0..33"),
    ("trainid_range", "holds id 19; expected trainIds 0..18 or 255"),
    ("gt_range", "holds label id 40"),
    ("no_gt", "no such folder"),
    ("format", "label_format"),
])
def test_evaluate_predictions_bad_inputs(tmp_path, case, message):
    ds, pred = tmp_path / "ds", tmp_path / "pred"
    frames = _gt_folder(ds)
    split, fmt = "val", "labelIds"
    stems = sorted(frames)
    _write_preds(pred, frames)
    bad_file = pred / f"{stems[0]}_leftImg8bit.png"
    if case == "test_split":
        split = "test"
    elif case == "missing":
        (pred / f"{stems[1]}_leftImg8bit.png").unlink()
    elif case == "duplicate":
        cv2.imwrite(str(pred / f"{stems[0]}_other.png"), frames[stems[0]])
    elif case == "size":
        cv2.imwrite(str(bad_file), np.zeros((32, 24), np.uint8))
    elif case == "rgb":
        cv2.imwrite(str(bad_file), np.zeros((32, 48, 3), np.uint8))
    elif case in ("labelid_range", "labelid_255"):
        cv2.imwrite(str(bad_file), np.full((32, 48), 34 if case == "labelid_range" else 255, np.uint8))
    elif case == "trainid_range":
        fmt = "trainIds"
        _write_preds(pred, frames, lambda gt: np.full_like(gt, 19))
    elif case == "gt_range":
        cv2.imwrite(str(ds / "gtFine/val/aachen" / f"{stems[0]}_gtFine_labelIds.png"), np.full((32, 48), 40, np.uint8))
    elif case == "no_gt":
        split = "train"
    elif case == "format":
        fmt = "colors"
    with pytest.raises(EvaluationError, match=message) as info:
        evaluate_predictions(ds, split, pred, label_format=fmt)
    assert "\n" not in str(info.value)
    if case in ("size", "rgb", "labelid_range", "labelid_255"):
        assert str(bad_file) in str(info.value)


def test_trainid_predictions_with_255_score_as_misses(tmp_path):
    frames = _gt_folder(tmp_path / "ds")
    from seg_utils.labels import LABEL_ID_TO_TRAIN_ID

    _write_preds(tmp_path / "tid", frames, lambda gt: LABEL_ID_TO_TRAIN_ID[gt])  # void GT -> 255
    _write_preds(tmp_path / "lid", frames, lambda gt: TRAIN_ID_TO_LABEL_ID[LABEL_ID_TO_TRAIN_ID[gt]])
    a = evaluate_predictions(tmp_path / "ds", "val", tmp_path / "tid", label_format="trainIds")
    b = evaluate_predictions(tmp_path / "ds", "val", tmp_path / "lid")
    assert a["miou"] == b["miou"] == 1.0
    # 255 everywhere: every evaluated pixel is a miss
    _write_preds(tmp_path / "none", frames, lambda gt: np.full_like(gt, 255))
    c = evaluate_predictions(tmp_path / "ds", "val", tmp_path / "none", label_format="trainIds")
    assert c["miou"] == 0.0 and int(c["matrix"][:, K].sum()) == c["num_pixels"]


def test_both_counting_kernels_count_every_pair_exactly():
    rng = np.random.default_rng(5)
    noisy = rng.integers(0, 256, (1024, 1100), dtype=np.uint8), rng.integers(0, 256, (1024, 1100), dtype=np.uint8)
    blocks = rng.integers(0, 256, (2, 64, 110), dtype=np.uint8)
    blocky = tuple(np.repeat(np.repeat(b, 16, axis=0), 10, axis=1) for b in blocks)  # piecewise constant
    for t, p in (noisy, blocky):
        expected = np.bincount(t.ravel().astype(np.int64) * 256 + p.ravel(), minlength=65536).reshape(256, 256)
        np.testing.assert_array_equal(_run_histogram(t.ravel(), p.ravel()), expected)
        np.testing.assert_array_equal(pair_histogram_u8(t, p, threads=2), expected)  # calcHist in 2 parts
    assert _is_piecewise_constant(*(x.ravel() for x in blocky))
    assert not _is_piecewise_constant(*(x.ravel() for x in noisy))


def test_wide_integer_maps_narrow_to_uint8_without_aliasing():
    values = np.array([0, 18, 254, 255, 256, 511, -1, -256, -253, 2**40], dtype=np.int64)
    np.testing.assert_array_equal(_as_uint8(values), [0, 18, 254, 255, 255, 255, 255, 255, 255, 255])
    np.testing.assert_array_equal(_as_uint8(values[:-1].astype(np.int32)), _as_uint8(values[:-1]))
    cm = ConfusionMatrix(K)
    # every prediction outside 0..18 is a miss, none aliases
    cm.update(pred=values % 7 - 1, target=np.full_like(values, 3))
    assert int(cm.misses[3]) == int(((values % 7 - 1) < 0).sum()) and int(cm.counts.sum()) == len(values)


def test_a_positional_update_raises_so_no_order_can_be_swapped():
    # sklearn's confusion_matrix(y_true, y_pred) and torchmetrics' update(preds, target) disagree on the order.
    # Swapped, the truth's void pixels (255) become out-of-range "predictions" and count as misses: a plausible,
    # wrong score. Keyword-only arguments make the call say which is which.
    target = np.array([[0, 1, 255], [1, 2, 255]])
    pred = np.array([[0, 1, 2], [1, 2, 0]])
    cm = ConfusionMatrix(K)
    with pytest.raises(TypeError, match="positional"):
        cm.update(target, pred)
    with pytest.raises(TypeError, match="positional"):
        cm.update(pred, target=target)
    assert cm.compute()["num_pixels"] == 0  # nothing was counted
    cm.update(target=target, pred=pred)
    assert cm.compute()["miou"] == pytest.approx(1.0)
