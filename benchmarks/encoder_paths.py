"""SAM encoder attention paths on a GPU: correctness, attention alone, whole encoder.

Run on purpose (one prepared device call, see ``benchmarks/gpu_check.sh``), never from tests::

    python3 benchmarks/encoder_paths.py --out encoder.json [--compile fold triton]

1. Correctness of the Triton rel-pos kernel (`sam.rel_pos='triton'`) and of the folded SDPA
   path against a float64 reference, bf16 and fp32, on vit_b's global (64x64 tokens) and
   windowed (14x14) shapes: relative error ``|out - ref| / |ref|``.
2. Attention alone, 32 slices of vit_b (12 heads, head dim 64): each path's time (median of
   CUDA-event timings), with plain SDPA without any bias as the floor.
3. The vit_b encoder (random weights, bf16, batch 32): slices/s of each path eager, then
   compiled for the paths named by ``--compile``; embedding error against the fp32 stock
   encoder; fp8 variants (`sam.fp8`).

Prints a table and writes JSON after every measurement (a timeout keeps what was measured).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from segment_anything import sam_model_registry

from semisam.workers.maskers.sam.encoder import FastImageEncoder, rel_pos_augment, rel_pos_bias
from semisam.workers.maskers.sam.relpos_attention import (
    reference_attention,
    relpos_attention,
    relpos_tables,
)

sys.path.append(str(Path(__file__).resolve().parents[1]))  # tests.workers.sam_models (smoke)

RESULTS: dict = {}
# vit_b on CUDA; --smoke: a small SAM on CPU with TRITON_INTERPRET=1 (checks the script runs)
CFG = {"device": "cuda", "heads": 12, "head_dim": 64,
       "shapes": {"global_64x64": (2, (64, 64)), "window_14x14": (2 * 25, (14, 14))}}
SMOKE = {"device": "cpu", "heads": 2, "head_dim": 32,
         "shapes": {"global_16x16": (2, (16, 16)), "window_7x7": (2 * 4, (7, 7))}}


def save(out: Path) -> None:
    out.write_text(json.dumps(RESULTS, indent=2))


def timed(fn, reps: int = 10, warmup: int = 3) -> float:
    """Median seconds of ``fn()`` over ``reps`` CUDA-event timed calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    if CFG["device"] == "cpu":
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return sorted(times)[len(times) // 2]
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return sorted(times)[len(times) // 2]


def qkv_tables(b: int, heads: int, hw: tuple[int, int], c: int, dtype, seed: int):
    dev = CFG["device"]
    gen = torch.Generator(device=dev).manual_seed(seed)
    n = hw[0] * hw[1]
    packed = torch.randn(b, n, 3, heads, c, device=dev, generator=gen, dtype=torch.float32)
    q, k, v = packed.to(dtype).permute(2, 0, 3, 1, 4).unbind(0)
    th = 0.5 * torch.randn(2 * hw[0] - 1, c, device=dev, generator=gen)
    tw = 0.5 * torch.randn(2 * hw[1] - 1, c, device=dev, generator=gen)
    return q, k, v, th.to(dtype), tw.to(dtype)


def attention_paths(q, k, v, th, tw, hw, scale) -> dict:
    """Callables computing the same attention (output layouts differ; values compared apart)."""

    def fold():
        qa, ka = rel_pos_augment(q, k, th, tw, hw, scale)
        return F.scaled_dot_product_attention(qa, ka, v, scale=1.0)

    def mask():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=rel_pos_bias(q, th, tw, hw),
                                              scale=scale)

    def triton_path():
        relh, relw = relpos_tables(q, th, tw, hw)
        return relpos_attention(q, k, v, relh, relw, scale, hw)

    relh, relw = relpos_tables(q, th, tw, hw)
    return {
        "fold": fold, "mask": mask, "triton": triton_path,
        "triton_kernel_only": lambda: relpos_attention(q, k, v, relh, relw, scale, hw),
        "sdpa_no_bias_floor": lambda: F.scaled_dot_product_attention(q, k, v, scale=scale),
    }


def check_kernel(out: Path) -> None:
    res = RESULTS.setdefault("correctness", {})
    heads, c = CFG["heads"], CFG["head_dim"]
    dtypes = (torch.bfloat16, torch.float32) if CFG["device"] == "cuda" else (torch.float16, torch.float32)
    for dtype in dtypes:  # the interpreter (smoke) cannot multiply bf16 tiles
        for name, (b, hw) in CFG["shapes"].items():
            q, k, v, th, tw = qkv_tables(b, heads, hw, c, dtype, seed=len(res))
            scale = c ** -0.5
            relh, relw = relpos_tables(q, th, tw, hw)
            ref = reference_attention(q, k, v, relh, relw, scale, hw)  # Bx(HW)xHeadsxC f64
            paths = attention_paths(q, k, v, th, tw, hw, scale)
            errs = {}
            for path in ("triton", "fold"):
                o = paths[path]()
                o = o if path == "triton" else o.transpose(1, 2)
                errs[path] = float((o.double() - ref).norm() / ref.norm())
                errs[f"{path}_finite"] = bool(torch.isfinite(o).all())
            res[f"{name}_{str(dtype)[6:]}"] = errs
            save(out)
    print("correctness", json.dumps(res, indent=1))


def sdpa_backends(q, k, v, th, tw, hw, scale) -> dict:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    qa, ka = rel_pos_augment(q, k, th, tw, hw, scale)
    found = {}
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                    SDPBackend.CUDNN_ATTENTION):
        try:
            with sdpa_kernel([backend]):
                F.scaled_dot_product_attention(qa, ka, v, scale=1.0)
            found[backend.name] = "ok"
        except RuntimeError as exc:
            found[backend.name] = str(exc).splitlines()[0][:120]
    return found


