"""Intensity windowing: a raw volume becomes the 8-bit intensities a prompted masker sees.

Two rules, chosen by `IntensityConfig.modality`:

- MR: the ``percentile_low`` / ``percentile_high`` percentiles of the whole volume bound the
  window (one window per volume, so every slice of it shares one intensity scale).
- CT: a fixed window of ``ct_width`` HU centred on ``ct_level`` HU.

Values are clipped to the window and scaled linearly to [0, 255]. A window of zero width (a
constant volume) maps every voxel to 0.
"""

from __future__ import annotations

import logging

import numpy as np

from semisam.schemas import IntensityConfig, Modality

__all__ = ["window_bounds", "window_volume"]

logger = logging.getLogger(__name__)


def window_bounds(image: np.ndarray, config: IntensityConfig) -> tuple[float, float]:
    """The (low, high) intensity window of a volume.

    Args:
        image: ``XxYxZ`` intensities (MR arbitrary units, CT in HU), finite values.
        config: windowing rule.

    Returns:
        ``(low, high)`` in the image's units; ``low <= high``.
    """
    if config.modality == Modality.ct:
        half = config.ct_width / 2.0
        return float(config.ct_level - half), float(config.ct_level + half)
    low, high = np.percentile(image, [config.percentile_low, config.percentile_high])
    return float(low), float(high)


def window_volume(image: np.ndarray, config: IntensityConfig) -> np.ndarray:
    """Clip a volume to its intensity window and scale it to [0, 255].

    Args:
        image: ``XxYxZ`` float (or integer) intensities.
        config: windowing rule (MR percentiles or CT level/width).

    Returns:
        ``XxYxZ`` uint8 in [0, 255]; all zeros when the window has zero width.

    Raises:
        ValueError: the image is not 3D, or holds NaN/inf values.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image must be XxYxZ (3D), got shape {image.shape}")
    image = image.astype(np.float32, copy=False)
    finite = np.isfinite(image)
    if not finite.all():
        raise ValueError(f"image holds {int((~finite).sum())} non-finite voxels (NaN or inf)")
    low, high = window_bounds(image, config)
    if not high > low:
        logger.debug("zero-width intensity window (%s, %s): output is all zeros", low, high)
        return np.zeros(image.shape, np.uint8)
    scaled = (np.clip(image, low, high) - np.float32(low)) * np.float32(255.0 / (high - low))
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)
