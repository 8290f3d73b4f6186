"""What a trained model is, in one record (``ModelInfo``): its classes, the frames it was trained on, their random
rescaling, its output stride and the normalisation its input needs.

Every model the package makes carries one as ``model.info``: ``model.build_model`` (the class count's table),
``engine.train`` (the data's table and frames), ``inference.load_model`` and ``export.load_onnx`` (read back from the
checkpoint or the ONNX metadata, where ``runs`` and ``export`` wrote it). Whatever predicts files, scales photos or
exports reads it there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoint import CheckpointError
from .classes import ClassTable
from .transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["ModelInfo", "checkpoint_classes"]


@dataclass(frozen=True)
class ModelInfo:
    """The classes a model predicts (class index order), the (H, W) of its training frames and their random
    rescaling (None: not trained by this package; photos are then predicted as they are), its output stride, and
    the mean and standard deviation its RGB input (0..1) is normalised with."""

    classes: ClassTable
    frame_size: tuple[int, int] | None = None
    scale_range: tuple[float, float] | None = None
    output_stride: int = 8
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @classmethod
    def untrained(cls, num_classes: int, output_stride: int = 8) -> ModelInfo:
        """Return the record of a model just built for ``num_classes``: Cityscapes' table for 19 (trainIds) or 34
        (label ids) classes, numbered classes otherwise; no training frames."""
        return cls(ClassTable.for_count(num_classes), output_stride=output_stride)

    def to_dict(self) -> dict[str, Any]:
        """Return the record as JSON-able data (what a checkpoint and an ONNX file store)."""
        return {"classes": self.classes.to_dict(), "frame_size": list(self.frame_size) if self.frame_size else None,
                "scale_range": list(self.scale_range) if self.scale_range else None,
                "output_stride": self.output_stride, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path) -> ModelInfo:
        """Return the record ``to_dict`` wrote (``source`` names the file in errors)."""
        try:
            return cls(ClassTable.from_dict(data["classes"], f"{source} (its class table)"),
                       tuple(data["frame_size"]) if data.get("frame_size") else None,
                       tuple(data["scale_range"]) if data.get("scale_range") else None,
                       int(data["output_stride"]), tuple(data["mean"]), tuple(data["std"]))
        except (KeyError, TypeError) as err:  # a damaged table says so itself (ClassTableError)
            raise CheckpointError(f"{source}: damaged model record ({type(err).__name__}: {err}); expected a file "
                                  f"written by this project") from None

    @classmethod
    def from_checkpoint(cls, meta: dict[str, Any], state: dict[str, torch.Tensor], source: str | Path) -> ModelInfo:
        """Return the record of a checkpoint: the one it carries; for a training checkpoint of format 1 (before
        the record) its class table, frame size and config; for a bare state dict, ``untrained``'s for its class
        count."""
        if "info" in meta:
            return cls.from_dict(meta["info"], source)
        config = meta.get("config") or {}
        stride = int(config.get("output_stride", 8))
        if not meta.get("classes"):
            return cls.untrained(checkpoint_classes(state, source), stride)
        return cls(ClassTable.from_dict(meta["classes"], f"{source} (its class table)"),
                   tuple(meta["frame_size"]) if meta.get("frame_size") else None,
                   tuple(config["scale_range"]) if config.get("scale_range") else None, stride)


def checkpoint_classes(state: dict[str, torch.Tensor], source: str | Path) -> int:
    """Return the number of classes a DeepLabV3 state dict predicts (``source`` names it in errors)."""
    head = state.get("classifier.4.weight")
    if head is None:
        raise CheckpointError(f"checkpoint {source} has no classifier.4.weight: not a DeepLabV3 state dict")
    return int(head.shape[0])
