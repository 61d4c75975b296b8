"""The `Adaptable` contract: a masker whose prompt-to-mask part can be tuned on its embeddings.

SAM-family maskers split into an image encoder (the cost) and a prompt encoder + mask decoder
(cheap). Adaptation (``semisam adapt``, `semisam.training.adaptation`) runs the frozen part of
the model on the labeled slices once (`frozen_features`: the whole image encoder by default),
then trains the rest (`embed` + the decoder side) with the prompts a round really gives. A masker kind takes part by implementing these methods; the trainer never looks
inside the model.

Frames: slices are ``HxW`` (the slice's own pixels); the decoder works in a square low-res
frame of ``S x S`` logits (LiteMedSAM and SAM: 256) that covers the model's padded input.
Targets are brought into that frame (`target_frame`) so a batch of slices of different shapes is
one tensor.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .base import SlicePrompt

__all__ = ["ADAPTATION_KEY", "Adaptable", "read_adaptation_meta"]

ADAPTATION_KEY = "semisam_adaptation"
"""Key of an adapted checkpoint's metadata, beside ``"model"`` (the state dict)."""


class Adaptable(ABC):
    """Mixin of a `Masker` whose decoder side can be tuned (see the module docstring)."""

    model: nn.Module
    device: torch.device

    @abstractmethod
    def encode(self, slices: np.ndarray) -> torch.Tensor:
        """``NxHxW`` uint8 slices -> ``NxCxhxw`` float32 image embeddings (no gradient)."""

    @abstractmethod
    def decode_lowres(self, embeddings: torch.Tensor, prompts: Sequence[SlicePrompt],
                      hws: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Differentiable decoding: embeddings ``NxCxhxw``, one prompt per slice in that slice's
        frame (slice ``i`` is ``hws[i]``) -> (``Nx1xSxS`` logits in the low-res frame, ``N``
        predicted IoUs)."""

    @abstractmethod
    def target_frame(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """An ``HxW`` bool mask -> (``SxS`` float32 target in [0, 1] in the low-res frame,
        ``SxS`` bool: the pixels that belong to the slice, not to the padding)."""

    @abstractmethod
    def trainable_parameters(self, target: str) -> list[nn.Parameter]:
        """The parameters ``target`` (an `AdaptTarget` value) trains; the rest are frozen."""

    def frozen_features(self, slices: np.ndarray, target: str) -> torch.Tensor:
        """What the frozen part of the model makes of ``NxHxW`` uint8 slices when ``target`` is
        trained, computed once per example (no gradient): the image embeddings (`encode`) unless
        ``target`` tunes part of the image encoder (`tuned_encoder_keys`)."""
        return self.encode(slices)

    def embed(self, features: torch.Tensor, target: str) -> torch.Tensor:
        """Differentiable: `frozen_features` -> ``NxCxhxw`` image embeddings (the identity unless
        ``target`` tunes part of the image encoder)."""
        return features

    def tuned_encoder_keys(self, target: str) -> tuple[str, ...]:
        """Prefixes of ``model.state_dict()`` keys inside the image encoder that ``target``
        trains (none: the image encoder stays frozen and its embeddings can be cached)."""
        return ()

    def set_training(self, training: bool) -> None:
        """Train/eval mode of the tuned parts; the image encoder always stays in eval mode (its
        batch norms keep their statistics even where ``target`` tunes part of it)."""
        self.model.train(training)
        encoder = getattr(self.model, "image_encoder", None)
        if encoder is not None:
            encoder.eval()

    @abstractmethod
    def base_checkpoint(self) -> tuple[Path, str]:
        """The checkpoint the model was loaded from and its sha256."""

    def export(self, path: Path, meta: dict) -> None:
        """Write the model's state dict and ``meta`` as ``{"model": sd, ADAPTATION_KEY: meta}``
        (read back by the kind's own loader with ``weights_only=True``); atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"model": state, ADAPTATION_KEY: meta}, tmp)
        tmp.replace(path)


def read_adaptation_meta(path: Path | str) -> dict | None:
    """The ``ADAPTATION_KEY`` metadata of a checkpoint written by `Adaptable.export`, or None
    (a plain state dict). Read with ``weights_only=True`` like every checkpoint.

    Raises:
        CheckpointError: the file cannot be read (as the kind's own loader would say).
    """
    from .sam.checkpoint import _load_file

    obj = _load_file(Path(path))
    meta = obj.get(ADAPTATION_KEY) if isinstance(obj, dict) else None
    return dict(meta) if isinstance(meta, dict) else None
