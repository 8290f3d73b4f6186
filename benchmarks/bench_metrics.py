"""Benchmark: confusion-matrix update on one 1024x2048 Cityscapes frame (19 classes, ~10% ignore pixels).

Compares ``seg_utils.metrics.ConfusionMatrix.update`` with
* scikit-learn ``confusion_matrix`` on the non-ignored pixels (the original notebook script's approach),
* ``np.bincount`` with a boolean mask (the usual open-source ``fast_hist``),
* torchmetrics ``MulticlassConfusionMatrix(num_classes=19, ignore_index=255)``,
after checking that all four give identical counts. Inputs are int64 (what the dataset's target and
``argmax`` give); uint8 maps (PNG predictions) are timed too. On CUDA, also the per-frame GPU update time.

Prints a human summary, then a JSON object as the LAST line:
``python benchmarks/bench_metrics.py [--repeats 7]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from seg_utils.metrics import ConfusionMatrix

K, IGNORE = 19, 255


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    args = parser.parse_args()

    from sklearn.metrics import confusion_matrix
    from torchmetrics.classification import MulticlassConfusionMatrix

    rng = np.random.default_rng(0)
    shape = (args.height, args.width)
    target = rng.integers(0, K, shape).astype(np.int64)
    target[rng.random(shape) < 0.1] = IGNORE
    pred = rng.integers(0, K, shape).astype(np.int64)
    t_torch, p_torch = torch.from_numpy(target), torch.from_numpy(pred)

    cm = ConfusionMatrix(K)

    def ours() -> torch.Tensor:
        cm.reset()
        cm.update(p_torch, t_torch)
        return cm.matrix

    def sklearn() -> np.ndarray:
        mask = target != IGNORE
        return confusion_matrix(target[mask], pred[mask], labels=list(range(K)))

    def numpy_bincount() -> np.ndarray:
        mask = target != IGNORE
        return np.bincount(K * target[mask] + pred[mask], minlength=K * K).reshape(K, K)

    tm = MulticlassConfusionMatrix(num_classes=K, ignore_index=IGNORE)

    def torchmetrics() -> torch.Tensor:
        tm.reset()
        tm.update(p_torch, t_torch)
        return tm.compute()

    reference = numpy_bincount()
    for name, fn in [("ConfusionMatrix", ours), ("sklearn", sklearn), ("torchmetrics", torchmetrics)]:
        got = fn()
        got = got.cpu().numpy() if isinstance(got, torch.Tensor) else got
        assert np.array_equal(got, reference), f"{name} counts differ from np.bincount"

    t8, p8 = torch.from_numpy(target.astype(np.uint8)), torch.from_numpy(pred.astype(np.uint8))

    def ours_uint8() -> None:
        cm.reset()
        cm.update(p8, t8)

    ours_uint8()
    assert np.array_equal(cm.matrix.numpy(), reference), "uint8 counts differ"

    threads = torch.get_num_threads()

    def ours_1thread() -> None:  # the kernel splits a frame over torch.get_num_threads() threads
        torch.set_num_threads(1)
        try:
            ours()
        finally:
            torch.set_num_threads(threads)

    r = args.repeats
    fns = {"ours_ms": ours, "sklearn_ms": sklearn, "numpy_bincount_ms": numpy_bincount,
           "torchmetrics_ms": torchmetrics, "ours_uint8_ms": ours_uint8, "ours_1thread_ms": ours_1thread}
    times = interleaved_median_ms(fns, {name: max(3, r // 2) if name == "sklearn_ms" else r for name in fns})

    result = {
        "speedup_vs_sklearn": times["sklearn_ms"] / times["ours_ms"],
        "speedup_vs_numpy_bincount": times["numpy_bincount_ms"] / times["ours_ms"],
        "speedup_vs_torchmetrics": times["torchmetrics_ms"] / times["ours_ms"],
        **times,
        "device": "cpu",
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "frame": f"{args.height}x{args.width}",
        "input_dtype": "int64",
        "load_avg_1min": os.getloadavg()[0],
    }

    if torch.cuda.is_available():
        dev = torch.device("cuda")
        tg, pg = t_torch.to(dev), p_torch.to(dev)
        logits = torch.randn(1, K, *shape, device=dev, dtype=torch.float16)
        gcm = ConfusionMatrix(K, device=dev)
        tmg = MulticlassConfusionMatrix(num_classes=K, ignore_index=IGNORE).to(dev)
        gcm.update(pg, tg)
        assert np.array_equal(gcm.matrix.cpu().numpy(), reference), "CUDA counts differ"
        sync = torch.cuda.synchronize
        n = 20  # per-frame time over a burst of updates, as in a validation loop
        result["cuda_update_ms"] = median_ms(lambda: [gcm.update(pg, tg) for _ in range(n)], r, sync) / n
        result["cuda_update_logits_ms"] = median_ms(
            lambda: [gcm.update(logits, tg[None]) for _ in range(n)], r, sync) / n
        result["cuda_torchmetrics_ms"] = median_ms(lambda: [tmg.update(pg, tg) for _ in range(n)], r, sync) / n
        result["cuda_speedup_vs_torchmetrics"] = result["cuda_torchmetrics_ms"] / result["cuda_update_ms"]
        result["device"] = f"cpu + {torch.cuda.get_device_name(0)}"

    print(f"confusion-matrix update, one {args.height}x{args.width} frame, {K} classes, ~10% ignore, "
          f"{os.cpu_count()} CPU cores, median of {r} (interleaved), load average {os.getloadavg()[0]:.2f}")
    print(f"  seg_utils ConfusionMatrix    {times['ours_ms']:8.2f} ms   (uint8 maps: {times['ours_uint8_ms']:.2f} ms, "
          f"one thread: {times['ours_1thread_ms']:.2f} ms)")
    print(f"  np.bincount + boolean mask   {times['numpy_bincount_ms']:8.2f} ms   "
          f"-> {result['speedup_vs_numpy_bincount']:.1f}x")
    print(f"  torchmetrics                 {times['torchmetrics_ms']:8.2f} ms   "
          f"-> {result['speedup_vs_torchmetrics']:.1f}x")
    print(f"  scikit-learn                 {times['sklearn_ms']:8.2f} ms   -> {result['speedup_vs_sklearn']:.1f}x")
    if "cuda_update_ms" in result:
        print(f"  CUDA: ConfusionMatrix {result['cuda_update_ms']:.3f} ms/frame "
              f"(from fp16 logits {result['cuda_update_logits_ms']:.3f} ms), "
              f"torchmetrics {result['cuda_torchmetrics_ms']:.3f} ms/frame")
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}))


if __name__ == "__main__":
    main()
