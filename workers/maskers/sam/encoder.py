"""Batched SAM image encoder: bf16/fp16 weights, SDPA attention, optional ``torch.compile``.

`FastImageEncoder` runs the blocks of a segment-anything `ImageEncoderViT` with its own
forward: the model's modules (and weights) are used as they are, nothing is copied and the
stock modules are not patched, so a `SamPredictor` on the same model keeps the stock path.
With ``sdpa=True`` each block's attention goes through a fused path that adds the
decomposed relative-position bias (what ``add_decomposed_rel_pos`` adds to the scores) without
the stock ``(HW)x(HW)`` float32 score matrix: folded into the query/key product, as an
additive SDPA mask, or inside the project's Triton kernel (`relpos_attention`).
"""

from __future__ import annotations

import logging
import os
import time

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import (
    Attention,
    Block,
    ImageEncoderViT,
    get_rel_pos,
    window_partition,
    window_unpartition,
)
from torch import nn

from semisam.schemas import SamConfig

from .fp8 import fp8_linears
from .relpos_attention import available as triton_available
from .relpos_attention import relpos_attention, relpos_tables

logger = logging.getLogger(__name__)

__all__ = ["DTYPES", "REL_POS_PATHS", "FastImageEncoder", "SliceEncoder", "padded_size",
           "rel_pos_bias", "resolve_rel_pos", "sdpa_attention"]

REL_POS_PATHS = ("fold", "mask", "triton")

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def rel_pos_bias(
    q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, hw: tuple[int, int]
) -> torch.Tensor:
    """Decomposed relative-position bias as an additive attention mask.

    Args:
        q: ``BxHeadsx(H*W)xC`` unscaled queries.
        rel_pos_h: ``(2H-1)xC`` height table; rel_pos_w: ``(2W-1)xC`` width table.
        hw: token grid ``(H, W)`` (queries and keys share it).

    Returns:
        ``BxHeadsx(H*W)x(H*W)`` bias, same dtype as ``q``.
    """
    h, w = hw
    b, heads, _, c = q.shape
    table_h = get_rel_pos(h, h, rel_pos_h).to(q.dtype)  # HxHxC
    table_w = get_rel_pos(w, w, rel_pos_w).to(q.dtype)  # WxWxC
    grid_q = q.reshape(b, heads, h, w, c)
    bias_h = torch.einsum("bnhwc,hkc->bnhwk", grid_q, table_h)  # key row k
    bias_w = torch.einsum("bnhwc,wkc->bnhwk", grid_q, table_w)  # key column k
    bias = bias_h.unsqueeze(-1) + bias_w.unsqueeze(-2)  # B n H W Hk Wk
    return bias.reshape(b, heads, h * w, h * w)


