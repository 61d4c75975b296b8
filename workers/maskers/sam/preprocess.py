"""Slice and prompt transforms between a slice's pixel frame and SAM's 1024x1024 input frame.

Two families that must not be mixed up:

- ``sam`` (the original checkpoints, what `SamPredictor` does): gray -> 3 channels, resize the
  longest side to 1024 (bilinear, antialiased), SAM pixel mean/std, zero-pad bottom/right to
  1024x1024. Coordinates scale by one factor per axis from the rounded resized shape
  (``ResizeLongestSide.apply_coords``). Low-res logits go back by upsampling to 1024, cropping
  the unpadded part and resizing to the slice (``Sam.postprocess_masks``); probability =
  sigmoid of those logits.
- ``medsam``: resize straight to 1024x1024 (no aspect keep; bicubic + antialias as MedSAM's
  inference script does with skimage ``order=3``), min-max to [0, 1] per slice (the slice's
  own min/max; the resized values are clamped to them), no mean/std.
  Coordinates scale by 1024/W in x and 1024/H in y. Probability = sigmoid of the 256x256
  logits, bilinearly resized to the slice.

Everything runs on torch tensors on the model's device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from semisam.schemas import SamFamily

__all__ = [
    "input_shape",
    "low_res_probabilities",
    "mask_prompt_to_low_res",
    "preprocess_slices",
    "resized_shape",
    "scale_coords",
    "upsample_logits",
]

MIN_RANGE = 1e-8


def resized_shape(h: int, w: int, long_side: int = 1024) -> tuple[int, int]:
    """``(newh, neww)`` with the longest side ``long_side`` (``ResizeLongestSide`` rounding)."""
    scale = long_side * 1.0 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def input_shape(h: int, w: int, family: SamFamily, img_size: int = 1024) -> tuple[int, int]:
    """Unpadded extent ``(h, w)`` of a slice inside the ``img_size`` square input."""
    if SamFamily(family) is SamFamily.medsam:
        return img_size, img_size
    return resized_shape(h, w, img_size)


def preprocess_slices(
    slices: torch.Tensor,
    family: SamFamily,
    pixel_mean: torch.Tensor,
    pixel_std: torch.Tensor,
    img_size: int = 1024,
) -> torch.Tensor:
    """Turn windowed gray slices into SAM encoder inputs.

    Args:
        slices: ``NxHxW`` uint8 in [0, 255] (or float in that range), on the target device.
        family: preprocessing family (see module docstring).
        pixel_mean: ``3x1x1`` (or ``3``) SAM pixel mean in [0, 255] units (``Sam.pixel_mean``).
        pixel_std: ``3x1x1`` (or ``3``) SAM pixel std.
        img_size: encoder input side (1024).

    Returns:
        ``Nx3ximg_sizeximg_size`` float32.
    """
    if slices.ndim != 3:
        raise ValueError(f"slices must be NxHxW, got shape {tuple(slices.shape)}")
    n, h, w = slices.shape
    x = slices.to(torch.float32).unsqueeze(1)  # Nx1xHxW
    if SamFamily(family) is SamFamily.medsam:
        # min/max of the slice itself: bicubic overshoot is clamped away, and a constant
        # slice maps to 0 instead of its resampling noise stretched to [0, 1]
        lo = x.amin(dim=(1, 2, 3), keepdim=True)
        hi = x.amax(dim=(1, 2, 3), keepdim=True)
        x = F.interpolate(x, (img_size, img_size), mode="bicubic", align_corners=False,
                          antialias=True)
        x = (torch.minimum(torch.maximum(x, lo), hi) - lo) / (hi - lo).clamp_min(MIN_RANGE)
        return x.expand(n, 3, img_size, img_size).contiguous()
    newh, neww = resized_shape(h, w, img_size)
    if (newh, neww) != (h, w):
        x = F.interpolate(x, (newh, neww), mode="bilinear", align_corners=False, antialias=True)
    mean = pixel_mean.to(x).reshape(1, 3, 1, 1)
    std = pixel_std.to(x).reshape(1, 3, 1, 1)
    x = (x - mean) / std  # Nx3xnewhxneww (gray broadcast to 3 channels)
    return F.pad(x, (0, img_size - neww, 0, img_size - newh))


def scale_coords(
    coords: torch.Tensor, hw: tuple[int, int], family: SamFamily, img_size: int = 1024
) -> torch.Tensor:
    """Map XY coordinates from a slice's pixel frame to the ``img_size`` input frame.

    Args:
        coords: ``...x2`` XY pixels (boxes XYXY reshaped to ``...x2x2``).
        hw: the slice's ``(H, W)``.
        family: ``sam`` scales by the rounded resized shape, ``medsam`` by img_size/W, img_size/H.

    Returns:
        float32 coordinates, same shape.
    """
    h, w = hw
    newh, neww = input_shape(h, w, family, img_size)
    scale = torch.tensor([neww / w, newh / h], dtype=torch.float32, device=coords.device)
    return coords.to(torch.float32) * scale


def upsample_logits(
    low_res: torch.Tensor,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    img_size: int = 1024,
) -> torch.Tensor:
    """SAM family: low-res logits back to the slice frame (``Sam.postprocess_masks`` logic).

    Args:
        low_res: ``BxCx256x256`` logits.
        input_size: unpadded ``(h, w)`` of the slice inside the input square.
        original_size: the slice's ``(H, W)``.

    Returns:
        ``BxCxHxW`` logits.
    """
    x = F.interpolate(low_res, (img_size, img_size), mode="bilinear", align_corners=False)
    x = x[..., : input_size[0], : input_size[1]]
    return F.interpolate(x, original_size, mode="bilinear", align_corners=False)


def low_res_probabilities(
    low_res: torch.Tensor,
    family: SamFamily,
    original_size: tuple[int, int],
    img_size: int = 1024,
) -> torch.Tensor:
    """Foreground probability in the slice frame from low-res logits.

    Args:
        low_res: ``BxCx256x256`` logits.
        family: ``sam``: sigmoid after `upsample_logits`; ``medsam``: sigmoid of the low-res
            logits, then bilinear to ``original_size`` (MedSAM's own inference).
        original_size: the slice's ``(H, W)``.

    Returns:
        ``BxCxHxW`` float32 in [0, 1].
    """
    low_res = low_res.to(torch.float32)
    if SamFamily(family) is SamFamily.medsam:
        probs = torch.sigmoid(low_res)
        return F.interpolate(probs, original_size, mode="bilinear", align_corners=False)
    input_size = input_shape(*original_size, family, img_size)
    return torch.sigmoid(upsample_logits(low_res, input_size, original_size, img_size))


def mask_prompt_to_low_res(
    logits: torch.Tensor,
    family: SamFamily,
    img_size: int = 1024,
    low_res_size: int = 256,
) -> torch.Tensor:
    """Slice-frame mask logits -> SAM's low-res mask prompt (inverse of the upsampling).

    The padded part of the SAM frame gets the slice's minimum logit (background).

    Args:
        logits: ``NxHxW`` float logits in the slice frame.
        family: preprocessing family.

    Returns:
        ``Nx1xlow_res_sizexlow_res_size`` float32 logits.
    """
    n, h, w = logits.shape
    x = logits.to(torch.float32).unsqueeze(1)
    if SamFamily(family) is SamFamily.medsam:
        return F.interpolate(x, (low_res_size, low_res_size), mode="bilinear",
                             align_corners=False, antialias=True)
    newh, neww = resized_shape(h, w, img_size)
    x = F.interpolate(x, (newh, neww), mode="bilinear", align_corners=False)
    fill = x.amin(dim=(1, 2, 3), keepdim=True)
    square = fill.expand(n, 1, img_size, img_size).clone()
    square[..., :newh, :neww] = x
    return F.interpolate(square, (low_res_size, low_res_size), mode="bilinear",
                         align_corners=False, antialias=True)
