"""Training and validation boxes: the prompts a round really gives, drawn from references.

A round prompts LiteMedSAM with the student's box on a start slice and then with the box of the
masker's own mask on the slice before (propagation, 5 px margin): boxes that are too loose,
too tight, shifted, from a neighbouring slice, and past the structure's end along the slice
axis. Training only on perfect boxes teaches the decoder an easier task than the one it meets.
"""

from __future__ import annotations

import numpy as np

from semisam.schemas import AdaptBoxConfig
from semisam.workers.localization import slice_box

from .examples import Example, Track

__all__ = ["sample_box", "validation_boxes"]

VALIDATION_MARGIN = 5
"""Pixels around the reference box of a held-out slice (the round's box_margin)."""


def _perturbed(box: np.ndarray, hw: tuple[int, int], config: AdaptBoxConfig,
               rng: np.random.Generator) -> np.ndarray | None:
    """``box`` (XYXY, tight) grown by a pixel margin or scaled, then jittered; clipped to the
    slice. None when it degenerates (< 2 px wide or high)."""
    box = box.astype(np.float64)
    size = np.array([box[2] - box[0] + 1, box[3] - box[1] + 1] * 2)
    if rng.random() < config.scale_prob:
        grow = rng.uniform(-0.15, 0.25, 4) * size
    else:
        grow = rng.uniform(0.0, config.margin_max, 4)
    box = box + np.array([-1, -1, 1, 1]) * grow + rng.normal(0.0, config.relative_jitter, 4) * size
    h, w = hw
    box = np.clip(box, 0, [w - 1, h - 1, w - 1, h - 1])
    if box[2] - box[0] < 2 or box[3] - box[1] < 2:
        return None
    return box.astype(np.float32)


def sample_box(track: Track, example: Example, config: AdaptBoxConfig,
               rng: np.random.Generator, neighbours_of: list[int] | None = None
               ) -> np.ndarray | None:
    """A round-like XYXY box (slice pixels) for ``example`` of ``track``, or None (draw again).

    A slice past the structure gets the box of the nearest structure slice; a structure slice
    gets its own reference box or, with ``config.neighbour_prob``, one of a structure slice at
    most ``config.neighbour_reach`` away (``neighbours_of``: the structure slices allowed as
    neighbours, default all but the held-out ones).
    """
    index = example.index
    if config.loose_prob and rng.random() < config.loose_prob:  # None: 0 (`AdaptConfig.box_for`)
        return _loose(track, config, rng)
    if index not in track.masks:
        source = track.nearest_structure(index)
    else:
        source = index
        if rng.random() < config.neighbour_prob:
            pool = neighbours_of if neighbours_of is not None else [
                s for s in track.structure if s not in track.held_out]
            near = [s for s in pool if 0 < abs(s - index) <= config.neighbour_reach]
            if near:
                source = int(rng.choice(near))
    tight = slice_box(track.masks[source], 0)
    return _perturbed(tight, track.hw, config, rng)


def _loose(track: Track, config: AdaptBoxConfig, rng: np.random.Generator) -> np.ndarray:
    """The track's box over all its structure slices, grown by U(0, ``config.loose_grow``) of
    its size per side, clipped to the slice (`AdaptBoxConfig.loose_prob`)."""
    union = np.any([track.masks[i] for i in track.structure], axis=0)
    box = slice_box(union, 0).astype(np.float64)
    size = np.array([box[2] - box[0] + 1, box[3] - box[1] + 1] * 2)
    box = box + np.array([-1, -1, 1, 1]) * rng.uniform(0.0, config.loose_grow, 4) * size
    h, w = track.hw
    return np.clip(box, 0, [w - 1, h - 1, w - 1, h - 1]).astype(np.float32)


def validation_boxes(track: Track, index: int) -> list[np.ndarray]:
    """Fixed prompts of a held-out slice: its reference box + 5 px, and the box of the
    neighbouring structure slice two away (+ 5 px) where there is one (what propagation gives)."""
    boxes = [slice_box(track.masks[index], VALIDATION_MARGIN)]
    for other in (index - 2, index + 2):
        if other in track.masks:
            boxes.append(slice_box(track.masks[other], VALIDATION_MARGIN))
            break
    return boxes
