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
import math

import numpy as np

from semisam.schemas import IntensityConfig, Modality

__all__ = ["percentiles", "window_bounds", "window_volume"]

logger = logging.getLogger(__name__)


def window_bounds(image: np.ndarray, config: IntensityConfig) -> tuple[float, float]:
    """The (low, high) intensity window of a volume.

    Args:
        image: ``XxYxZ`` intensities (MR arbitrary units, CT in HU), finite values.
        config: windowing rule.

    Returns:
        ``(low, high)`` in the image's units; ``low <= high``.
    """
    image = np.asarray(image)
    nan_free = config.modality == Modality.ct or image.dtype.kind != "f" or not np.isnan(image).any()
    return _bounds(image, config, nan_free)


def _bounds(image: np.ndarray, config: IntensityConfig, nan_free: bool) -> tuple[float, float]:
    """`window_bounds` of an image known (``nan_free``) to hold no NaN, or not."""
    if config.modality == Modality.ct:
        half = config.ct_width / 2.0
        return float(config.ct_level - half), float(config.ct_level + half)
    q = [config.percentile_low, config.percentile_high]
    low, high = percentiles(image, q) if nan_free else np.percentile(image, q)
    return float(low), float(high)


_SELECT_MIN_SIZE = 1 << 16  # below this np.percentile is about as fast
_SAMPLE_SIZE = 1 << 13


def percentiles(image: np.ndarray, q: list[float]) -> np.ndarray:
    """``np.percentile(image, q)`` (method ``linear``), value for value, for an image without NaN.

    ``np.percentile`` partially sorts the whole array around each order statistic it needs (and
    the minimum and maximum). Here only a tail of the values is partitioned per statistic (see
    `_order_statistics`), and the interpolation repeats numpy's arithmetic step by step on the
    same two values: virtual index ``(n - 1) * q / 100``, then numpy's ``_lerp``.
    """
    flat = np.asarray(image).ravel()
    n = flat.size
    if flat.dtype.kind != "f" or n < _SELECT_MIN_SIZE:
        with np.errstate(over="ignore", invalid="ignore"):
            result = np.percentile(image, q)
        if flat.dtype.kind == "f" and not np.isfinite(result).all() and np.isfinite(flat).all():
            result = _wide_percentiles(flat, q)
        return result
    virtual = (n - 1) * np.true_divide(q, 100)
    previous = np.floor(virtual)
    following = previous + 1
    top, bottom = virtual >= n - 1, virtual < 0
    previous[top] = following[top] = -1  # as numpy: the maximum, both sides
    previous[bottom] = following[bottom] = 0
    previous, following = previous.astype(np.intp), following.astype(np.intp)
    gamma = virtual - previous
    ranks = np.unique(np.concatenate([previous, following]) % n)
    values = _order_statistics(flat, ranks)
    a, b = values[np.searchsorted(ranks, previous % n)], values[np.searchsorted(ranks, following % n)]
    with np.errstate(over="ignore"):
        diff = b - a
    if not np.isfinite(diff).all() and np.isfinite(a).all() and np.isfinite(b).all():
        # finite neighbours further apart than the dtype can subtract
        return _wide_percentiles(flat, q)
    result = np.add(a, diff * gamma)
    np.subtract(b, diff * (1 - gamma), out=result, where=gamma >= 0.5, casting="unsafe",
                dtype=type(result.dtype))
    return result


def _wide_percentiles(flat: np.ndarray, q: list[float]) -> np.ndarray:
    """Percentiles of a float array whose values lie further apart than its dtype can subtract
    (e.g. float32 voxels near +-3.4e38): interpolated in float64, the dtype ``np.percentile``
    returns for float ``q`` anyway, without its overflow (inf, NaN)."""
    return np.percentile(flat.astype(np.float64), q)


def _order_statistics(flat: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """The values at sorted positions ``ranks`` (increasing) of a 1D array without NaN.

    Ranks in the lower half come from the values at most a threshold, the others from the values
    at least one. Each threshold is read off a sorted strided sample with a margin, and counting
    the selected values proves the tail holds the ranks (else the whole array is partitioned).
    """
    n = flat.size
    sample = np.sort(flat[:: max(1, n // _SAMPLE_SIZE)])
    m = sample.size
    out = np.empty(ranks.size, flat.dtype)
    low = ranks < n // 2
    if low.any():
        need = int(ranks[low].max()) + 1  # the `need` smallest values
        at = -(-need * m // n)
        threshold = sample[min(m - 1, at + 4 * math.isqrt(at) + 8)]
        tail = flat[flat <= threshold]
        tail = tail if tail.size >= need else flat
        out[low] = np.partition(tail, ranks[low])[ranks[low]]
    high = ~low
    if high.any():
        need = n - int(ranks[high].min())  # the `need` largest values
        at = need * m // n
        threshold = sample[max(0, m - 1 - at - 4 * math.isqrt(at) - 8)]
        tail = flat[flat >= threshold]
        tail = tail if tail.size >= need else flat
        shifted = ranks[high] - (n - tail.size)
        out[high] = np.partition(tail, shifted)[shifted]
    return out


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
    low, high = _bounds(image, config, nan_free=True)
    if not high > low:
        logger.debug("zero-width intensity window (%s, %s): output is all zeros", low, high)
        return np.zeros(image.shape, np.uint8)
    with np.errstate(over="ignore"):
        too_wide = not np.isfinite(np.float32(high) - np.float32(low))
    if too_wide:
        # a window wider than float32 can subtract (values near +-3.4e38): scale in float64
        scaled64 = (np.clip(image, low, high).astype(np.float64) - low) * (255.0 / (high - low))
        return np.rint(np.clip(scaled64, 0.0, 255.0)).astype(np.uint8)
    scaled = np.clip(image, low, high)
    np.subtract(scaled, np.float32(low), out=scaled)
    np.multiply(scaled, np.float32(255.0 / (high - low)), out=scaled)
    np.clip(scaled, 0.0, 255.0, out=scaled)
    return np.rint(scaled, out=scaled).astype(np.uint8)
