"""LiteMedSAM on the CPU: the official per-slice fp32 loop against the project's masker variants.

Run on purpose, never from tests (prefix with ``nice -n 10`` on a shared machine)::

    python3 benchmarks/litemedsam_speed.py [--slices 32] [--repeats 3] \
        [--variants fp32-stock,fp32,bf16,bf16-b8] [--out bench-out/litemedsam_speed.json]

1. Slices: ``--slices`` real slices (along axis 2) of the Left Atrium volumes in
   ``../shared/data/la`` (h5 ``image``/``label``), windowed with ``window_volume`` to uint8;
   one box per slice from the label's bounding box + 5 px (a stand-in for the prompts); only
   slices with foreground. Synthetic phantoms (a bright disk on noise) when the data is absent.
2. Reference: the official LiteMedSAM inference, one slice at a time, fp32, on the same loaded
   model: 3 channels, ``cv2.resize`` INTER_AREA to longest side 256, min-max, zero pad,
   ``image_encoder``, box scaled to 256 and truncated, ``prompt_encoder`` + ``mask_decoder``
   (single mask), crop to the resized size, bilinear upsample, sigmoid.
3. Variants: ``LiteMedSamMasker.mask_slices`` with each configuration (dtype, channels_last,
   compile, batch size; ``-stock`` = the vendored TinyViT module as is, without the project's
   rebuilt encoder). Each: slices/s, speed-up over the reference, and the IoU of its masks
   (probability > 0.5) with the reference masks: min, 5th percentile and mean over slices.

Every timing is the median of ``--repeats`` runs over all slices after one warm-up run (for
compiled variants the warm-up is the compilation and is reported as ``compile_s``). Timings on
a shared machine are noisy: the reference is timed again after the variants, and the speed-up
uses the median of all its runs. Prints a markdown table; writes JSON (after every variant).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from semisam.schemas import IntensityConfig, LiteMedSamConfig
from semisam.workers.intensity import window_volume
from semisam.workers.maskers.base import SlicePrompt
from semisam.workers.maskers.litemedsam import LiteMedSamMasker, load_litemedsam
from semisam.workers.maskers.litemedsam.encoder import LiteEncoder, resolve_dtype

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "la"

# name -> (LiteMedSamConfig overrides, stock module?)
VARIANTS: dict[str, tuple[dict, bool]] = {
    "fp32-stock": ({"dtype": "float32", "channels_last": False, "batch_size": 16}, True),
    "fp32-stock-b1": ({"dtype": "float32", "channels_last": False, "batch_size": 1}, True),
    "fp32": ({"dtype": "float32", "channels_last": False}, False),
    "fp32-cl": ({"dtype": "float32", "channels_last": True}, False),
    "bf16": ({"dtype": "bfloat16", "channels_last": False}, False),
    "bf16-cl": ({"dtype": "bfloat16", "channels_last": True}, False),
    "bf16-cl-b1": ({"dtype": "bfloat16", "channels_last": True, "batch_size": 1}, False),
    "bf16-cl-b4": ({"dtype": "bfloat16", "channels_last": True, "batch_size": 4}, False),
    "bf16-cl-b8": ({"dtype": "bfloat16", "channels_last": True, "batch_size": 8}, False),
    "bf16-cl-b16": ({"dtype": "bfloat16", "channels_last": True, "batch_size": 16}, False),
    "fp32-cl-compile": ({"dtype": "float32", "channels_last": True, "compile": True}, False),
    "bf16-cl-compile": ({"dtype": "bfloat16", "channels_last": True, "compile": True}, False),
    "default": ({}, False),
}
DEFAULT_VARIANTS = "fp32-stock,fp32,fp32-cl,bf16,bf16-cl,bf16-cl-b1,bf16-cl-b8,bf16-cl-b16,default"


# --------------------------------------------------------------------------------------- data
def label_box(mask: np.ndarray, margin: int = 5) -> np.ndarray:
    """XYXY box (x = column) of a 2D mask, widened by ``margin`` pixels inside the slice."""
    rows, cols = np.nonzero(mask)
    h, w = mask.shape
    return np.array([max(cols.min() - margin, 0), max(rows.min() - margin, 0),
                     min(cols.max() + margin, w - 1), min(rows.max() + margin, h - 1)],
                    np.float32)


def real_groups(n: int, per_volume: int) -> list[tuple[str, np.ndarray, list[SlicePrompt]]]:
    """``n`` foreground slices of the LA volumes, as ``(volume, NxHxW uint8, prompts)`` groups
    (one group per volume: slices of one volume share a shape)."""
    import h5py

    groups = []
    left = n
    for path in sorted(glob.glob(str(DATA / "*.h5"))):
        if left <= 0:
            break
        with h5py.File(path, "r") as f:
            image, label = f["image"][...], f["label"][...]
        vol = window_volume(image, IntensityConfig())
        fg = [z for z in range(label.shape[2]) if label[:, :, z].any()]
        take = min(left, per_volume, len(fg))
        if take <= 0:
            continue
        picks = [fg[i] for i in np.linspace(0, len(fg) - 1, take).round().astype(int)]
        slices = np.stack([vol[:, :, z] for z in picks])
        prompts = [SlicePrompt(index=z, box=label_box(label[:, :, z] > 0)) for z in picks]
        groups.append((Path(path).stem, slices, prompts))
        left -= take
    return groups


def phantom(n: int, hw: tuple[int, int] = (160, 192), seed: int = 0
            ) -> tuple[np.ndarray, list[SlicePrompt]]:
    """``n`` bright disks on noise (``NxHxW`` uint8) and a box around each (+5 px)."""
    rng = np.random.default_rng(seed)
    h, w = hw
    yy, xx = np.mgrid[:h, :w]
    slices, prompts = [], []
    for i in range(n):
        cy, cx = rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w
        r = rng.uniform(0.12, 0.22) * min(h, w)
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        img = rng.normal(60, 15, hw) + 120 * disk
        slices.append(np.clip(img, 0, 255).astype(np.uint8))
        prompts.append(SlicePrompt(index=i, box=label_box(disk)))
    return np.stack(slices), prompts


def load_groups(n: int, per_volume: int, synthetic: bool):
    if not synthetic and DATA.is_dir() and glob.glob(str(DATA / "*.h5")):
        return real_groups(n, per_volume), "la"
    slices, prompts = phantom(n)
    return [("phantom", slices, prompts)], "synthetic"


# ---------------------------------------------------------------------------------- reference
@torch.no_grad()
def reference_slice(model: torch.nn.Module, image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The official LiteMedSAM 2D inference of one ``HxW`` uint8 slice and XYXY box, fp32 ->
    ``HxW`` float32 probabilities (on the model's device)."""
    device = next(model.parameters()).device
    h, w = image.shape
    img3 = np.repeat(image[:, :, None], 3, axis=-1)
    ratio = 256.0 / max(h, w)
    newh, neww = int(h * ratio + 0.5), int(w * ratio + 0.5)
    img256 = cv2.resize(img3, (neww, newh), interpolation=cv2.INTER_AREA)
    img256 = (img256 - img256.min()) / np.clip(img256.max() - img256.min(), 1e-8, None)
    img256 = np.pad(img256, ((0, 256 - newh), (0, 256 - neww), (0, 0)))
    tensor = torch.tensor(img256).float().permute(2, 0, 1).unsqueeze(0).to(device)
    embedding = model.image_encoder(tensor)
    box256 = np.array([int(v * ratio) for v in box], np.float32)
    box_t = torch.as_tensor(box256[None, None, :], dtype=torch.float32, device=device)
    sparse, dense = model.prompt_encoder(points=None, boxes=box_t, masks=None)
    low_res, _ = model.mask_decoder(image_embeddings=embedding,
                                    image_pe=model.prompt_encoder.get_dense_pe(),
                                    sparse_prompt_embeddings=sparse,
                                    dense_prompt_embeddings=dense, multimask_output=False)
    low_res = F.interpolate(low_res[..., :newh, :neww], (h, w), mode="bilinear",
                            align_corners=False)
    return torch.sigmoid(low_res)[0, 0].cpu().numpy()