def _onehot_keys(h: int, w: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(HW)xH`` and ``(HW)xW`` one-hot row/column indicators of the key grid."""
    rows = torch.arange(h, device=like.device).repeat_interleave(w)
    cols = torch.arange(w, device=like.device).repeat(h)
    eye_h = torch.eye(h, dtype=like.dtype, device=like.device)
    eye_w = torch.eye(w, dtype=like.dtype, device=like.device)
    return eye_h[rows], eye_w[cols]


def rel_pos_augment(
    q: torch.Tensor,
    k: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    hw: tuple[int, int],
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold the decomposed relative-position bias into the query/key dot product.

    SAM's scores are ``scale * q_i.k_j + q_i.Rh[r_i, r_j] + q_i.Rw[c_i, c_j]`` (r, c = row and
    column of a token). With ``relh[i, r] = q_i.Rh[r_i, r]`` (``(HW)xH``) and ``relw`` alike,
    ``q'_i = [scale*q_i, relh_i, relw_i]`` and ``k'_j = [k_j, onehot(r_j), onehot(c_j)]`` give
    exactly those scores as ``q'_i.k'_j``, so attention runs unmasked (flash / memory-efficient
    kernels) and the ``(HW)x(HW)`` bias is never materialised. Both are zero-padded to a
    multiple of 8 channels.

    Args:
        q, k: ``BxHeadsx(H*W)xC``; rel_pos_h ``(2H-1)xC``, rel_pos_w ``(2W-1)xC``.

    Returns:
        ``(q', k')``, each ``BxHeadsx(H*W)xC'`` with ``C' >= C + H + W``, scale already applied.
    """
    h, w = hw
    b, heads, _, c = q.shape
    grid_q = q.reshape(b, heads, h, w, c)
    relh = torch.einsum("bnhwc,hkc->bnhwk", grid_q, get_rel_pos(h, h, rel_pos_h).to(q.dtype))
    relw = torch.einsum("bnhwc,wkc->bnhwk", grid_q, get_rel_pos(w, w, rel_pos_w).to(q.dtype))
    oh, ow = _onehot_keys(h, w, k)
    pad = (-(c + h + w)) % 8
    q_parts = [q * scale, relh.reshape(b, heads, h * w, h), relw.reshape(b, heads, h * w, w)]
    k_parts = [k, oh.expand(b, heads, -1, -1), ow.expand(b, heads, -1, -1)]
    if pad:
        q_parts.append(q.new_zeros(b, heads, h * w, pad))
        k_parts.append(k.new_zeros(b, heads, h * w, pad))
    return torch.cat(q_parts, dim=-1), torch.cat(k_parts, dim=-1)


def sdpa_attention(attn: Attention, x: torch.Tensor, rel_pos: str = "fold",
                   qkv: nn.Module | None = None, proj: nn.Module | None = None) -> torch.Tensor:
    """Forward of a segment-anything encoder `Attention` through a fused path, with its weights.

    ``rel_pos`` says how the relative-position bias enters: ``fold`` into the query/key dot
    product (`rel_pos_augment`: no mask, so SDPA can pick a fused kernel on a GPU); ``mask`` as
    an additive SDPA mask (`rel_pos_bias`: fewer FLOPs where no fused kernel exists, CPUs);
    ``triton`` inside the project's Triton attention kernel (`relpos_attention`: the bias is
    added per score tile from two small per-query tables, CUDA).

    Args:
        attn: the block's attention module (``qkv``, ``proj``, optional rel-pos tables).
        x: ``BxHxWxC`` tokens.
        rel_pos: ``fold`` | ``mask`` | ``triton``.
        qkv, proj: replacements of ``attn.qkv`` / ``attn.proj`` (fp8 copies), None = the
            module's own.

    Returns:
        ``BxHxWxC``.
    """
    b, h, w, _ = x.shape
    heads = attn.num_heads
    proj = proj or attn.proj
    packed = (qkv or attn.qkv)(x).reshape(b, h * w, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = packed.unbind(0)  # each BxHeadsx(HW)xC
    if attn.use_rel_pos and rel_pos == "triton":
        relh, relw = relpos_tables(q, attn.rel_pos_h, attn.rel_pos_w, (h, w))
        out = relpos_attention(q, k, v, relh, relw, attn.scale, (h, w))  # Bx(HW)xHeadsxC
        return proj(out.reshape(b, h, w, -1))
    if attn.use_rel_pos and rel_pos == "fold":
        q, k = rel_pos_augment(q, k, attn.rel_pos_h, attn.rel_pos_w, (h, w), attn.scale)
        out = F.scaled_dot_product_attention(q, k, v, scale=1.0)
    elif attn.use_rel_pos:
        bias = rel_pos_bias(q, attn.rel_pos_h, attn.rel_pos_w, (h, w))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=attn.scale)
    else:
        out = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)
    out = out.reshape(b, heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
    return proj(out)


class FastImageEncoder(nn.Module):
    """`ImageEncoderViT` forward with the attention swapped for a fused path (weights shared).

    Args:
        encoder: the model's image encoder; held as a submodule, not copied.
        sdpa: route attention through `sdpa_attention`; False = the stock `Attention.forward`.
        rel_pos: with ``sdpa``, ``fold`` | ``mask`` | ``triton`` (see `sdpa_attention`).
        windowed_rel_pos: the same choice for the windowed blocks only (None = ``rel_pos``).
        fp8: ``none`` | ``mlp`` | ``all``: which linear layers multiply in e4m3 (`fp8_linears`;
            built from the encoder's weights as they are now, so cast the encoder first).
    """

    def __init__(self, encoder: ImageEncoderViT, sdpa: bool = True, rel_pos: str = "fold",
                 windowed_rel_pos: str | None = None, fp8: str = "none") -> None:
        super().__init__()
        if rel_pos not in REL_POS_PATHS or (windowed_rel_pos or rel_pos) not in REL_POS_PATHS:
            raise ValueError(f"rel_pos must be one of {REL_POS_PATHS}, got {rel_pos!r}, "
                             f"{windowed_rel_pos!r}")
        self.encoder = encoder
        self.sdpa = sdpa
        self.rel_pos = rel_pos
        self.windowed_rel_pos = windowed_rel_pos or rel_pos
        self.fp8 = fp8_linears(encoder.blocks, fp8)

    def _block(self, i: int, blk: Block, x: torch.Tensor) -> torch.Tensor:
        fp8 = self.fp8
        shortcut = x
        x = blk.norm1(x)
        if blk.window_size > 0:
            hw = (x.shape[1], x.shape[2])
            x, pad_hw = window_partition(x, blk.window_size)
        path = self.windowed_rel_pos if blk.window_size > 0 else self.rel_pos
        if self.sdpa:
            x = sdpa_attention(blk.attn, x, path, fp8[f"{i}_qkv"] if f"{i}_qkv" in fp8 else None,
                               fp8[f"{i}_proj"] if f"{i}_proj" in fp8 else None)
        else:
            x = blk.attn(x)
        if blk.window_size > 0:
            x = window_unpartition(x, blk.window_size, pad_hw, hw)
        x = shortcut + x
        if f"{i}_lin1" in fp8:
            return x + fp8[f"{i}_lin2"](blk.mlp.act(fp8[f"{i}_lin1"](blk.norm2(x))))
        return x + blk.mlp(blk.norm2(x))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``Bx3xSxS`` preprocessed images -> ``BxCx(S/16)x(S/16)`` embeddings."""
        enc = self.encoder
        x = enc.patch_embed(images)
        if enc.pos_embed is not None:
            x = x + enc.pos_embed
        for i, blk in enumerate(enc.blocks):
            x = self._block(i, blk, x)
        return enc.neck(x.permute(0, 3, 1, 2))


def resolve_rel_pos(setting: str, device: torch.device) -> str:
    """``sam.rel_pos`` -> the path used on ``device``.

    ``auto``: the Triton kernel on CUDA (H200: encoder 349 compiled / 224 eager slices/s
    against 325 / 183 folded, and 8x less bf16 attention error; docs/benchmarks.md), the folded
    SDPA path on CUDA without triton, the additive mask elsewhere (CPUs: fewest FLOPs).

    Raises:
        ValueError: ``triton`` asked for where the kernel cannot run.
    """
    if setting == "auto":
        if device.type != "cuda":
            return "mask"
        return "triton" if triton_available(device) else "fold"
    if setting == "triton" and not triton_available(device):
        raise ValueError(f"sam.rel_pos 'triton' needs a CUDA device and the triton package "
                         f"(device {device}); use 'auto'")
    return setting


def padded_size(n: int, batch_size: int) -> int:
    """Batch size a compiled encoder runs ``n <= batch_size`` slices at.

    Batches are padded up to a multiple of ``max(8, batch_size // 4)`` (at most 4 static
    shapes, so each compiles once and dynamo never hits its recompile limit): 71 slices at
    batch 32 run as 32 + 32 + 8 instead of 32 + 32 + 32 (1% padding instead of 35%).
    """
    step = min(batch_size, max(8, batch_size // 4))
    return min(batch_size, -(-n // step) * step)


class SliceEncoder:
    """Runs the image encoder over many preprocessed slices, ``batch_size`` per forward.

    Args:
        encoder: the model's image encoder. With ``config.dtype`` other than float32 its
            weights are cast IN PLACE (the masker owns its model); inputs are cast to match and
            embeddings are returned as float32.
        config: ``dtype``, ``sdpa``, ``rel_pos``, ``fp8``, ``compile``, ``compile_mode``,
            ``compile_cache_dir``, ``batch_size``.
    """

    def __init__(self, encoder: ImageEncoderViT, config: SamConfig) -> None:
        self.dtype = DTYPES[config.dtype]
        self.batch_size = config.batch_size
        if self.dtype != torch.float32:
            encoder.to(self.dtype)
        device = next(encoder.parameters()).device
        self.rel_pos = resolve_rel_pos(config.rel_pos, device)
        self.module: nn.Module = FastImageEncoder(encoder, sdpa=config.sdpa, rel_pos=self.rel_pos,
                                                  fp8=config.fp8).eval()
        self.forward = self.module
        self.compiled = config.compile
        if config.compile:
            self.forward = self._compiled(config)

    def _compiled(self, config: SamConfig) -> nn.Module:
        if config.compile_cache_dir is not None:
            cache = config.compile_cache_dir.expanduser().resolve()
            cache.mkdir(parents=True, exist_ok=True)
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache)
            # the rel-pos kernel's binaries and autotune timings, unless the user chose a place
            os.environ.setdefault("TRITON_CACHE_DIR", str(cache / "triton-kernels"))
            logger.info("torch.compile cache: %s", cache)
        return torch.compile(self.module, dynamic=False, mode=config.compile_mode)

    def padded_sizes(self) -> list[int]:
        """The static batch sizes a compiled encoder runs (`padded_size` of 1..batch_size)."""
        return sorted({padded_size(n, self.batch_size) for n in range(1, self.batch_size + 1)})

    def warm_up(self, img_size: int) -> None:
        """Compile every static batch shape now (compiled encoders only; minutes when the
        Inductor cache is cold, seconds when it is warm)."""
        if not self.compiled:
            return
        param = next(self.module.parameters())
        started = time.perf_counter()
        with torch.inference_mode():
            for size in self.padded_sizes():
                self.forward(torch.zeros((size, 3, img_size, img_size), dtype=self.dtype,
                                         device=param.device))
        logger.info("compiled encoder warm for batch sizes %s in %.1f s", self.padded_sizes(),
                    time.perf_counter() - started)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``Nx3xSxS`` float images -> ``NxCx(S/16)x(S/16)`` float32 embeddings."""
        if images.shape[0] == 0:
            enc = self.module.encoder
            side = images.shape[-1] // enc.patch_embed.proj.stride[0]
            return images.new_zeros((0, enc.neck[0].out_channels, side, side))
        outputs = []
        for start in range(0, images.shape[0], self.batch_size):
            chunk = images[start : start + self.batch_size].to(self.dtype)
            n = chunk.shape[0]
            size = padded_size(n, self.batch_size) if self.compiled else n
            if size > n:  # a few static shapes: no recompiles, little padding
                chunk = torch.cat([chunk, chunk.new_zeros((size - n, *chunk.shape[1:]))])
            outputs.append(self.forward(chunk)[:n].to(torch.float32))
        return torch.cat(outputs)
