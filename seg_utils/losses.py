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
from .labels import IGNORE_INDEX

__all__ = ["sqrt_inv_freq_weights", "make_criterion", "compute_loss"]


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


def make_criterion(config: TrainConfig, class_counts: np.ndarray | None = None,
                   device: str | torch.device = "cpu") -> nn.CrossEntropyLoss:
    """Return the loss of a run: cross-entropy ignoring void (255), weighted per class when
    ``config.class_weights`` says so (from ``class_counts``, the train set's pixels per class:
    ``stats.class_pixel_counts``)."""
    weight = None
    if config.class_weights == "sqrt_inv_freq":
        if class_counts is None:
            raise ValueError("class_weights='sqrt_inv_freq' needs the train set's pixels per class "
                             "(stats.class_pixel_counts)")
        weight = sqrt_inv_freq_weights(np.asarray(class_counts)).to(device)
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
