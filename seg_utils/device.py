"""Device and precision: the one place that decides where tensors live and in which precision they compute.

Training, validation, inference, the benchmarks and the notebooks all ask this module, so a GPU generation is
handled the same way everywhere:

* ``pick_device``: this process's GPU, with its index (``LOCAL_RANK`` under torchrun), else the CPU.
* ``autocast_dtype``: bfloat16 on compute capability 8.0 and newer (A100, RTX 30/40, H100), float16 (with a
  gradient scaler) on older GPUs (T4, V100), None (float32) on a CPU: training, validation and prediction on a
  GPU. ``torch.cuda.is_bf16_supported()`` is not the test: it says True on 7.x too, where bf16 is emulated and
  cuDNN has no bf16 convolutions.
* ``resolve_amp``: a training run's dtype: ``autocast_dtype``, and on a CPU that computes bfloat16 natively
  (AVX512-BF16 or AMX: ``cpu_native_bf16``) bfloat16: faster than float32 there
  (bench_train.py's bf16_over_fp32), with the demo's val mIoU within a point (docs/demo-options.md). Without
  native bf16, CPU autocast emulates it and is slower than float32.
  Prediction on a CPU stays float32. ``precision_reason`` says which precision training gets, and why.
* ``grad_scaler``: on for float16 only (bf16 has float32's exponent range, so gradients do not underflow).
* ``configure``: cuDNN autotuning and TF32 for the float32 parts on a GPU.
* ``memory_format``: ``channels_last`` on a GPU (the layout tensor-core convolutions want), contiguous on a
  CPU (see ``benchmarks/bench_train.py``).
* ``to_device``: a batch as the data loaders send it (uint8 images, uint8 labels: 4 bytes a pixel instead of
  float32 and int64's 20, 5x less shared memory) onto the device, then normalised and widened there.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os

import torch

from .transforms import normalize_batch

__all__ = [
    "model_device",
    "pick_device",
    "autocast_dtype",
    "cpu_native_bf16",
    "precision_reason",
    "resolve_amp",
    "autocast",
    "grad_scaler",
    "configure",
    "set_tf32",
    "memory_format",
    "to_device",
    "describe",
    "cpu_cores",
    "local_processes",
    "default_num_workers",
    "worker_context",
]

# Compute capability from which a GPU computes bfloat16 natively (Ampere).
BF16_CAPABILITY = (8, 0)


def cpu_cores() -> int:
    """Return the number of CPU cores this process may run on (its affinity mask: what a container grants)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def local_processes() -> int:
    """Return how many processes of this job share this machine (torchrun's ``LOCAL_WORLD_SIZE``, else 1)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", 1))


def default_num_workers(processes: int | None = None, cores: int | None = None, most: int = 16,
                        reserve: int = 2) -> int:
    """Return data-loader workers per process: this machine's usable cores shared among ``processes`` (None:
    ``local_processes()``), ``reserve`` left to each process (training: its Python loop and its pin-memory
    thread), at most ``most`` (beyond that workers only add memory).

    Decoding the two PNGs of a full frame is most of a sample's cost, so a GPU is fed by cores: on one H200
    with 16 cores, 14 workers delivered 109 img/s of 512x1024 crops where 8 gave 64 and the model trains at 99
    (bf16, channels_last; docs/gpu.md). On 2 cores this gives 0: the training process loads its own batches.
    """
    processes = local_processes() if processes is None else processes
    cores = cpu_cores() if cores is None else cores
    return max(0, min(most, cores // max(processes, 1) - reserve))


def worker_context() -> multiprocessing.context.BaseContext | None:
    """Return how data-loader workers start: ``forkserver`` where the platform has it, else Python's default.

    A plain ``fork`` copies a process that already runs threads (PyTorch's intra-op pool, CUDA's, a notebook
    kernel's, the prediction writer's); a lock one of them held is copied locked and never released in the
    child, so a worker can hang (Python 3.12 warns "use of fork() may lead to deadlocks"). The fork server is a
    fresh, single-threaded process that forks the workers, so that cannot happen; and it imports torch, OpenCV
    and the loaders once, for every worker after it. Measured on 2 CPU cores, 2 workers, first batch: fork
    0.1 s, forkserver 1.7-2.1 s, spawn 1.8-3.6 s (spawn imports everything again in each worker). Workers
    persist for the whole run, so this is paid once per loader.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return None  # Windows: spawn, Python's only choice there
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "cv2", "seg_utils.loaders", "seg_utils.predictions"])
    return context


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """Return the device to use, always with an index on CUDA.

    None: this process's GPU when CUDA is available (``LOCAL_RANK``, set by torchrun, picks among several),
    else the CPU. ``"cuda"`` without an index: the same GPU (never an index-less device, which
    ``torch.cuda.set_device`` and DistributedDataParallel refuse).
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        local = os.environ.get("LOCAL_RANK")
        index = int(local) % torch.cuda.device_count() if local is not None else torch.cuda.current_device()
        device = torch.device("cuda", index)
    return device


def cpu_native_bf16() -> str | None:
    """Return the instruction set with which this CPU computes bfloat16 natively, as torch reports it ("AMX",
    "AVX512-BF16"), or None (then bf16 autocast is emulated and slower than float32)."""
    capabilities = getattr(torch.cpu, "get_capabilities", None)  # public from torch 2.10
    if capabilities is not None:
        found = capabilities()
        amx, avx512 = found.get("amx_bf16", False), found.get("avx512_bf16", False)
    else:
        amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
        avx512 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return "AMX" if amx else "AVX512-BF16" if avx512 else None


def autocast_dtype(device: str | torch.device) -> torch.dtype | None:
    """Return the mixed-precision dtype for ``device``: bfloat16 (capability >= 8.0), float16 (older GPUs) or
    None (the CPU: float32; for training see ``resolve_amp``)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    capability = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if tuple(capability) >= BF16_CAPABILITY else torch.float16


