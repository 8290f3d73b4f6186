"""Benchmark: confusion-matrix update on one 1024x2048 Cityscapes frame (19 classes, ~10% ignore pixels), and
scoring a folder of prediction PNGs against decoding them.

Compares ``seg_utils.metrics.ConfusionMatrix.update`` with
* scikit-learn ``confusion_matrix`` on the non-ignored pixels (the original notebook script's approach),
* ``np.bincount`` with a boolean mask (the usual open-source ``fast_hist``),
* torchmetrics ``MulticlassConfusionMatrix(num_classes=19, ignore_index=255)``,
* the previous implementation of this package (a frozen copy below: chunked np.bincount on two threads),
after checking that all give identical counts, on uint8 maps (what PNG decoding and ``evaluate`` give) and on
int64 maps (what a dataset's target and ``argmax`` give). The floor: a ``memcpy`` of the same bytes (GB/s).
Then ``evaluate_predictions`` on a folder of full-size prediction PNGs, in frames/s, against decoding the same
ground-truth and prediction PNGs alone with the same threads (``evaluate_over_decode``).
On CUDA, also the per-frame GPU update time.

Prints a human summary, then a JSON object as the LAST line (with the 1-minute load average: other processes
share the cores, so compare ratios within one run):
``python benchmarks/bench_metrics.py [--repeats 9] [--frames 8]``; ``--tiny`` (a 64x128 map, 2 frames, 1 repeat)
checks the script.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch

from seg_utils.device import cpu_cores
from seg_utils.evaluation import evaluate_predictions
from seg_utils.metrics import ConfusionMatrix

K, IGNORE = 19, 255


# ------------------------------------------------------------------------------------------------------------
# The previous ConfusionMatrix CPU kernel (seg_utils 2026-11-28, before calcHist), frozen for speedup_vs_previous
_P_CHUNK, _P_CHUNK_U8 = 1 << 16, 1 << 18
_P_POOL = ThreadPoolExecutor(max_workers=max(1, min(os.cpu_count() or 1, 8)))


def _previous_chunk_general(t: np.ndarray, p: np.ndarray, k: int) -> np.ndarray:
    m = t.size
    a, b = np.empty(m, np.int64), np.empty(m, np.int64)
    np.minimum(t, k, out=a.view(np.uint64), casting="unsafe")
    np.minimum(p, k, out=b.view(np.uint64), casting="unsafe")
    np.multiply(a, k + 1, out=a)
    np.add(a, b, out=a)
    return np.bincount(a, minlength=(k + 1) * (k + 1))


def _previous_chunk_u8(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    a = np.empty(t.size, np.int64)
    np.left_shift(t, 8, out=a, dtype=np.int64)
    np.bitwise_or(a, p, out=a)
    return np.bincount(a, minlength=65536)


def previous_confusion(target: np.ndarray, pred: np.ndarray, k: int, threads: int) -> np.ndarray:
    """Return the (K, K+1) counts as the previous implementation computed them (chunks over ``threads``)."""
    t, p = target.reshape(-1), pred.reshape(-1)
    u8 = t.dtype == np.uint8 and p.dtype == np.uint8
    if not u8:
        t, p = t.view(np.uint64), p.view(np.uint64)
    fn, extra, chunk = (_previous_chunk_u8, (), _P_CHUNK_U8) if u8 else (_previous_chunk_general, (k,), _P_CHUNK)
    if threads <= 1:
        grid = sum(fn(t[s:s + chunk], p[s:s + chunk], *extra) for s in range(0, t.size, chunk))
    else:
        grid = sum(_P_POOL.map(lambda s: fn(t[s:s + chunk], p[s:s + chunk], *extra), range(0, t.size, chunk)))
    if u8:
        grid = grid.reshape(256, 256)
        return np.concatenate([grid[:k, :k], grid[:k, k:].sum(1, keepdims=True)], axis=1)
    return grid.reshape(k + 1, k + 1)[:k]


def median_ms(fn: Callable[[], object], repeats: int, sync: Callable[[], None] = lambda: None) -> float:
    """Return the median wall time of fn in milliseconds, after one warm-up call."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def interleaved_median_ms(fns: dict[str, Callable[[], object]], repeats: dict[str, int]) -> dict[str, float]:
    """Return the median ms of each fn, timed round-robin so that every method sees the same machine load
    (other processes share the cores); fns with fewer repeats drop out of the later rounds."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(max(repeats.values())):
        for name, fn in fns.items():
            if round_ < repeats[name]:
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(ts) for name, ts in times.items()}


def evaluate_vs_decode(frames: int, size: tuple[int, int], repeats: int) -> dict[str, float]:
    """Return frames/s of evaluate_predictions on a folder of full-size PNGs and of decoding the same PNGs alone
    (ground truth and prediction of every frame, with evaluate's own number of threads), timed interleaved."""
    from seg_utils.cityscapes import find_samples
    from seg_utils.synthetic import write_synthetic_cityscapes

    workers = max(1, min(cpu_cores(), 8))  # what evaluate_predictions uses
    with tempfile.TemporaryDirectory() as tmp:
        root = write_synthetic_cityscapes(Path(tmp) / "cs", train=0, val=frames, test=0, size=size)
        pairs = []
        for sample in find_samples(root, "val"):
            gt = cv2.imread(str(sample.label_path), cv2.IMREAD_UNCHANGED)
            pred = np.roll(gt, 8, axis=1)  # a prediction with the scene's structure, a little off
            path = Path(tmp) / "pred" / sample.city / sample.image_path.name
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), pred)
            pairs.append((sample.label_path, path))

        def decode_only() -> None:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(lambda gp: [cv2.imread(str(x), cv2.IMREAD_UNCHANGED) for x in gp], pairs))

        def evaluate() -> None:
            evaluate_predictions(root, "val", Path(tmp) / "pred")

        times = interleaved_median_ms({"decode": decode_only, "evaluate": evaluate},
                                      {"decode": repeats, "evaluate": repeats})
    return {"evaluate_frames_per_s": 1e3 * frames / times["evaluate"],
            "decode_frames_per_s": 1e3 * frames / times["decode"],
            "evaluate_over_decode": times["decode"] / times["evaluate"]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--frames", type=int, default=8, help="PNG frames for evaluate vs decode")
    parser.add_argument("--tiny", action="store_true", help="a 64x128 map, 2 frames, 1 repeat")
    args = parser.parse_args(argv)
    if args.tiny:
        args.repeats, args.height, args.width, args.frames = 1, 64, 128, 2

    from sklearn.metrics import confusion_matrix
    from torchmetrics.classification import MulticlassConfusionMatrix

    rng = np.random.default_rng(0)
    shape = (args.height, args.width)
    target = rng.integers(0, K, shape).astype(np.int64)
    target[rng.random(shape) < 0.1] = IGNORE
    pred = rng.integers(0, K, shape).astype(np.int64)
    t8, p8 = target.astype(np.uint8), pred.astype(np.uint8)
    threads = torch.get_num_threads()
    cm = ConfusionMatrix(K)

    def ours(t: np.ndarray, p: np.ndarray) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            cm.reset()
            cm.update(pred=p, target=t)
            return cm.matrix
        return run

    def numpy_bincount(t: np.ndarray, p: np.ndarray) -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            mask = t != IGNORE
            return np.bincount(K * t[mask].astype(np.int64) + p[mask], minlength=K * K).reshape(K, K)
        return run

    def previous(t: np.ndarray, p: np.ndarray) -> Callable[[], np.ndarray]:
        return lambda: previous_confusion(t, p, K, threads)[:, :K]

    def sklearn() -> np.ndarray:
        mask = target != IGNORE
        return confusion_matrix(target[mask], pred[mask], labels=list(range(K)))

    tm = MulticlassConfusionMatrix(num_classes=K, ignore_index=IGNORE)
    t_torch, p_torch = torch.from_numpy(target), torch.from_numpy(pred)

    def torchmetrics() -> torch.Tensor:
        tm.reset()
        tm.update(p_torch, t_torch)
        return tm.compute()

    def memcpy() -> None:
        np.copyto(t_copy, t8)
        np.copyto(p_copy, p8)

    t_copy, p_copy = np.empty_like(t8), np.empty_like(p8)
    fns = {"ours_uint8_ms": ours(t8, p8), "ours_int64_ms": ours(target, pred),
           "numpy_bincount_uint8_ms": numpy_bincount(t8, p8), "numpy_bincount_int64_ms": numpy_bincount(target, pred),
           "previous_uint8_ms": previous(t8, p8), "previous_int64_ms": previous(target, pred),
           "sklearn_ms": sklearn, "torchmetrics_ms": torchmetrics, "memcpy_uint8_ms": memcpy}
    reference = numpy_bincount(target, pred)()
    for name, fn in fns.items():
        if name != "memcpy_uint8_ms":
            got = fn()
            got = got.cpu().numpy() if isinstance(got, torch.Tensor) else got
            assert np.array_equal(got, reference), f"{name}: counts differ from np.bincount"

    r = args.repeats
    # Our kernels, numpy and the previous one interleaved (the same machine load for each); scikit-learn and
    # torchmetrics apart, after them: torch's OpenMP threads keep spinning for a while after each of its calls
    # and would take a core from whatever is timed next.
    ours_and_numpy = {name: fn for name, fn in fns.items() if name not in ("sklearn_ms", "torchmetrics_ms")}
    times = interleaved_median_ms(ours_and_numpy, {name: r for name in ours_and_numpy})
    times.update(interleaved_median_ms({name: fns[name] for name in ("sklearn_ms", "torchmetrics_ms")},
                                       {"sklearn_ms": max(3, r // 2), "torchmetrics_ms": r}))
    frame_bytes = t8.nbytes + p8.nbytes
    result = {
        "speedup_vs_numpy_bincount": times["numpy_bincount_uint8_ms"] / times["ours_uint8_ms"],
        "speedup_vs_numpy_bincount_int64": times["numpy_bincount_int64_ms"] / times["ours_int64_ms"],
        "speedup_vs_previous": times["previous_uint8_ms"] / times["ours_uint8_ms"],
        "speedup_vs_previous_int64": times["previous_int64_ms"] / times["ours_int64_ms"],
        "speedup_vs_sklearn": times["sklearn_ms"] / times["ours_int64_ms"],
        "speedup_vs_torchmetrics": times["torchmetrics_ms"] / times["ours_int64_ms"],
        "ours_uint8_gb_per_s": frame_bytes / times["ours_uint8_ms"] / 1e6,
        "memcpy_uint8_gb_per_s": 2 * frame_bytes / times["memcpy_uint8_ms"] / 1e6,  # read + write
        **times,
    }
    result.update(evaluate_vs_decode(args.frames, shape, max(3, r // 3)))
    result.update({"device": "cpu", "cpu_cores": os.cpu_count(), "torch_threads": threads,
                   "frame": f"{args.height}x{args.width}", "tiny": args.tiny,
                   "load_avg_1min": os.getloadavg()[0]})

    if torch.cuda.is_available():
        dev = torch.device("cuda")
        tg, pg = t_torch.to(dev), p_torch.to(dev)
        logits = torch.randn(1, K, *shape, device=dev, dtype=torch.float16)
        gcm = ConfusionMatrix(K, device=dev)
        tmg = MulticlassConfusionMatrix(num_classes=K, ignore_index=IGNORE).to(dev)
        gcm.update(pred=pg, target=tg)
        assert np.array_equal(gcm.matrix.cpu().numpy(), reference), "CUDA counts differ"
        sync = torch.cuda.synchronize
        n = 20  # per-frame time over a burst of updates, as in a validation loop
        result["cuda_update_ms"] = median_ms(lambda: [gcm.update(pred=pg, target=tg) for _ in range(n)], r, sync) / n
        result["cuda_update_logits_ms"] = median_ms(
            lambda: [gcm.update(pred=logits, target=tg[None]) for _ in range(n)], r, sync) / n
        result["cuda_torchmetrics_ms"] = median_ms(lambda: [tmg.update(pg, tg) for _ in range(n)], r, sync) / n
        result["cuda_speedup_vs_torchmetrics"] = result["cuda_torchmetrics_ms"] / result["cuda_update_ms"]
        result["device"] = f"cpu + {torch.cuda.get_device_name(0)}"

    print(f"confusion-matrix update, one {args.height}x{args.width} frame, {K} classes, ~10% ignore, "
          f"{os.cpu_count()} CPU cores, median of {r} (interleaved), load average {os.getloadavg()[0]:.2f}")
    for label, key in (("uint8 maps", "uint8"), ("int64 maps", "int64")):
        print(f"  {label}: seg_utils {times[f'ours_{key}_ms']:.2f} ms | np.bincount + mask "
              f"{times[f'numpy_bincount_{key}_ms']:.2f} ms | previous {times[f'previous_{key}_ms']:.2f} ms")
    print(f"  uint8: {result['ours_uint8_gb_per_s']:.2f} GB/s read; memcpy of the same bytes "
          f"{result['memcpy_uint8_gb_per_s']:.1f} GB/s")
    print(f"  torchmetrics {times['torchmetrics_ms']:.2f} ms, scikit-learn {times['sklearn_ms']:.2f} ms (int64)")
    print(f"  evaluate {result['evaluate_frames_per_s']:.1f} frames/s, decoding alone "
          f"{result['decode_frames_per_s']:.1f} frames/s -> {result['evaluate_over_decode']:.2f}")
    if "cuda_update_ms" in result:
        print(f"  CUDA: ConfusionMatrix {result['cuda_update_ms']:.3f} ms/frame "
              f"(from fp16 logits {result['cuda_update_logits_ms']:.3f} ms), "
              f"torchmetrics {result['cuda_torchmetrics_ms']:.3f} ms/frame")
    result = {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
