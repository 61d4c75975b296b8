"""`LiteMedSamMasker`: LiteMedSAM behind the `Masker` contract, batched over slices."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from semisam.schemas import LiteMedSamConfig

from ..adaptable import Adaptable, read_adaptation_meta
from ..base import Masker, MaskerSession, SlicePrompt, check_batch
from ..sam.decoder import InputPrompt, decode_slices
from ..sam.masker import _check_prompt
from .checkpoint import load_litemedsam
from .embedding_cache import EmbeddingCache, state_dict_key
from .encoder import LiteEncoder
from .preprocess import (
    IMG_SIZE,
    box_to_input,
    logits_to_probabilities,
    mask_to_input,
    preprocess_slices,
    resized_shape,
    scale,
)

logger = logging.getLogger(__name__)

__all__ = ["LiteMedSamMasker"]


class _EmbeddedSession(MaskerSession):
    """The stack encoded once (in encoder batches); each `mask` call only decodes."""

    def __init__(self, masker: LiteMedSamMasker, slices: np.ndarray) -> None:
        super().__init__(masker, slices)
        self.hw = (int(slices.shape[1]), int(slices.shape[2]))
        step = masker.config.batch_size
        with torch.inference_mode():
            if not len(slices):
                self.embeddings = None
            elif masker.cache is not None:
                self.embeddings = masker.cache.encode(slices, masker.encode, step, masker.device)
            else:
                self.embeddings = torch.cat([masker.encode(slices[i:i + step])
                                             for i in range(0, len(slices), step)])

    def mask(self, positions: Sequence[int], prompts: Sequence[SlicePrompt]
             ) -> tuple[np.ndarray, np.ndarray]:
        for i, prompt in enumerate(prompts):
            _check_prompt(i, prompt)
        with torch.inference_mode():
            rows = torch.as_tensor(list(positions), dtype=torch.long)
            probs, iou = self.masker.decode(self.embeddings[rows], prompts, self.hw)
        return probs.cpu().numpy(), iou.float().cpu().numpy()


class LiteMedSamMasker(Masker, Adaptable):
    """Prompted slices -> LiteMedSAM foreground probabilities (and its predicted IoUs).

    The encoder runs ``config.batch_size`` slices at a time; the mask decoder runs once per
    batch with one prompt set per slice (slice-aligned, nothing repeated).

    Args:
        config: LiteMedSAM settings (checkpoint, batch size, dtype, channels_last, compile,
            embedding cache).
        device: where the model runs.
        model: use this model as is (tests); None = `load_litemedsam` of ``config.checkpoint``
            (None there = the bundled trained weights).
    """

    name = "litemedsam"

    def __init__(self, config: LiteMedSamConfig, device: torch.device | str,
                 model: nn.Module | None = None) -> None:
        self.config = config
        self.device = torch.device(device)
        self.checkpoint: str | None = None
        self.sha256: str | None = None
        self.adaptation: dict | None = None
        if model is None:
            model, path, self.sha256 = load_litemedsam(config.checkpoint, self.device)
            self.checkpoint = str(path)
            if config.checkpoint is not None:
                self.adaptation = read_adaptation_meta(path)
        self.model = model.to(self.device).eval()
        self.cache: EmbeddingCache | None = None
        self.encoder = LiteEncoder(self.model.image_encoder, config, self.device)
        if config.embedding_cache is not None:
            # keyed by the image encoder's weights alone: a checkpoint adapted on its decoder
            # side (`semisam adapt`) shares the base checkpoint's embeddings
            weights = state_dict_key(self.model.image_encoder)
            self.cache = EmbeddingCache(config.embedding_cache, weights, str(self.encoder.dtype)
                                        .removeprefix("torch."))

    def encode(self, slices: np.ndarray) -> torch.Tensor:
        """``NxHxW`` uint8 slices -> ``Nx256x64x64`` float32 embeddings (on the device)."""
        return self.encoder(preprocess_slices(slices))

    def input_prompts(self, prompts: Sequence[SlicePrompt], hw: tuple[int, int]
                      ) -> list[InputPrompt]:
        """Slice-frame prompts -> `InputPrompt` in the 256 input frame, on the device."""
        dev = self.device
        boxes = torch.from_numpy(box_to_input(np.stack([np.asarray(p.box, np.float32).reshape(4)
                                                        for p in prompts]), hw)).to(dev)
        ratio = scale(hw)
        masks: list[torch.Tensor | None] = [None] * len(prompts)
        with_mask = [i for i, p in enumerate(prompts) if p.mask_logits is not None]
        if with_mask:
            low = mask_to_input(torch.from_numpy(np.stack(
                [np.asarray(prompts[i].mask_logits, np.float32) for i in with_mask]))).to(dev)
            for j, i in enumerate(with_mask):
                masks[i] = low[j]
        out = []
        for i, p in enumerate(prompts):
            points = labels = None
            if len(p.points):
                points = torch.from_numpy(np.asarray(p.points, np.float32) * ratio).to(dev)
                labels = torch.from_numpy(np.asarray(p.point_labels, np.int64)).to(dev)
            out.append(InputPrompt(box=boxes[i], points=points, labels=labels, mask=masks[i]))
        return out

    def decode(self, embeddings: torch.Tensor, prompts: Sequence[SlicePrompt],
               hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings + prompts -> (``NxHxW`` float32 probabilities, ``N`` predicted IoUs)."""
        low_res, iou = decode_slices(self.model, embeddings, self.input_prompts(prompts, hw),
                                     self.config.multimask_output)
        return logits_to_probabilities(low_res, hw)[:, 0].clamp_(0.0, 1.0), iou

    def mask_slices_scored(self, slices: np.ndarray, prompts: Sequence[SlicePrompt]
                           ) -> tuple[np.ndarray, np.ndarray]:
        """`mask_slices` plus the decoder's predicted IoU per slice (``N`` float32)."""
        slices = check_batch(slices, prompts)
        out = np.zeros(slices.shape, np.float32)
        scores = np.zeros(slices.shape[0], np.float32)
        for i, prompt in enumerate(prompts):
            _check_prompt(i, prompt)
        hw = (int(slices.shape[1]), int(slices.shape[2]))
        step = self.config.batch_size
        with torch.inference_mode():
            for start in range(0, slices.shape[0], step):
                stop = start + step
                batch = slices[start:stop]
                embeddings = (self.encode(batch) if self.cache is None
                              else self.cache.encode(batch, self.encode, step, self.device))
                probs, iou = self.decode(embeddings, prompts[start:stop], hw)
                out[start:stop] = probs.cpu().numpy()
                scores[start:stop] = iou.float().cpu().numpy()
        return out, scores

    def session(self, slices: np.ndarray) -> MaskerSession:
        """Encode an ``NxHxW`` uint8 stack once; `MaskerSession.mask` then only decodes."""
        return _EmbeddedSession(self, check_batch(slices, [None] * len(slices)))

    def mask_slices(self, slices: np.ndarray, prompts: Sequence[SlicePrompt]) -> np.ndarray:
        """`Masker.mask_slices`: ``NxHxW`` uint8 slices + N prompts -> ``NxHxW`` float32
        probabilities (`mask_slices_scored` without the scores)."""
        return self.mask_slices_scored(slices, prompts)[0]

    def decode_lowres(self, embeddings: torch.Tensor, prompts: Sequence[SlicePrompt],
                      hws: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """`Adaptable.decode_lowres`: ``Nx256x64x64`` embeddings + N slice-frame prompts ->
        (``Nx1x256x256`` logits in the 256 input frame, ``N`` predicted IoUs), with gradients."""
        inputs = [self.input_prompts([p], tuple(hw))[0] for p, hw in zip(prompts, hws)]
        return decode_slices(self.model, embeddings, inputs, self.config.multimask_output)

    def target_frame(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`Adaptable.target_frame`: an ``HxW`` bool mask -> its ``256x256`` soft target (area
        resize of the longest side to 256, as the slice itself is resized) and validity."""
        h, w = mask.shape
        newh, neww = resized_shape(h, w)
        small = cv2.resize(np.ascontiguousarray(mask, np.float32), (neww, newh),
                           interpolation=cv2.INTER_AREA)
        target = np.zeros((IMG_SIZE, IMG_SIZE), np.float32)
        valid = np.zeros((IMG_SIZE, IMG_SIZE), bool)
        target[:newh, :neww] = np.clip(small, 0.0, 1.0)
        valid[:newh, :neww] = True
        return target, valid

    def _encoder_parts(self, target: str) -> list[tuple[str, nn.Module]]:
        """(state-dict prefix, module) of the TinyViT parts ``target`` tunes: 'neck' the neck,
        'encoder_tail' the last transformer stage and the neck; none for the decoder targets."""
        encoder = self.model.image_encoder
        last = len(encoder.layers) - 1
        parts = {"neck": [("image_encoder.neck.", encoder.neck)],
                 "encoder_tail": [(f"image_encoder.layers.{last}.", encoder.layers[last]),
                                  ("image_encoder.neck.", encoder.neck)]}
        if target not in (*parts, "decoder", "head"):
            raise ValueError("target must be 'decoder', 'head', 'neck' or 'encoder_tail', got "
                             f"{target!r}")
        return parts.get(target, [])

    def trainable_parameters(self, target: str) -> list[nn.Parameter]:
        """'decoder': prompt encoder + mask decoder; 'head': the decoder's output upscaling,
        hypernetwork MLPs and IoU head; 'neck' / 'encoder_tail': 'decoder' plus the TinyViT's
        neck / its last stage and neck."""
        decoder = self.model.mask_decoder
        if target == "head":
            parts = [decoder.output_upscaling, decoder.output_hypernetworks_mlps,
                     decoder.iou_prediction_head]
        else:
            parts = [self.model.prompt_encoder, decoder,
                     *(m for _, m in self._encoder_parts(target))]
        return [p for part in parts for p in part.parameters()]

    def tuned_encoder_keys(self, target: str) -> tuple[str, ...]:
        """`Adaptable.tuned_encoder_keys`."""
        return tuple(prefix for prefix, _ in self._encoder_parts(target))

    def frozen_features(self, slices: np.ndarray, target: str) -> torch.Tensor:
        """`Adaptable.frozen_features`: ``Nx256x64x64`` embeddings for the decoder targets;
        ``Nx4096x320`` float32 TinyViT tokens before the neck ('neck') or before the last stage
        ('encoder_tail'), from the rebuilt encoder in its dtype."""
        if not self._encoder_parts(target):
            return self.encode(slices)
        module = self.encoder.module
        stages = None if target == "neck" else len(module.stages) - 1
        images = preprocess_slices(slices).to(device=self.device, dtype=self.encoder.dtype)
        with torch.no_grad():
            return module.tokens(images, stages).to(torch.float32)

    def embed(self, features: torch.Tensor, target: str) -> torch.Tensor:
        """`Adaptable.embed`: `frozen_features` -> ``Nx256x64x64`` embeddings through the
        model's own (trainable) last stage and neck where ``target`` tunes them."""
        parts = self._encoder_parts(target)
        if not parts:
            return features
        x = features
        for _, module in parts[:-1]:
            x = module(x)
        b, t, c = x.shape
        side = int(round(t ** 0.5))
        return parts[-1][1](x.view(b, side, side, c).permute(0, 3, 1, 2))

    def base_checkpoint(self) -> tuple[Path, str]:
        """The file the weights came from and its sha256 (ValueError for a model given)."""
        if self.checkpoint is None or self.sha256 is None:
            raise ValueError("this LiteMedSAM was given as a model, not loaded from a checkpoint")
        return Path(self.checkpoint), self.sha256

    def describe(self) -> dict:
        """Checkpoint (path, sha256, adaptation summary), dtype and batching, for records."""
        out = {"name": self.name, "checkpoint": self.checkpoint, "checkpoint_sha256": self.sha256,
               "weights": "given" if self.checkpoint is None else (
                   "bundled" if self.config.checkpoint is None else
                   "adapted" if self.adaptation is not None else "checkpoint"),
               **self.config.model_dump(mode="json", exclude={"checkpoint"})}
        if self.adaptation is not None:
            out["adaptation"] = {k: self.adaptation.get(k) for k in (
                "base_sha256", "store", "store_fingerprint", "labeled", "pseudo_labeled",
                "held_out_dice_base", "held_out_dice", "created_at")}
        return out
