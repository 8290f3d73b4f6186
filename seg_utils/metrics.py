"""Segmentation metrics that agree exactly with the official Cityscapes evaluator.

One confusion matrix over the whole split (never a mean of per-image scores), counted in int64:

* rows are ground-truth classes ``0..K-1``; target pixels outside ``0..K-1`` (255 = ignore, -1, -100 ...)
  are not counted at all, like void pixels in the official evaluator;
* columns ``0..K-1`` are predicted classes, and one extra column ``K`` counts *misses*: predictions
  outside ``0..K-1`` on a counted pixel (a non-evaluated label id, 255, a negative value). The official
  evaluator counts those as false negatives of the true class, so we do too; they are never dropped.

IoU of class c = TP / (TP + FP + FN), with FP = pixels of another evaluated class predicted as c (ignore
pixels never make false positives) and FN = pixels of c predicted as anything else, misses included.
Classes with TP + FP + FN = 0 are NaN and left out of the mean (``nanmean``), as in the official script.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2
import numpy as np
import torch

from .classes import ClassTable
from .device import cpu_cores
from .labels import (
    CATEGORY_NAMES,
    IGNORE_INDEX,
    TRAIN_ID_NAMES,
    TRAIN_ID_TO_CATEGORY,
)

__all__ = [
    "ConfusionMatrix",
    "compute_metrics",
    "format_table",
    "metrics_to_json",
    "pair_histogram_u8",
]

# ----------------------------------------------------------------------------------------------------------
# Counting kernels
# ----------------------------------------------------------------------------------------------------------
# On CPU the count is a 2-D histogram of (target, prediction) value pairs. Both maps are narrowed to uint8 first
# (any value outside 0..254 becomes 255, which is never a class: K <= 255), the 256 x 256 pairs are counted, and
# folding the 65536 bins into (K, K+1) afterwards costs nothing. Two ways to count, chosen per call:
# * label maps are piecewise constant (a Cityscapes frame has ~15k runs of equal pairs in 2M pixels): count the
#   runs, with np.bincount weighted by their lengths (about half of calcHist's time on such maps);
# * noisy maps: OpenCV's calcHist, in parts on several threads (it releases the GIL). It counts in float32,
#   exact below 2**24 per bin: chunks of 2**23 pixels keep every count exact.
# benchmarks/bench_metrics.py measures both against np.bincount with a mask.
_HIST_CHUNK = 1 << 23
_RUN_SAMPLE = 1 << 15  # pixels looked at to choose: runs when fewer than 1 in 8 of them start a new run


def _as_uint8(a: np.ndarray) -> np.ndarray:
    """Return an integer map as uint8 with every value outside 0..254 (negative too) turned into 255."""
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.view(np.uint8)
    if a.dtype.kind == "i":  # viewed as unsigned, negative values are huge: one minimum sends them to 255 too
        a = a.view(np.dtype(f"u{a.dtype.itemsize}"))
    out = np.empty(a.shape, np.uint8)
    np.minimum(a, 255, out=out, casting="unsafe")
    return out


def _histogram_part(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    total = np.zeros((256, 256), np.int64)
    for s in range(0, len(t), _HIST_CHUNK):
        total += cv2.calcHist([t[s:s + _HIST_CHUNK], p[s:s + _HIST_CHUNK]], [0, 1], None, [256, 256],
                              [0, 256, 0, 256]).astype(np.int64)
    return total


def _run_histogram(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Return the (256, 256) pair counts of two flat uint8 maps by counting runs of equal (t, p) pairs."""
    new = t[1:] != t[:-1]
    new |= p[1:] != p[:-1]
    starts = np.flatnonzero(new)
    starts += 1
    starts = np.concatenate([[0], starts])
    lengths = np.diff(starts, append=t.size)
    pairs = t[starts].astype(np.intp) * 256 + p[starts]
    return np.bincount(pairs, weights=lengths, minlength=65536).astype(np.int64).reshape(256, 256)


