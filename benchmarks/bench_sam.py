"""SAM stage timings: the official `SamPredictor` loop vs the project's batched path."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from segment_anything import SamPredictor
from segment_anything.modeling import Sam

from semisam.schemas import SamConfig
from semisam.workers.maskers import SlicePrompt
from semisam.workers.maskers.sam.decoder import decode_slices
from semisam.workers.maskers.sam.masker import SamMasker


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def naive_loop(model: Sam, slices: np.ndarray, prompts: Sequence[SlicePrompt],
               device: torch.device) -> tuple[float, np.ndarray]:
    """`set_image` + `predict` one slice at a time, fp32: the reference users start from.

    Returns:
        (seconds, ``NxHxW`` float32 probabilities).
    """
    predictor = SamPredictor(model)

    def run() -> np.ndarray:
        out = np.zeros(slices.shape, np.float32)
        for i, (img, p) in enumerate(zip(slices, prompts)):
            predictor.set_image(np.repeat(img[:, :, None], 3, axis=2))
            has_points = len(p.points) > 0
            logits, _, _ = predictor.predict(
                point_coords=p.points if has_points else None,
                point_labels=p.point_labels if has_points else None,
                box=p.box, multimask_output=False, return_logits=True)
            out[i] = 1.0 / (1.0 + np.exp(-logits[0]))
        return out

    timed(lambda: predictor.set_image(np.repeat(slices[0][:, :, None], 3, axis=2)), device)  # warm-up
    seconds, probs = timed(run, device)
    return seconds, probs


def project_path(model: Sam, config: SamConfig, slices: np.ndarray,
                 prompts: Sequence[SlicePrompt], device: torch.device, repeats: int = 2) -> dict:
    """Time the project's batched path (whole stage, encoder alone, decoder alone).

    The model is deep-copied (a reduced-precision config casts the encoder in place).
    """
    start = time.perf_counter()
    masker = SamMasker(config, device, model=copy.deepcopy(model))  # compiles every batch shape
    init_s = time.perf_counter() - start
    warm = min(len(slices), config.batch_size)
    compile_s, _ = timed(lambda: masker.mask_slices(slices[:warm], prompts[:warm]), device)
    best, probs = float("inf"), None
    for _ in range(repeats):
        seconds, probs = timed(lambda: masker.mask_slices(slices, prompts), device)
        best = min(best, seconds)
    hw = (int(slices.shape[1]), int(slices.shape[2]))
    batch = torch.from_numpy(np.ascontiguousarray(slices)).to(device)
    with torch.inference_mode():
        enc_s, emb = timed(lambda: masker.encode(batch), device)
        inputs = masker.input_prompts(prompts, hw)
        dec_s, _ = timed(lambda: decode_slices(masker.model, emb, inputs,
                                               config.multimask_output), device)
    return {"seconds": best, "init_seconds": init_s, "warmup_seconds": compile_s, "encoder_seconds": enc_s,
            "decoder_seconds": dec_s, "probs": probs}


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    """Mask agreement (threshold 0.5) and probability differences of two ``NxHxW`` maps."""
    ma, mb = a > 0.5, b > 0.5
    inter, union = np.logical_and(ma, mb).sum(), np.logical_or(ma, mb).sum()
    return {"pixel_agreement": float((ma == mb).mean()),
            "iou": float(inter / union) if union else 1.0,
            "prob_max_abs_diff": float(np.abs(a - b).max()),
            "prob_mean_abs_diff": float(np.abs(a - b).mean())}