def bench_attention(out: Path, batch: int) -> None:
    res = RESULTS.setdefault("attention_ms", {})
    heads, c = CFG["heads"], CFG["head_dim"]
    dtype = torch.bfloat16 if CFG["device"] == "cuda" else torch.float16
    for name, (per_slice, hw) in CFG["shapes"].items():
        b = batch * per_slice // 2
        q, k, v, th, tw = qkv_tables(b, heads, hw, c, dtype, seed=1)
        n = hw[0] * hw[1]
        flops = 4 * b * heads * n * n * c  # QK^T and PV
        row = {"batch": b, "tokens": n}
        for path, fn in attention_paths(q, k, v, th, tw, hw, c ** -0.5).items():
            if path == "mask" and name.startswith("global"):
                row[path] = None  # a 32x12x4096x4096 bf16 mask: 13 GB, measured before (slow)
                continue
            t = timed(fn)
            row[path] = round(t * 1e3, 3)
            row[f"{path}_tflops"] = round(flops / t / 1e12, 1)
        if CFG["device"] == "cuda":
            row["fold_sdpa_backends"] = sdpa_backends(q, k, v, th, tw, hw, c ** -0.5)
        res[name] = row
        save(out)
        del q, k, v
        if CFG["device"] == "cuda":
            torch.cuda.empty_cache()
    print("attention", json.dumps(res, indent=1))


VARIANTS = {  # name: (rel_pos for global blocks, rel_pos for windowed blocks, fp8)
    "fold": ("fold", "fold", "none"),
    "triton": ("triton", "triton", "none"),
    "triton_global_fold_window": ("triton", "fold", "none"),
    "triton_fp8_mlp": ("triton", "triton", "mlp"),
    "triton_fp8_all": ("triton", "triton", "all"),
}


def vit_b(dtype) -> torch.nn.Module:
    if CFG["device"] == "cpu":  # smoke: the tests' small SAM
        from tests.workers.sam_models import small_sam

        return small_sam(seed=0).image_encoder.eval().to(dtype)
    torch.manual_seed(0)
    return sam_model_registry["vit_b"]().image_encoder.cuda().eval().to(dtype)