def _is_piecewise_constant(t: np.ndarray, p: np.ndarray) -> bool:
    """Return whether a sample of two flat maps (from their middle) has few changes of the (t, p) pair."""
    mid = len(t) // 2
    ts, ps = t[mid:mid + _RUN_SAMPLE], p[mid:mid + _RUN_SAMPLE]
    changes = np.count_nonzero((ts[1:] != ts[:-1]) | (ps[1:] != ps[:-1]))
    return changes * 8 < len(ts)


def pair_histogram_u8(target: np.ndarray, pred: np.ndarray, threads: int = 1) -> np.ndarray:
    """Return the (256, 256) int64 count of (target, prediction) value pairs of two uint8 maps: by runs for
    piecewise-constant maps, else with calcHist in ``threads`` parts at once (1.5x on 2 cores for one frame)."""
    t = np.ascontiguousarray(target).reshape(-1)
    p = np.ascontiguousarray(pred).reshape(-1)
    if len(t) > 1 and _is_piecewise_constant(t, p):
        return _run_histogram(t, p)
    t, p = t.reshape(-1, 1), p.reshape(-1, 1)
    parts = max(1, min(threads, len(t) // _MIN_PART))
    if parts == 1:
        return _histogram_part(t, p)
    bounds = np.linspace(0, len(t), parts + 1).astype(int)
    others = [_executor().submit(_histogram_part, t[a:b], p[a:b]) for a, b in zip(bounds[1:-1], bounds[2:])]
    total = _histogram_part(t[:bounds[1]], p[:bounds[1]])  # the first part in this thread
    return total + sum(f.result() for f in others)


_MIN_PART = 1 << 19  # pixels: below this, a thread costs more than it saves
_pool: ThreadPoolExecutor | None = None
_pool_pid = -1


def _executor() -> ThreadPoolExecutor:
    # Re-created after a fork: a pool's threads do not survive into a child process (DataLoader workers).
    global _pool, _pool_pid
    if _pool is None or _pool_pid != os.getpid():
        _pool = ThreadPoolExecutor(max_workers=max(1, min(cpu_cores(), 8) - 1),  # the caller's thread is one more
                                   thread_name_prefix="seg_utils-metrics")
        _pool_pid = os.getpid()
    return _pool


def _confusion_numpy(target: np.ndarray, pred: np.ndarray, k: int, threads: int = 1) -> np.ndarray:
    """Return the (K, K+1) int64 confusion counts of two integer label maps of equal shape (CPU)."""
    if k >= 256:  # more classes than a byte holds (never in Cityscapes): count with np.bincount instead
        t = np.minimum(target.reshape(-1).astype(np.int64).view(np.uint64), k).astype(np.int64)
        p = np.minimum(pred.reshape(-1).astype(np.int64).view(np.uint64), k).astype(np.int64)
        return np.bincount(t * (k + 1) + p, minlength=(k + 1) * (k + 1)).reshape(k + 1, k + 1)[:k]
    grid = pair_histogram_u8(_as_uint8(target), _as_uint8(pred), threads)
    out = np.empty((k, k + 1), np.int64)
    out[:, :k] = grid[:k, :k]
    out[:, k] = grid[:k, k:].sum(1)  # predictions outside 0..K-1: misses
    return out


def _confusion_torch(target: torch.Tensor, pred: torch.Tensor, k: int) -> torch.Tensor:
    """Return the (K, K+1) int64 confusion counts on the tensors' device, without any host sync.

    torch.bincount is avoided on purpose: on CUDA it reads the input's max back to the host to size its
    output. scatter_add_ into a fixed-size grid never does.
    """
    t = target.reshape(-1).long().clamp(-1, k)  # -1 and k both mean "outside 0..K-1"
    p = pred.reshape(-1).long().clamp(-1, k)
    idx = torch.add(p, t, alpha=k + 2).add_(k + 3)  # (t + 1) * (K + 2) + (p + 1), in 0..(K+2)^2-1
    grid = torch.zeros((k + 2) * (k + 2), dtype=torch.int64, device=idx.device)
    grid.scatter_add_(0, idx, torch.ones(1, dtype=torch.int64, device=idx.device).expand(idx.numel()))
    grid = grid.view(k + 2, k + 2)[1:k + 1]
    return torch.cat([grid[:, 1:k + 1], (grid[:, 0] + grid[:, k + 1]).unsqueeze(1)], dim=1)


def _is_float(x: np.ndarray | torch.Tensor) -> bool:
    return x.dtype.is_floating_point if isinstance(x, torch.Tensor) else x.dtype.kind in "fc"


def _check_labels(x: np.ndarray | torch.Tensor, name: str) -> None:
    if _is_float(x) or (isinstance(x, torch.Tensor) and x.dtype.is_complex):
        raise TypeError(f"{name} must hold integer class indices, got {x.dtype} "
                        f"(pass logits as (N, K, H, W) with the target as (N, H, W))")


class ConfusionMatrix:
    """Accumulates a (K, K) int64 confusion matrix (rows = ground truth, columns = prediction) on a device.

    ``update`` accepts label maps of any shape, or logits with one more dimension (classes at dim 1, argmaxed
    there), as CPU/CUDA tensors or numpy arrays. It never synchronises with the host: on CUDA the counts stay
    on the GPU until ``compute()``. Targets outside ``0..K-1`` (``ignore_index``, 255, -100 ...) are not
    counted; predictions outside ``0..K-1`` on a counted pixel are misses (false negatives of the true
    class), kept in ``misses``.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX,
                 device: str | torch.device | None = None, class_names: Sequence[str] | None = None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index {ignore_index} is a class index (0..{num_classes - 1}); every "
                             "target outside that range is ignored, so choose e.g. 255")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = class_names
        self._device = torch.device(device) if device is not None else None
        self._counts: torch.Tensor | None = None
        if self._device is not None:
            self.reset()

    # -- state ---------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Zero the counts (keeps the device)."""
        k = self.num_classes
        self._counts = torch.zeros((k, k + 1), dtype=torch.int64, device=self._device or "cpu")

    @property
    def device(self) -> torch.device:
        """Return the device the counts live on (CPU until the first update says otherwise)."""
        return self._device or torch.device("cpu")

    @property
    def counts(self) -> torch.Tensor:
        """Return the (K, K+1) int64 counts: the last column holds misses."""
        if self._counts is None:
            self.reset()
        return self._counts

    @property
    def matrix(self) -> torch.Tensor:
        """Return the (K, K) int64 confusion matrix, rows = ground truth, columns = prediction."""
        return self.counts[:, :self.num_classes]

    @property
    def misses(self) -> torch.Tensor:
        """Return the (K,) int64 count of predictions outside 0..K-1 per ground-truth class."""
        return self.counts[:, self.num_classes]

    # -- counting ------------------------------------------------------------------------------------------
    def _labels(self, pred: Any, target: Any) -> tuple[Any, Any]:
        k = self.num_classes
        _check_labels(target, "target")
        if pred.ndim == target.ndim + 1:
            if pred.shape[1] != k or pred.shape[0] != target.shape[0] or pred.shape[2:] != target.shape[1:]:
                raise ValueError(f"logits of shape {tuple(pred.shape)} do not match target "
                                 f"{tuple(target.shape)} with {k} classes (expected (N, {k}, ...))")
            pred = pred.argmax(1) if isinstance(pred, torch.Tensor) else np.argmax(pred, axis=1)
        else:
            _check_labels(pred, "pred")
        if tuple(pred.shape) != tuple(target.shape):
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        return pred, target

    def update(self, *, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """Add one batch: pred = labels or logits (N, K, ...), target = labels; no host synchronisation.

        Both arguments are keyword-only. The field's two usual orders disagree (scikit-learn's
        ``confusion_matrix(y_true, y_pred)``, torchmetrics' ``update(preds, target)``), and a swapped call
        gives a plausible number with no warning: void pixels of the truth become misses. So
        ``update(a, b)`` raises a TypeError instead of guessing.
        """
        if self._device is None:
            cuda = [x.device for x in (target, pred) if isinstance(x, torch.Tensor) and x.device.type != "cpu"]
            self._device = cuda[0] if cuda else torch.device("cpu")
            self.reset()
        if self._counts is None:
            self.reset()
        if isinstance(pred, torch.Tensor):
            pred = pred.detach()
        if isinstance(target, torch.Tensor):
            target = target.detach()
        if self._device.type == "cpu":
            pred = pred.cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
            target = target.cpu().numpy() if isinstance(target, torch.Tensor) else np.asarray(target)
            pred, target = self._labels(pred, target)
            counts = _confusion_numpy(target, pred, self.num_classes, torch.get_num_threads())
            self._counts += torch.from_numpy(counts)
        else:
            pred = torch.as_tensor(pred, device=self._device)
            target = torch.as_tensor(target, device=self._device)
            pred, target = self._labels(pred, target)
            self._counts += _confusion_torch(target, pred, self.num_classes)

    def reduce(self) -> ConfusionMatrix:
        """Sum the counts over all processes (all_reduce) when torch.distributed is initialised; returns self.

        Call it once, after the last update of every rank (every rank must call it, even with no updates).
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self
        counts = self.counts
        if dist.get_backend() == "nccl" and counts.device.type != "cuda":
            buf = counts.cuda()
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            counts.copy_(buf.cpu())
        else:
            dist.all_reduce(counts, op=dist.ReduceOp.SUM)
        return self

    def compute(self) -> dict[str, Any]:
        """Return the metrics dict of ``compute_metrics`` for the counts so far (syncs with the device)."""
        return compute_metrics(self.counts, class_names=self.class_names)

    def __repr__(self) -> str:
        return f"ConfusionMatrix(num_classes={self.num_classes}, device={self.device}, " \
               f"pixels={int(self.counts.sum()) if self._counts is not None else 0})"


# ----------------------------------------------------------------------------------------------------------
# Scores
# ----------------------------------------------------------------------------------------------------------
def _nanmean(x: np.ndarray) -> float:
    valid = x[~np.isnan(x)]
    return float(valid.mean()) if valid.size else float("nan")


def _none_if_nan(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def compute_metrics(matrix: np.ndarray | torch.Tensor, class_names: Sequence[str] | None = None,
                    categories: Sequence[str] | None = None) -> dict[str, Any]:
    """Return IoU per class, mIoU, pixel/mean accuracy, fw-IoU (and category IoU) of a confusion matrix.

    ``matrix`` is (K, K) (rows = ground truth, columns = prediction) or (K, K+1) whose last column counts
    misses (predictions outside the K classes: false negatives). ``categories`` gives each class's category
    name; for K = 19 both default to the Cityscapes trainIds (names and the 7 official categories).

    Keys: ``class_names``, ``iou`` / ``acc`` (float64 arrays, NaN where undefined), ``class_iou``
    ({name: IoU or None}), ``miou`` (nanmean over classes with ground truth or prediction), ``pixel_acc``,
    ``mean_acc`` (nanmean of per-class recall), ``fw_iou``, ``num_pixels``, ``matrix`` ((K, K+1) int64);
    with categories also ``category_names``, ``category_iou``, ``category_scores``, ``category_miou``.
    """
    m = matrix.detach().cpu().numpy() if isinstance(matrix, torch.Tensor) else np.asarray(matrix)
    if m.ndim != 2 or m.shape[1] not in (m.shape[0], m.shape[0] + 1):
        raise ValueError(f"confusion matrix must be (K, K) or (K, K+1), got {m.shape}")
    m = m.astype(np.int64)
    k = m.shape[0]
    if m.shape[1] == k:
        m = np.concatenate([m, np.zeros((k, 1), np.int64)], axis=1)
    sq = m[:, :k]
    if class_names is None:
        class_names = ClassTable.for_count(k).names
    if len(class_names) != k:
        raise ValueError(f"{len(class_names)} class names for a {k}-class matrix")
    if categories is None and tuple(class_names) == TRAIN_ID_NAMES:  # Cityscapes' 19 classes: their categories
        categories = [CATEGORY_NAMES[c] for c in TRAIN_ID_TO_CATEGORY]

    tp = np.diag(sq).astype(np.float64)
    gt = m.sum(1).astype(np.float64)  # misses included: they are false negatives
    fp = sq.sum(0) - tp  # only rows of evaluated classes exist, so ignore pixels never add FP
    fn = gt - tp
    denom = tp + fp + fn
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(denom > 0, tp / denom, np.nan)
        acc = np.where(gt > 0, tp / gt, np.nan)
    total = gt.sum()
    out: dict[str, Any] = {
        "class_names": list(class_names),
        "iou": iou,
        "acc": acc,
        "class_iou": {name: _none_if_nan(v) for name, v in zip(class_names, iou)},
        "miou": _nanmean(iou),
        "pixel_acc": float(tp.sum() / total) if total else float("nan"),
        "mean_acc": _nanmean(acc),
        "fw_iou": float(np.sum((gt / total)[gt > 0] * iou[gt > 0])) if total else float("nan"),
        "num_pixels": int(total),
        "matrix": m,
    }
    if categories is not None:
        if len(categories) != k:
            raise ValueError(f"{len(categories)} categories for a {k}-class matrix")
        cat_names = list(dict.fromkeys(categories))
        cat_iou = np.full(len(cat_names), np.nan)
        for j, name in enumerate(cat_names):
            inside = np.array([c == name for c in categories])
            # official getIouScoreForCategory: TP = GT and prediction both in the category; FN = rest of
            # those rows (misses included); FP = rows of evaluated classes of other categories.
            c_tp = float(sq[np.ix_(inside, inside)].sum())
            c_fn = float(m[inside].sum()) - c_tp
            c_fp = float(sq[np.ix_(~inside, inside)].sum())
            if c_tp + c_fp + c_fn > 0:
                cat_iou[j] = c_tp / (c_tp + c_fp + c_fn)
        out.update(category_names=cat_names, category_iou=cat_iou,
                   category_scores={n: _none_if_nan(v) for n, v in zip(cat_names, cat_iou)},
                   category_miou=_nanmean(cat_iou))
    return out


def metrics_to_json(metrics: dict[str, Any]) -> dict[str, Any]:
    """Return the JSON-ready summary of a metrics dict: scalars and per-class dicts, NaN as None."""
    out: dict[str, Any] = {}
    for key in ("miou", "category_miou", "pixel_acc", "mean_acc", "fw_iou"):
        if key in metrics:
            out[key] = _none_if_nan(metrics[key])
    for key in ("class_iou", "category_scores", "num_frames", "num_pixels"):
        if key in metrics:
            out[key] = metrics[key]
    return out


def format_table(metrics: dict[str, Any]) -> str:
    """Return a printable table: IoU and accuracy (recall) per class, category IoUs, then mIoU, category mIoU,
    pixel accuracy, mean accuracy and frequency-weighted IoU."""
    def pct(x: float) -> str:  # six characters: 100.00 keeps the columns straight
        return "     -" if x is None or math.isnan(x) else f"{100 * x:6.2f}"

    names = metrics["class_names"]
    width = max(14, *(len(n) for n in names))
    lines = [f"{'class':<{width}}    IoU %    Acc %", "-" * (width + 18)]
    for name, iou, acc in zip(names, metrics["iou"], metrics["acc"]):
        lines.append(f"{name:<{width}}   {pct(iou)}   {pct(acc)}")
    lines.append("-" * (width + 18))
    if "category_names" in metrics:
        for name, iou in zip(metrics["category_names"], metrics["category_iou"]):
            lines.append(f"{'[' + name + ']':<{width}}   {pct(iou)}")
        lines.append("-" * (width + 18))
    lines.append(f"{'mIoU':<{width}}   {pct(metrics['miou'])}")
    if "category_miou" in metrics:
        lines.append(f"{'category mIoU':<{width}}   {pct(metrics['category_miou'])}")
    lines.append(f"{'pixel acc':<{width}}   {pct(metrics['pixel_acc'])}")
    lines.append(f"{'mean acc':<{width}}   {pct(metrics['mean_acc'])}")
    lines.append(f"{'fw IoU':<{width}}   {pct(metrics['fw_iou'])}")
    if "num_frames" in metrics:
        lines.append(f"{metrics['num_frames']} frames, {metrics['num_pixels']} evaluated pixels")
    return "\n".join(lines)
