"""Throughput benchmark: naive `SamPredictor` loop vs the project's SAM path, and end to end.

Run on purpose, never from the test suite. Prints a table and writes JSON::

    .venv/bin/python benchmarks/throughput.py --device cpu --out bench-cpu.json
    python3 benchmarks/throughput.py --device cuda --model vit_b --la-dir .gpu/la --out bench-gpu.json

LiteMedSAM (the round's default masker, bundled trained weights): the official per-slice fp32
loop (rewritten from its inference script, ``litemedsam_speed.py``) against the project's masker
with its default configuration, on LA slices (phantoms without ``../shared/data``): slices/s
and the IoU of the masks. CPU: a small SAM built from segment-anything's modules (real 16-pixel patches, 64x64 tokens),
phantom slices, and `run-round` on a local Ray with the random-walker masker for 8 and 64
volumes (efficiency and worker memory). GPU: vit_b with random weights, LA slices, and the
worker path (student + SAM vit_b) over LA volumes. Prompts for the SAM-stage comparison come
from the labels (the comparison needs equal prompts on both paths, not good ones).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

sys.path.append(str(Path(__file__).resolve().parents[1]))  # tests.workers.sam_models (appended: the
# installed semisam must win over the repo-root folder of the same name)

from bench_round import (  # noqa: E402
    la_sources,
    la_store,
    phantom_store,
    ray_round,
    read_la,
    train_student,
    worker_path,
)
from bench_sam import agreement, naive_loop, project_path  # noqa: E402
from litemedsam_speed import ious, load_groups, run_reference, timed  # noqa: E402

from semisam.pipeline.phantoms import make_phantom  # noqa: E402
from semisam.schemas import (  # noqa: E402
    IntensityConfig,
    LiteMedSamConfig,
    MaskerKind,
    PromptConfig,
    RoundConfig,
    SamConfig,
    StudentSpec,
)
from semisam.workers.intensity import window_volume  # noqa: E402
from semisam.workers.localization import slice_prompts, stack_slices  # noqa: E402


def slice_set(n: int, la_dir: Path | None) -> tuple[np.ndarray, list]:
    """``n`` windowed slices with label-derived box+point prompts, zero-padded (bottom/right,
    so prompt coordinates stay valid) to one common ``HxW``."""
    slices, prompts = [], []
    sources = la_sources(la_dir) if la_dir else [None] * 64
    for i, src in enumerate(sources):
        if src is None:
            image, label = make_phantom((160, 128, 48), seed=100 + i)
        else:
            _, image, label = read_la(src)
        prm = slice_prompts(label > 0, label.astype(np.float32), PromptConfig())
        win = window_volume(image, IntensityConfig())
        slices.extend(stack_slices(win, [p.index for p in prm], 2))
        prompts.extend(prm)
        if len(slices) >= n:
            break
    h = max(s.shape[0] for s in slices[:n])
    w = max(s.shape[1] for s in slices[:n])
    out = np.zeros((min(n, len(slices)), h, w), np.uint8)
    for j, sl in enumerate(slices[:n]):
        out[j, : sl.shape[0], : sl.shape[1]] = sl
    return out, prompts[:n]


def sam_model(kind: str, device: torch.device):
    if kind == "vit_b":
        from segment_anything import sam_model_registry

        torch.manual_seed(0)
        return sam_model_registry["vit_b"]().to(device).eval()
    from tests.workers.sam_models import small_sam

    return small_sam(seed=0, embed_dim=96, depth=4, heads=4, patch=16).to(device).eval()


def sam_config(args) -> SamConfig:
    return SamConfig(batch_size=args.batch, dtype=args.dtype, sdpa=True, compile=args.compile,
                     compile_cache_dir=args.compile_cache, compile_mode=args.compile_mode,
                     rel_pos=args.rel_pos, fp8=args.fp8)


def sam_section(args, device: torch.device) -> dict:
    slices, prompts = slice_set(args.slices, args.la_dir)
    model = sam_model(args.model, device)
    naive_n = min(args.naive_slices, len(slices))
    naive_s, naive_probs = naive_loop(model, slices[:naive_n], prompts[:naive_n], device)
    cfg = sam_config(args)
    fast = project_path(model, cfg, slices, prompts, device)
    fp32 = project_path(model, SamConfig(batch_size=args.batch, dtype="float32", sdpa=False),
                        slices[:naive_n], prompts[:naive_n], device, repeats=1)
    naive_rate = naive_n / naive_s
    fast_rate = len(slices) / fast["seconds"]
    return {
        "slices": len(slices), "slice_hw": list(slices.shape[1:]), "naive_slices": naive_n,
        "naive_slices_per_s": round(naive_rate, 2),
        "project_slices_per_s": round(fast_rate, 2), "speedup": round(fast_rate / naive_rate, 2),
        "project_fp32_batched_slices_per_s": round(naive_n / fp32["seconds"], 2),
        "encoder_slices_per_s": round(len(slices) / fast["encoder_seconds"], 2),
        "decoder_slices_per_s": round(len(slices) / fast["decoder_seconds"], 2),
        "init_seconds": round(fast["init_seconds"], 2),
        "warmup_seconds": round(fast["warmup_seconds"], 2),
        "vs_naive": agreement(fast["probs"][:naive_n], naive_probs),
        "fp32_batched_vs_naive": agreement(fp32["probs"], naive_probs),
        "config": cfg.model_dump(mode="json"),
    }


def litemedsam_section(args, device: torch.device) -> dict:
    """LiteMedSAM: the official per-slice fp32 loop against the project's default masker on
    the same slices and label boxes (median of ``--repeats`` after a warm-up)."""
    from semisam.workers.maskers.litemedsam import LiteMedSamMasker, load_litemedsam

    groups, source = load_groups(args.litemedsam_slices, 16, synthetic=False)
    n = sum(len(s) for _, s, _ in groups)
    model, _, _ = load_litemedsam(None, device)
    run_reference(model, [(v, s[:1], p[:1]) for v, s, p in groups])  # warm-up
    ref_times, _, ref = timed(lambda: run_reference(model, groups), args.repeats)
    config = LiteMedSamConfig()
    masker = LiteMedSamMasker(config, device, model=model)

    def run():
        return [masker.mask_slices(s, p) for _, s, p in groups]

    run()  # warm-up
    times, _, out = timed(run, args.repeats)
    ref_after, _, _ = timed(lambda: run_reference(model, groups), args.repeats)
    ref_s = float(np.median(ref_times + ref_after))
    fast_s = float(np.median(times))
    iou = ious(out, ref)
    return {"source": source, "slices": n, "encoder_dtype": str(masker.encoder.dtype),
            "batch_size": config.batch_size, "channels_last": config.channels_last,
            "reference_slices_per_s": round(n / ref_s, 3),
            "project_slices_per_s": round(n / fast_s, 3), "speedup": round(ref_s / fast_s, 2),
            "iou_min": round(float(iou.min()), 4), "iou_mean": round(float(iou.mean()), 4)}


def e2e_section(args, device: torch.device, work: Path, out: dict, save) -> dict:
    """Fills ``out`` (and calls ``save()``) after each measurement."""
    if device.type == "cuda":
        files = la_sources(args.la_dir)[: args.volumes] if args.la_dir else []
        store = la_store(work / "la.zarr", files, labeled=2, copies=args.copies) if files else \
            phantom_store(work / "ph.zarr", args.volumes, 2)
        spec = StudentSpec(channels=(16, 32, 64, 128), strides=(2, 2, 2), patch_size=(96, 96, 80))
        student = train_student(store, work / "student.pt", spec, args.student_iters, device)
        cfg = RoundConfig()
        cfg.masker.kind = MaskerKind.sam
        cfg.masker.sam = sam_config(args)
        cfg.runtime.device = "cuda"
        cfg.runtime.tasks_in_flight = args.tasks_in_flight
        cfg.student.sw_batch_size = 8  # the whole LA volume's windows in one student pass
        if "worker" not in args.skip:
            out["worker_path"] = worker_path(store, student, cfg)
            save()
        if args.ray_workers:  # run-round on a local Ray: actors share the GPU
            cfg.runtime.workers = args.ray_workers
            cfg.runtime.gpus_per_worker = 1.0 / args.ray_workers
            cfg.runtime.cpus_per_worker = 2.0
            key = f"run_round_{args.ray_workers}_actors"
            try:
                out[key] = ray_round(store, student, cfg, round_index=2)
            except Exception as exc:  # noqa: BLE001 - record and keep the other figures
                out[key] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            save()
        return out
    spec = StudentSpec(channels=(8, 16, 32), strides=(2, 2), patch_size=(48, 48, 32))
    train = phantom_store(work / "train.zarr", 2, 2)
    student = train_student(train, work / "student.pt", spec, args.student_iters, device)
    cfg = RoundConfig()
    cfg.runtime.workers = args.workers
    cfg.runtime.tasks_in_flight = args.tasks_in_flight
    for n in args.round_volumes:
        store = phantom_store(work / f"round{n}.zarr", n + 2, 2)
        out[f"run_round_{n}"] = ray_round(store, student, cfg)
        save()
    return out


def render(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"semisam throughput ({results['device']})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for section in ("sam", "litemedsam", "e2e"):
        for key, value in results.get(section, {}).items():
            if isinstance(value, dict):
                for k2, v2 in value.items():
                    if not isinstance(v2, dict):
                        table.add_row(f"{section}.{key}.{k2}", str(v2))
            else:
                table.add_row(f"{section}.{key}", str(value))
    Console().print(table)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--model", default="small", choices=["small", "vit_b"])
    p.add_argument("--slices", type=int, default=32)
    p.add_argument("--naive-slices", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--compile", action="store_true")
    p.add_argument("--compile-cache", type=Path, default=None)
    p.add_argument("--compile-mode", default="default", choices=["default", "max-autotune-no-cudagraphs"])
    p.add_argument("--rel-pos", default="auto", choices=["auto", "fold", "mask", "triton"])
    p.add_argument("--fp8", default="none", choices=["none", "mlp", "all"])
    p.add_argument("--copies", type=int, default=1, help="GPU: each unlabeled LA volume N times")
    p.add_argument("--ray-workers", type=int, default=0,
                   help="GPU: also run-round on a local Ray with this many actors on the GPU")
    p.add_argument("--la-dir", type=Path, default=None)
    p.add_argument("--volumes", type=int, default=16)
    p.add_argument("--student-iters", type=int, default=60)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--tasks-in-flight", type=int, default=3, help="threads per worker")
    p.add_argument("--round-volumes", type=int, nargs="*", default=[8, 64])
    p.add_argument("--skip", nargs="*", default=[], choices=["sam", "litemedsam", "e2e", "worker"])
    p.add_argument("--litemedsam-slices", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3, help="LiteMedSAM: timed runs per path")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("bench.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    results = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu",
               "torch": torch.__version__, "args": {k: str(v) for k, v in vars(args).items()}}
    if "sam" not in args.skip:
        results["sam"] = sam_section(args, device)
        results["sam"].pop("config", None)
    def save() -> None:  # after every measurement: a timeout keeps what was measured
        args.out.write_text(json.dumps(results, indent=2))

    save()
    if "litemedsam" not in args.skip:
        results["litemedsam"] = litemedsam_section(args, device)
        save()
    if "e2e" not in args.skip:
        results["e2e"] = {}
        with tempfile.TemporaryDirectory() as work:
            e2e_section(args, device, Path(work), results["e2e"], save)
    save()
    render(results)


if __name__ == "__main__":
    main()
