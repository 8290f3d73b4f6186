"""What this series reaches on one GPU, in one run of under 5 minutes: training speed by setting, memory, data
loading, inference and the accuracy cost of mixed precision.

    python benchmarks/gpu_check.py                # on a machine with a CUDA GPU
    python benchmarks/gpu_check.py --no-compile   # skip torch.compile (its compilation takes 1-2 minutes)
    python benchmarks/gpu_check.py --tiny         # tiny sizes, on a CPU too: checks the script (alias: --smoke)

Prints a line per measurement, then one JSON line with:

* ``device``, ``capability``, ``autocast_dtype`` (what ``seg_utils.device`` picks for it), ``torch``;
* ``matmul_tflops``: a large bf16 (fp16 before capability 8.0) matrix product: the ceiling this GPU reaches;
* ``train``: img/s at 512x1024, batch 8, output stride 8 for fp32 (TF32 off), TF32, AMP, AMP+channels_last
  and AMP+channels_last+torch.compile, each alone in this run (``benchmarks/bench_train.py``), the speed-ups
  over fp32, TFLOP/s and their share of ``matmul_tflops``;
* ``peak_mem_gb_batch2``: peak memory of a training step at batch 2 with the engine's settings (mmsegmentation
  reports 6.1 GB for its R-50-D8 at 2 crops per GPU);
* ``peak_mem_gb_by_crops``: "will it fit on my card?": the peak memory of the recipe's step (512x1024 crops,
  output stride 8, AMP, channels_last, aux head, fused SGD) at 1, 2, 4 and 8 crops per GPU (``docs/gpu.md``
  turns it into a table by card size; a size that does not fit this GPU is ``null``);
* ``loader_img_per_s``: the engine's training data loader (decode, scale/crop/flip, jitter, uint8 batches in
  pinned memory) with 8 workers and with the engine's default count (``recommended_workers``: the cores less
  two) on 1024x2048 synthetic frames; ``loader_over_model``: the default count's speed over the model's
  (target >= 1.3 on a GPU host, so that the model never waits for the loader);
* ``engine_img_per_s``: the engine's own ``train()`` on 1024x2048 frames at the recipe's crop, batch and
  output stride, after start-up (``history["img_per_s"]``); ``engine_over_model`` (target >= 0.95 on a GPU);
* ``inference_fps``: frames/s at 1024x2048 for whole-frame, sliding-window and multi-scale+flip prediction;
* ``video_fps``: frames/s of ``predict --images clip.mp4`` end to end (decode, predict, overlay, encode) on a
  60-frame clip of 1024x2048 frames;
* ``miou_fp32`` / ``miou_amp``: val mIoU of one short-trained checkpoint scored in fp32 and with autocast;
* ``tiny``, ``load_avg_1min`` (other processes may share the cores: compare ratios within one run) and ``seconds``.

``--tiny`` shrinks every size (64x128 frames, 32x64 crops, one step, one loader worker, a 2-frame clip) and leaves
out torch.compile, so that the whole script runs in seconds on a CPU (15 s on 2 cores measured); its figures mean
nothing, its keys are the full run's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_train  # noqa: E402

from seg_utils.cityscapes import find_samples  # noqa: E402
from seg_utils.config import TrainConfig  # noqa: E402
from seg_utils.device import (  # noqa: E402
    autocast_dtype,
    configure,
    cpu_cores,
    default_num_workers,
    describe,
    memory_format,
    pick_device,
    resolve_amp,
    set_tf32,
)
from seg_utils.engine import train, validate  # noqa: E402
from seg_utils.images import read_image  # noqa: E402
from seg_utils.inference import load_model, predict_logits  # noqa: E402
from seg_utils.loaders import make_loaders  # noqa: E402
from seg_utils.predictions import predict_video  # noqa: E402
from seg_utils.synthetic import write_synthetic_cityscapes  # noqa: E402
from seg_utils.video import write_video  # noqa: E402

# Dense tensor-core peaks from the vendors' datasheets (TFLOP/s), for reference beside the measured product.
DATASHEET_PEAK = {"H200": 989, "H100": 989, "A100": 312, "L4": 121, "A10": 125, "T4": 65, "V100": 125}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_tflops(device: torch.device, n: int, repeats: int = 10) -> float:
    """Return the TFLOP/s of an n x n x n matrix product in the device's autocast dtype (float32 on a CPU)."""
    dtype = autocast_dtype(device) or torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12


def peak_memory_gb(device: torch.device, crop: tuple[int, int], output_stride: int) -> float | None:
    """Return the peak GPU memory (GB) of training steps at batch 2 with the engine's settings."""
    if device.type != "cuda":
        return None
    result = bench_train.run_variant(device, crop, 2, output_stride, steps=2, warmup=2, tf32=True, amp=True,
                                     channels_last=True)
    return result["peak_mem_mb"] * 2**20 / 1e9


