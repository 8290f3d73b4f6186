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

import argparse
import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .env import cityscapes_root, profile_name

__all__ = ["TrainConfig", "parse_size", "parse_pair", "OPTIMIZERS", "CLASS_WEIGHTS", "Profile", "PROFILES",
           "DEFAULT_PROFILES", "get_profile",
           "profile_reason", "default_profile_rule"]

OPTIMIZERS = ("sgd", "adamw")
CLASS_WEIGHTS = (None, "sqrt_inv_freq")


def parse_size(text: str) -> tuple[int, int]:
    """Return (height, width) of a ``HEIGHTxWIDTH`` argument such as ``512x1024``."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        h = w = None
    if h is None or h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH in pixels, both at least 1, such as 512x1024 "
                                         f"(512 rows by 1024 columns), got {text!r}")
    return h, w


def parse_pair(text: str) -> tuple[float, float]:
    """Return the two numbers of an argument such as ``0.5,2.0``."""
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers such as 0.5,2.0, got {text!r}") from None
    return low, high


def _option(default: Any, help: str, *flags: str, parse: Callable[[str], Any] | None = None, cli: bool = True) -> Any:
    """A field of TrainConfig with its command line beside it: its help, short ``flags`` and ``parse`` (what turns
    the argument's text into the value; ``bool``: a ``--name`` / ``--no-name`` switch). ``cli.py`` makes one
    ``train`` option per field with ``cli`` True, named ``--field-name`` (plus ``flags``)."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable defaults need default_factory")
    if cli and parse is None:
        raise TypeError(f"a command-line option needs parse= (its --help: {help!r})")
    return dataclasses.field(default=default, metadata={"help": help, "flags": flags, "parse": parse, "cli": cli})


@dataclass
class TrainConfig:
    """Everything a training run depends on: the published recipe as defaults, each field's meaning in its
    ``help`` (``dataclasses.fields(TrainConfig)[i].metadata``). ``from_profile`` fills the sizes from a Profile."""

    data_root: str | Path | None = _option(None, "dataset folder (default: CITYSCAPES_DATASET)", "--data-root",
                                           parse=Path)
    classes: str | Path | None = _option(None, "class table (classes.json) of a plain images/masks folder (default: "
                                               "DATA_ROOT/classes.json)", "--classes", parse=Path)
    out_dir: str | Path = _option("runs/train", "run folder: checkpoints, history (required)", "--out", parse=Path)
    iters: int = _option(80_000, "training iterations (the lr schedule runs over them)", parse=int)
    crop_size: tuple[int, int] = _option((512, 1024), "HxW training crop", "--crop", parse=parse_size)
    batch_size: int = _option(8, "total batch size over all processes", "--batch", parse=int)
    optimizer: str = _option("sgd", "sgd (the published recipe) | adamw (demo: from random weights in minutes)",
                             parse=str)
    lr: float = _option(0.01, "peak learning rate", parse=float)
    momentum: float = _option(0.9, "SGD momentum (sgd only)", parse=float)
    weight_decay: float = _option(5e-4, "weight decay", parse=float)
    power: float = _option(0.9, "power of the poly decay", parse=float)
    min_lr: float = _option(1e-4, "the lr the poly decay ends at", parse=float)
    warmup_iters: int = _option(0, "linear lr warm-up (default: the profile's, at most iters/10; the published "
                                   "recipe has none)", parse=int)
    warmup_ratio: float = _option(0.1, "the warm-up starts at lr x this", parse=float)
    aux_weight: float = _option(0.4, "weight of the aux head's loss (0: no aux head)", parse=float)
    class_weights: str | None = _option(None, "none (the published recipe) | sqrt_inv_freq (demo: 1/sqrt(pixel "
                                              "share) per class)", parse=str)
    val_every: int = _option(4_000, "validate and write last.pt every N iterations (0: only at the end)", parse=int)
    val_frames: int | None = _option(None, "score only the first N val frames (default: all)", parse=int)
    output_stride: int = _option(8, "8 (the published recipe) or 16 (a third of the compute)", parse=int)
    weights: str | None = _option("imagenet", "imagenet | coco | none | PATH to a checkpoint of this project (to "
                                              "fine-tune it: heads replaced for other classes, kept by name)",
                                  parse=str)
    amp: bool | None = _option(None, "mixed precision (default: device.autocast_dtype: bf16 on GPUs from compute "
                                     "capability 8.0 and on CPUs with native bf16, fp16 on older GPUs, else off)",
                                parse=bool)
    channels_last: bool | None = _option(None, "channels_last memory format (default: on with CUDA)", cli=False)
    num_workers: int | None = _option(None, "data-loader workers per process (default: from the cores)",
                                      "--workers", parse=int)
    scale_range: tuple[float, float] = _option((0.5, 2.0), "random rescale range, e.g. 0.5,2.0", parse=parse_pair)
    cat_max_ratio: float | None = _option(0.75, "redraw crops where one class covers this share or more "
                                                "(mmseg: 0.75)", parse=float)
    seed: int = _option(0, "seed of the data order, augmentation and initial weights", parse=int)
    resume: bool = _option(False, "continue from OUT/last.pt", parse=bool)
    overwrite: bool = _option(False, "start again in an OUT that holds a run", parse=bool)
    stop_at: int | None = _option(None, "stop after this iteration (the schedule still runs over iters); resume "
                                        "later", cli=False)
    label_mode: str = _option("trainId", "trainId (19 classes) | labelId (34)", cli=False)
    device: str | None = _option(None, "None: this process's GPU (LOCAL_RANK) when available, else cpu", cli=False)

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
    # 650 iterations (docs/demo-options.md): 42.4% val mIoU, 64.0% category mIoU; `train --profile demo` took 495 s
    # on the project's 2-core machine with native bf16 on 2026-12-08 (750 iterations: 44.6%, 545-552 s)
    "demo": _profile("demo", _DEMO_SET, crop_size=(128, 256), batch_size=4, iters=650, val_every=130,
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


# The default profile, by machine: (CUDA GPU, CITYSCAPES_DATASET set) -> (profile, why). The one statement of the
# rule: _default_profile applies it, and the command line's help and the notebooks' first cell print it.
DEFAULT_PROFILES = {
    (False, False): ("demo", "no CUDA GPU: the CPU demo"),
    (False, True): ("demo", "no CUDA GPU: the CPU demo"),
    (True, True): ("full", "a CUDA GPU and CITYSCAPES_DATASET: the published recipe"),
    (True, False): ("demo-gpu", "a CUDA GPU and no CITYSCAPES_DATASET: the demo sized for a GPU"),
}


def default_profile_rule() -> str:
    """Return the rule that picks the default profile, in words (for help texts)."""
    cases = [DEFAULT_PROFILES[key] for key in ((True, True), (True, False), (False, False))]
    return "; ".join(f"{name} with {why.split(':')[0]}" for name, why in cases)


def _default_profile() -> tuple[str, str]:
    """Return the default profile's name and why (``DEFAULT_PROFILES``)."""
    return DEFAULT_PROFILES[(_cuda_available(), cityscapes_root() is not None)]


def profile_reason(name: str | None = None) -> str:
    """Return why the profile in use is the one it is: named by the caller, by ``SEG_PROFILE``, or the default."""
    if name:
        return "chosen by the caller"
    if profile_name():
        return "set by SEG_PROFILE"
    return _default_profile()[1]
