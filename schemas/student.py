"""Student network description, stored inside every student checkpoint."""

from __future__ import annotations

from pydantic import Field

from .base import StrictModel


class StudentSpec(StrictModel):
    """A MONAI 3D UNet and the input normalisation it was trained with.

    Input: ``1x1xXxYxZ`` float32, z-scored per volume. Output: ``1x2xXxYxZ`` logits
    (background, foreground).
    """

    architecture: str = Field("monai.UNet", pattern="^monai\\.UNet$")
    channels: tuple[int, ...] = (8, 16, 32, 64)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = Field(1, ge=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    patch_size: tuple[int, int, int] = (64, 64, 48)
    out_channels: int = Field(2, ge=2)
    normalization: str = Field("zscore", pattern="^zscore$")
