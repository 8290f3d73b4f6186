"""The one place that reads the environment: the run profile (``SEG_PROFILE``) and the dataset root
(``CITYSCAPES_DATASET``, the variable the official cityscapesscripts read).

Profiles size every loop and image in the series:

* ``smoke``: what the tests run on 2 CPU cores; proves that every cell runs.
* ``demo``: a reader without a GPU or without Cityscapes; minutes on a laptop CPU, synthetic data.
* ``full``: the published recipe (mmsegmentation's DeepLabV3 R-50-D8 schedule: 512x1024 crops, 80k
  iterations, batch 8, SGD, poly lr with no warm-up) on the real dataset and a GPU.

The smaller profiles mostly start from random weights (offline) and have minutes of a CPU: they train with
AdamW (lr 1e-3), square-root inverse-frequency class weights, a short warm-up and scales 0.5-1.0 (each
measured against the recipe's choice: the options table in the README); a random start also begins every
residual block as the identity (``model.build_model``). Same model, same data.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

__all__ = ["Profile", "PROFILES", "get_profile", "cityscapes_root", "dataset_root", "workspace", "Setup", "setup"]


@dataclass(frozen=True)
class Profile:
    """A size for the whole series: the synthetic set written when no real one is given, and the training
    settings (overrides of ``engine.TrainConfig``, whose defaults are the published recipe).

    Its training settings read as attributes too: ``profile.crop_size`` is ``profile.config().crop_size``.
    """

    name: str
    synth_size: tuple[int, int]  # (H, W) of every synthetic frame
    synth_train: int
    synth_val: int
    synth_test: int
    train: Mapping[str, Any]  # TrainConfig field -> value for this profile

    def config(self, **overrides: Any) -> Any:
        """Return the ``engine.TrainConfig`` of this profile (then ``overrides``; None values are skipped)."""
        from .engine import TrainConfig

        return TrainConfig.from_profile(self, **overrides)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or "train" not in self.__dict__:
            raise AttributeError(name)
        config = self.config()
        if not hasattr(config, name):
            raise AttributeError(f"profile {self.name!r} has no setting {name!r}")
        return getattr(config, name)


def _profile(name: str, synth: tuple[tuple[int, int], int, int, int], **train: Any) -> Profile:
    size, n_train, n_val, n_test = synth
    return Profile(name, size, n_train, n_val, n_test, MappingProxyType(train))


_FROM_SCRATCH = dict(optimizer="adamw", lr=1e-3, weight_decay=0.01, class_weights="sqrt_inv_freq",
                     scale_range=(0.5, 1.0))

PROFILES: dict[str, Profile] = {
    # smoke and demo start from random weights on a CPU (offline): AdamW and class weights, measured in the README
    "smoke": _profile("smoke", ((128, 256), 6, 3, 2), crop_size=(96, 192), batch_size=2, iters=4, val_every=2,
                      warmup_iters=1, output_stride=16, num_workers=0, **_FROM_SCRATCH),
    "demo": _profile("demo", ((256, 512), 60, 12, 4), crop_size=(128, 256), batch_size=4, iters=250, val_every=50,
                     warmup_iters=10, output_stride=16, num_workers=0, **_FROM_SCRATCH),
    # the published recipe: TrainConfig's own defaults (mmsegmentation's schedule_80k), nothing overridden
    "full": _profile("full", ((1024, 2048), 2975, 500, 1525)),
}


def cityscapes_root() -> Path | None:
    """Return the real dataset folder named by ``CITYSCAPES_DATASET``, or None when it is unset."""
    value = os.environ.get("CITYSCAPES_DATASET", "").strip()
    return Path(value).expanduser() if value else None


def dataset_root(path: str | os.PathLike | None = None) -> Path:
    """Return the dataset to use: ``path`` when given, else ``CITYSCAPES_DATASET`` (checked: DatasetError says
    what the folder lacks); raise ValueError naming both ways (and the synthetic set) when there is neither."""
    if path is not None:
        return Path(path)
    root = cityscapes_root()
    if root is not None:
        from .data import require_dataset

        return require_dataset(root, "CITYSCAPES_DATASET folder")
    raise ValueError("no dataset: pass --data-root (data_root=...) or set CITYSCAPES_DATASET (or write a "
                     "synthetic set with `python -m seg_utils synth DIR` / seg_utils.setup(); predict: --images)")


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

    With ``CITYSCAPES_DATASET`` set, the real dataset is used (DatasetError, saying what is missing, when the
    folder does not hold its train and val folders). Otherwise the synthetic set of the profile's size is written
    once into ``workspace()/data`` and reused by every later call.
    """
    import torch

    prof = get_profile(profile)
    seed_everything(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    real = cityscapes_root()
    if real is not None:
        from .data import require_dataset

        data_root, synthetic = require_dataset(real, "CITYSCAPES_DATASET folder"), False
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