def memory_sweep(device: torch.device, crop: tuple[int, int], output_stride: int,
                 crops_per_gpu: tuple[int, ...] = (1, 2, 4, 8)) -> dict[str, float | None]:
    """Return the peak GPU memory (GB) of the engine's training step at each number of crops per GPU (None: it
    did not fit). Each size runs alone: the peak statistics are reset and the cache emptied between them."""
    if device.type != "cuda":
        return {}
    peaks: dict[str, float | None] = {}
    for n in crops_per_gpu:
        torch.cuda.empty_cache()
        try:
            result = bench_train.run_variant(device, crop, n, output_stride, steps=2, warmup=1, tf32=True, amp=True,
                                             channels_last=True)
            peaks[str(n)] = round(result["peak_mem_mb"] * 2**20 / 1e9, 2)
        except torch.OutOfMemoryError:
            peaks[str(n)] = None
        torch.cuda.empty_cache()
    return peaks


def loader_speed(root: Path, device: torch.device, crop: tuple[int, int], batch: int, workers: int,
                 batches: int) -> float:
    """Return the img/s of the engine's training loader (what reaches the GPU: uint8 batches, pinned)."""
    config = TrainConfig(data_root=root, crop_size=crop, batch_size=batch, num_workers=workers, weights="none")
    loader, _ = make_loaders(config, device=device)
    it = iter(loader)
    # Start-up, and the batches the workers prefetched meanwhile (4 each): timing starts once the loader
    # delivers at the rate it produces.
    for _ in range(workers * 5 if batches >= 20 else workers):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        images, _, _ = next(it)
        images.to(device, non_blocking=True)
    _sync(device)
    seconds = time.perf_counter() - start
    del it, loader
    return batches * batch / seconds


def inference_fps(model: torch.nn.Module, device: torch.device, size: tuple[int, int], frames: int,
                  crop: tuple[int, int]) -> dict[str, float]:
    """Return frames/s of whole-frame, sliding-window and multi-scale + flip prediction at ``size``."""
    image = torch.randint(0, 256, (1, 3, *size), dtype=torch.uint8)
    modes = {"whole": dict(mode="whole"), "slide": dict(mode="slide", crop=crop),
             "ms_flip": dict(mode="whole", scales=(0.75, 1.0, 1.25), flip=True)}
    out = {}
    for name, options in modes.items():
        predict_logits(model, image, **options)  # warm-up: cuDNN autotuning for these sizes
        _sync(device)
        start = time.perf_counter()
        for _ in range(frames):
            predict_logits(model, image, **options).argmax(1).cpu()
        out[name] = round(frames / (time.perf_counter() - start), 3)
    return out


