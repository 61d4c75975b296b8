"""Class-aware augmentation: random rot90/flips that never swap structures that differ by position.

SemiSAM's RandomRotFlip (a quarter turn in the (0, 1) plane, then a flip of axis 0 or 1) is
harmless for one structure. With several, a flip along the axis on which two structures lie one
after the other (hippocampus: anterior before posterior along axis 1) puts each where the
other belongs, and the network can only tell them apart by shape: held-out Dice 0.72 with
the augmentation, 0.82 without it (docs/benchmarks.md, both hippocampus structures).

`augmentation_plan` measures, on the labeled volumes, how far apart the structures' centroids
lie along each axis, in units of their spread there (the standard deviation of the pair's voxel
coordinates), averaged over volumes with the sign kept (an offset whose sign varies between
volumes is no positional cue). An axis whose separation exceeds ``augment.class_separation``
is "separating": flips along it are dropped, and so is the rot90 when axis 0 or 1 separates
(a quarter turn maps one onto the other). Flips along the remaining axis are kept, each patch
flipped or not with equal chance. One structure keeps SemiSAM's augmentation unchanged.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from semisam.schemas import AugmentConfig, ClassMap

__all__ = ["AugmentPlan", "augmentation_plan", "class_separation"]

ROT_FLIP_AXES = (0, 1)  # SemiSAM's RandomRotFlip: rot90 in the (0, 1) plane, flips of 0 or 1


@dataclass(frozen=True)
class AugmentPlan:
    """What a patch may get: a rot90 in the (0, 1) plane, flips of ``flip_axes``.

    ``flip_axes == (0, 1)`` with ``rot90``: SemiSAM's draw, unchanged. ``separation``: the
    measured separation per axis (empty for one structure), ``reason``: a line for the log.
    ``ordered_axes``: the axes (0-2) along which the structures lie one after the other (a flip
    along one swaps them), measured for every store of several structures whether or not
    ``class_aware`` is on; the student checkpoint records them
    (`semisam.workers.student.ORDERED_AXES_META_KEY`) so that
    test-time flips never use them.
    """

    rot90: bool
    flip: bool
    flip_axes: tuple[int, ...] = ROT_FLIP_AXES
    separation: tuple[float, ...] = ()
    reason: str = ""
    ordered_axes: tuple[int, ...] = ()


def class_separation(labels: Iterable[np.ndarray], values: Iterable[int]) -> np.ndarray:
    """Per axis, the largest over pairs of structures of ``|mean offset| / mean spread``.

    Args:
        labels: ``XxYxZ`` integer label volumes (class values, 0 background).
        values: the class values of the store's structures.

    Returns:
        ``(3,)`` float64 ratios (0 where no volume holds two structures).
    """
    values = list(values)
    offsets: dict[tuple[int, int], list[np.ndarray]] = {}
    spreads: dict[tuple[int, int], list[np.ndarray]] = {}
    for label in labels:
        coords = {v: np.argwhere(label == v).astype(np.float64) for v in values}
        for a, b in itertools.combinations(values, 2):
            if not len(coords[a]) or not len(coords[b]):
                continue
            pair = np.concatenate([coords[a], coords[b]])
            offsets.setdefault((a, b), []).append(coords[b].mean(0) - coords[a].mean(0))
            spreads.setdefault((a, b), []).append(pair.std(0))
    ratio = np.zeros(3)
    for pair, found in offsets.items():
        spread = np.maximum(np.mean(spreads[pair], axis=0), 1e-6)
        ratio = np.maximum(ratio, np.abs(np.mean(found, axis=0)) / spread)
    return ratio


def augmentation_plan(augment: AugmentConfig, classes: ClassMap,
                      labels: Iterable[np.ndarray]) -> AugmentPlan:
    """The rot90/flips to draw from for a store of ``classes`` (see the module docstring).

    Args:
        augment: the training config's augmentation switches.
        classes: the store's class map.
        labels: the labeled volumes' labels (read only for several structures).
    """
    if classes.count < 2:
        return AugmentPlan(rot90=augment.rot90, flip=augment.flip)
    separation = class_separation(labels, classes.values)
    apart = [axis for axis in range(3) if separation[axis] > augment.class_separation]
    if not (augment.rot90 or augment.flip) or not augment.class_aware:
        return AugmentPlan(rot90=augment.rot90, flip=augment.flip,
                           separation=tuple(float(s) for s in separation),
                           ordered_axes=tuple(apart))
    flips = tuple(a for a in ROT_FLIP_AXES if a not in apart) if augment.flip else ()
    rot90 = augment.rot90 and not any(a in apart for a in ROT_FLIP_AXES)
    shown = ", ".join(f"axis {a} {separation[a]:.2f}" for a in range(3))
    dropped = ["rot90"] if augment.rot90 and not rot90 else []
    dropped += [f"flips of axis {a}" for a in ROT_FLIP_AXES if augment.flip and a not in flips]
    reason = (f"class-aware augmentation: structures' centroid separation {shown} (limit "
              f"{augment.class_separation}); " + (f"dropped {', '.join(dropped)}; "
                                                  if dropped else "nothing dropped; ")
              + (f"kept flips of axis {', '.join(map(str, flips))}" if flips else "no flips kept")
              + (" and rot90" if rot90 else ""))
    return AugmentPlan(rot90=rot90, flip=bool(flips), flip_axes=flips or ROT_FLIP_AXES,
                       separation=tuple(float(s) for s in separation), reason=reason,
                       ordered_axes=tuple(apart))
