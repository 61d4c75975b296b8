"""LiteMedSAM's slice and prompt transforms, as its official inference does them.

Per slice (``HxW`` uint8, the volume's intensity window already applied):

- gray -> 3 channels; resize so the longest side is 256 (``newh, neww`` rounded half up) with
  OpenCV's ``INTER_AREA`` on the uint8 image; min-max to [0, 1] over the resized slice (range
  floored at 1e-8); zero-pad bottom/right to 256x256;
- a box is scaled by ``256 / max(H, W)`` and truncated to integers (points and mask prompts are
  scaled by the same factor, not truncated);
- the decoder's ``256x256`` logits are cropped to ``newh x neww``, resized bilinearly to
  ``HxW`` and passed through a sigmoid.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["IMG_SIZE", "box_to_input", "logits_to_probabilities", "mask_to_input",
           "preprocess_slices", "resized_shape", "scale"]

IMG_SIZE = 256
_MIN_RANGE = 1e-8


def resized_shape(h: int, w: int, long_side: int = IMG_SIZE) -> tuple[int, int]:
    """``(newh, neww)`` of an ``HxW`` slice whose longest side becomes ``long_side``."""
    ratio = long_side * 1.0 / max(h, w)
    return int(h * ratio + 0.5), int(w * ratio + 0.5)


def scale(hw: tuple[int, int]) -> float:
    """Slice pixels -> 256-frame pixels."""
    return IMG_SIZE / max(hw)


def preprocess_slices(slices: np.ndarray) -> torch.Tensor:
    """``NxHxW`` uint8 -> ``Nx3x256x256`` float32 encoder input in [0, 1] (CPU tensor)."""
    n, h, w = slices.shape
    newh, neww = resized_shape(h, w)
    out = np.zeros((n, IMG_SIZE, IMG_SIZE), np.float32)
    for i, image in enumerate(slices):
        small = cv2.resize(np.ascontiguousarray(image), (neww, newh), interpolation=cv2.INTER_AREA)
        small = small.astype(np.float32)
        lo, hi = float(small.min()), float(small.max())
        out[i, :newh, :neww] = (small - lo) / max(hi - lo, _MIN_RANGE)
    return torch.from_numpy(out).unsqueeze(1).expand(n, 3, IMG_SIZE, IMG_SIZE)


def box_to_input(boxes: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """``Nx4`` XYXY slice-pixel boxes -> 256-frame boxes (truncated to integers), float32."""
    return np.trunc(np.asarray(boxes, np.float64) * scale(hw)).astype(np.float32)


def mask_to_input(logits: torch.Tensor) -> torch.Tensor:
    """``NxHxW`` slice-frame mask logits -> ``Nx1x256x256`` low-res mask prompt (padding gets
    each slice's minimum logit: background)."""
    n, h, w = logits.shape
    newh, neww = resized_shape(h, w)
    x = F.interpolate(logits.to(torch.float32).unsqueeze(1), (newh, neww), mode="bilinear",
                      align_corners=False)
    out = x.amin(dim=(1, 2, 3), keepdim=True).expand(n, 1, IMG_SIZE, IMG_SIZE).clone()
    out[..., :newh, :neww] = x
    return out


def logits_to_probabilities(low_res: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """``Nx1x256x256`` decoder logits -> ``Nx1xHxW`` float32 probabilities of the slices."""
    newh, neww = resized_shape(*hw)
    x = low_res[..., :newh, :neww].to(torch.float32)
    return torch.sigmoid(F.interpolate(x, hw, mode="bilinear", align_corners=False))
