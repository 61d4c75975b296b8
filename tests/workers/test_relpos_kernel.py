"""The Triton rel-pos attention kernel (`sam.rel_pos='triton'`) against float64 references.

CPUs have no Triton backend, so the checks run in Triton's interpreter (``TRITON_INTERPRET=1``,
read when kernels are defined): `test_kernel_in_interpreter` runs this file's ``interpreted``
tests in a child pytest with that variable set. The interpreter cannot multiply bf16 tiles, so
reduced precision is checked in float16 here; bf16 and speed are checked on a GPU by
``benchmarks/gpu_check.sh``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("triton")

CHILD = os.environ.get("TRITON_INTERPRET") == "1"
interpreted = pytest.mark.skipif(not CHILD, reason="runs in the TRITON_INTERPRET=1 child")


def test_kernel_in_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", __file__,
         "-k", "interpreted"],
        env=env, capture_output=True, text=True, timeout=900,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary and "failed" not in summary, summary


def _qkv(b: int, heads: int, hw: tuple[int, int], c: int, dtype: torch.dtype, seed: int):
    """q, k, v as strided views of one packed projection, as the encoder makes them."""
    gen = torch.Generator().manual_seed(seed)
    n = hw[0] * hw[1]
    qkv = torch.randn(b, n, 3, heads, c, generator=gen).permute(2, 0, 3, 1, 4).to(dtype)
    tables = (0.5 * torch.randn(2 * hw[0] - 1, c, generator=gen),
              0.5 * torch.randn(2 * hw[1] - 1, c, generator=gen))
    return (*qkv.unbind(0), *(t.to(dtype) for t in tables))


@interpreted
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-3)])
@pytest.mark.parametrize("hw,c", [
    ((16, 32), 32),   # key rows = key blocks: loop-invariant column term
    ((16, 16), 64),   # same path, SAM's head dim
    ((14, 14), 64),   # a 14x14 window (vit_b): gathered bias, ragged last block
    ((6, 10), 24),    # non-square grid, head dim padded 24 -> 32
    ((7, 7), 80),     # vit_h's head dim (80 -> 128)
])
def test_interpreted_kernel_matches_reference(hw, c, dtype, tol):
    from semisam.workers.maskers.sam.relpos_attention import (
        reference_attention,
        relpos_attention,
        relpos_tables,
    )

    q, k, v, table_h, table_w = _qkv(2, 3, hw, c, dtype, seed=hash((hw, c)) % 1000)
    relh, relw = relpos_tables(q, table_h, table_w, hw)
    out = relpos_attention(q, k, v, relh, relw, c ** -0.5, hw)
    ref = reference_attention(q, k, v, relh, relw, c ** -0.5, hw)
    assert out.shape == ref.shape == (2, hw[0] * hw[1], 3, c) and out.dtype == dtype
    assert torch.isfinite(out).all()
    err = ((out.double() - ref).norm() / ref.norm()).item()
    assert err < tol, f"relative error {err:.3g}"


@interpreted
def test_interpreted_kernel_bias_matters():
    """Dropping either bias table changes the output: the kernel really adds both."""
    from semisam.workers.maskers.sam.relpos_attention import (
        reference_attention,
        relpos_attention,
        relpos_tables,
    )

    hw, c = (16, 16), 32
    q, k, v, table_h, table_w = _qkv(1, 2, hw, c, torch.float32, seed=5)
    relh, relw = relpos_tables(q, table_h, table_w, hw)
    out = relpos_attention(q, k, v, relh, relw, c ** -0.5, hw)
    for h_part, w_part in ((relh, torch.zeros_like(relw)), (torch.zeros_like(relh), relw)):
        partial = reference_attention(q, k, v, h_part, w_part, c ** -0.5, hw)
        assert ((out.double() - partial).norm() / partial.norm()).item() > 1e-2


@interpreted
def test_interpreted_encoder_matches_stock():
    from segment_anything.modeling.image_encoder import ImageEncoderViT  # noqa: F401

    from semisam.workers.maskers.sam import FastImageEncoder

    from .sam_models import small_sam

    sam = small_sam(seed=0)  # 32x32 tokens: one global block (aligned path), 7x7 windows
    x = torch.randn(2, 3, 1024, 1024, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref = sam.image_encoder(x)
        ours = FastImageEncoder(sam.image_encoder, sdpa=True, rel_pos="triton")(x)
    assert (ours - ref).abs().max().item() < 1e-4


@interpreted
def test_interpreted_masker_matches_mask_path():
    from semisam.schemas import SamConfig
    from semisam.workers.maskers.sam import SamMasker

    from .sam_models import small_sam, textured_slice
    from .test_sam_parity import _prompts

    h, w = 64, 80
    slices = np.stack([textured_slice(h, w, seed=s) for s in range(2)])
    prompts = _prompts(h, w, n=2)
    out = {}
    for rel_pos in ("mask", "triton"):
        masker = SamMasker(SamConfig(rel_pos=rel_pos), torch.device("cpu"), model=small_sam(seed=0))
        assert masker.encoder.rel_pos == rel_pos
        out[rel_pos] = masker.mask_slices(slices, prompts)
    assert 0.02 < out["mask"].mean() < 0.98
    np.testing.assert_allclose(out["triton"], out["mask"], atol=1e-4, rtol=0)


def test_triton_setting_refused_without_gpu():
    """Outside the interpreter a CPU device cannot run the kernel: one clear error."""
    if CHILD:
        pytest.skip("the interpreter accepts CPU tensors")
    from semisam.workers.maskers.sam.encoder import resolve_rel_pos

    with pytest.raises(ValueError, match="rel_pos 'triton' needs a CUDA device"):
        resolve_rel_pos("triton", torch.device("cpu"))
    assert resolve_rel_pos("auto", torch.device("cpu")) == "mask"
    assert resolve_rel_pos("auto", torch.device("cuda")) == "triton"  # triton is installed here
    assert resolve_rel_pos("fold", torch.device("cpu")) == "fold"


@interpreted
def test_interpreted_encoder_traces_as_one_graph():
    """No graph break anywhere in the encoder with the kernel: one graph per batch shape, so a
    compiled encoder never splits into per-block frames that hit dynamo's recompile limit."""
    from semisam.workers.maskers.sam import FastImageEncoder

    from .sam_models import small_sam

    sam = small_sam(seed=0)
    x = torch.randn(2, 3, 1024, 1024, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        explained = torch._dynamo.explain(FastImageEncoder(sam.image_encoder, rel_pos="triton"))(x)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


@interpreted
def test_interpreted_custom_op_inside_torch_compile():
    """On CUDA the kernel is the opaque custom op ``semisam::relpos_attention``: a compiled
    graph around it (tables, reshapes) gives what the eager calls give."""
    from semisam.workers.maskers.sam.relpos_attention import relpos_tables

    hw, c = (7, 7), 32
    q, k, v, table_h, table_w = _qkv(2, 2, hw, c, torch.float32, seed=9)
    op = torch.ops.semisam.relpos_attention

    def attend(q, k, v, table_h, table_w):
        relh, relw = relpos_tables(q, table_h, table_w, hw)
        return op(q, k, v, relh, relw, c ** -0.5, *hw).reshape(2, *hw, -1) * 2.0

    eager = attend(q, k, v, table_h, table_w)
    compiled = torch.compile(attend, dynamic=False)(q, k, v, table_h, table_w)
    assert compiled.shape == (2, 7, 7, 2 * c)
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)