def kernel_profile(fn, rows: int = 25) -> list[dict]:
    """Where one call of ``fn`` spends device (CPU: host) time: the top ``rows`` operators and
    kernels by self time, from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    cuda = CFG["device"] == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    fn()
    with profile(activities=activities) as prof:
        fn()
        if cuda:
            torch.cuda.synchronize()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0.0), reverse=True)
    total = sum(getattr(e, key, 0.0) for e in events) or 1.0
    return [{"name": e.key[:120], "ms": round(getattr(e, key, 0.0) / 1e3, 3),
             "share": round(getattr(e, key, 0.0) / total, 4), "calls": e.count}
            for e in events[:rows]]


def bench_encoder(out: Path, batch: int, compiled: list[str], reps: int,
                  profile_variant: str | None = None, modes: tuple[str, ...] = ("default",),
                  eager: list[str] | None = None) -> None:
    res = RESULTS.setdefault("encoder", {})
    dev = CFG["device"]
    gen = torch.Generator(device=dev).manual_seed(2)
    x = torch.randn(batch, 3, 1024, 1024, device=dev, generator=gen)
    probe = x[:4]
    with torch.inference_mode():
        ref = vit_b(torch.float32)(probe).double()  # stock fp32 encoder
    low = torch.bfloat16 if dev == "cuda" else torch.float16
    enc = vit_b(low)
    xb = x.to(low)
    for name, (rp, wrp, fp8) in VARIANTS.items():
        res.setdefault(name, {})
        if eager is not None and name not in eager:
            continue
        try:
            module = FastImageEncoder(enc, True, rp, windowed_rel_pos=wrp, fp8=fp8).eval()
            with torch.inference_mode():
                err = float((module(probe.to(low)).double() - ref).norm() / ref.norm())
                t = timed(lambda m=module: m(xb), reps=reps)
            res[name] = {"eager_slices_per_s": round(batch / t, 1), "embedding_rel_err_vs_fp32": err}
        except Exception as exc:  # noqa: BLE001 - a benchmark records the failure and goes on
            res[name] = {"eager_error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        save(out)
        print(name, res[name], flush=True)
    best = max(("triton", "triton_global_fold_window"),
               key=lambda n: res[n].get("eager_slices_per_s", 0.0) + (n == "triton") * 1e-3)
    res["best_eager_triton_variant"] = best
    for name in compiled:
        name = best if name == "best" else name
        for mode in modes:
            fast = compile_variant(res, name, mode, enc, xb, probe, ref, reps)
            save(out)
            print(name, "compiled", mode, res[name], flush=True)
            if fast is not None and mode == modes[0] and \
                    name == (best if profile_variant == "best" else profile_variant):
                with torch.inference_mode():
                    RESULTS["profile"] = {"variant": name, "compiled": True, "mode": mode,
                                          "top": kernel_profile(lambda f=fast: f(xb))}
                save(out)
                for row in RESULTS["profile"]["top"][:12]:
                    print(f"  {row['share']:6.1%} {row['ms']:9.3f} ms x{row['calls']:<4} {row['name']}")


def compile_variant(res: dict, name: str, mode: str, enc, xb, probe, ref, reps: int):
    """Compile variant ``name`` with torch.compile ``mode`` and time it; figures go into
    ``res[name]`` (keys prefixed ``compiled_`` for the default mode, ``<mode>_`` otherwise).
    Returns the compiled module (None if compiling failed)."""
    rp, wrp, fp8 = VARIANTS[name]
    key = "compiled" if mode == "default" else mode
    try:
        module = FastImageEncoder(enc, True, rp, windowed_rel_pos=wrp, fp8=fp8).eval()
        fast = torch.compile(module, dynamic=False, mode=mode)
        with torch.inference_mode():
            start = time.perf_counter()
            fast(xb)
            if CFG["device"] == "cuda":
                torch.cuda.synchronize()
            warm = time.perf_counter() - start
            err = float((fast(xb)[:4].double() - ref).norm() / ref.norm())
            t = timed(lambda f=fast: f(xb), reps=reps)
        res[name].update({f"{key}_slices_per_s": round(xb.shape[0] / t, 1),
                          f"{key}_compile_seconds": round(warm, 1),
                          f"{key}_rel_err_vs_fp32": err})
        return fast
    except Exception as exc:  # noqa: BLE001 - a benchmark records the failure and goes on
        res[name][f"{key}_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--reps", type=int, default=6)
    p.add_argument("--compile", nargs="*", default=["fold", "best", "triton_fp8_mlp"],
                   help=f"variants to compile, among {list(VARIANTS)} or 'best'")
    p.add_argument("--eager", nargs="*", default=None, choices=list(VARIANTS),
                   help="variants timed eager (default: all)")
    p.add_argument("--compile-mode", nargs="+", default=["default"],
                   choices=["default", "max-autotune-no-cudagraphs", "reduce-overhead"],
                   help="torch.compile modes for each compiled variant (`sam.compile_mode`; "
                   "reduce-overhead = CUDA graphs, measured here in one thread only)")
    p.add_argument("--skip", nargs="*", default=[], choices=["check", "attention", "encoder"])
    p.add_argument("--profile", default=None,
                   help="compiled variant to profile (top kernels by device time), or 'best'")
    p.add_argument("--out", type=Path, default=Path("encoder.json"))
    p.add_argument("--smoke", action="store_true",
                   help="CPU, small SAM, Triton interpreter (set TRITON_INTERPRET=1): script check")
    args = p.parse_args()
    if args.smoke:
        CFG.update(SMOKE)
    RESULTS.update({"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "device": torch.cuda.get_device_name(0) if CFG["device"] == "cuda" else "cpu",
                    "torch": torch.__version__,
                    "inductor_cache": os.environ.get("TORCHINDUCTOR_CACHE_DIR"),
                    "args": {k: str(v) for k, v in vars(args).items()}})
    if "check" not in args.skip:
        check_kernel(args.out)
    if "attention" not in args.skip:
        bench_attention(args.out, args.batch)
    if "encoder" not in args.skip:
        bench_encoder(args.out, args.batch, args.compile, args.reps, args.profile,
                      tuple(args.compile_mode), args.eager)
    save(args.out)


if __name__ == "__main__":
    main()