def video_fps(model: torch.nn.Module, root: Path, tmp: Path, frames: int) -> float:
    """Return frames/s of ``predict_video`` end to end (decode, scale, predict, overlay, encode an MP4) on a clip of
    ``frames`` frames made of the synthetic val frames at their own size (the checkpoint's frame size: scale 1)."""
    pictures = [read_image(s.image_path) for s in find_samples(root, "val")]
    clip = tmp / "clip.mp4"
    write_video((pictures[i % len(pictures)] for i in range(frames)), clip, 30.0, pictures[0].shape[:2])
    start = time.perf_counter()
    info = predict_video(model, clip, tmp / "out" / "clip.mp4", "overlay", progress=False)
    return round(info.frames / (time.perf_counter() - start), 2)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    parser.add_argument("--tiny", "--smoke", dest="tiny", action="store_true",
                        help="tiny sizes, to check the script (CPU or GPU)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    device = pick_device()
    configure(device)
    gpu = device.type == "cuda"
    tiny = args.tiny
    crop, batch, stride = ((32, 64), 2, 16) if tiny else ((512, 1024), 8, 8)
    frame = (64, 128) if tiny else (1024, 2048)
    steps, warmup = (1, 0) if tiny else (10, 3)

    def log(*parts, **kwargs) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s]", *parts, flush=True)

    summary: dict = {"device": describe(device, autocast_dtype(device)), "torch": torch.__version__}
    if gpu:
        props = torch.cuda.get_device_properties(device)
        summary.update(name=props.name, capability=f"{props.major}.{props.minor}",
                       memory_gb=round(props.total_memory / 1e9, 1))
    summary["autocast_dtype"] = str(autocast_dtype(device)).removeprefix("torch.")
    summary["cores"] = cpu_cores()
    log(summary["device"])

    peak = matmul_tflops(device, 256 if tiny else 8192)
    summary["matmul_tflops"] = round(peak, 1)
    name = summary.get("name", "")
    sheet = next((v for k, v in DATASHEET_PEAK.items() if k in name), None)
    summary["datasheet_tflops"] = sheet
    log(f"matrix product ({summary['autocast_dtype']}): {peak:.0f} TFLOP/s (datasheet: {sheet})")

    # Training speed, one factor at a time.
    train_summary = bench_train.measure(device, crop, batch, stride, steps, warmup,
                                        compile=gpu and not args.no_compile and not tiny, log=log,
                                        optimizer_steps=1 if tiny else None)
    if gpu:
        train_summary["fraction_of_matmul_peak"] = {k: round(v / peak, 3) for k, v in train_summary["tflops"].items()}
    summary["train"] = train_summary
    engine_speed = train_summary["img_per_s"][bench_train.ENGINE_VARIANT[device.type]]
    summary["peak_mem_gb_batch2"] = peak_memory_gb(device, crop, stride)
    if summary["peak_mem_gb_batch2"] is not None:
        summary["peak_mem_gb_batch2"] = round(summary["peak_mem_gb_batch2"], 2)
        log(f"peak memory, batch 2, engine settings: {summary['peak_mem_gb_batch2']:.2f} GB")
    summary["peak_mem_gb_by_crops"] = memory_sweep(device, crop, stride)
    if summary["peak_mem_gb_by_crops"]:
        log(f"peak memory by crops per GPU ({crop[0]}x{crop[1]}, OS {stride}): {summary['peak_mem_gb_by_crops']}")

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        root = write_synthetic_cityscapes(Path(tmp) / "cs", train=2 if tiny else 12, val=1 if tiny else 4,
                                          test=0, size=frame, seed=0)
        log(f"synthetic set written ({time.perf_counter() - t0:.0f} s)")

        # Data loading against training speed.
        default = summary["recommended_workers"] = default_num_workers()
        summary["loader_img_per_s"] = {}
        for workers in [1] if tiny else sorted({8, default} - {0}):
            speed = loader_speed(root, device, crop, batch, workers, batches=2 if tiny else 30)
            summary["loader_img_per_s"][str(workers)] = round(speed, 1)
            log(f"data loader, {workers} workers: {speed:.1f} img/s (model: {engine_speed:.1f} img/s)")
        if str(default) in summary["loader_img_per_s"]:
            summary["loader_over_model"] = round(summary["loader_img_per_s"][str(default)] / engine_speed, 2)

        # A short training run: its checkpoint serves inference speed and the fp32-vs-AMP mIoU.
        run = Path(tmp) / "run"
        iters = 2 if tiny else 150
        t0 = time.perf_counter()
        history = train(TrainConfig(data_root=root, out_dir=run, iters=iters, crop_size=crop, batch_size=batch,
                                    warmup_iters=iters // 10, val_every=0, weights="none", output_stride=stride),
                        progress=False)
        summary["engine_img_per_s"] = history.get("img_per_s")
        if summary["engine_img_per_s"]:
            summary["engine_over_model"] = round(summary["engine_img_per_s"] / engine_speed, 3)
        log(f"short run: {iters} iterations in {time.perf_counter() - t0:.0f} s (with loader start-up); "
            f"after start-up {summary['engine_img_per_s']} img/s (model: {engine_speed:.1f} img/s)")
        model = load_model(run / "last.pt", device)
        summary["inference_fps"] = inference_fps(model, device, frame, 1 if tiny else 10, crop)
        log(f"inference at {frame[0]}x{frame[1]}, frames/s: {summary['inference_fps']}")
        summary["video_fps"] = video_fps(model, root, Path(tmp), 2 if tiny else 60)
        log(f"video at {frame[0]}x{frame[1]}, end to end (decode, predict, overlay, encode): "
            f"{summary['video_fps']} frames/s")

        _, val_loader = make_loaders(TrainConfig(data_root=root, weights="none", num_workers=0 if tiny else 2),
                                     device=device)
        channels_last = memory_format(device) == torch.channels_last
        scores = {}
        for label, amp in (("fp32", False), ("amp", True)):
            set_tf32(amp)  # the fp32 reference is true float32: no TF32
            scores[label] = validate(model, val_loader, device, dtype=resolve_amp(device, amp),
                                     fmt=memory_format(device, channels_last))["miou"]
        set_tf32(True)
        summary["miou_fp32"] = round(100 * scores["fp32"], 3)
        summary["miou_amp"] = round(100 * scores["amp"], 3)
        summary["miou_amp_minus_fp32_points"] = round(100 * (scores["amp"] - scores["fp32"]), 3)
        log(f"val mIoU of the short run: fp32 {summary['miou_fp32']:.2f}%, amp {summary['miou_amp']:.2f}%")

    summary.update(tiny=tiny, load_avg_1min=round(os.getloadavg()[0], 2))
    summary["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
