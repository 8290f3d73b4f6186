"""Training throughput, one factor at a time: fp32 -> TF32 -> mixed precision -> channels_last -> torch.compile.

    python benchmarks/bench_train.py                      # GPU: 512x1024, batch 8, OS8; CPU: 128x256, batch 2, OS16
    python benchmarks/bench_train.py --crop 256x512 --batch 4 --steps 10 [--compile]
    python benchmarks/bench_train.py --tiny               # 32x64 crops, batch 2, OS16, 1 step each: checks the script

Every variant runs the engine's own ``train_step`` (forward under autocast, CE + 0.4 x aux CE, backward, the
engine's fused SGD step) on the same DeepLabV3-ResNet50 (random init) and random images, one variant after
the other in this process, each with untimed warm-up steps (cuDNN autotuning, allocator, compilation) before
the timed ones. Each variant adds one setting to the one before it:

* ``fp32``: float32 with TF32 forbidden: the true float32 baseline.
* ``tf32``: TF32 tensor cores for float32 matmuls and convolutions (Ampere and newer).
* ``amp``: autocast in ``device.autocast_dtype`` (bf16 on capability >= 8.0, fp16 + GradScaler before).
* ``amp+channels_last``: NHWC activations, the layout tensor-core convolutions want: the engine's setting.
* ``amp+channels_last+compile``: ``torch.compile`` of the model (``--compile``; minutes of compilation).

On a CPU ``fp32``, ``fp32+channels_last`` and ``bf16`` (autocast; fast only where the CPU computes bf16
natively, AVX512-BF16 or AMX: ``device.cpu_native_bf16``) are measured, and ``bf16_over_fp32`` is their ratio:
the engine trains in ``bf16`` on such a CPU and in ``fp32`` on others.

The optimizer step alone is measured too, on the model's weights with random gradients: SGD (the recipe) and
AdamW (the demo), each as torch's default for the device (a loop over the weight tensors on a CPU, ``foreach``
on CUDA) and ``fused`` (the engine's, ``optim.make_optimizer``): ``optimizer_step_ms`` and ``fused_speedup``.

The JSON line (last) holds img/s per variant, each variant's speed-up over ``fp32``,
``speedup_vs_fp32_baseline`` of the engine's setting, peak memory of the engine's setting and, on CUDA,
TFLOP/s (FLOPs of one step counted by FlopCounterMode), and the 1-minute load average (other processes share
the cores: compare ratios within one run).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seg_utils.config import TrainConfig  # noqa: E402
from seg_utils.device import cpu_native_bf16, grad_scaler, resolve_amp, set_tf32  # noqa: E402
from seg_utils.engine import train_step  # noqa: E402
from seg_utils.model import build_model  # noqa: E402
from seg_utils.optim import make_optimizer  # noqa: E402

# name -> (tf32, amp, channels_last, compile): each adds one setting to the one before.
GPU_VARIANTS = {
    "fp32": (False, False, False, False),
    "tf32": (True, False, False, False),
    "amp": (True, True, False, False),
    "amp+channels_last": (True, True, True, False),
    "amp+channels_last+compile": (True, True, True, True),
}
CPU_VARIANTS = {
    "fp32": (False, False, False, False),
    "fp32+channels_last": (False, False, True, False),
    "bf16": (False, True, False, False),
}
ENGINE_VARIANT = {"cuda": "amp+channels_last", "cpu": "bf16" if cpu_native_bf16() else "fp32"}


def _size(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_step_flops(device: torch.device, crop: tuple[int, int], batch: int, output_stride: int) -> int:
    """Return the FLOPs of one training step (forward and backward; FlopCounterMode counts a multiply-add as 2)."""
    torch.manual_seed(0)
    model = build_model(19, weights=None, output_stride=output_stride).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(batch, 3, *crop, device=device)
    targets = torch.randint(0, 19, (batch, *crop), device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        train_step(model, images, targets, optimizer, grad_scaler(device, None), nn.CrossEntropyLoss(ignore_index=255))
    del model, optimizer
    return int(counter.get_total_flops())


def run_variant(device: torch.device, crop: tuple[int, int], batch: int, output_stride: int, steps: int, warmup: int,
                tf32: bool, amp: bool, channels_last: bool, compile: bool = False) -> dict:
    """Return img/s, seconds per step and peak memory of ``steps`` timed training steps with these settings."""
    set_tf32(tf32)
    torch.backends.cudnn.benchmark = device.type == "cuda"  # fixed crop size: the engine's setting
    dtype = resolve_amp(device, True) if amp else None  # the GPU's dtype; bf16 on any CPU
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(0)
    model = build_model(19, weights=None, output_stride=output_stride).to(device, memory_format=fmt).train()
    optimizer, _ = make_optimizer(model, TrainConfig())  # the recipe's SGD, as the engine builds it
    net = torch.compile(model) if compile else model
    scaler = grad_scaler(device, dtype)
    criterion = nn.CrossEntropyLoss(ignore_index=255)
    images = torch.randn(batch, 3, *crop, device=device).contiguous(memory_format=fmt)
    targets = torch.randint(0, 19, (batch, *crop), device=device)

    start = time.perf_counter()
    for _ in range(warmup):
        train_step(net, images, targets, optimizer, scaler, criterion, 0.4, dtype)
    _sync(device)
    warmup_s = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        loss = train_step(net, images, targets, optimizer, scaler, criterion, 0.4, dtype)
    _sync(device)
    seconds = (time.perf_counter() - start) / steps
    result = {"img_per_s": batch / seconds, "step_s": seconds, "warmup_s": warmup_s, "loss": float(loss)}
    if device.type == "cuda":
        result["peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    del net, model, optimizer, images, targets
    if device.type == "cuda":
        torch.cuda.empty_cache()
    set_tf32(True)
    return result


def measure_optimizer_step(device: torch.device, output_stride: int, steps: int) -> dict[str, float]:
    """Return the median ms of one optimizer step over the model's weights (random gradients), for SGD and
    AdamW each in torch's default implementation for the device and fused."""
    torch.manual_seed(0)
    params = list(build_model(19, weights=None, output_stride=output_stride).to(device).parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    optimizers = {"sgd": (torch.optim.SGD, {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}),
                  "adamw": (torch.optim.AdamW, {"lr": 1e-3, "weight_decay": 0.01})}
    result = {}
    for name, (cls, settings) in optimizers.items():
        for impl, fused in (("default", None), ("fused", True)):
            optimizer = cls(params, fused=fused, **settings)
            optimizer.step()  # the first step allocates the state
            times = []
            for _ in range(steps):
                _sync(device)
                start = time.perf_counter()
                optimizer.step()
                _sync(device)
                times.append(time.perf_counter() - start)
            result[f"{name}_{impl}"] = 1000 * sorted(times)[len(times) // 2]
            del optimizer
    return result


def measure(device: torch.device, crop: tuple[int, int], batch: int, output_stride: int, steps: int, warmup: int,
            compile: bool = False, log=print, optimizer_steps: int | None = None) -> dict:
    """Return the summary dict of every variant for this device (the JSON line of this script);
    ``optimizer_steps`` timed steps of each optimizer (default: ``steps``, at least 5)."""
    gpu = device.type == "cuda"
    variants = GPU_VARIANTS if gpu else CPU_VARIANTS
    results = {}
    for name, (tf32, amp, channels_last, compiled) in variants.items():
        if compiled and not compile:
            continue
        # fp32 steps are slow on a GPU; fewer of them measure it as well.
        n = max(2, steps // 2) if (gpu and not amp) else steps
        results[name] = run_variant(device, crop, batch, output_stride, n, warmup, tf32, amp, channels_last, compiled)
        r = results[name]
        log(f"{name:28s} {r['img_per_s']:8.2f} img/s  {1000 * r['step_s']:8.1f} ms/step  "
            f"(warm-up {r['warmup_s']:.1f} s)", flush=True)
    steps_ms = measure_optimizer_step(device, output_stride, optimizer_steps or max(steps, 5))
    log("optimizer step (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in steps_ms.items()), flush=True)
    engine = ENGINE_VARIANT[device.type]
    base = results["fp32"]["img_per_s"]
    summary = {
        "device": torch.cuda.get_device_name(device) if gpu else f"cpu ({torch.get_num_threads()} threads)",
        "crop": list(crop), "batch": batch, "output_stride": output_stride, "steps": steps,
        "engine_settings": engine,
        "img_per_s": {name: round(r["img_per_s"], 3) for name, r in results.items()},
        "speedup_vs_fp32": {name: round(r["img_per_s"] / base, 3) for name, r in results.items()},
        "speedup_vs_fp32_baseline": round(results[engine]["img_per_s"] / base, 3),
        "optimizer_step_ms": {name: round(ms, 1) for name, ms in steps_ms.items()},
        "fused_speedup": {name: round(steps_ms[f"{name}_default"] / steps_ms[f"{name}_fused"], 2)
                          for name in ("sgd", "adamw")},
    }
    if gpu:
        flops = count_step_flops(device, crop, batch, output_stride)
        summary["tflop_per_step"] = round(flops / 1e12, 3)
        summary["tflops"] = {name: round(flops / r["step_s"] / 1e12, 1) for name, r in results.items()}
        summary["peak_mem_mb"] = round(results[engine]["peak_mem_mb"], 1)
    else:
        summary["cpu_native_bf16"] = cpu_native_bf16()
        summary["bf16_over_fp32"] = round(results["bf16"]["img_per_s"] / base, 3)
        summary["peak_mem_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    summary["load_avg_1min"] = round(os.getloadavg()[0], 2)
    return summary


def main(argv: list[str] | None = None) -> dict:
    """Measure every variant; print a line each and the JSON summary last; return the summary."""
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--crop", type=_size, default=None, help="HxW (default 512x1024 on GPU, 128x256 on CPU)")
    parser.add_argument("--batch", type=int, default=None, help="default 8 on GPU, 2 on CPU")
    parser.add_argument("--output-stride", type=int, default=None, choices=[8, 16], help="default 8 GPU, 16 CPU")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 10 GPU, 5 CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3 GPU, 2 CPU)")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile (slow to compile)")
    parser.add_argument("--tiny", action="store_true", help="32x64 crops, batch 2, OS16, 1 step per variant")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    if args.tiny:
        summary = measure(device, (32, 64), 2, 16, 1, 0, compile=False, optimizer_steps=1)
    else:
        summary = measure(device, args.crop or ((512, 1024) if gpu else (128, 256)), args.batch or (8 if gpu else 2),
                          args.output_stride or (8 if gpu else 16), args.steps or (10 if gpu else 5),
                          args.warmup if args.warmup is not None else (3 if gpu else 2), compile=args.compile)
    summary["tiny"] = args.tiny
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
