"""The one place for device and precision: the autocast dtype by compute capability, device indices, batches
sent as uint8 and finished on the device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seg_utils import device as dev
from seg_utils.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize, normalize_batch


@pytest.mark.parametrize(("capability", "expected"), [
    ((6, 1), torch.float16),  # Pascal (GTX 10xx, P100): no bf16
    ((7, 0), torch.float16),  # V100: bf16 only emulated, no bf16 convolutions in cuDNN
    ((7, 5), torch.float16),  # T4 (Colab, Kaggle), RTX 20xx
    ((8, 0), torch.bfloat16),  # A100
    ((8, 9), torch.bfloat16),  # RTX 40xx, L4
    ((9, 0), torch.bfloat16),  # H100, H200
])
def test_autocast_dtype_follows_compute_capability(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    # What the old test said (is_bf16_supported is True on 7.x) must not matter.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    cuda = torch.device("cuda", 0)
    assert dev.autocast_dtype(cuda) is expected
    assert dev.resolve_amp(cuda) is expected and dev.resolve_amp(cuda, True) is expected
    assert dev.resolve_amp(cuda, False) is None
    # the gradient scaler is for float16 only (here on the CPU: a CUDA scaler disables itself without a GPU)
    assert dev.grad_scaler("cpu", expected).is_enabled() == (expected is torch.float16)


@pytest.mark.parametrize("flags, native", [
    ({"avx512_bf16": True}, "AVX512-BF16"),  # AMD Zen 4 and newer, Intel Cooper Lake
    ({"amx_bf16": True, "avx512_bf16": True}, "AMX"),  # Intel Sapphire Rapids and newer
    ({"avx2": True, "avx512_f": True}, None),  # AVX-512 without bf16 (Skylake-SP): bf16 would be emulated
    ({"architecture": "arm64"}, None),
])
def test_cpu_trains_in_bf16_only_where_it_is_native(monkeypatch, flags, native):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: flags)
    cpu = torch.device("cpu")
    assert dev.cpu_native_bf16() == native
    expected = torch.bfloat16 if native else None
    assert dev.resolve_amp(cpu) is expected  # training
    assert dev.autocast_dtype(cpu) is None  # prediction on a CPU: float32
    assert (native or "float32") in dev.precision_reason(cpu)
    assert dev.resolve_amp(cpu, False) is None
    assert dev.resolve_amp(cpu, True) is torch.bfloat16  # CPU autocast knows bf16 only
    assert not dev.grad_scaler(cpu, None).is_enabled()
    assert dev.memory_format(cpu) is torch.contiguous_format
    assert dev.memory_format(cpu, channels_last=True) is torch.channels_last


def test_cuda_devices_always_carry_an_index(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert dev.pick_device() == torch.device("cuda", 0)
    assert dev.pick_device("cuda") == torch.device("cuda", 0)  # "cuda" alone: set_device and DDP refuse it
    assert dev.pick_device("cuda:2") == torch.device("cuda", 2)
    monkeypatch.setenv("LOCAL_RANK", "3")  # torchrun's process 3 of this machine
    assert dev.pick_device() == torch.device("cuda", 3)
    assert dev.pick_device("cpu") == torch.device("cpu")
    assert dev.memory_format(torch.device("cuda", 0)) is torch.channels_last


def test_uint8_batches_are_normalised_on_the_device_like_the_cpu_pipeline():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 24, 40, 3), dtype=np.uint8)
    labels = torch.from_numpy(rng.integers(0, 19, (2, 24, 40), dtype=np.uint8))
    batch = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
    images, targets = dev.to_device(batch, labels, torch.device("cpu"), torch.channels_last)
    # (x / 255 - mean) / std, in float64, per pixel: the definition
    mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    expected = torch.from_numpy(((frames / 255.0 - mean) / std).transpose(0, 3, 1, 2)).float()
    torch.testing.assert_close(images, expected, atol=1e-5, rtol=0)
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert targets.dtype == torch.int64 and torch.equal(targets, labels.long())
    torch.testing.assert_close(normalize_batch(batch), expected, atol=1e-5, rtol=0)
    assert torch.equal(torch.stack([normalize(f) for f in frames]), normalize_batch(batch))  # one rule
    # float images are taken as already normalised
    again, _ = dev.to_device(expected, None, torch.device("cpu"))
    assert torch.equal(again, expected)
