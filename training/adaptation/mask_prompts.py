"""Training mask prompts: a reference slice made to look like a student's probability.

A round with ``prompts.mask_prompt`` passes the student's slice logits to the masker beside its
box. Trained on exact references, the decoder would learn to copy the mask it is given; trained
on perturbed ones (`perturbed_mask_logits`), it learns to correct one: the reference eroded or
dilated, shifted, with a disk gained or lost at its edge, blurred into a soft probability.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from semisam.schemas import AdaptMaskPromptConfig
from semisam.workers.localization import mask_logits

__all__ = ["perturbed_mask", "perturbed_mask_logits"]


def _grown(mask: np.ndarray, radius: float) -> np.ndarray:
    """``mask`` dilated (``radius`` > 0) or eroded (< 0) by a disk of ``|radius|`` px."""
    if radius > 0:
        return ndimage.distance_transform_edt(~mask) <= radius
    if radius < 0:
        return ndimage.distance_transform_edt(mask) > -radius
    return mask


def _with_blob(mask: np.ndarray, radius: float, add: bool, rng: np.random.Generator
               ) -> np.ndarray:
    """``mask`` with a disk of ``radius`` px centred on a random edge pixel added or removed."""
    edge = np.argwhere(mask & ~ndimage.binary_erosion(mask))
    if not len(edge):
        return mask
    r, c = edge[int(rng.integers(len(edge)))]
    rows, cols = np.ogrid[:mask.shape[0], :mask.shape[1]]
    disk = (rows - r) ** 2 + (cols - c) ** 2 <= radius ** 2
    return mask | disk if add else mask & ~disk


def perturbed_mask(mask: np.ndarray, config: AdaptMaskPromptConfig,
                   rng: np.random.Generator) -> np.ndarray:
    """``HxW`` bool reference -> ``HxW`` float32 probability of a rough copy of it (see the
    module docstring; sizes scale with the reference's equivalent diameter)."""
    mask = np.asarray(mask, bool)
    diameter = 2.0 * np.sqrt(mask.sum() / np.pi)
    out = _grown(mask, float(rng.uniform(-config.grow, config.grow)) * diameter)
    if config.shift > 0:
        offset = np.round(rng.normal(0.0, config.shift * diameter, 2)).astype(int)
        out = ndimage.shift(out, offset, order=0, mode="constant", cval=False)
    if rng.random() < config.blob_prob:
        out = _with_blob(out, float(rng.uniform(0.15, 0.4)) * diameter, bool(rng.random() < 0.5),
                         rng)
    prob = out.astype(np.float32)
    if config.blur_sigma > 0:
        prob = ndimage.gaussian_filter(prob, config.blur_sigma)
    return prob


def perturbed_mask_logits(mask: np.ndarray, config: AdaptMaskPromptConfig,
                          rng: np.random.Generator) -> np.ndarray:
    """`perturbed_mask` as the logits a round passes (`mask_logits`), ``HxW`` float32."""
    return mask_logits(perturbed_mask(mask, config, rng))
