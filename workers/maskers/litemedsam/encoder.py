"""LiteMedSAM's TinyViT image encoder run over batches of slices.

By default the encoder is `FastTinyViT` (see ``fast_encoder.py``), a rebuild of the model's
TinyViT with the same weights: BatchNorm folded into the convolutions, attention through
``scaled_dot_product_attention`` with the bias table as a precomputed additive mask, the
transformer stages token-major (no transposing copies around the depthwise convs). In float32
it gives the stock module's embeddings to ~1e-5; most of the speed-up on a CPU comes from
running it in bfloat16 where the CPU has bf16 instructions (``dtype='auto'``).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch
from torch import nn

from semisam.schemas import LiteMedSamConfig

from .fast_encoder import FastTinyViT

logger = logging.getLogger(__name__)

__all__ = ["LiteEncoder", "cpu_has_bf16", "resolve_dtype"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 arithmetic (``avx512_bf16`` or AMX ``amx_bf16``).

    Without them oneDNN emulates bf16 and it is slower than float32.
    """
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)  # non-Linux: ask torch
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool((probe is not None and probe()) or (amx is not None and amx()))


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``LiteMedSamConfig.dtype`` -> the encoder's dtype on ``device`` (``'auto'``: bfloat16
    on CUDA devices that support it and on CPUs with `cpu_has_bf16`, else float32)."""
    if name != "auto":
        return _DTYPES[name]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_bf16() else torch.float32
    return torch.float32


def _chunks(n: int, batch: int) -> list[int]:
    """``n`` as full batches then powers of two: few distinct shapes for a compiled module."""
    sizes = [batch] * (n // batch)
    rest = n % batch
    bit = 1 << max(rest.bit_length() - 1, 0)
    while rest:
        if rest >= bit:
            sizes.append(bit)
            rest -= bit
        bit >>= 1
    return sizes


class LiteEncoder:
    """``Nx3x256x256`` float32 inputs in [0, 1] -> ``Nx256x64x64`` float32 embeddings.

    Args:
        image_encoder: the model's TinyViT. Read, not modified: the encoder runs a rebuilt
            copy of it (`FastTinyViT`, in the resolved dtype).
        config: dtype, channels_last, compile.
        device: where it runs.
        rebuild: False = run ``image_encoder`` itself (the stock vendored module, cast in
            place when the dtype is lower; for benchmarks and parity tests).
    """

    def __init__(self, image_encoder: nn.Module, config: LiteMedSamConfig,
                 device: torch.device, rebuild: bool = True) -> None:
        self.config = config
        self.device = torch.device(device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self.rebuilt = rebuild
        if rebuild:
            # compiled: inductor fuses the GELUs itself (and traces plain ops best)
            module: nn.Module = FastTinyViT(image_encoder.eval(),
                                            channels_last=config.channels_last,
                                            fused_gelu=False if config.compile else None)
        else:
            module = image_encoder.eval()
            if config.channels_last:
                module = module.to(memory_format=torch.channels_last)
        self.module = module.to(device=self.device, dtype=self.dtype).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self._forward = (torch.compile(self.module, dynamic=False, options={"freezing": True})
                         if config.compile else self.module)
        logger.debug("LiteMedSAM encoder: %s, %s, channels_last=%s, compile=%s",
                     "rebuilt" if rebuild else "stock", self.dtype, config.channels_last,
                     config.compile)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(device=self.device, dtype=self.dtype)
        if self.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if not self.config.compile:
                return self._forward(images).to(torch.float32)
            outs, start = [], 0
            for size in _chunks(images.shape[0], self.config.batch_size):
                outs.append(self._forward(images[start:start + size]).to(torch.float32))
                start += size
            return torch.cat(outs) if len(outs) > 1 else outs[0]
