"""Overlap of two masks, as the workers measure agreement (student vs masker, chain vs student)."""

from __future__ import annotations

import numpy as np

__all__ = ["dice"]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two bool masks of one shape (1.0 when both are empty)."""
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(a & b)) / total
