"""The `Masker` contract: prompts on 2D slices in, per-pixel foreground probability out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SlicePrompt:
    """Prompts for one slice, in that slice's own pixel frame.

    Attributes:
        index: slice index along the round's slice axis.
        box: ``(4,)`` float32, XYXY in pixels; x is the column (second array axis of the slice),
            y the row (first axis). Inclusive pixel extents as float coordinates.
        points: ``(P, 2)`` float32 XY pixels (P may be 0).
        point_labels: ``(P,)`` int64, 1 = foreground, 0 = background.
        mask_logits: optional ``HxW`` float32 student logits in the slice frame.
    """

    index: int
    box: np.ndarray
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    point_labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    mask_logits: np.ndarray | None = None


def check_batch(slices: np.ndarray, prompts: Sequence[SlicePrompt]) -> np.ndarray:
    """Validate a `Masker.mask_slices` call; returns ``slices`` as an ``NxHxW`` uint8 array.

    Raises:
        ValueError: not ``NxHxW``, not uint8, or a different number of prompts than slices.
    """
    slices = np.asarray(slices)
    if slices.ndim != 3:
        raise ValueError(f"slices must be NxHxW, got shape {slices.shape}")
    if slices.dtype != np.uint8:
        raise ValueError(f"slices must be uint8 in [0, 255], got dtype {slices.dtype}")
    if len(prompts) != slices.shape[0]:
        raise ValueError(f"got {slices.shape[0]} slices but {len(prompts)} prompts")
    return slices


class MaskerSession:
    """A masker bound to one stack of slices, prompted a few slices at a time (propagation).

    The default calls `Masker.mask_slices_scored` on the selected slices; SAM-family maskers
    encode the whole stack once and only decode per call.
    """

    def __init__(self, masker: Masker, slices: np.ndarray) -> None:
        self.masker = masker
        self.slices = slices

    def mask(self, positions: Sequence[int], prompts: Sequence[SlicePrompt]
             ) -> tuple[np.ndarray, np.ndarray | None]:
        """``len(positions)xHxW`` probabilities (and scores) of the stack's slices ``positions``."""
        return self.masker.mask_slices_scored(self.slices[list(positions)], prompts)


class Masker(ABC):
    """Turns prompted slices into foreground probabilities.

    Implementations load their model once (in ``__init__``) and are then called for many
    volumes. They must be deterministic for identical inputs.
    """

    name: str = "masker"

    @abstractmethod
    def mask_slices(self, slices: np.ndarray, prompts: Sequence[SlicePrompt]) -> np.ndarray:
        """Segment each slice given its prompts.

        Args:
            slices: ``NxHxW`` uint8 in [0, 255], the windowed intensities, one per prompt.
            prompts: N prompts, ``prompts[i]`` belongs to ``slices[i]``.

        Returns:
            ``NxHxW`` float32 foreground probability in [0, 1].
        """

    def mask_slices_scored(self, slices: np.ndarray, prompts: Sequence[SlicePrompt]
                           ) -> tuple[np.ndarray, np.ndarray | None]:
        """`mask_slices` and the masker's own per-slice quality score (``N`` float32 in about
        [0, 1], e.g. SAM's predicted IoU), or None when the masker has none."""
        return self.mask_slices(slices, prompts), None

    def session(self, slices: np.ndarray) -> MaskerSession:
        """Bind the masker to an ``NxHxW`` uint8 stack that it will be prompted on repeatedly."""
        return MaskerSession(self, check_batch(slices, [None] * len(slices)))

    def describe(self) -> dict:
        """Short JSON-able description for logs and records."""
        return {"name": self.name}
