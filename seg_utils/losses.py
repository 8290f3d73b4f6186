"""The loss of a run: cross-entropy that ignores void (255), optionally weighted per class by the square root of
the inverse pixel share, plus ``aux_weight`` x the auxiliary head's loss.

How the loss is averaged is one of several differences from mmsegmentation that remain, listed in
docs/recipe.md: it averages over all pixels of the crop (void ones count as zero), here over the labelled ones, as
``nn.CrossEntropyLoss(ignore_index=255)`` does.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .config import TrainConfig
from .data import CityscapesDataset
from .labels import IGNORE_INDEX, num_classes

__all__ = ["class_pixel_counts", "sqrt_inv_freq_weights", "make_criterion", "compute_loss"]


def class_pixel_counts(dataset: CityscapesDataset, num_classes: int = 19) -> np.ndarray:
    """Return the labelled pixels of each class over every frame of ``dataset`` (void excluded)."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for i in range(len(dataset)):
        target = dataset.load_target(i)
        counts += np.bincount(target[target < num_classes], minlength=num_classes)
    return counts


def sqrt_inv_freq_weights(counts: np.ndarray) -> torch.Tensor:
    """Return loss weights ``1 / sqrt(share)`` per class, scaled so that the median present class has 1.

    The square root is the mild form of inverse-frequency weighting: a class 100 times rarer than road
    weighs 10 times more, not 100 (which would make a few pixels of a rare class dominate the loss). Only
    the ratios matter: the weighted cross-entropy divides by the weights of the pixels it averages. A
    class absent from the training labels gets weight 1 (it never occurs as a target).
    """
    share = counts / max(counts.sum(), 1)
    weights = np.ones(len(counts))
    present = share > 0
    weights[present] = 1 / np.sqrt(share[present])
    weights[present] /= np.median(weights[present])
    return torch.tensor(weights, dtype=torch.float32)


def make_criterion(config: TrainConfig, train_set: CityscapesDataset | None = None,
                   device: str | torch.device = "cpu") -> nn.CrossEntropyLoss:
    """Return the loss of a run: cross-entropy ignoring void (255), weighted per class when
    ``config.class_weights`` says so (the weights come from the pixel shares of ``train_set``)."""
    weight = None
    if config.class_weights == "sqrt_inv_freq":
        if train_set is None:
            raise ValueError("class_weights='sqrt_inv_freq' needs the train set to count its pixels")
        counts = class_pixel_counts(train_set, num_classes(config.label_mode))
        weight = sqrt_inv_freq_weights(counts).to(device)
    return nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX, weight=weight)


def compute_loss(outputs: dict[str, torch.Tensor], target: torch.Tensor, criterion: nn.Module,
                 aux_weight: float = 0.4) -> torch.Tensor:
    """Return the training loss: CE of "out" plus ``aux_weight`` x CE of "aux" (when the model has it).

    A batch whose pixels are all ignored (a crop inside the ego-vehicle strip, say) has no mean: its loss is
    0 with zero gradients instead of NaN, so it neither stops training nor moves the weights.
    """
    loss = criterion(outputs["out"].float(), target)
    if "aux" in outputs and aux_weight:
        loss = loss + aux_weight * criterion(outputs["aux"].float(), target)
    ignore = getattr(criterion, "ignore_index", IGNORE_INDEX)
    return torch.where((target != ignore).any(), loss, torch.zeros_like(loss))
