"""A weight-free prompted masker: scikit-image's random walker seeded by the prompts.

Per slice: crop to the box plus a band of ``background_band`` pixels (clipped to the slice), then
seed

- background: the crop's pixels outside the box (the band), or, when the box reaches the slice
  border on every side, the crop's outer one-pixel ring; plus disks of ``seed_radius`` pixels
  around negative points;
- foreground: disks of ``seed_radius`` pixels around positive points; when ``core_fraction > 0``
  and a mask prompt is given, also the box pixels whose mask logit is positive and in the top
  ``core_fraction`` of the box's logits; with no positive point in the crop and no core, a disk
  at the box centre.

Foreground seeds win over background seeds where they overlap. The random walker (direct sparse
solve, ``mode="bf"``: deterministic) runs on the crop scaled to [0, 1]; the output is its
probability of the foreground label inside the crop and 0 outside.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from skimage.segmentation import random_walker

from semisam.schemas import RandomWalkerConfig

from .base import Masker, SlicePrompt, check_batch

__all__ = ["RandomWalkerMasker"]

logger = logging.getLogger(__name__)

_FG, _BG = 1, 2
_FLAT_DITHER = 1e-3  # checkerboard added to a constant crop so the walker's weights are defined


def _int_box(box: np.ndarray, h: int, w: int) -> tuple[int, int, int, int]:
    """XYXY float box -> inclusive integer (x0, y0, x1, y1), clipped to an ``HxW`` slice."""
    box = np.asarray(box, dtype=np.float64).reshape(-1)
    if box.shape != (4,) or not np.isfinite(box).all():
        raise ValueError(f"box must be 4 finite XYXY numbers, got {box.tolist()}")
    xs = np.clip(np.sort(np.rint(box[[0, 2]])), 0, w - 1).astype(int)
    ys = np.clip(np.sort(np.rint(box[[1, 3]])), 0, h - 1).astype(int)
    return int(xs[0]), int(ys[0]), int(xs[1]), int(ys[1])


def _stamp_disks(seeds: np.ndarray, points: np.ndarray, radius: int, value: int) -> None:
    """Set disks of ``radius`` pixels around XY ``points`` (crop frame) to ``value`` in place."""
    h, w = seeds.shape
    yy, xx = np.mgrid[0:h, 0:w]
    for x, y in np.rint(points).astype(int):
        if 0 <= x < w and 0 <= y < h:
            seeds[(yy - y) ** 2 + (xx - x) ** 2 <= radius**2] = value


class RandomWalkerMasker(Masker):
    """Random-walker segmentation of prompted slices (no learned weights).

    Args:
        config: walker ``beta``, seed disk radius (pixels), background band (pixels) and the
            mask-prompt core fraction.
    """

    name = "random_walker"

    def __init__(self, config: RandomWalkerConfig) -> None:
        self.config = config

    def describe(self) -> dict:
        return {"name": self.name, **self.config.model_dump(mode="json")}

    def mask_slices(self, slices: np.ndarray, prompts: Sequence[SlicePrompt]) -> np.ndarray:
        """Segment each slice given its prompts.

        Args:
            slices: ``NxHxW`` uint8 in [0, 255].
            prompts: N prompts in the slices' pixel frame, ``prompts[i]`` for ``slices[i]``.

        Returns:
            ``NxHxW`` float32 foreground probability in [0, 1].

        Raises:
            ValueError: wrong dtype or rank, a length mismatch, or a malformed box.
        """
        slices = check_batch(slices, prompts)
        out = np.zeros(slices.shape, np.float32)
        for i, (image, prompt) in enumerate(zip(slices, prompts)):
            out[i] = self._mask_one(image, prompt)
        return out

    def _seeds(
        self,
        crop_shape: tuple[int, int],
        box: tuple[int, int, int, int],
        prompt: SlicePrompt,
        origin: tuple[int, int],
    ) -> np.ndarray:
        """``hxw`` int32 seed labels of a crop (0 unknown, 1 foreground, 2 background).

        Args:
            crop_shape: ``(h, w)`` of the crop, pixels.
            box: inclusive XYXY box in crop pixels.
            prompt: the slice's prompt (points in slice pixels).
            origin: ``(row, column)`` of the crop's top-left pixel in the slice.
        """
        cfg = self.config
        bx0, by0, bx1, by1 = box  # in crop coordinates
        oy, ox = origin
        seeds = np.full(crop_shape, _BG, np.int32)
        seeds[by0 : by1 + 1, bx0 : bx1 + 1] = 0
        if not (seeds == _BG).any():  # box covers the whole crop: its outer ring is background
            seeds[[0, -1], :] = _BG
            seeds[:, [0, -1]] = _BG
        points = np.asarray(prompt.points, np.float64).reshape(-1, 2) - [ox, oy]
        labels = np.asarray(prompt.point_labels).reshape(-1)
        if labels.shape[0] != points.shape[0]:
            raise ValueError(f"{points.shape[0]} points but {labels.shape[0]} point labels")
        _stamp_disks(seeds, points[labels == 0], cfg.seed_radius, _BG)
        fg = np.zeros(crop_shape, bool)
        if cfg.core_fraction > 0 and prompt.mask_logits is not None:
            logits = np.asarray(prompt.mask_logits, np.float64)
            in_box = logits[oy + by0 : oy + by1 + 1, ox + bx0 : ox + bx1 + 1]
            cut = max(np.quantile(in_box, 1.0 - cfg.core_fraction), 0.0)
            fg[by0 : by1 + 1, bx0 : bx1 + 1] = (in_box >= cut) & (in_box > 0)
        stamp = np.zeros(crop_shape, np.int32)
        _stamp_disks(stamp, points[labels == 1], cfg.seed_radius, _FG)
        if not (fg.any() or stamp.any()):  # no positive point (inside the crop), no core
            centre = np.array([[(bx0 + bx1) / 2.0, (by0 + by1) / 2.0]])
            _stamp_disks(stamp, centre, cfg.seed_radius, _FG)
        seeds[fg | (stamp == _FG)] = _FG
        return seeds

    def _mask_one(self, image: np.ndarray, prompt: SlicePrompt) -> np.ndarray:
        """``HxW`` float32 foreground probability of one uint8 slice."""
        h, w = image.shape
        if self.config.core_fraction > 0 and prompt.mask_logits is not None:
            if np.shape(prompt.mask_logits) != (h, w):
                raise ValueError(
                    f"mask_logits of slice {prompt.index} must have the slice shape {(h, w)}, "
                    f"got {np.shape(prompt.mask_logits)}"
                )
        band = self.config.background_band
        x0, y0, x1, y1 = _int_box(prompt.box, h, w)
        cy0, cx0 = max(y0 - band, 0), max(x0 - band, 0)
        cy1, cx1 = min(y1 + band, h - 1), min(x1 + band, w - 1)
        crop = image[cy0 : cy1 + 1, cx0 : cx1 + 1].astype(np.float64) / 255.0
        box = (x0 - cx0, y0 - cy0, x1 - cx0, y1 - cy0)
        seeds = self._seeds(crop.shape, box, prompt, (cy0, cx0))
        prob = np.zeros((h, w), np.float32)
        prob[cy0 : cy1 + 1, cx0 : cx1 + 1] = self._walk(crop, seeds)
        return prob

    def _walk(self, crop: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        """Foreground probability on a crop; seeds-only answers for degenerate crops."""
        if not (seeds == 0).any() or not (seeds == _BG).any() or not (seeds == _FG).any():
            logger.debug("degenerate %s crop: probability = foreground seeds", crop.shape)
            return (seeds == _FG).astype(np.float32)
        if crop.std() < 1e-6:  # constant crop: the walker divides by the data's spread
            yy, xx = np.indices(crop.shape)
            crop = crop + _FLAT_DITHER * ((yy + xx) % 2)
        full = random_walker(
            crop, seeds, beta=self.config.beta, mode="bf", return_full_prob=True
        )
        return np.clip(full[_FG - 1], 0.0, 1.0).astype(np.float32)
