"""Small random SAMs for fast CPU tests, built from segment-anything's own modules.

Mirrors ``segment_anything.build_sam._build_sam`` with smaller numbers. The 1024 input frame
and the 256-channel prompt/decoder side are kept, so every slice/prompt coordinate frame is the
real one; the default patch is 32 pixels (32x32 tokens, 128x128 low-res masks) instead of 16,
which makes the global-attention block 16x cheaper on CPU and checks that nothing assumes
64x64 embeddings or 256x256 low-res masks. ``patch=16`` gives the real token grid.

Random init gives near-zero rel-pos tables and pos_embed and weak mask logits; `perturb` makes
them large enough that parity tests compare something.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

IMG_SIZE = 1024
PATCH = 32
PROMPT_DIM = 256


def small_sam(seed: int = 0, embed_dim: int = 64, depth: int = 2, heads: int = 2,
              patch: int = PATCH) -> Sam:
    """A ~3M-parameter SAM: ViT encoder (64 dims, 2 blocks, last one global, window 7)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        grid = IMG_SIZE // patch
        sam = Sam(
            image_encoder=ImageEncoderViT(
                depth=depth, embed_dim=embed_dim, img_size=IMG_SIZE, mlp_ratio=4,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=heads,
                patch_size=patch, qkv_bias=True, use_rel_pos=True,
                global_attn_indexes=(depth - 1,), window_size=7, out_chans=PROMPT_DIM,
            ),
            prompt_encoder=PromptEncoder(
                embed_dim=PROMPT_DIM, image_embedding_size=(grid, grid),
                input_image_size=(IMG_SIZE, IMG_SIZE), mask_in_chans=16,
            ),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(depth=2, embedding_dim=PROMPT_DIM, mlp_dim=512,
                                              num_heads=8),
                transformer_dim=PROMPT_DIM, iou_head_depth=3, iou_head_hidden_dim=64,
            ),
        )
        perturb(sam, seed)
    return sam.eval()


@torch.no_grad()
def perturb(sam: Sam, seed: int = 0) -> Sam:
    """Give zero-initialised parts values so every path matters.

    Rel-pos tables and pos_embed get noise (they start at zero), and the hypernetwork
    outputs are scaled so that mask logits span a few units around 0 (probabilities use the
    whole of [0, 1] instead of sitting at 0.5).
    """
    gen = torch.Generator().manual_seed(seed + 1)
    enc = sam.image_encoder
    if enc.pos_embed is not None:
        enc.pos_embed.copy_(0.05 * torch.randn(enc.pos_embed.shape, generator=gen))
    for blk in enc.blocks:
        if blk.attn.use_rel_pos:
            for table in (blk.attn.rel_pos_h, blk.attn.rel_pos_w):
                table.copy_(0.5 * torch.randn(table.shape, generator=gen))
    for mlp in sam.mask_decoder.output_hypernetworks_mlps:
        mlp.layers[-1].weight.mul_(40.0)
    return sam


def gray_to_rgb(slice_2d: np.ndarray) -> np.ndarray:
    """``HxW`` uint8 -> ``HxWx3`` uint8 (what `SamPredictor.set_image` takes)."""
    return np.repeat(slice_2d[:, :, None], 3, axis=2)


def textured_slice(h: int, w: int, seed: int = 0) -> np.ndarray:
    """``HxW`` uint8: a bright ellipse on smooth texture plus noise (non-trivial resizes)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cy, cx = h * rng.uniform(0.35, 0.65), w * rng.uniform(0.35, 0.65)
    ry, rx = h * 0.2, w * 0.2
    inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    img = 60 + 30 * np.sin(xx / 5.0) * np.cos(yy / 7.0) + np.where(inside, 120.0, 0.0)
    img += rng.normal(0, 10, (h, w))
    return np.clip(img, 0, 255).astype(np.uint8)
