"""Segmentation metrics for training and evaluation: re-exported from `semisam.workers.metrics`
(one floor down, so that the workers use the same Dice and largest component)."""

from __future__ import annotations

from semisam.workers.metrics import (
    METRICS,
    asd,
    case_metrics,
    class_dice,
    dice,
    hd95,
    jaccard,
    largest_component,
    surface_distances,
)

__all__ = ["METRICS", "asd", "case_metrics", "class_dice", "dice", "hd95", "jaccard",
           "largest_component", "surface_distances"]
