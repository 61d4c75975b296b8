"""Fused attention with SAM's decomposed relative-position bias computed inside the kernel.

SAM's encoder attention scores are ``scale * q_i.k_j + relh[i, row(j)] + relw[i, col(j)]``,
with ``relh = q.Rh`` (``(HW)xH``) and ``relw = q.Rw`` (``(HW)xW``) per query (see
`encoder.rel_pos_bias`). The ``(HW)x(HW)`` bias never exists here: a flash-attention style
Triton kernel (online softmax over key blocks) adds the two small per-query tables while it
builds each score tile. Key blocks are whole key rows padded to a power-of-two width (64 for
the 64x64 global-attention grid of vit_b/l/h, 16 for its 14x14 windows), so the column table
of a query block is one tile loaded before the key loop and the row term is one value per
query and key row.

Arithmetic: q/k/v/tables in the encoder's dtype (bf16 on GPU), scores, softmax and the output
accumulator in float32, exp2 with the log2(e) factor folded into the scale and the tables.

`relpos_attention` is the entry point; it calls the custom op ``semisam::relpos_attention``
(``torch.compile`` keeps it as one opaque call). With ``TRITON_INTERPRET=1`` (tests on CPU)
the same kernel runs in Triton's interpreter.
"""

from __future__ import annotations

import inspect
import os

import torch

try:  # triton ships with CUDA builds of torch; CPU installs may lack it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only where triton is absent
    triton = None
    tl = None

__all__ = ["available", "relpos_attention", "relpos_tables"]

LOG2E = 1.4426950408889634


