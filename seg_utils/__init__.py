"""seg_utils: the code behind the DeepLabV3-ResNet50 on Cityscapes notebook series.

The names most used by the notebooks are importable from here; heavier modules load on first use.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

from .check import check_dataset
from .cityscapes import CityscapesDataset, find_samples
from .config import TrainConfig, get_profile
from .folder import FolderDataset  # with cityscapes: the layouts ``layouts.open_layout`` knows
from .images import DatasetError
from .labels import IGNORE_INDEX, NUM_TRAIN_IDS, class_names, num_classes, palette
from .transforms import EvalTransform, TrainTransform

# name -> module holding it, imported when first asked for (keeps `import seg_utils` light).
_LAZY = {
    "ConfusionMatrix": "metrics",
    "compute_metrics": "metrics",
    "evaluate_predictions": "evaluation",
    "format_table": "metrics",
    "official_evaluate": "official",
    "build_model": "model",
    "train": "engine",
    "validate": "engine",
    "write_synthetic_cityscapes": "synthetic",
    "setup": "notebook",
}

__all__ = [
    "CityscapesDataset", "FolderDataset", "DatasetError", "check_dataset", "find_samples", "IGNORE_INDEX",
    "NUM_TRAIN_IDS",
    "class_names", "num_classes", "palette", "TrainConfig", "get_profile", "EvalTransform", "TrainTransform",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
