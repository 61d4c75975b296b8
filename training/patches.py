"""Random training patches from labeled volumes (foreground-biased crops)."""

from __future__ import annotations

import numpy as np


def pad_to(array: np.ndarray, size: tuple[int, int, int], value: float = 0.0) -> np.ndarray:
    """Pad ``XxYxZ`` at the end of each axis so every axis is at least ``size``."""
    pads = [(0, max(0, s - d)) for d, s in zip(array.shape, size)]
    if not any(p[1] for p in pads):
        return array
    return np.pad(array, pads, mode="constant", constant_values=value)


def sample_patch(
    image: np.ndarray,
    label: np.ndarray,
    size: tuple[int, int, int],
    rng: np.random.Generator,
    foreground_prob: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """One ``size`` crop of (image, label); centred on a foreground voxel with ``foreground_prob``.

    Args:
        image: ``XxYxZ`` float32 (already normalised).
        label: ``XxYxZ`` uint8 {0,1}.

    Returns:
        ``(image patch, label patch)`` of shape ``size``.
    """
    image = pad_to(image, size, float(image.min()))
    label = pad_to(label, size, 0)
    shape = np.array(image.shape)
    half = np.array(size) // 2
    fg = np.argwhere(label > 0)
    if len(fg) and rng.random() < foreground_prob:
        centre = fg[rng.integers(len(fg))]
        start = np.clip(centre - half, 0, shape - np.array(size))
    else:
        start = np.array([rng.integers(0, s - p + 1) for s, p in zip(shape, size)])
    sl = tuple(slice(int(a), int(a) + p) for a, p in zip(start, size))
    return image[sl], label[sl]