def run_reference(model, groups) -> list[np.ndarray]:
    out = []
    for _, slices, prompts in groups:
        out.append(np.stack([reference_slice(model, s, p.box) for s, p in zip(slices, prompts)]))
    return out


# ------------------------------------------------------------------------------------ metrics
def ious(a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
    """Per-slice IoU of ``a > 0.5`` and ``b > 0.5`` (1 where both are empty)."""
    out = []
    for x, y in zip(a, b):
        for s, t in zip(x > 0.5, y > 0.5):
            union = np.logical_or(s, t).sum()
            out.append(1.0 if union == 0 else np.logical_and(s, t).sum() / union)
    return np.asarray(out)


def timed(fn, repeats: int) -> tuple[list[float], list[float], object]:
    """Wall seconds, process CPU seconds (all threads) and the last result of ``repeats`` calls.

    CPU seconds are the steadier figure on a shared machine (other jobs stretch wall time)."""
    times, cpu, result = [], [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return times, cpu, result


def machine() -> dict:
    model = platform.processor()
    flags: list[str] = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("", platform.processor()):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "bf16_flags": sorted(f for f in flags if "bf16" in f or f.startswith("amx")),
            "auto_dtype_cpu": str(resolve_dtype("auto", torch.device("cpu"))).replace("torch.", ""),
            "load_avg_start": os.getloadavg()}


# ---------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--slices", type=int, default=32)
    parser.add_argument("--per-volume", type=int, default=32,
                        help="at most this many slices from one volume")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = as torch has")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS,
                        help=f"comma list of {','.join(VARIANTS)}; name:bN overrides the batch")
    parser.add_argument("--synthetic", action="store_true", help="phantoms even if data exists")
    parser.add_argument("--out", type=Path, default=Path("bench-out/litemedsam_speed.json"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)

    groups, source = load_groups(args.slices, args.per_volume, args.synthetic)
    n = sum(len(s) for _, s, _ in groups)
    model, _, _ = load_litemedsam(None, "cpu")
    results: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "machine": machine(), "command": " ".join([sys.executable, *sys.argv]),
                     "data": {"source": source, "slices": n,
                              "volumes": [(v, list(s.shape)) for v, s, _ in groups]},
                     "repeats": args.repeats, "reference": {}, "variants": {}}

    def save() -> None:
        args.out.write_text(json.dumps(results, indent=2, default=str))

    print(f"{n} slices ({source}), {torch.get_num_threads()} threads", flush=True)
    run_reference(model, [(v, s[:1], p[:1]) for v, s, p in groups])  # warm-up
    ref_times, ref_cpu, ref = timed(lambda: run_reference(model, groups), args.repeats)
    results["reference"] = {"times_s": ref_times, "cpu_s": ref_cpu}
    save()
    print(f"reference: {n / statistics.median(ref_times):.3f} slices/s", flush=True)

    rows = []
    for spec in args.variants.split(","):
        name, _, batch = spec.partition(":")
        overrides, stock = VARIANTS[name]
        overrides = dict(overrides)
        if batch:
            overrides["batch_size"] = int(batch.lstrip("b"))
        config = LiteMedSamConfig(**overrides)
        masker = LiteMedSamMasker(config, "cpu", model=model)
        if stock:
            masker.encoder = LiteEncoder(model.image_encoder, config, torch.device("cpu"),
                                         rebuild=False)

        def run(masker=masker):
            return [masker.mask_slices(s, p) for _, s, p in groups]

        t0 = time.perf_counter()
        run()  # warm-up (compiles when config.compile)
        warm = time.perf_counter() - t0
        times, cpu, out = timed(run, args.repeats)
        iou = ious(out, ref)
        row = {"config": config.model_dump(mode="json", exclude={"checkpoint"}),
               "stock_module": stock, "encoder_dtype": str(masker.encoder.dtype),
               "times_s": times, "cpu_s": cpu, "warmup_s": warm,
               "compile_s": warm - statistics.median(times) if config.compile else None,
               "slices_per_s": n / statistics.median(times),
               "cpu_s_per_slice": statistics.median(cpu) / n,
               "iou_min": float(iou.min()), "iou_p5": float(np.percentile(iou, 5)),
               "iou_mean": float(iou.mean()), "iou_per_slice": [round(float(v), 5) for v in iou]}
        results["variants"][spec] = row
        rows.append(spec)
        save()
        print(f"{spec}: {row['slices_per_s']:.3f} slices/s, IoU min {row['iou_min']:.4f}",
              flush=True)
        del masker

    ref_times2, ref_cpu2, _ = timed(lambda: run_reference(model, groups), args.repeats)
    results["reference"]["times_after_s"] = ref_times2
    results["reference"]["cpu_after_s"] = ref_cpu2
    ref_s = statistics.median(ref_times + ref_times2)
    ref_c = statistics.median(ref_cpu + ref_cpu2) / n
    results["reference"]["slices_per_s"] = n / ref_s
    results["reference"]["cpu_s_per_slice"] = ref_c
    results["machine"]["load_avg_end"] = os.getloadavg()
    lines = ["| variant | dtype | channels_last | compile | batch | slices/s | speed-up | "
             "CPU s/slice | speed-up (CPU s) | IoU min | IoU p5 | IoU mean | compile s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
             f"| reference (official per-slice loop) | float32 | - | - | 1 | {n / ref_s:.3f} | 1.00 "
             f"| {ref_c:.2f} | 1.00 | 1 | 1 | 1 | - |"]
    for spec in rows:
        r = results["variants"][spec]
        r["speedup"] = r["slices_per_s"] * ref_s / n
        r["speedup_cpu"] = ref_c / r["cpu_s_per_slice"]
        c = r["config"]
        comp = f"{r['compile_s']:.0f}" if r["compile_s"] is not None else "-"
        lines.append(f"| {spec} | {r['encoder_dtype'].replace('torch.', '')} | "
                     f"{c['channels_last']} | {c['compile']} | {c['batch_size']} | "
                     f"{r['slices_per_s']:.3f} | {r['speedup']:.2f} | {r['cpu_s_per_slice']:.2f} | "
                     f"{r['speedup_cpu']:.2f} | {r['iou_min']:.4f} | "
                     f"{r['iou_p5']:.4f} | {r['iou_mean']:.4f} | {comp} |")
    table = "\n".join(lines)
    results["table"] = table
    save()
    print(table)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