# What autocast means, for the notebooks' first line (a reader meets it there before notebook 03 explains it).
_AUTOCAST = "most arithmetic in 16-bit floats, explained in notebook 03"


def precision_reason(device: str | torch.device) -> str:
    """Return the default training precision on ``device`` and why, in a few words (the notebooks' first line)."""
    device = torch.device(device)
    dtype = resolve_amp(device)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return (f"{str(dtype).removeprefix('torch.')} autocast ({_AUTOCAST}; a GPU of compute capability "
                f"{major}.{minor}, bf16 from 8.0)")
    if dtype is not None:
        return f"training in bfloat16 autocast ({_AUTOCAST}; this CPU computes bf16 natively: {cpu_native_bf16()})"
    return "training in float32 (this CPU has no native bfloat16: AVX512-BF16 or AMX)"


def resolve_amp(device: str | torch.device, amp: bool | None = None) -> torch.dtype | None:
    """Return the autocast dtype for a training run: ``amp`` None = the default (``autocast_dtype`` on a GPU;
    bfloat16 on a CPU with native bf16, else float32); False = float32; True = the device's dtype, and bfloat16 on
    any CPU (fast only with native bf16)."""
    if amp is False:
        return None
    device = torch.device(device)
    dtype = autocast_dtype(device)
    if device.type == "cpu" and (amp or cpu_native_bf16()):
        return torch.bfloat16
    return dtype


def autocast(device: str | torch.device, dtype: torch.dtype | None):
    """Return the autocast context for ``dtype`` on ``device`` (a no-op context for None: float32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def grad_scaler(device: str | torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """Return a GradScaler that is enabled for float16 only (a disabled one passes everything through)."""
    return torch.amp.GradScaler(torch.device(device).type, enabled=dtype == torch.float16)


def set_tf32(enabled: bool) -> None:
    """Allow (or forbid) TF32 tensor cores for float32 matmuls and convolutions (Ampere and newer)."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def configure(device: str | torch.device, benchmark: bool = True) -> None:
    """Set this process up for ``device``: on CUDA make it the current GPU, let cuDNN pick the fastest kernels
    for each input size (``benchmark``: right when sizes repeat, as fixed crops and frames do) and allow TF32
    for the float32 parts. Nothing changes on a CPU."""
    device = torch.device(device)
    if device.type != "cuda":
        return
    torch.cuda.set_device(device)
    torch.backends.cudnn.benchmark = benchmark
    set_tf32(True)


def memory_format(device: str | torch.device, channels_last: bool | None = None) -> torch.memory_format:
    """Return the memory format for images and the model: ``channels_last`` (None: on CUDA only)."""
    if channels_last is None:
        channels_last = torch.device(device).type == "cuda"
    return torch.channels_last if channels_last else torch.contiguous_format


def to_device(images: torch.Tensor, targets: torch.Tensor | None, device: torch.device,
              fmt: torch.memory_format = torch.contiguous_format) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Return a batch on ``device``: images (N, 3, H, W) normalised float32 in ``fmt``, targets (N, H, W) int64.

    uint8 images are copied as they are (non-blocking from pinned memory) and normalised on the device; float
    images are taken as already normalised. Targets are widened to int64 after the copy.
    """
    images = images.to(device, non_blocking=True)
    if images.dtype == torch.uint8:
        images = normalize_batch(images)
    images = images.contiguous(memory_format=fmt)
    if targets is not None:
        targets = targets.to(device, non_blocking=True).long()
    return images, targets


def describe(device: str | torch.device, dtype: torch.dtype | None = None) -> str:
    """Return a short account of a device and precision, e.g. 'cuda:0 (NVIDIA H100, capability 9.0), bfloat16'."""
    device = torch.device(device)
    text = str(device)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        text += f" ({torch.cuda.get_device_name(device)}, capability {major}.{minor})"
    precision = "float32" if dtype is None else str(dtype).removeprefix("torch.") + " autocast"
    return f"{text}, {precision}"


def model_device(model: torch.nn.Module) -> torch.device:
    """Return the device a model's weights are on, where its inputs go; the CPU for a model without torch weights
    (``export.OnnxModel``: ONNX Runtime reads its inputs there)."""
    weight = next(model.parameters(), None)
    return weight.device if weight is not None else torch.device("cpu")
