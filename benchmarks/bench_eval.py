"""Evaluation throughput at full resolution, and the share of that time spent computing metrics.

On full-size 1024x2048 synthetic val frames: each frame is decoded, predicted whole at native
resolution (batch 1; autocast and channels_last on CUDA) and added to a ConfusionMatrix on the
model's device. Model time and metric time are measured apart (synchronising only here, for the
clock). The last line is JSON with device, frames_per_s, metric_share (target <= 0.03) and the 1-minute load
average (other processes share the cores: compare shares within one run).

    python benchmarks/bench_eval.py [--frames 3] [--output-stride 8|16]
    python benchmarks/bench_eval.py --tiny     # 1 frame of 64x128, output stride 16: checks the script
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=None, help="val frames (default: 3 on CPU, 20 on CUDA)")
    parser.add_argument("--output-stride", type=int, default=None, choices=[8, 16],
                        help="default: 8 (the published setting) on CUDA, 16 on CPU")
    parser.add_argument("--size", default="1024x2048")
    parser.add_argument("--tiny", action="store_true", help="1 frame of 64x128, output stride 16")
    args = parser.parse_args(argv)
    if args.tiny:
        args.frames, args.size, args.output_stride = 1, "64x128", 16
    height, width = (int(v) for v in args.size.split("x"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    frames = args.frames or (20 if cuda else 3)
    output_stride = args.output_stride or (8 if cuda else 16)

    from seg_utils import CityscapesDataset
    from seg_utils.device import configure, memory_format
    from seg_utils.inference import predict
    from seg_utils.metrics import ConfusionMatrix
    from seg_utils.model import build_model
    from seg_utils.synthetic import write_synthetic_cityscapes

    torch.manual_seed(0)
    configure(device)  # cudnn.benchmark and TF32 on CUDA, as inference.load_model does
    model = build_model(num_classes=19, weights=None, aux_loss=False, output_stride=output_stride)
    model = model.to(device, memory_format=memory_format(device)).eval()
    confusion = ConfusionMatrix(19, device=device)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_synthetic_cityscapes(Path(tmp) / "cs", train=0, val=frames, test=0, size=(height, width))
        val = CityscapesDataset(root, "val")
        image, target = val[0]  # warm-up (cudnn autotuning, allocator)
        confusion.update(pred=predict(model, image[None].to(device)), target=target[None].to(device))
        confusion.reset()
        load_s = model_s = metric_s = 0.0
        for i in range(frames):
            t0 = time.perf_counter()
            image, target = val[i]
            image, target = image[None].to(device), target[None].to(device)
            _sync(device)
            t1 = time.perf_counter()
            prediction = predict(model, image)
            _sync(device)
            t2 = time.perf_counter()
            confusion.update(pred=prediction, target=target)
            _sync(device)
            t3 = time.perf_counter()
            load_s, model_s, metric_s = load_s + t1 - t0, model_s + t2 - t1, metric_s + t3 - t2
        miou = confusion.compute()["miou"]  # computed, so the counts are real; an untrained model scores ~0
    total = load_s + model_s + metric_s
    result = {
        "device": torch.cuda.get_device_name() if cuda else f"cpu ({torch.get_num_threads()} threads)",
        "frame": f"{height}x{width}", "output_stride": output_stride, "frames": frames,
        "frames_per_s": round(frames / total, 4),
        "model_ms_per_frame": round(1000 * model_s / frames, 2),
        "metric_ms_per_frame": round(1000 * metric_s / frames, 3),
        "load_ms_per_frame": round(1000 * load_s / frames, 2),
        "metric_share": round(metric_s / total, 5),
        "untrained_miou": round(float(miou), 4), "tiny": args.tiny, "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    print(f"{frames} frames of {height}x{width} on {result['device']}: {result['frames_per_s']} frames/s")
    print(f"  model {result['model_ms_per_frame']} ms, metrics {result['metric_ms_per_frame']} ms, "
          f"loading {result['load_ms_per_frame']} ms per frame; metric share {100 * metric_s / total:.2f}%")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
