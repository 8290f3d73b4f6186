"""Training throughput of the engine's settings against an fp32 baseline written like the original script.

    python benchmarks/bench_train.py                      # GPU: 512x1024, batch 8, OS8; CPU: 128x256, batch 2, OS16
    python benchmarks/bench_train.py --crop 256x512 --batch 4 --steps 10

Both variants train the same DeepLabV3-ResNet50 (random init, same loss: CE + 0.4 x aux CE, SGD) on
random images in the same process, one after the other, with warm-up steps before the timed ones:

* ``engine``: what seg_utils.engine does on this device. CUDA: autocast bf16 (fp16 + GradScaler where bf16
  is missing), channels_last, cudnn.benchmark. CPU: fp32, channels_last only with ``--cpu-channels-last``
  (the engine's default on CPU is contiguous; this flag measures the other choice).
* ``baseline``: fp32, contiguous tensors, cudnn.benchmark off, as the original script trained.

Prints one line per variant, then a JSON line: device, img_per_s, baseline_img_per_s,
speedup_vs_fp32_baseline, peak_mem_mb (CUDA: max_memory_allocated of the engine variant; CPU: the process's
ru_maxrss, which covers both variants) and, on CUDA, tflops (FLOPs of one training step counted by
FlopCounterMode, divided by the engine variant's step time).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seg_utils.engine import compute_loss  # noqa: E402
from seg_utils.model import build_model  # noqa: E402


def _size(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_variant(device: torch.device, crop: tuple[int, int], batch: int, output_stride: int, steps: int, warmup: int,
                amp_dtype: torch.dtype | None, channels_last: bool, cudnn_benchmark: bool,
                count_flops: bool = False) -> dict:
    """Return img/s, step time, peak memory (and FLOPs per step) of ``steps`` timed training steps."""
    torch.backends.cudnn.benchmark = cudnn_benchmark
    torch.manual_seed(0)
    model = build_model(19, weights=None, output_stride=output_stride).to(device).train()
    memory = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    criterion = nn.CrossEntropyLoss(ignore_index=255)
    images = torch.randn(batch, 3, *crop, device=device).contiguous(memory_format=memory)
    targets = torch.randint(0, 19, (batch, *crop), device=device)

    def step() -> None:
        ctx = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else torch.autocast(
            device.type, enabled=False)
        with ctx:
            outputs = model(images)
        loss = compute_loss(outputs, targets, criterion, 0.4)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(warmup):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    seconds = (time.perf_counter() - start) / steps
    result = {"img_per_s": batch / seconds, "step_s": seconds}
    if device.type == "cuda":
        result["peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    if count_flops:
        counter = FlopCounterMode(display=False)
        with counter:
            step()
        result["flops_per_step"] = int(counter.get_total_flops())
    return result


def main(argv: list[str] | None = None) -> dict:
    """Measure both variants; print a line each and the JSON summary last; return the summary."""
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--crop", type=_size, default=None, help="HxW (default 512x1024 on GPU, 128x256 on CPU)")
    parser.add_argument("--batch", type=int, default=None, help="default 8 on GPU, 2 on CPU")
    parser.add_argument("--output-stride", type=int, default=None, choices=[8, 16], help="default 8 GPU, 16 CPU")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 20 GPU, 5 CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5 GPU, 2 CPU)")
    parser.add_argument("--cpu-channels-last", action="store_true", help="CPU: engine variant in channels_last")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    crop = args.crop or ((512, 1024) if gpu else (128, 256))
    batch = args.batch or (8 if gpu else 2)
    stride = args.output_stride or (8 if gpu else 16)
    steps = args.steps or (20 if gpu else 5)
    warmup = args.warmup if args.warmup is not None else (5 if gpu else 2)

    if gpu:
        amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        engine_cfg = dict(amp_dtype=amp, channels_last=True, cudnn_benchmark=True)
    else:
        amp = None
        engine_cfg = dict(amp_dtype=None, channels_last=args.cpu_channels_last, cudnn_benchmark=False)
    common = dict(device=device, crop=crop, batch=batch, output_stride=stride, steps=steps, warmup=warmup)

    baseline = run_variant(**common, amp_dtype=None, channels_last=False, cudnn_benchmark=False)
    print(f"baseline (fp32, contiguous): {baseline['img_per_s']:.2f} img/s, {baseline['step_s']:.3f} s/step",
          flush=True)
    if gpu:
        torch.cuda.empty_cache()  # the baseline's model is gone; start the engine variant from a clean cache
    ours = run_variant(**common, **engine_cfg, count_flops=gpu)
    label = f"engine ({'amp ' + str(amp).removeprefix('torch.') if amp else 'fp32'}, " \
            f"{'channels_last' if engine_cfg['channels_last'] else 'contiguous'})"
    print(f"{label}: {ours['img_per_s']:.2f} img/s, {ours['step_s']:.3f} s/step", flush=True)

    summary = {
        "device": torch.cuda.get_device_name(device) if gpu else f"cpu ({torch.get_num_threads()} threads)",
        "crop": list(crop), "batch": batch, "output_stride": stride, "steps": steps,
        "engine_settings": label,
        "img_per_s": round(ours["img_per_s"], 3),
        "baseline_img_per_s": round(baseline["img_per_s"], 3),
        "speedup_vs_fp32_baseline": round(ours["img_per_s"] / baseline["img_per_s"], 3),
    }
    if gpu:
        summary["peak_mem_mb"] = round(ours["peak_mem_mb"], 1)
        summary["baseline_peak_mem_mb"] = round(baseline["peak_mem_mb"], 1)
        summary["tflops"] = round(ours["flops_per_step"] / ours["step_s"] / 1e12, 2)
        summary["baseline_tflops"] = round(ours["flops_per_step"] / baseline["step_s"] / 1e12, 2)
    else:
        summary["peak_mem_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
