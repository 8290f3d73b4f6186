"""The CUDA path, on a real GPU: `pytest -m cuda` (skipped, with its reason, on a machine without one).

Mixed-precision training with the engine's settings, a resume, prediction and evaluation on the GPU, and
every notebook run under nbval with the GPU as its device. The series' tests never need a GPU;
these are the checks a GPU session runs (with benchmarks/gpu_check.py).
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from seg_utils.checkpoint import load_checkpoint
from seg_utils.config import TrainConfig
from seg_utils.device import autocast_dtype, grad_scaler, pick_device
from seg_utils.engine import train, train_step
from seg_utils.evaluation import evaluate_predictions
from seg_utils.inference import load_model
from seg_utils.model import build_model
from seg_utils.official import official_evaluate
from seg_utils.predictions import predict_split

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def gpu_run(synthetic_root, module_tmp) -> tuple[TrainConfig, dict]:
    """20 iterations on the GPU with the engine's defaults there (autocast, channels_last, 2 workers)."""
    cfg = TrainConfig(data_root=synthetic_root, out_dir=module_tmp("gpu-run"), iters=20,
                      crop_size=(64, 128), batch_size=4, warmup_iters=2, val_every=10, output_stride=16,
                      weights="none", num_workers=2, lr=0.02)
    return cfg, train(cfg, progress=False)


def test_amp_training_learns_on_the_gpu(gpu_run):
    cfg, history = gpu_run
    assert history["iter"] == list(range(1, 21)) and all(math.isfinite(v) for v in history["loss"])
    assert np.mean(history["loss"][-5:]) < np.mean(history["loss"][:5]), history["loss"]
    state = load_checkpoint(Path(cfg.out_dir) / "last.pt")
    assert state["iteration"] == 20 and len(history["val_miou"]) == 2
    # a GradScaler only where the GPU has no bf16 (its state is saved for the resume)
    assert bool(state["scaler"]) == (autocast_dtype(pick_device()) is torch.float16)


def test_a_train_step_never_waits_for_the_gpu():
    device = pick_device()
    dtype = autocast_dtype(device)
    if dtype is not torch.bfloat16:
        pytest.skip("float16 needs a GradScaler, which reads its overflow flag on the host at every step")
    torch.manual_seed(0)
    model = build_model(19, weights=None, output_stride=16).to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler, criterion = grad_scaler(device, dtype), torch.nn.CrossEntropyLoss(ignore_index=255)
    images = torch.randn(2, 3, 64, 128, device=device).contiguous(memory_format=torch.channels_last)
    targets = torch.randint(0, 19, (2, 64, 128), device=device)
    train_step(model, images, targets, optimizer, scaler, criterion, 0.4, dtype)  # warm-up: allocations
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any device-to-host wait raises
    try:
        loss = train_step(model, images, targets, optimizer, scaler, criterion, 0.4, dtype)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert loss.device.type == "cuda" and math.isfinite(float(loss))


def test_resume_on_the_gpu_follows_the_same_course(gpu_run, tmp_path):
    cfg, straight = gpu_run
    out = tmp_path / "resumed"
    train(dataclasses.replace(cfg, out_dir=out, stop_at=10), progress=False)
    resumed = train(dataclasses.replace(cfg, out_dir=out, resume=True), progress=False)
    assert resumed["iter"] == list(range(1, 21))
    # Not bit for bit: on CUDA, bilinear upsampling's backward adds with atomics and cuDNN autotuning may pick
    # other kernels, so two runs differ in the last bits and drift a little (exact resume is shown on the CPU).
    np.testing.assert_allclose(resumed["loss"], straight["loss"], rtol=0.1)


def test_predict_and_evaluate_on_the_gpu(gpu_run, synthetic_root, tmp_path):
    cfg, _ = gpu_run
    checkpoint = Path(cfg.out_dir) / "best.pt"
    on_gpu = predict_split(load_model(checkpoint, "cuda"), synthetic_root, "val", tmp_path / "gpu", progress=False)
    on_cpu = predict_split(load_model(checkpoint, "cpu"), synthetic_root, "val", tmp_path / "cpu", progress=False)
    same = total = 0
    for a, b in zip(sorted(on_gpu), sorted(on_cpu)):
        pa, pb = cv2.imread(str(a), cv2.IMREAD_UNCHANGED), cv2.imread(str(b), cv2.IMREAD_UNCHANGED)
        same, total = same + int((pa == pb).sum()), total + pa.size
    assert same / total > 0.98, same / total  # autocast vs float32: only near-ties may flip
    ours = evaluate_predictions(synthetic_root, "val", tmp_path / "gpu")
    official = official_evaluate(synthetic_root, "val", tmp_path / "gpu")
    assert ours["miou"] == pytest.approx(official["averageScoreClasses"], abs=1e-9)


def test_every_notebook_runs_on_the_gpu(tmp_path):
    env = {**os.environ, "SEG_WORKSPACE": str(tmp_path)}  # their runs and data go to a temporary folder
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *map(str, NOTEBOOKS)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
