"""Localization: the student's probability map becomes per-slice prompts.

The coordinate frame lives here and only here. A volume is ``XxYxZ``; slice ``i`` along
``axis`` is ``np.take(volume, i, axis)``, an ``HxW`` array whose rows (y) run along the first
remaining volume axis and whose columns (x) run along the second. Prompts are in that frame:
boxes are XYXY (x = column, y = row) in pixels and points are XY pixels. `slice_image`,
`stack_slices` and `put_slices` move data between the volume and that frame.

Prompt rules (`PromptConfig`):

- foreground = ``prob > threshold``, optionally only its largest 26-connected 3D component;
- a slice is prompted when its foreground has at least ``min_slice_pixels`` pixels;
- box = the slice foreground's bounding box grown by ``box_margin`` pixels, clipped to the slice;
- positive points: interior maxima of the foreground's distance transform (ties: higher student
  probability, then row, then column), kept apart by greedy non-maximum suppression; when fewer
  distinct points exist the best one repeats, so every slice gets exactly ``positive_points``;
- negative points: inside the box, at least ``NEGATIVE_CLEARANCE`` pixels off the foreground,
  the first farthest from it and the rest spread by farthest-point sampling (exactly
  ``negative_points``; fallbacks are documented on `negative_points`);
- mask prompt: the logit of the slice's probabilities clipped to [1e-4, 1 - 1e-4].
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from semisam.schemas import PromptConfig

from .maskers.base import SlicePrompt

__all__ = [
    "NEGATIVE_CLEARANCE",
    "foreground_mask",
    "negative_points",
    "positive_points",
    "mask_logits",
    "put_slices",
    "slice_box",
    "slice_image",
    "slice_prompts",
    "stack_slices",
]

logger = logging.getLogger(__name__)

NEGATIVE_CLEARANCE = 2  # pixels between a negative point and the slice foreground
_LOGIT_CLIP = 1e-4


def _check_axis(volume: np.ndarray, axis: int) -> None:
    if volume.ndim != 3:
        raise ValueError(f"volume must be XxYxZ (3D), got shape {volume.shape}")
    if axis not in (0, 1, 2):
        raise ValueError(f"slice axis must be 0, 1 or 2, got {axis}")


def slice_image(volume: np.ndarray, index: int, axis: int) -> np.ndarray:
    """Slice ``index`` along ``axis`` of an ``XxYxZ`` volume, as an ``HxW`` array.

    Raises:
        ValueError: the volume is not 3D, or the axis or index is out of range.
    """
    _check_axis(volume, axis)
    if not 0 <= index < volume.shape[axis]:
        raise ValueError(f"slice index must be in [0, {volume.shape[axis]}), got {index}")
    return np.take(volume, index, axis=axis)


def stack_slices(volume: np.ndarray, indices: Sequence[int], axis: int) -> np.ndarray:
    """Slices ``indices`` along ``axis`` of an ``XxYxZ`` volume, as an ``NxHxW`` array (a copy)."""
    _check_axis(volume, axis)
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= volume.shape[axis]):
        raise ValueError(f"slice indices must be in [0, {volume.shape[axis]}), got {idx.tolist()}")
    return np.moveaxis(volume, axis, 0)[idx].copy()


def put_slices(
    volume: np.ndarray, indices: Sequence[int], axis: int, values: np.ndarray
) -> np.ndarray:
    """Write ``NxHxW`` slice values into an ``XxYxZ`` array in place (inverse of `stack_slices`).

    Args:
        volume: ``XxYxZ`` array written in place.
        indices: N slice indices along ``axis``.
        axis: slice axis.
        values: ``NxHxW`` values, cast to ``volume.dtype``.

    Returns:
        ``volume``, for chaining.

    Raises:
        ValueError: the indices are out of range or ``values`` has the wrong shape.
    """
    _check_axis(volume, axis)
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    view = np.moveaxis(volume, axis, 0)
    expected = (idx.size,) + view.shape[1:]
    if tuple(np.shape(values)) != expected:
        raise ValueError(f"values must have shape {expected}, got {np.shape(values)}")
    if idx.size and (idx.min() < 0 or idx.max() >= volume.shape[axis]):
        raise ValueError(f"slice indices must be in [0, {volume.shape[axis]}), got {idx.tolist()}")
    view[idx] = values
    return volume


def foreground_mask(prob: np.ndarray, config: PromptConfig) -> np.ndarray:
    """Threshold the student's probabilities, optionally keeping the largest 3D component.

    Args:
        prob: ``XxYxZ`` float foreground probabilities in [0, 1].
        config: ``threshold`` and ``largest_component`` are used.

    Returns:
        ``XxYxZ`` bool foreground (``prob > threshold``); components are 26-connected and ties
        between equally large components go to the lowest label (scan order).
    """
    prob = np.asarray(prob)
    if prob.ndim != 3:
        raise ValueError(f"probability map must be XxYxZ (3D), got shape {prob.shape}")
    mask = prob > config.threshold
    if not config.largest_component or not mask.any():
        return mask
    # labelling the foreground's bounding box finds the same components in the same scan order
    box = _bounding_box(mask)
    labels, count = ndimage.label(mask[box], structure=np.ones((3, 3, 3), bool))
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0
    keep = int(np.argmax(sizes))
    logger.debug("kept component %d of %d (%d voxels)", keep, count, sizes[keep])
    largest = np.zeros_like(mask)
    largest[box] = labels == keep
    return largest


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """Slices of the smallest box holding every true voxel of a non-empty 3D mask."""
    yz = mask.any(axis=0)
    extents = (mask.any(axis=(1, 2)), yz.any(axis=1), yz.any(axis=0))
    return tuple(slice(int(e[0]), int(e[-1]) + 1) for e in (np.flatnonzero(x) for x in extents))


def slice_box(foreground: np.ndarray, margin: int) -> np.ndarray:
    """XYXY box (pixels, inclusive) of an ``HxW`` foreground, grown by ``margin``, clipped.

    Raises:
        ValueError: the foreground is empty.
    """
    rows = np.flatnonzero(foreground.any(axis=1))
    cols = np.flatnonzero(foreground.any(axis=0))
    if rows.size == 0:
        raise ValueError("cannot box an empty slice foreground")
    return _grown_box(rows[0], rows[-1], cols[0], cols[-1], foreground.shape, margin)


def _grown_box(r0: int, r1: int, c0: int, c1: int, shape: tuple[int, ...], margin: int) -> np.ndarray:
    """XYXY box of rows ``r0..r1`` and columns ``c0..c1`` grown by ``margin``, clipped to ``shape``."""
    h, w = shape
    x0, x1 = max(c0 - margin, 0), min(c1 + margin, w - 1)
    y0, y1 = max(r0 - margin, 0), min(r1 + margin, h - 1)
    return np.array([x0, y0, x1, y1], np.float32)


def positive_points(foreground: np.ndarray, prob: np.ndarray, k: int) -> np.ndarray:
    """``k`` well-separated interior points of an ``HxW`` foreground, as ``(k, 2)`` float32 XY.

    Candidates are foreground pixels ranked by distance to the background (the slice border
    counts as background), then higher ``prob``, then row, then column. Greedy non-maximum
    suppression keeps points at least the best point's distance apart; the radius halves when
    no candidate is left, and the best point repeats when fewer than ``k`` pixels exist.

    Args:
        foreground: ``HxW`` bool slice foreground, not empty.
        prob: ``HxW`` student probabilities (tie-break).
        k: number of points.

    Raises:
        ValueError: the foreground is empty.
    """
    if k == 0:
        return np.zeros((0, 2), np.float32)
    rows = np.flatnonzero(foreground.any(axis=1))
    cols = np.flatnonzero(foreground.any(axis=0))
    if rows.size == 0:
        raise ValueError("positive points need a non-empty slice foreground, got an empty one")
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return _positive_points(foreground[box], prob[box], k, rows[0], cols[0])


def _positive_points(foreground: np.ndarray, prob: np.ndarray, k: int, r0: int, c0: int) -> np.ndarray:
    """`positive_points` of a foreground cropped to its bounding box, whose corner is (r0, c0)."""
    padded = np.zeros((foreground.shape[0] + 2, foreground.shape[1] + 2), bool)
    padded[1:-1, 1:-1] = foreground  # the slice border counts as background
    dist = ndimage.distance_transform_edt(padded)[1:-1, 1:-1]
    rows, cols = np.nonzero(foreground)
    dist, prob = dist[rows, cols], prob[rows, cols]
    rows, cols = (rows + r0).astype(np.float64), (cols + c0).astype(np.float64)
    best = _first_ranked(dist, prob)
    chosen = _suppress(rows, cols, dist, prob, best, k) if k > 1 else [best]
    chosen += [best] * (k - len(chosen))
    return np.stack([cols[chosen], rows[chosen]], axis=1).astype(np.float32)


def _suppress(
    rows: np.ndarray, cols: np.ndarray, dist: np.ndarray, prob: np.ndarray, best: int, k: int
) -> list[int]:
    """Greedy non-maximum suppression of `positive_points`: up to ``k`` candidates from ``best``."""
    chosen = [best]
    nearest = (rows - rows[best]) ** 2 + (cols - cols[best]) ** 2  # squared distance to chosen points
    radius = max(float(dist[best]), 1.0)
    while len(chosen) < k and radius >= 1.0:
        free = np.flatnonzero(nearest >= radius**2)
        if free.size == 0:
            radius /= 2.0
            continue
        pick = _first_ranked(dist, prob, free)
        chosen.append(pick)
        nearest = np.minimum(nearest, (rows - rows[pick]) ** 2 + (cols - cols[pick]) ** 2)
    return chosen


def _first_ranked(first: np.ndarray, second: np.ndarray, among: np.ndarray | None = None) -> int:
    """The candidate ranked first: largest ``first``, then largest ``second``, then lowest index.

    ``among`` (increasing indices, default all) restricts the candidates; NaN ranks below every
    number. This is the first of ``among`` in ``np.lexsort((index, -second, -first))`` order,
    found without sorting.
    """
    among = np.arange(first.size) if among is None else among
    for key in (first, second):
        values = key[among]
        top = values.max()
        if np.isnan(top):
            numbers = ~np.isnan(values)
            if not numbers.any():
                continue
            top = values[numbers].max()
        among = among[values == top]
        if among.size == 1:
            break
    return int(among[0])


def _spread(candidates: np.ndarray, away: np.ndarray, prob: np.ndarray, k: int) -> np.ndarray:
    """Farthest-point sampling of ``k`` candidate pixels, starting at the largest ``away``.

    Candidates rank by larger ``away``, then lower ``prob``, then row, then column; the first
    ranked starts and, among equally far candidates, breaks every tie.
    """
    rows, cols = np.nonzero(candidates)
    away, low = away[rows, cols], -prob[rows, cols]
    rows, cols = rows.astype(np.float64), cols.astype(np.float64)
    chosen = [_first_ranked(away, low)]
    nearest = (rows - rows[chosen[0]]) ** 2 + (cols - cols[chosen[0]]) ** 2
    while len(chosen) < k:
        farthest = nearest.max()
        if farthest == 0:
            break
        pick = _first_ranked(away, low, np.flatnonzero(nearest == farthest))
        chosen.append(pick)
        nearest = np.minimum(nearest, (rows - rows[pick]) ** 2 + (cols - cols[pick]) ** 2)
    chosen = [chosen[i % len(chosen)] for i in range(k)]
    return np.stack([cols[chosen], rows[chosen]], axis=1).astype(np.float32)


def negative_points(
    foreground: np.ndarray, prob: np.ndarray, box: np.ndarray, k: int
) -> np.ndarray:
    """``k`` background points of an ``HxW`` slice, as ``(k, 2)`` float32 XY pixels.

    Candidates, first non-empty set wins: box pixels more than `NEGATIVE_CLEARANCE` pixels
    (city-block) off the foreground; box pixels off the foreground; any pixel off the foreground;
    (all foreground) every pixel, lowest ``prob`` first. The first point is the candidate farthest
    from the foreground (ties: lower ``prob``, row, column); the others follow by farthest-point
    sampling. Fewer candidates than ``k`` repeat cyclically.

    Args:
        foreground: ``HxW`` bool slice foreground.
        prob: ``HxW`` student probabilities (tie-break).
        box: ``(4,)`` XYXY inclusive pixel box holding all the foreground (see `slice_box`).
        k: number of points.
    """
    if k == 0:
        return np.zeros((0, 2), np.float32)
    x0, y0, x1, y1 = (int(v) for v in box)
    # the box holds all the foreground, so distances computed inside it are exact there
    fg_box, prob_box = foreground[y0 : y1 + 1, x0 : x1 + 1], prob[y0 : y1 + 1, x0 : x1 + 1]
    offset = np.array([x0, y0], np.float32)
    if fg_box.any() and not fg_box.all():
        away = ndimage.distance_transform_edt(~fg_box)
        cleared = _cleared(fg_box, away)
        candidates = cleared if cleared.any() else ~fg_box
        return _spread(candidates, away, prob_box, k) + offset
    background = ~foreground
    if background.any():
        away = ndimage.distance_transform_edt(background) if foreground.any() else prob * 0.0
        return _spread(background, away, prob, k)
    logger.debug("slice is all foreground: negative points at the lowest probabilities")
    return _spread(np.ones_like(foreground, bool), np.zeros(prob.shape), prob, k)


def _cleared(foreground: np.ndarray, away: np.ndarray) -> np.ndarray:
    """Pixels more than `NEGATIVE_CLEARANCE` pixels (city-block) off the foreground.

    ``away`` is the Euclidean distance to the foreground. For a clearance c of 1 or 2 it selects
    the same pixels as dilating c times: an integer offset has dx^2 + dy^2 <= c^2 exactly when
    |dx| + |dy| <= c.
    """
    if NEGATIVE_CLEARANCE in (1, 2):
        return away > NEGATIVE_CLEARANCE
    return ~ndimage.binary_dilation(foreground, iterations=NEGATIVE_CLEARANCE)


def mask_logits(prob: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] -> float32 logits, clipped at +-logit(1 - 1e-4) (about 9.2): the
    dense mask prompt a round passes with ``prompts.mask_prompt``."""
    p = np.clip(prob.astype(np.float64), _LOGIT_CLIP, 1.0 - _LOGIT_CLIP)
    return np.log(p / (1.0 - p)).astype(np.float32)


