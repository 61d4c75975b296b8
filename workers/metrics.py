"""Segmentation metrics with medpy's definitions (``medpy.metric.binary``), without medpy.

One floor below training: the workers (student vs masker agreement, the largest component in
fusion) and training/evaluation (``semisam.training.metrics`` re-exports these names) share them.

- ``dice``: ``2|A n B| / (|A| + |B|)``; 1.0 when both masks are empty (medpy ``dc`` means
  to return 1.0 there, but returns NaN since its numpy integer division does not raise).
- ``jaccard``: ``|A n B| / |A u B|``; 1.0 when both are empty (medpy ``jc``).
- surface of a mask: its voxels that a 1-connected (6-neighbour in 3D) erosion removes, the
  image border counting as background; surface distances from A to B: the Euclidean distance
  transform of B's surface complement (with the voxel spacing) sampled on A's surface.
- ``hd95``: 95th percentile of the surface distances of A to B and of B to A, pooled (medpy
  ``hd95``); ``asd``: mean surface distance of A (the prediction) to B (the truth), directed as
  medpy ``asd``. Both are undefined (NaN here; medpy raises) when either mask is empty.

Distances are in voxels with ``spacing=None`` and in the spacing's unit (mm) otherwise. The
distance transforms run on the bounding box of both masks plus one voxel, which gives the same
values as on the whole volume (every surface voxel lies inside it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

METRICS = ("dice", "jaccard", "hd95_voxels", "asd_voxels", "hd95_mm", "asd_mm")


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice coefficient of two masks of one shape (nonzero = foreground; 1.0 when both are
    empty)."""
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(ref))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(pred & ref)) / total


def class_dice(pred: np.ndarray, ref: np.ndarray, values: Sequence[int] | None = None) -> float:
    """Dice of two ``XxYxZ`` label maps: foreground against foreground when ``values`` is
    None, else the mean over the class values ``v`` of ``dice(pred == v, ref == v)`` (a class
    drawn as another counts as wrong; 1 for a class absent from both)."""
    if values is None:
        return dice(pred, ref)
    return float(np.mean([dice(pred == v, ref == v) for v in values]))


def jaccard(pred: np.ndarray, ref: np.ndarray) -> float:
    """Jaccard index of two ``XxYxZ`` masks."""
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    union = int(np.count_nonzero(pred | ref))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(pred & ref)) / union


def _crop(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cut to the bounding box of their union, widened by one voxel inside the image."""
    coords = np.argwhere(pred | ref)
    lo = np.maximum(coords.min(axis=0) - 1, 0)
    hi = np.minimum(coords.max(axis=0) + 2, pred.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    return pred[box], ref[box]


def _surface(mask: np.ndarray) -> np.ndarray:
    footprint = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask ^ ndimage.binary_erosion(mask, structure=footprint, iterations=1)


def surface_distances(pred: np.ndarray, ref: np.ndarray,
                      spacing: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """Distances of pred's surface voxels to ref's surface, and of ref's to pred's.

    Args:
        pred, ref: ``XxYxZ`` masks.
        spacing: voxel size per axis (mm); None = voxel units.

    Returns:
        ``(pred -> ref, ref -> pred)`` 1D float64 arrays, or None when either mask is empty.
    """
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    if not pred.any() or not ref.any():
        return None
    pred, ref = _crop(pred, ref)
    sampling = None if spacing is None else np.asarray(spacing, dtype=np.float64)
    pred_surface, ref_surface = _surface(pred), _surface(ref)
    to_ref = ndimage.distance_transform_edt(~ref_surface, sampling=sampling)[pred_surface]
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=sampling)[ref_surface]
    return to_ref, to_pred


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """95% Hausdorff distance (symmetric, pooled); NaN when either mask is empty."""
    dists = surface_distances(pred, ref, spacing)
    if dists is None:
        return float("nan")
    return float(np.percentile(np.hstack(dists), 95))


def asd(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """Average surface distance of pred to ref (directed, as medpy ``asd``); NaN when empty."""
    dists = surface_distances(pred, ref, spacing)
    return float("nan") if dists is None else float(dists[0].mean())


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of an ``XxYxZ`` mask as bool (unchanged when empty or
    one component; ties go to the lowest label, i.e. the first in C scan order)."""
    mask = np.asarray(mask, bool)
    labels, count = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, bool))
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (1 + int(np.argmax(sizes)))


def case_metrics(pred: np.ndarray, ref: np.ndarray,
                 spacing: Sequence[float]) -> dict[str, float]:
    """Every metric of `METRICS` for one volume (NaN where undefined).

    Args:
        pred, ref: ``XxYxZ`` masks.
        spacing: voxel size in mm along the array axes.
    """
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    out = {"dice": dice(pred, ref), "jaccard": jaccard(pred, ref)}
    for unit, sp in (("voxels", None), ("mm", spacing)):
        dists = surface_distances(pred, ref, sp)
        if dists is None:
            out[f"hd95_{unit}"] = out[f"asd_{unit}"] = float("nan")
        else:
            out[f"hd95_{unit}"] = float(np.percentile(np.hstack(dists), 95))
            out[f"asd_{unit}"] = float(dists[0].mean())
    return out
