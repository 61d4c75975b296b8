"""Training patches: crop positions, chunk-aware region reads from Zarr arrays, augmentation.

A region is read by slicing the Zarr array (``array[x0:x1, y0:y1, z0:z1]``), so only the chunks
it overlaps are fetched; volumes are never loaded whole. Regions that reach past a volume's edge
(patches larger than the volume, random placement) are padded. Augmentation uses MONAI's
array transforms (`Rotate90`, `Flip`) with the random choices drawn from the caller's
generator, so a run is reproducible from that generator's state alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from monai.transforms import Flip, Rotate90
from monai.utils import convert_to_numpy

Shape3 = tuple[int, int, int]


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
    """One ``size`` crop of in-memory (image, label); centred on foreground with ``foreground_prob``.

    Used by the supervised fit of small test students; the training stage reads from Zarr with
    `crop_start` + `read_region` instead.
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


def crop_start(shape: Sequence[int], size: Sequence[int], rng: np.random.Generator,
               centre: Sequence[int] | None = None) -> Shape3:
    """Start corner of a ``size`` crop of a ``shape`` volume (voxels; may be negative).

    Along an axis where the volume is larger than the patch the crop stays inside it; where it is
    smaller, the volume lands at a random offset inside the (padded) patch.

    Args:
        centre: a voxel the crop is centred on (clipped to the allowed range); None = uniform.
    """
    start = []
    for axis, (dim, patch) in enumerate(zip(shape, size)):
        low, high = min(0, dim - patch), max(0, dim - patch)
        if centre is None:
            start.append(int(rng.integers(low, high + 1)))
        else:
            start.append(int(np.clip(int(centre[axis]) - patch // 2, low, high)))
    return tuple(start)  # type: ignore[return-value]


def read_region(array, start: Sequence[int], size: Sequence[int], fill: float = 0.0,
                dtype: type = np.float32) -> np.ndarray:
    """``array[start : start + size]`` of a 3D Zarr (or NumPy) array, padded with ``fill`` outside.

    Args:
        array: ``XxYxZ`` array; only the overlapping chunks are read.
        start: corner in voxels (may be negative or reach past the end).
        size: region size in voxels.

    Returns:
        ``size`` array of ``dtype``.
    """
    src, dst = [], []
    for begin, extent, dim in zip(start, size, array.shape):
        lo, hi = max(begin, 0), min(begin + extent, dim)
        if hi <= lo:
            return np.full(tuple(size), fill, dtype=dtype)
        src.append(slice(lo, hi))
        dst.append(slice(lo - begin, hi - begin))
    block = np.asarray(array[tuple(src)]).astype(dtype, copy=False)
    if block.shape == tuple(size):
        return block
    out = np.full(tuple(size), fill, dtype=dtype)
    out[tuple(dst)] = block
    return out


def rot_flip_choice(rng: np.random.Generator, rot90: bool, flip: bool,
                    flip_axes: tuple[int, ...] = (0, 1)) -> tuple[int, int | None]:
    """SemiSAM's RandomRotFlip draw: ``k`` in {0..3} quarter turns in the (0, 1) plane, then a
    flip of axis 0 or 1 (``None`` when disabled). ``flip_axes`` narrower than (0, 1) (class-aware
    augmentation, `training.augmentation`): no flip or a flip of one of them, equally likely
    (a flip that always happens would mirror every patch, not augment)."""
    k = int(rng.integers(0, 4)) if rot90 else 0
    if not flip or not flip_axes:
        return k, None
    if tuple(flip_axes) == (0, 1):
        return k, int(rng.integers(0, 2))
    choices = [None, *flip_axes]
    return k, choices[int(rng.integers(0, len(choices)))]


def read_size(size: Sequence[int], k: int) -> Shape3:
    """Region to read so that ``k`` quarter turns in the (0, 1) plane give a ``size`` patch."""
    return (size[1], size[0], size[2]) if k % 2 else (size[0], size[1], size[2])


def rot_flip(stack: np.ndarray, k: int, flip_axis: int | None) -> np.ndarray:
    """Apply the drawn rotation and flip to a channel-first ``CxXxYxZ`` stack (MONAI transforms).

    Every channel (image, label, confidence) gets the same geometric transform.
    """
    out = stack
    if k % 4:
        out = Rotate90(k=k, spatial_axes=(0, 1))(out)
    if flip_axis is not None:
        out = Flip(spatial_axis=flip_axis)(out)
    return np.ascontiguousarray(convert_to_numpy(out))
