"""``sam.fp8``: e4m3 linear layers with row-wise scales (CPU runs ``torch._scaled_mm`` too)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from semisam.schemas import SamConfig
from semisam.workers.maskers.sam import FastImageEncoder, SamMasker
from semisam.workers.maskers.sam.fp8 import Fp8Linear, fp8_linears

from .sam_models import small_sam, textured_slice
from .test_sam_parity import _prompts


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fp8_linear_close_to_linear(dtype):
    gen = torch.Generator().manual_seed(0)
    lin = nn.Linear(96, 160)
    x = torch.randn(4, 7, 96, generator=gen)
    ref = lin(x)
    fp8 = Fp8Linear(copy.deepcopy(lin).to(dtype))
    out = fp8(x.to(dtype))
    assert out.shape == ref.shape and out.dtype == dtype
    err = _rel(out, ref)
    assert 1e-3 < err < 0.06, err  # really quantised (not a bf16 pass-through), yet close
    # row-wise scales: a row 1000x larger than the others keeps its own precision
    x[0, 0] *= 1000
    assert _rel(fp8(x.to(dtype))[1:], lin(x)[1:]) < 0.06


def test_fp8_linears_selects_layers_and_keeps_weights():
    sam = small_sam(seed=0)
    before = {k: v.clone() for k, v in sam.image_encoder.state_dict().items()}
    blocks = sam.image_encoder.blocks
    assert len(fp8_linears(blocks, "none")) == 0
    assert sorted(fp8_linears(blocks, "mlp")) == sorted(f"{i}_{n}" for i in range(len(blocks))
                                                        for n in ("lin1", "lin2"))
    assert len(fp8_linears(blocks, "all")) == 4 * len(blocks)
    after = sam.image_encoder.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(ValueError, match="sam.fp8 must be one of"):
        fp8_linears(blocks, "fp4")
    with pytest.raises(ValidationError):
        SamConfig(fp8="fp4")


def test_fp8_encoder_error_is_bounded_and_larger_than_bf16():
    x = torch.randn(2, 3, 1024, 1024, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref = small_sam(seed=0).image_encoder(x)
        errors = {}
        for fp8 in ("none", "mlp", "all"):
            enc = small_sam(seed=0).image_encoder.to(torch.bfloat16)
            errors[fp8] = _rel(FastImageEncoder(enc, rel_pos="mask", fp8=fp8)(x.bfloat16()), ref)
    assert errors["none"] < errors["mlp"] < 0.05 and errors["all"] < 0.06, errors


def test_fp8_masker_agrees_with_float32():
    h, w = 64, 80
    slices = np.stack([textured_slice(h, w, seed=s) for s in range(3)])
    prompts = _prompts(h, w, n=3)
    ref = SamMasker(SamConfig(), "cpu", model=small_sam(seed=0)).mask_slices(slices, prompts)
    masker = SamMasker(SamConfig(dtype="bfloat16", fp8="all"), "cpu", model=small_sam(seed=0))
    assert len(masker.encoder.module.fp8) == 4 * len(masker.model.image_encoder.blocks)
    out = masker.mask_slices(slices, prompts)
    agree = ((out > 0.5) == (ref > 0.5)).mean()
    assert np.abs(out - ref).mean() < 0.01 and agree > 0.98
