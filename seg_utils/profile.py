"""The one place that reads the environment: the run profile (``SEG_PROFILE``) and the dataset root
(``CITYSCAPES_DATASET``, the variable the official cityscapesscripts read).

Profiles size every loop and image in the series:

* ``smoke``: what the tests run on 2 CPU cores; proves that every cell runs.
* ``demo``: a reader without a GPU or without Cityscapes; minutes on a laptop CPU, synthetic data.
* ``full``: the published recipe (mmsegmentation's DeepLabV3 R-50-D8 schedule: 512x1024 crops, 80k
  iterations, batch 8, poly lr with no warm-up) on the real dataset and a GPU. The smaller profiles start
  from random weights more often (offline) and add a short warm-up for that.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Profile", "PROFILES", "get_profile", "cityscapes_root", "workspace", "Setup", "setup"]


@dataclass(frozen=True)
class Profile:
    """Every size that differs between a smoke test, a CPU demo and the published recipe."""

    name: str
    # the synthetic dataset written when no real one is given
    synth_size: tuple[int, int]  # (H, W) of every frame
    synth_train: int
    synth_val: int
    synth_test: int
    # training
    crop_size: tuple[int, int]  # (H, W) of a training crop
    batch_size: int  # total over all processes
    iters: int
    val_every: int
    warmup_iters: int
    lr: float
    output_stride: int
    weights: str  # "imagenet" | "coco" | "none" | a checkpoint path
    num_workers: int | None  # per process; None: from the cores and processes (engine.default_num_workers)


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke", synth_size=(128, 256), synth_train=6, synth_val=3, synth_test=2,
        crop_size=(96, 192), batch_size=2, iters=4, val_every=2, warmup_iters=1, lr=0.01,
        output_stride=16, weights="imagenet", num_workers=0,
    ),
    "demo": Profile(
        name="demo", synth_size=(256, 512), synth_train=60, synth_val=12, synth_test=4,
        crop_size=(128, 256), batch_size=4, iters=150, val_every=50, warmup_iters=10, lr=0.01,
        output_stride=16, weights="imagenet", num_workers=0,
    ),
    "full": Profile(
        name="full", synth_size=(1024, 2048), synth_train=2975, synth_val=500, synth_test=1525,
        crop_size=(512, 1024), batch_size=8, iters=80_000, val_every=4_000, warmup_iters=0, lr=0.01,
        output_stride=8, weights="imagenet", num_workers=None,
    ),
}


def cityscapes_root() -> Path | None:
    """Return the real dataset folder named by ``CITYSCAPES_DATASET``, or None when it is unset."""
    value = os.environ.get("CITYSCAPES_DATASET", "").strip()
    return Path(value).expanduser() if value else None


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def get_profile(name: str | None = None) -> Profile:
    """Return the profile named, else ``SEG_PROFILE``, else ``full`` with CUDA and real data, else ``demo``."""
    name = name or os.environ.get("SEG_PROFILE", "").strip().lower() or None
    if name is None:
        name = "full" if (cityscapes_root() is not None and _cuda_available()) else "demo"
    if name not in PROFILES:
        raise ValueError(f"SEG_PROFILE must be one of {', '.join(PROFILES)}, got {name!r}")
    return PROFILES[name]


def workspace() -> Path:
    """Return the folder for generated data and training runs (git-ignored).

    ``SEG_WORKSPACE`` if set; else the checkout's root when seg_utils is installed from a checkout
    (``pip install -e .``); else ``~/.cache/seg_utils``.
    """
    value = os.environ.get("SEG_WORKSPACE", "").strip()
    if value:
        return Path(value).expanduser()
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / "notebooks").is_dir():
        return checkout
    return Path.home() / ".cache" / "seg_utils"


@dataclass(frozen=True)
class Setup:
    """What the first cell of every notebook needs: profile, device, dataset and where runs go."""

    profile: Profile
    device: str
    data_root: Path
    synthetic: bool
    run_dir: Path

    def describe(self) -> str:
        """Return a one-line account of the choices made (no machine paths)."""
        p = self.profile
        if self.synthetic:
            data = f"synthetic Cityscapes-format set, {p.synth_size[0]}x{p.synth_size[1]} frames"
        else:
            data = "real Cityscapes (CITYSCAPES_DATASET)"
        return f"profile: {p.name} | device: {self.device} | data: {data}"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup(profile: str | None = None, seed: int = 0) -> Setup:
    """Return the notebook set-up: pick the profile, the device and the dataset, and seed everything.

    With ``CITYSCAPES_DATASET`` set, the real dataset is used. Otherwise the synthetic set of the
    profile's size is written once into ``workspace()/data`` and reused by every later call.
    """
    import torch

    prof = get_profile(profile)
    seed_everything(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    real = cityscapes_root()
    if real is not None:
        data_root, synthetic = real, False
    elif prof.name == "full":
        raise ValueError("the full profile trains the published recipe on real Cityscapes: set CITYSCAPES_DATASET "
                         "to the dataset folder, or use SEG_PROFILE=demo for the synthetic set")
    else:
        from .synthetic import ensure_synthetic

        data_root = ensure_synthetic(
            workspace() / "data" / f"synthetic-{prof.name}",
            train=prof.synth_train, val=prof.synth_val, test=prof.synth_test, size=prof.synth_size, seed=seed,
        )
        synthetic = True
    run_dir = workspace() / "runs" / prof.name
    return Setup(profile=prof, device=device, data_root=data_root, synthetic=synthetic, run_dir=run_dir)