def slice_prompts(mask: np.ndarray, prob: np.ndarray, config: PromptConfig) -> list[SlicePrompt]:
    """Prompts for every slice along ``config.slice_axis`` with enough foreground.

    Args:
        mask: ``XxYxZ`` bool foreground (see `foreground_mask`).
        prob: ``XxYxZ`` float student probabilities in [0, 1] (ranking points, mask prompt).
        config: prompt settings.

    Returns:
        Prompts in increasing slice order. Each carries exactly ``positive_points`` label-1
        points followed by ``negative_points`` label-0 points, so a batch has one point count.

    Raises:
        ValueError: ``mask`` and ``prob`` differ in shape or are not 3D.
    """
    mask, prob = np.asarray(mask, dtype=bool), np.asarray(prob)
    if mask.shape != prob.shape:
        raise ValueError(f"mask shape {mask.shape} differs from prob shape {prob.shape}")
    axis = config.slice_axis
    _check_axis(mask, axis)
    other = tuple(a for a in range(3) if a != axis)
    counts = mask.sum(axis=other)
    # slice frames as views; each slice's foreground extent from two whole-volume reductions
    fg_slices, prob_slices = np.moveaxis(mask, axis, 0), np.moveaxis(prob, axis, 0)
    has_rows, has_cols = fg_slices.any(axis=2), fg_slices.any(axis=1)
    plane = fg_slices.shape[1:]
    labels = np.array([1] * config.positive_points + [0] * config.negative_points, np.int64)
    prompts: list[SlicePrompt] = []
    for index in np.flatnonzero(counts >= config.min_slice_pixels):
        index = int(index)
        fg, p = fg_slices[index], prob_slices[index]
        rows, cols = np.flatnonzero(has_rows[index]), np.flatnonzero(has_cols[index])
        r0, r1, c0, c1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
        box = _grown_box(r0, r1, c0, c1, plane, config.box_margin)
        positive = np.zeros((0, 2), np.float32)
        if config.positive_points:
            inside = (slice(r0, r1 + 1), slice(c0, c1 + 1))
            positive = _positive_points(fg[inside], p[inside], config.positive_points, r0, c0)
        points = np.concatenate([positive, negative_points(fg, p, box, config.negative_points)])
        logits = mask_logits(p) if config.mask_prompt else None
        prompts.append(SlicePrompt(index, box, points, labels.copy(), logits))
    logger.debug("%d of %d slices prompted along axis %d", len(prompts), mask.shape[axis], axis)
    return prompts
