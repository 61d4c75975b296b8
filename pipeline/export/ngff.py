"""OME-NGFF 0.5 building blocks (Zarr v3): geometry, pyramids and multiscale groups.

A semisam volume is stored as ``XxYxZ`` (the source file's axis order ``(i, j, k)``) with a 4x4
affine to world millimetres (RAS). NGFF 0.5 images are ``(z, y, x)`` with the fastest axis last
and their coordinate transformations are a scale and a translation per axis, nothing else
(no rotation, no flip, no axis permutation). So:

* the array is written transposed, ``ngff[z, y, x] = stored[x, y, z]`` (``k, j, i``);
* ``scale`` is the stored spacing reversed (mm, the affine's column norms), always exact;
* ``translation`` is the affine's origin reversed when the affine is **axis-aligned with
  positive steps** (a diagonal 3x3 part): NGFF coordinates are then the world RAS millimetres.
  Any other affine (flipped, permuted, rotated, oblique) cannot be said in NGFF 0.5: by
  default (``OBLIQUE_SCALE_ONLY``) the image keeps its true spacing with translation 0, i.e.
  it is shown in its own voxel frame, and the full affine travels in the ``semisam``
  attributes (``affine``, ``geometry: "voxel-frame"``) so a reader can place it; with
  ``OBLIQUE_REFUSE`` such a volume is refused with one line.

Pyramid: level ``n`` halves every axis whose spacing is below twice the level's smallest
spacing (anisotropic volumes first become closer to isotropic), lengths rounded up. Images
average each 2-block (edge voxels repeated to an even length), so a level's voxel centre moves
by half a source voxel and its translation says so; labels and other maps keep every second
voxel (no new values, no shift).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from semisam.schemas import InputError

if TYPE_CHECKING:
    import numpy as np
    import zarr

log = logging.getLogger(__name__)

NGFF_VERSION = "0.5"
AXES = ("z", "y", "x")
OBLIQUE_SCALE_ONLY = "scale-only"
OBLIQUE_REFUSE = "refuse"
_AXIS_TOL = 1e-6  # relative size of an off-diagonal term that still counts as axis-aligned


def to_ngff(stored: np.ndarray) -> np.ndarray:
    """A stored ``XxYxZ`` array as NGFF ``ZxYxX`` (a transposed view, no copy)."""
    return stored.transpose(2, 1, 0)


def ngff_geometry(affine: np.ndarray, *, oblique: str = OBLIQUE_SCALE_ONLY,
                  where: str = "volume") -> tuple[list[float], list[float], str]:
    """``(scale zyx mm, translation zyx mm, geometry)`` of a 4x4 voxel -> RAS mm affine.

    ``geometry`` is ``"world"`` (NGFF coordinates are RAS mm) or ``"voxel-frame"`` (spacing
    only; see the module docstring).

    Raises:
        InputError: ``oblique == "refuse"`` and the affine is not axis-aligned with positive
            steps (the message names ``where`` and the affine's problem).
    """
    import numpy as np

    linear = np.asarray(affine, dtype=np.float64)[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    scale = [float(s) for s in spacing[::-1]]
    off = linear - np.diag(np.diag(linear))
    aligned = bool(np.all(np.abs(off) <= _AXIS_TOL * spacing.max()))
    if aligned and np.all(np.diag(linear) > 0):
        origin = np.asarray(affine, dtype=np.float64)[:3, 3]
        return scale, [float(t) for t in origin[::-1]], "world"
    problem = ("flips an axis" if aligned else "rotates or permutes the axes")
    if oblique == OBLIQUE_REFUSE:
        raise InputError(f"{where}: the affine {problem}, which OME-NGFF 0.5 (scale and "
                         "translation only) cannot express; export with --oblique scale-only "
                         "(voxel frame, affine kept in the 'semisam' attributes) or as NIfTI")
    log.warning("%s: the affine %s; OME-Zarr written in its voxel frame (spacing kept, affine in "
             "the 'semisam' attributes)", where, problem)
    return scale, [0.0, 0.0, 0.0], "voxel-frame"


def pyramid_factors(shape: tuple[int, ...], scale: list[float], levels: int | None,
                    min_size: int = 32) -> list[tuple[int, int, int]]:
    """Cumulative downsampling factors per level (level 0 is ``(1, 1, 1)``), ``ZxYxX``.

    ``levels`` None: halve until no axis can be halved or the largest axis is at most
    ``min_size``, at least two levels when any axis can be halved.
    """
    factors = [(1, 1, 1)]
    while levels is None or len(factors) < levels:
        prev = factors[-1]
        size = [-(-n // f) for n, f in zip(shape, prev)]
        spacing = [s * f for s, f in zip(scale, prev)]
        if levels is None and len(factors) >= 2 and max(size) <= min_size:
            break
        smallest = min(sp for sp, n in zip(spacing, size) if n > 1) if max(size) > 1 else 0
        step = tuple(2 if n > 1 and sp < 2 * smallest else 1 for n, sp in zip(size, spacing))
        if step == (1, 1, 1):
            break
        factors.append(tuple(f * s for f, s in zip(prev, step)))  # type: ignore[misc]
    return factors


def _pad_even(data: np.ndarray, step: tuple[int, ...]) -> np.ndarray:
    import numpy as np

    pad = [(0, (-n) % s) for n, s in zip(data.shape, step)]
    return np.pad(data, pad, mode="edge") if any(p for _, p in pad) else data


def downsample(data: np.ndarray, step: tuple[int, int, int], *, average: bool) -> np.ndarray:
    """One pyramid step of a ``ZxYxX`` array: block mean (images, same dtype, rounded for
    integers) or every ``step``-th voxel (labels, maps)."""
    import numpy as np

    if not average:
        return np.ascontiguousarray(data[::step[0], ::step[1], ::step[2]])
    padded = _pad_even(data, step).astype(np.float64)
    z, y, x = (n // s for n, s in zip(padded.shape, step))
    blocks = padded.reshape(z, step[0], y, step[1], x, step[2]).mean(axis=(1, 3, 5))
    if np.issubdtype(data.dtype, np.integer):
        info = np.iinfo(data.dtype)
        blocks = np.clip(np.rint(blocks), info.min, info.max)
    return blocks.astype(data.dtype)


def level_transforms(scale: list[float], translation: list[float],
                     factor: tuple[int, int, int], *, average: bool) -> list[dict[str, Any]]:
    """NGFF ``coordinateTransformations`` of one level: scale, then translation (mm)."""
    level_scale = [s * f for s, f in zip(scale, factor)]
    shift = [(f - 1) / 2 * s if average else 0.0 for s, f in zip(scale, factor)]
    return [{"type": "scale", "scale": level_scale},
            {"type": "translation", "translation": [t + d for t, d in zip(translation, shift)]}]


def write_multiscale(group: zarr.Group, data: np.ndarray, *, name: str, scale: list[float],
                     translation: list[float], factors: list[tuple[int, int, int]],
                     average: bool, chunk: int = 64) -> dict[str, Any]:
    """Write the pyramid of a ``ZxYxX`` array as arrays ``"0"``, ``"1"``, ... of ``group``
    (zstd-compressed, chunks of ``chunk`` voxels per axis) and return its ``multiscales``
    entry (axes in millimetres)."""
    from zarr.codecs import ZstdCodec

    datasets = []
    level = data
    prev = (1, 1, 1)
    for n, factor in enumerate(factors):
        if n:
            step = tuple(f // p for f, p in zip(factor, prev))
            level = downsample(level, step, average=average)  # type: ignore[arg-type]
        prev = factor
        chunks = tuple(min(chunk, s) for s in level.shape)
        arr = group.create_array(str(n), shape=level.shape, dtype=level.dtype, chunks=chunks,
                                 compressors=[ZstdCodec(level=3)], fill_value=0,
                                 dimension_names=list(AXES), overwrite=True)
        arr[...] = level
        datasets.append({"path": str(n), "coordinateTransformations": level_transforms(
            scale, translation, factor, average=average)})
    axes = [{"name": a, "type": "space", "unit": "millimeter"} for a in AXES]
    return {"name": name, "axes": axes, "datasets": datasets,
            "type": "mean" if average else "nearest"}
