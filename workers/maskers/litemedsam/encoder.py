"""LiteMedSAM's TinyViT image encoder run over batches of slices."""

from __future__ import annotations

import contextlib
import logging

import torch
from torch import nn

from semisam.schemas import LiteMedSamConfig

logger = logging.getLogger(__name__)

__all__ = ["LiteEncoder"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class LiteEncoder:
    """``Nx3x256x256`` float32 inputs in [0, 1] -> ``Nx256x64x64`` float32 embeddings.

    Args:
        image_encoder: the model's TinyViT (used in place; cast when ``config.dtype`` is lower).
        config: dtype, channels_last, compile.
        device: where it runs.
    """

    def __init__(self, image_encoder: nn.Module, config: LiteMedSamConfig,
                 device: torch.device) -> None:
        self.config = config
        self.device = device
        self.dtype = _DTYPES[config.dtype]
        self.module = image_encoder
        if config.channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        self._forward = torch.compile(self.module, dynamic=False) if config.compile \
            else self.module

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device)
        if self.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            out = self._forward(images)
        return out.to(torch.float32)
