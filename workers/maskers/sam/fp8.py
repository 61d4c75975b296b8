"""fp8 (e4m3) matrix products for the encoder's linear layers, behind ``sam.fp8``.

Hopper GPUs multiply e4m3 operands at twice the bf16 rate. `Fp8Linear` keeps a copy of a
``nn.Linear``'s weight quantised once per output row (scale = row max / 448), quantises each
input token row on the fly the same way, and calls ``torch._scaled_mm`` with both row scales,
so the product accumulates in float32 and comes back in the input's dtype with the bias added.
e4m3 keeps 3 mantissa bits: one product carries a relative error of a few percent (measured
against float32 by ``benchmarks/relpos_kernel.py`` and reported in docs/benchmarks.md), which
is why this is off by default.

The model's own weights are not touched; the quantised copies live in this module.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["E4M3_MAX", "FP8_LAYERS", "Fp8Linear", "fp8_linears"]

E4M3_MAX = 448.0
FP8_LAYERS = ("none", "mlp", "all")
_TINY = 1e-12


class Fp8Linear(nn.Module):
    """``y = x W^T + b`` with e4m3 operands, row-wise scales and float32 accumulation.

    Args:
        linear: the layer whose weight (``OutxIn``) and bias are quantised/copied.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        w = linear.weight.detach().to(torch.float32)
        scale = w.abs().amax(dim=1, keepdim=True).clamp_min(_TINY) / E4M3_MAX  # Outx1
        self.register_buffer("weight_fp8", (w / scale).to(torch.float8_e4m3fn), persistent=False)
        self.register_buffer("weight_scale", scale.t().contiguous(), persistent=False)  # 1xOut
        bias = linear.bias.detach().clone() if linear.bias is not None else None
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``...xIn`` (bf16/fp16/fp32) -> ``...xOut`` in ``x.dtype``."""
        rows = x.reshape(-1, x.shape[-1])
        n = rows.shape[0]
        if n % 16:  # the fp8 GEMM wants row counts in multiples of 16 (e.g. 14x14 windows)
            rows = torch.nn.functional.pad(rows, (0, 0, 0, 16 - n % 16))
        scale = rows.abs().amax(dim=1, keepdim=True).to(torch.float32).clamp_min(_TINY) / E4M3_MAX
        quantised = (rows.to(torch.float32) / scale).to(torch.float8_e4m3fn)
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        out = torch._scaled_mm(quantised, self.weight_fp8.t(), scale_a=scale,
                               scale_b=self.weight_scale, bias=bias, out_dtype=x.dtype)
        return out[:n].reshape(*x.shape[:-1], out.shape[-1])


def fp8_linears(blocks: nn.ModuleList, layers: str) -> nn.ModuleDict:
    """fp8 copies of the encoder blocks' linear layers selected by ``layers``.

    Args:
        blocks: the encoder's ``Block`` list.
        layers: ``none`` | ``mlp`` (``mlp.lin1``, ``mlp.lin2``) | ``all`` (also ``attn.qkv``,
            ``attn.proj``).

    Returns:
        ``{"<block>_<name>": Fp8Linear}`` (``name`` in lin1, lin2, qkv, proj); empty for none.
    """
    if layers not in FP8_LAYERS:
        raise ValueError(f"sam.fp8 must be one of {FP8_LAYERS}, got {layers!r}")
    out = nn.ModuleDict()
    if layers == "none":
        return out
    for i, blk in enumerate(blocks):
        out[f"{i}_lin1"] = Fp8Linear(blk.mlp.lin1)
        out[f"{i}_lin2"] = Fp8Linear(blk.mlp.lin2)
        if layers == "all":
            out[f"{i}_qkv"] = Fp8Linear(blk.attn.qkv)
            out[f"{i}_proj"] = Fp8Linear(blk.attn.proj)
    return out
