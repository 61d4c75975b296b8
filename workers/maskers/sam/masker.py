"""`SamMasker`: segment-anything behind the `Masker` contract, batched over slices."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from segment_anything.modeling import Sam

from semisam.schemas import CheckpointError, SamConfig, no_sam_checkpoint
from semisam.store import sha256_file

from ..base import Masker, SlicePrompt, check_batch
from .checkpoint import load_sam
from .decoder import InputPrompt, decode_slices
from .encoder import SliceEncoder
from .preprocess import (
    low_res_probabilities,
    mask_prompt_to_low_res,
    preprocess_slices,
    scale_coords,
)

logger = logging.getLogger(__name__)

__all__ = ["SamMasker"]


def _check_prompt(i: int, prompt: SlicePrompt) -> None:
    """Reject malformed prompts with a message naming the slice (no bare asserts)."""
    box = np.asarray(prompt.box)
    if box.shape != (4,) or not np.isfinite(box).all():
        raise ValueError(f"prompt {i} (slice {prompt.index}): box must be 4 finite XYXY values, "
                         f"got shape {box.shape}")
    points, labels = np.asarray(prompt.points), np.asarray(prompt.point_labels)
    if points.ndim != 2 or points.shape[1] != 2 or not np.isfinite(points).all():
        raise ValueError(f"prompt {i} (slice {prompt.index}): points must be Px2 finite XY, "
                         f"got shape {points.shape}")
    if labels.shape != (points.shape[0],):
        raise ValueError(f"prompt {i} (slice {prompt.index}): {points.shape[0]} points but "
                         f"point_labels has shape {labels.shape}")


class SamMasker(Masker):
    """Prompted slices -> SAM foreground probabilities.

    Slices go through the encoder ``config.batch_size`` at a time (bf16/SDPA/compile as
    configured); the mask decoder runs once per encoder batch, slice-aligned.

    Args:
        config: SAM settings (type, family, checkpoint, dtype, sdpa, compile, batch size).
        device: where the model runs.
        model: use this model as is (tests with small configs); None = `load_sam` from
            ``config.model_type`` / ``config.checkpoint``. The masker owns the model: with a
            reduced ``config.dtype`` its image encoder is cast in place.
    """

    name = "sam"

    def __init__(self, config: SamConfig, device: torch.device | str,
                 model: Sam | None = None) -> None:
        self.config = config
        self.device = torch.device(device)
        self._given_model = model is not None
        if model is None:
            if config.checkpoint is None and not config.random_weights:
                raise CheckpointError(no_sam_checkpoint(config.model_type.value))
            model = load_sam(config.model_type, config.checkpoint, self.device)
        self.model = model.to(self.device).eval()
        self.encoder = SliceEncoder(self.model.image_encoder, config)
        if config.compile:  # every static batch shape compiles now, not in the middle of a round
            self.encoder.warm_up(self.img_size)
        self._sha256: str | None = None

    @property
    def img_size(self) -> int:
        return int(self.model.image_encoder.img_size)

    def input_prompts(self, prompts: Sequence[SlicePrompt], hw: tuple[int, int]
                      ) -> list[InputPrompt]:
        """Slice-frame prompts -> `InputPrompt` in the encoder input frame, on the device."""
        family = self.config.family
        masks: list[torch.Tensor | None] = [None] * len(prompts)
        with_mask = [i for i, p in enumerate(prompts) if p.mask_logits is not None]
        if with_mask:
            stack = self._to_device(np.stack([np.asarray(prompts[i].mask_logits, np.float32)
                                              for i in with_mask]))
            low = mask_prompt_to_low_res(stack, family, self.img_size,
                                         self.model.prompt_encoder.mask_input_size[0])
            for j, i in enumerate(with_mask):
                masks[i] = low[j]
        # one host->device copy per kind (boxes; points and labels when every prompt has the
        # same point count, as `slice_prompts` guarantees) instead of three per slice
        boxes = self._to_device(np.stack([np.asarray(p.box, np.float32).reshape(4) for p in prompts]))
        boxes = scale_coords(boxes.reshape(-1, 2, 2), hw, family, self.img_size).reshape(-1, 4)
        counts = {int(np.asarray(p.points).shape[0]) for p in prompts}
        points: Sequence[torch.Tensor | None]
        labels: Sequence[torch.Tensor | None]
        if counts == {0}:
            points = labels = [None] * len(prompts)
        elif len(counts) == 1:
            points = scale_coords(self._to_device(np.stack(
                [np.asarray(p.points, np.float32) for p in prompts])), hw, family, self.img_size)
            labels = self._to_device(np.stack([np.asarray(p.point_labels, np.int64) for p in prompts]))
        else:
            points = [scale_coords(self._to_device(np.asarray(p.points, np.float32)), hw, family,
                                   self.img_size) if len(p.points) else None for p in prompts]
            labels = [self._to_device(np.asarray(p.point_labels, np.int64)) if len(p.points)
                      else None for p in prompts]
        out = [InputPrompt(box=boxes[i], points=points[i], labels=labels[i], mask=masks[i])
               for i in range(len(prompts))]
        return out

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        """Host array -> tensor on the device (pinned staging and a non-blocking copy on CUDA)."""
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if self.device.type != "cuda":
            return tensor
        return tensor.pin_memory().to(self.device, non_blocking=True)

    def encode(self, slices: torch.Tensor) -> torch.Tensor:
        """``NxHxW`` uint8 slices on the device -> ``NxCx64x64`` float32 embeddings."""
        images = preprocess_slices(slices, self.config.family, self.model.pixel_mean,
                                   self.model.pixel_std, self.img_size)
        return self.encoder(images)

    def _mask_chunk(self, slices: np.ndarray, prompts: Sequence[SlicePrompt]) -> torch.Tensor:
        """One encoder batch: ``nxHxW`` uint8 slices -> ``nxHxW`` float32 probabilities, left
        on the device (no synchronisation: the next batch is queued behind this one)."""
        hw = (int(slices.shape[1]), int(slices.shape[2]))
        embeddings = self.encode(self._to_device(slices))
        low_res, _ = decode_slices(self.model, embeddings, self.input_prompts(prompts, hw),
                                   self.config.multimask_output)
        probs = low_res_probabilities(low_res, self.config.family, hw, self.img_size)
        return probs[:, 0].clamp_(0.0, 1.0).to(torch.float32)

    def mask_slices(self, slices: np.ndarray, prompts: Sequence[SlicePrompt]) -> np.ndarray:
        """Segment each slice given its prompts.

        Args:
            slices: ``NxHxW`` uint8 in [0, 255], windowed intensities, one per prompt.
            prompts: N prompts in the slices' pixel frame; ``prompts[i]`` for ``slices[i]``.

        Returns:
            ``NxHxW`` float32 foreground probability in [0, 1].

        Raises:
            ValueError: not ``NxHxW`` uint8, lengths differ, or a malformed prompt.
        """
        slices = check_batch(slices, prompts)
        out = np.zeros(slices.shape, np.float32)
        if slices.shape[0] == 0:
            return out
        for i, prompt in enumerate(prompts):
            _check_prompt(i, prompt)
        step = self.config.batch_size
        cuda = self.device.type == "cuda"
        # on CUDA every batch's probabilities go to one pinned host buffer by non-blocking
        # copies and the stream is synchronised once per call, so the host queues batch i+1
        # (its upload, preprocessing and kernel launches) while the device still runs batch i
        host = torch.empty(slices.shape, dtype=torch.float32, pin_memory=True) if cuda \
            else torch.from_numpy(out)
        with torch.inference_mode():
            for start in range(0, slices.shape[0], step):
                stop = start + step
                host[start:stop].copy_(self._mask_chunk(slices[start:stop], prompts[start:stop]),
                                       non_blocking=cuda)
        if cuda:
            torch.cuda.current_stream(self.device).synchronize()
            out[:] = host.numpy()
        return out

    def describe(self) -> dict:
        """Type, family, dtype and checkpoint (path and sha256) for logs and records."""
        checkpoint = self.config.checkpoint
        if checkpoint is not None and not self._given_model and self._sha256 is None:
            self._sha256 = sha256_file(checkpoint)
        return {
            "name": self.name,
            "model_type": self.config.model_type.value,
            "family": self.config.family.value,
            "dtype": self.config.dtype,
            "sdpa": self.config.sdpa,
            "fp8": self.config.fp8,
            "rel_pos": self.encoder.rel_pos,
            "compile": self.config.compile,
            "compile_mode": self.config.compile_mode,
            "multimask_output": self.config.multimask_output,
            "checkpoint": None if checkpoint is None or self._given_model else str(checkpoint),
            "checkpoint_sha256": self._sha256,
            "weights": "given" if self._given_model else (
                "random" if checkpoint is None else "checkpoint"),
        }