def available(device: torch.device) -> bool:
    """Whether the kernel can run for tensors on ``device`` (CUDA, or the interpreter)."""
    if triton is None:
        return False
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def relpos_tables(
    q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, hw: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-query bias tables, already multiplied by log2(e).

    Args:
        q: ``BxHeadsx(H*W)xC`` unscaled queries.
        rel_pos_h: ``(2H-1)xC`` table; rel_pos_w: ``(2W-1)xC``.
        hw: token grid ``(H, W)``.

    Returns:
        ``relh`` ``BxHeadsx(H*W)xH`` and ``relw`` ``BxHeadsx(H*W)xW``, contiguous, ``q.dtype``.
    """
    from segment_anything.modeling.image_encoder import get_rel_pos

    h, w = hw
    b, heads, _, c = q.shape
    grid_q = q.reshape(b, heads, h, w, c)
    table_h = (get_rel_pos(h, h, rel_pos_h) * LOG2E).to(q.dtype)  # HxHxC
    table_w = (get_rel_pos(w, w, rel_pos_w) * LOG2E).to(q.dtype)  # WxWxC
    relh = torch.einsum("bnhwc,hkc->bnhwk", grid_q, table_h).reshape(b, heads, h * w, h)
    relw = torch.einsum("bnhwc,wkc->bnhwk", grid_q, table_w).reshape(b, heads, h * w, w)
    return relh.contiguous(), relw.contiguous()


if triton is not None:

    def _configs() -> list:
        return [
            triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=nw, num_stages=ns)
            for bm in (64, 128)
            for bn in (32, 64, 128)
            for nw in (4, 8)
            for ns in (2, 3)
        ]

    def _prune(configs: list, nargs: dict, **kwargs) -> list:
        """Key blocks hold whole padded key rows; 128-wide blocks only for 128-wide rows."""
        w_pad = {**nargs, **kwargs}["W_PAD"]
        return [c for c in configs
                if w_pad <= c.kwargs["BLOCK_N"] <= max(64, w_pad)]

    @triton.jit
    def _rows_bias(rh_base, start_row, row_ok, sub, GRID_H: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, W_PAD: tl.constexpr):
        """The row term of the bias for a key block of several key rows: ``BLOCK_M x BLOCK_N``
        float32, key row ``r`` of the block taking each query's value for row
        ``start_row + r`` (inlined into the kernel)."""
        bias_h = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
        for r in tl.static_range(BLOCK_N // W_PAD):
            rh = tl.load(rh_base + start_row + r, mask=row_ok & (start_row + r < GRID_H),
                         other=0.0).to(tl.float32)
            bias_h = tl.where(sub[None, :] == r, rh[:, None], bias_h)
        return bias_h

    # A key block is BLOCK_N // W_PAD whole key rows, each padded from GRID_W to W_PAD
    # columns (a power of two): the column term of the bias is then the same tile for every
    # key block (loaded once), the row term one value per query and key row.
    @triton.jit
    def _relpos_attention_jit(
        Q, K, V, RH, RW, Out,
        sq_z, sq_h, sq_n, sk_z, sk_h, sk_n, sv_z, sv_h, sv_n, so_z, so_h, so_n,
        heads, N, qk_scale,
        GRID_H: tl.constexpr, GRID_W: tl.constexpr, W_PAD: tl.constexpr,
        HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    ):
        pid_m = tl.program_id(0)
        pid_zh = tl.program_id(1)
        z = pid_zh // heads
        hd = pid_zh % heads
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, HEAD_DIM_PAD)
        row_ok = offs_m < N
        d_ok = offs_d < HEAD_DIM

        q_ptrs = Q + z * sq_z + hd * sq_h + offs_m[:, None] * sq_n + offs_d[None, :]
        q = tl.load(q_ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0.0)
        rh_base = RH + pid_zh.to(tl.int64) * N * GRID_H + offs_m * GRID_H  # BLOCK_M pointers
        rw_base = RW + pid_zh.to(tl.int64) * N * GRID_W + offs_m * GRID_W
        k_base = K + z * sk_z + hd * sk_h
        v_base = V + z * sv_z + hd * sv_h

        offs_b = tl.arange(0, BLOCK_N)
        col = offs_b % W_PAD
        sub = offs_b // W_PAD  # key row within the block
        col_ok = col < GRID_W
        rw_tile = tl.load(rw_base[:, None] + col[None, :], mask=row_ok[:, None] & col_ok[None, :],
                          other=0.0).to(tl.float32)

        m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
        l_i = tl.zeros((BLOCK_M,), tl.float32)
        acc = tl.zeros((BLOCK_M, HEAD_DIM_PAD), tl.float32)
        for start_row in range(0, GRID_H, BLOCK_N // W_PAD):
            key_row = start_row + sub
            key_ok = col_ok & (key_row < GRID_H)
            offs_n = key_row * GRID_W + col
            k = tl.load(k_base + offs_n[None, :] * sk_n + offs_d[:, None],
                        mask=key_ok[None, :] & d_ok[:, None], other=0.0)  # HEAD_DIM_PAD x BLOCK_N
            s = tl.dot(q, k) * qk_scale + rw_tile
            if BLOCK_N // W_PAD == 1:
                rh = tl.load(rh_base + start_row, mask=row_ok, other=0.0).to(tl.float32)
                s += rh[:, None]
            else:
                s += _rows_bias(rh_base, start_row, row_ok, sub, GRID_H, BLOCK_M, BLOCK_N, W_PAD)
            if (GRID_W != W_PAD) or (GRID_H % (BLOCK_N // W_PAD) != 0):  # padded keys
                s = tl.where(key_ok[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(v_base + offs_n[:, None] * sv_n + offs_d[None, :],
                        mask=key_ok[:, None] & d_ok[None, :], other=0.0)  # BLOCK_N x HEAD_DIM_PAD
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new
        acc = acc / l_i[:, None]
        o_ptrs = Out + z * so_z + hd * so_h + offs_m[:, None] * so_n + offs_d[None, :]
        tl.store(o_ptrs, acc.to(Out.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])

    _INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
    # autotune timings kept on disk (Triton's cache dir) where this Triton can: each new
    # worker process then skips benchmarking the block sizes again
    _CACHE = ({"cache_results": True}
              if "cache_results" in inspect.signature(triton.autotune).parameters else {})
    # the interpreter (CPU tests) has no benchmarker to autotune with: fixed block sizes
    _relpos_attention_kernel = _relpos_attention_jit if _INTERPRETED else triton.autotune(
        configs=_configs(), key=["N", "GRID_W", "HEAD_DIM"],
        prune_configs_by={"early_config_prune": _prune}, **_CACHE)(_relpos_attention_jit)


MAX_GRID_W = 128


def _launch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, relh: torch.Tensor,
            relw: torch.Tensor, scale: float, grid_h: int, grid_w: int) -> torch.Tensor:
    b, heads, n, c = q.shape
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    relh, relw = relh.contiguous(), relw.contiguous()
    out = q.new_empty((b, n, heads, c))  # token-major: the caller's reshape to BxHxWx(heads*C) is free
    w_pad = max(8, triton.next_power_of_2(grid_w))
    head_pad = max(16, triton.next_power_of_2(c))

    def grid(meta):
        return (triton.cdiv(n, meta["BLOCK_M"]), b * heads)

    fixed = {"BLOCK_M": 64, "BLOCK_N": max(32, w_pad)} if _INTERPRETED else {}
    _relpos_attention_kernel[grid](
        q, k, v, relh, relw, out,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(2), out.stride(1),
        heads, n, scale * LOG2E,
        GRID_H=grid_h, GRID_W=grid_w, W_PAD=w_pad, HEAD_DIM=c, HEAD_DIM_PAD=head_pad, **fixed,
    )
    return out


if triton is not None:
    # Registered at import, not on first use: defining the op inside a function that
    # torch.compile is tracing would break the graph (and split the encoder into per-block
    # frames that recompile for every block index).
    @torch.library.custom_op("semisam::relpos_attention", mutates_args=())
    def _relpos_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, relh: torch.Tensor,
                   relw: torch.Tensor, scale: float, grid_h: int, grid_w: int) -> torch.Tensor:
        """The kernel as the custom op ``semisam::relpos_attention``: ``torch.compile`` keeps it
        as one opaque call (Inductor does not rebuild the kernel; its autotuner picks block
        sizes at the first call)."""
        return _launch(q, k, v, relh, relw, scale, grid_h, grid_w)

    @_relpos_op.register_fake
    def _(q, k, v, relh, relw, scale, grid_h, grid_w):
        b, heads, n, c = q.shape
        return q.new_empty((b, n, heads, c))


def relpos_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, relh: torch.Tensor, relw: torch.Tensor,
    scale: float, hw: tuple[int, int],
) -> torch.Tensor:
    """``softmax(scale q k^T + relh[:, row(k)] + relw[:, col(k)]) v`` without the bias matrix.

    Args:
        q, k, v: ``BxHeadsx(H*W)xC`` (any strides with a unit last stride, e.g. views of the
            block's qkv projection); C up to 128 (padded to a power of two inside).
        relh, relw: `relpos_tables` output (log2(e) already applied), contiguous.
        scale: the attention's ``1/sqrt(C)``.
        hw: token grid ``(H, W)``; ``H*W`` tokens.

    Returns:
        ``Bx(H*W)xHeadsxC`` in ``q.dtype`` (token-major, so ``reshape(B, H, W, Heads*C)`` is a
        view).

    Raises:
        RuntimeError: triton is not installed, or the tensors are on a device it cannot use.
    """
    if not available(q.device):
        raise RuntimeError("sam.rel_pos='triton' needs CUDA tensors and the triton package "
                           f"(got device {q.device}, triton {'missing' if triton is None else 'present'})")
    b, heads, n, c = q.shape
    h, w = hw
    if n != h * w or relh.shape != (b, heads, n, h) or relw.shape != (b, heads, n, w):
        raise ValueError(f"relpos_attention: {n} tokens, grid {hw}, relh {tuple(relh.shape)}, "
                         f"relw {tuple(relw.shape)} do not agree")
    if c > 128 or w > MAX_GRID_W:
        raise ValueError(f"relpos_attention: head dim {c} (max 128) or grid width {w} "
                         f"(max {MAX_GRID_W}) too large")
    return _relpos_op(q, k, v, relh, relw, float(scale), h, w)


def reference_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, relh: torch.Tensor, relw: torch.Tensor,
    scale: float, hw: tuple[int, int],
) -> torch.Tensor:
    """What `relpos_attention` computes, with the bias materialised (float64; tests)."""
    h, w = hw
    q64, k64, v64 = (t.double() for t in (q, k, v))
    bias = (relh.double()[..., :, None] + relw.double()[..., None, :]) / LOG2E  # ...x(HW)xHxW
    scores = scale * q64 @ k64.transpose(-1, -2) + bias.reshape(*bias.shape[:-2], h * w)
    out = torch.softmax(scores, dim=-1) @ v64
    return out.transpose(1, 2)  # Bx(HW)xHeadsxC

