"""The configuration of a training run: ``TrainConfig`` (the published recipe as its defaults) and the profiles
that override it.

The recipe (mmsegmentation's ``deeplabv3_r50-d8_512x1024_80k_cityscapes``, its ``schedule_80k``): SGD with
momentum 0.9 and weight decay 5e-4, lr 0.01, poly decay (power 0.9) to a floor of 1e-4 from iteration 0 with
no warm-up, cross-entropy with ignore index 255 plus 0.4 x the auxiliary head's loss, random scale 0.5-2.0 /
crop (``cat_max_ratio`` 0.75) / flip / photometric distortion, SyncBatchNorm over all GPUs, batch 8 for 80k
iterations. Three options serve runs from random weights on a CPU (the demo profile; what they gave:
docs/demo-options.md): a linear warm-up (``warmup_iters``: the first steps are otherwise large enough to blow
up), AdamW (``optimizer``) and square-root inverse-frequency class weights in the loss (``class_weights``).

Profiles size every loop and image in the series:

* ``smoke``: what the tests run on 2 CPU cores; proves that every cell runs.
* ``demo``: a reader without a GPU; minutes on a laptop CPU, synthetic data.
* ``demo-gpu``: a reader with a CUDA GPU but without Cityscapes: the same scenes and options, whole frames as
  crops, output stride 8, batch 8, 800 iterations (about a minute on an H200-class GPU).
* ``full``: the published recipe (mmsegmentation's DeepLabV3 R-50-D8 schedule: 512x1024 crops, 80k
  iterations, batch 8, SGD, poly lr with no warm-up) on the real dataset and a GPU.

The smaller profiles mostly start from random weights (offline) and have minutes of a CPU: they train with
AdamW (lr 1e-3), square-root inverse-frequency class weights, a short warm-up and scales 0.5-1.0; a random
start also begins every block's residual branch at zero (``model.build_model``). docs/demo-options.md measures
AdamW, the scales and the zero start each against the recipe's choice; the class weights only together with
100 more iterations, and the warm-up not at all (every run there has one). Same model, same data.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .env import cityscapes_root, profile_name

__all__ = ["TrainConfig", "OPTIMIZERS", "CLASS_WEIGHTS", "Profile", "PROFILES", "get_profile", "profile_reason"]

OPTIMIZERS = ("sgd", "adamw")
CLASS_WEIGHTS = (None, "sqrt_inv_freq")


@dataclass
class TrainConfig:
    """Everything a training run depends on. ``from_profile`` fills the sizes from a Profile."""

    data_root: str | Path | None = None
    out_dir: str | Path = "runs/train"
    iters: int = 80_000
    crop_size: tuple[int, int] = (512, 1024)
    batch_size: int = 8  # total over all processes
    optimizer: str = "sgd"  # sgd (the recipe) | adamw (the demo profile: from random weights in minutes)
    lr: float = 0.01
    momentum: float = 0.9  # sgd only
    weight_decay: float = 5e-4
    power: float = 0.9
    min_lr: float = 1e-4
    warmup_iters: int = 0  # schedule_80k has none; runs from random weights want some (demo profile)
    warmup_ratio: float = 0.1  # the warm-up starts at lr x warmup_ratio
    aux_weight: float = 0.4  # 0: the model is built without the aux head
    class_weights: str | None = None  # None (the recipe) | "sqrt_inv_freq": loss weight 1/sqrt(pixel share)
    val_every: int = 4_000  # also how often last.pt is written; 0 = only at the end
    val_frames: int | None = None  # score only the first N val frames (None = all)
    output_stride: int = 8
    weights: str | None = "imagenet"  # imagenet | coco | none | a checkpoint path
    amp: bool | None = None  # None: on with CUDA (bf16 where supported, else fp16 + GradScaler)
    channels_last: bool | None = None  # None: on with CUDA (see benchmarks/bench_train.py for CPU)
    num_workers: int | None = None  # per process; None: default_num_workers() (from cores and processes)
    scale_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float | None = 0.75  # mmseg's crop rule: redraw crops one class dominates (None: off)
    seed: int = 0
    resume: bool = False
    overwrite: bool = False  # a fresh start may replace the checkpoints already in out_dir
    stop_at: int | None = None  # stop after this iteration (schedule still for `iters`); resume later
    label_mode: str = "trainId"
    device: str | None = None  # None: this process's GPU (LOCAL_RANK) when available, else cpu

    def __post_init__(self) -> None:
        self.crop_size = tuple(int(v) for v in self.crop_size)
        self.scale_range = tuple(float(v) for v in self.scale_range)
        for name in ("lr", "momentum", "weight_decay", "power", "min_lr", "warmup_ratio", "aux_weight"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
        if self.class_weights == "none":  # the command line's word for None
            self.class_weights = None
        if self.class_weights not in CLASS_WEIGHTS:
            raise ValueError(f"class_weights must be None or {CLASS_WEIGHTS[1]!r}, got {self.class_weights!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0 (the recipe: 0.01), got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1) (the recipe: 0.9), got {self.momentum}")
        if self.weight_decay < 0 or self.power <= 0:
            raise ValueError(f"weight_decay must be >= 0 and power > 0, got {self.weight_decay} and {self.power}")
        if not 0 < self.warmup_ratio <= 1:
            raise ValueError(f"warmup_ratio must be in (0, 1], got {self.warmup_ratio}")
        low, high = self.scale_range if len(self.scale_range) == 2 else (0.0, 0.0)
        if not (math.isfinite(high) and 0 < low <= high):
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {self.scale_range}")
        if self.iters < 1:
            raise ValueError(f"iters must be >= 1, got {self.iters}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if len(self.crop_size) != 2 or min(self.crop_size) < 1:
            raise ValueError(f"crop_size must be (height, width) > 0, got {self.crop_size}")
        if not 0 <= self.warmup_iters < self.iters:
            raise ValueError(f"warmup_iters must be in 0..iters-1 ({self.iters - 1}), got {self.warmup_iters}")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"min_lr must be in 0..lr ({self.lr}), got {self.min_lr}")
        if self.stop_at is not None and not 1 <= self.stop_at <= self.iters:
            raise ValueError(f"stop_at must be in 1..iters ({self.iters}), got {self.stop_at}")
        if self.cat_max_ratio is not None and not 0 < self.cat_max_ratio <= 1:  # also refuses NaN
            raise ValueError(f"cat_max_ratio must be in (0, 1] or None, got {self.cat_max_ratio}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0 or None, got {self.num_workers}")
        if self.aux_weight < 0:
            raise ValueError(f"aux_weight must be >= 0, got {self.aux_weight}")

    @classmethod
    def from_profile(cls, profile: Any = None, **overrides: Any) -> TrainConfig:
        """Return a config with the training sizes of ``profile`` (a Profile, its name, or None = the
        current one: ``SEG_PROFILE``), then ``overrides`` (None values are skipped)."""
        if profile is None or isinstance(profile, str):
            profile = get_profile(profile)
        values = {**cls().to_dict(), **profile.train}  # the recipe's defaults, then the profile's sizes
        values.update({k: v for k, v in overrides.items() if v is not None})
        if overrides.get("warmup_iters") is None:
            # a shorter run than the profile's keeps its warm-up only if it fits: at most a tenth of the run
            values["warmup_iters"] = min(values["warmup_iters"], values["iters"] // 10)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Return the config as plain JSON types (paths as str, tuples as lists)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) \
                else value
        return out


@dataclass(frozen=True)
class Profile:
    """A size for the whole series: the synthetic set written when no real one is given, and the training
    settings (overrides of ``TrainConfig``, whose defaults are the published recipe).

    Its training settings read as attributes too: ``profile.crop_size`` is ``profile.config().crop_size``.
    """

    name: str
    synth_size: tuple[int, int]  # (H, W) of every synthetic frame
    synth_train: int
    synth_val: int
    synth_test: int
    train: Mapping[str, Any]  # TrainConfig field -> value for this profile
    data: str  # the synthetic set's folder name: profiles of one size share one set

    def config(self, **overrides: Any) -> Any:
        """Return the ``TrainConfig`` of this profile (then ``overrides``; None values are skipped)."""
        return TrainConfig.from_profile(self, **overrides)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or "train" not in self.__dict__:
            raise AttributeError(name)
        config = self.config()
        if not hasattr(config, name):
            raise AttributeError(f"profile {self.name!r} has no setting {name!r}")
        return getattr(config, name)


def _profile(name: str, synth: tuple[tuple[int, int], int, int, int], data: str | None = None,
             **train: Any) -> Profile:
    size, n_train, n_val, n_test = synth
    return Profile(name, size, n_train, n_val, n_test, MappingProxyType(train), data or name)


_FROM_SCRATCH = dict(optimizer="adamw", lr=1e-3, weight_decay=0.01, class_weights="sqrt_inv_freq",
                     scale_range=(0.5, 1.0))
_DEMO_SET = ((256, 512), 60, 12, 4)

PROFILES: dict[str, Profile] = {
    # smoke and demo start from random weights on a CPU (offline): AdamW and class weights (docs/demo-options.md)
    "smoke": _profile("smoke", ((128, 256), 6, 3, 2), crop_size=(96, 192), batch_size=2, iters=4, val_every=2,
                      warmup_iters=1, output_stride=16, num_workers=0, **_FROM_SCRATCH),
    "demo": _profile("demo", _DEMO_SET, crop_size=(128, 256), batch_size=4, iters=250, val_every=50,
                     warmup_iters=10, output_stride=16, num_workers=0, **_FROM_SCRATCH),
    # the same scenes and options, sized for a GPU: whole frames as crops, output stride 8, batch 8, 800 iterations
    "demo-gpu": _profile("demo-gpu", _DEMO_SET, data="demo", crop_size=_DEMO_SET[0], batch_size=8, iters=800,
                         val_every=100, warmup_iters=10, output_stride=8, **_FROM_SCRATCH),
    # the published recipe: TrainConfig's own defaults (mmsegmentation's schedule_80k), nothing overridden
    "full": _profile("full", ((1024, 2048), 2975, 500, 1525)),
}


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def get_profile(name: str | None = None) -> Profile:
    """Return the profile named, else ``SEG_PROFILE``, else the default for this machine (``profile_reason``)."""
    name = name or profile_name() or _default_profile()[0]
    if name not in PROFILES:
        raise ValueError(f"SEG_PROFILE must be one of {', '.join(PROFILES)}, got {name!r}")
    return PROFILES[name]


def _default_profile() -> tuple[str, str]:
    """Return the default profile's name and why: ``full`` with a CUDA GPU and ``CITYSCAPES_DATASET``, ``demo-gpu``
    with a GPU and no real data, ``demo`` without a GPU."""
    if not _cuda_available():
        return "demo", "no CUDA GPU: the CPU demo"
    if cityscapes_root() is not None:
        return "full", "a CUDA GPU and CITYSCAPES_DATASET: the published recipe"
    return "demo-gpu", "a CUDA GPU and no CITYSCAPES_DATASET: the demo sized for a GPU"


def profile_reason(name: str | None = None) -> str:
    """Return why the profile in use is the one it is: named by the caller, by ``SEG_PROFILE``, or the default."""
    if name:
        return "chosen by the caller"
    if profile_name():
        return "set by SEG_PROFILE"
    return _default_profile()[1]
