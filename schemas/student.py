"""Student network description, stored inside every student checkpoint."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from .base import StrictModel

Architecture = Literal["monai.UNet", "monai.VNet", "monai.DynUNet"]

VNET_SIZE_DIVISOR = 16
"""MONAI's VNet halves the volume 4 times (fixed): every input size must be divisible by 2**4."""


class StudentSpec(StrictModel):
    """A MONAI 3D segmentation network and the input normalisation it was trained with.

    Input: ``Bx1xXxYxZ`` float32, z-scored per volume. Output: ``Bx{out_channels}xXxYxZ``
    logits (class 0 background, class 1 foreground, ...), the input's spatial size.

    Architectures (``architecture``):

    * ``monai.UNet`` (default): ``monai.networks.nets.UNet`` with ``channels``, ``strides``,
      ``num_res_units`` and ``dropout``.
    * ``monai.VNet``: ``monai.networks.nets.VNet`` (Milletari et al. 2016, the V-Net of the
      SemiSAM paper). Its widths (16 to 256) and its 4 halvings are fixed, so ``channels``,
      ``strides`` and ``num_res_units`` are ignored and ``patch_size`` must be divisible by 16.
    * ``monai.DynUNet``: ``monai.networks.nets.DynUNet`` (nnU-Net style): 3x3x3 kernels,
      ``channels`` as the filters of its ``len(strides) + 1`` levels, instance norm, residual
      blocks when ``num_res_units > 0``, no deep supervision.

    Sliding-window inference pads a volume smaller than ``patch_size``, so any volume size
    works; only ``patch_size`` has to fit the network's downsampling (`size_divisor`).
    """

    architecture: Architecture = Field(
        "monai.UNet", description="student network: monai.UNet, monai.VNet (SemiSAM's V-Net) "
        "or monai.DynUNet (nnU-Net style)")
    channels: tuple[int, ...] = Field(
        (8, 16, 32, 64), description="feature maps per resolution level, finest first (UNet, "
        "DynUNet: len(strides) + 1 entries); ignored by VNet (fixed 16-256)")
    strides: tuple[int, ...] = Field(
        (2, 2, 2), description="downsampling factor between consecutive levels (UNet, DynUNet: "
        "at least 2); ignored by VNet (4 halvings)")
    num_res_units: int = Field(
        1, ge=0, description="UNet: residual units per block; DynUNet: residual blocks when > 0; "
        "ignored by VNet")
    dropout: float = Field(
        0.0, ge=0, lt=1, description="dropout probability (UNet, DynUNet: every block; VNet: "
        "every dropout layer, including MONAI's fixed skip-connection dropouts)")
    patch_size: tuple[int, int, int] = Field(
        (64, 64, 48), description="training patch and sliding-window size (voxels, XxYxZ); "
        "VNet: divisible by 16 on every axis")
    out_channels: int = Field(2, ge=2, description="classes, background included")
    normalization: str = Field("zscore", pattern="^zscore$",
                               description="input normalisation: per-volume z-score")

    @property
    def size_divisor(self) -> int:
        """What every spatial size of the network's input must be divisible by: 16 for VNet,
        the product of ``strides`` for UNet and DynUNet."""
        if self.architecture == "monai.VNet":
            return VNET_SIZE_DIVISOR
        return math.prod(self.strides)

    @model_validator(mode="after")
    def _fits_architecture(self) -> StudentSpec:
        if self.architecture == "monai.VNet":
            if any(p % VNET_SIZE_DIVISOR for p in self.patch_size):
                raise ValueError(
                    f"patch_size {list(self.patch_size)} must be divisible by "
                    f"{VNET_SIZE_DIVISOR} on every axis for monai.VNet (4 fixed halvings)")
        elif self.architecture == "monai.DynUNet":
            if len(self.strides) < 2:
                raise ValueError(f"strides {list(self.strides)}: monai.DynUNet needs at least 2 "
                                 "downsampling strides")
            if len(self.channels) != len(self.strides) + 1:
                raise ValueError(
                    f"channels {list(self.channels)} must have len(strides) + 1 = "
                    f"{len(self.strides) + 1} entries for monai.DynUNet (strides "
                    f"{list(self.strides)})")
        return self
