"""Step 2a': the student's structure checked against the masker prompted by the prior's box alone.

With one labeled volume the student often finds a neighbouring structure, or a sliver of the
target, and a round prompted there can only trim it. A masker adapted to the task
(``box.loose_prob`` in `semisam.schemas.AdaptBoxConfig`) also finds the structure inside a
loose box: the labeled volumes' box in normalised coordinates (`StructurePrior.box`), grown a
little, on every slice it spans. Where the student's kept component and that answer agree less
than ``prompts.prior_box_min_agreement`` (Dice), the student is the one that is lost, and the
masker's answer takes the place of the student's map for the rest of the round (prompts,
propagation, fusion). Measured on LA with one labeled volume in docs/benchmarks.md.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from semisam.schemas import PromptConfig
from semisam.schemas.prior import StructurePrior

from .components import keep_component
from .localization import put_slices, stack_slices
from .maskers import Masker, SlicePrompt
from .metrics import dice

log = logging.getLogger(__name__)

__all__ = ["PriorBoxCheck", "check_with_prior_box", "prior_box_on", "prior_box_prompts",
           "trained_on_loose_boxes"]


@dataclass(frozen=True)
class PriorBoxCheck:
    """The outcome for one structure.

    Attributes:
        agreement: Dice of the student's foreground and the prior-box answer (both > 0.5).
        replaced: the student's map was replaced (``agreement`` below the minimum).
        prob: ``XxYxZ`` float32 map the round goes on with: the student's, or the masker's
            prior-box probability (0 off the box's slices, its best component per the prior).
    """

    agreement: float
    replaced: bool
    prob: np.ndarray


def prior_box_prompts(shape: Sequence[int], prior: StructurePrior, axis: int, grow: float
                      ) -> list[SlicePrompt]:
    """The prior's box (`StructurePrior.box`, grown by ``grow`` of its size per side) as one
    XYXY prompt (slice pixels, inclusive) on each slice it spans along ``axis`` of a volume of
    ``shape``; empty when the prior has no box."""
    if prior.box is None:
        return []
    n = np.asarray(shape, np.float64)
    low, high = np.asarray(prior.box[0]), np.asarray(prior.box[1])
    pad = grow * (high - low)
    first = np.clip(np.floor((low - pad) * n), 0, n - 1).astype(int)
    last = np.clip(np.ceil((high + pad) * n) - 1, 0, n - 1).astype(int)
    rows, cols = (a for a in range(3) if a != axis)  # the slice's rows and columns
    box = np.array([first[cols], first[rows], last[cols], last[rows]], np.float32)
    return [SlicePrompt(index=i, box=box) for i in range(first[axis], last[axis] + 1)]


def check_with_prior_box(prob: np.ndarray, windowed: np.ndarray, prior: StructurePrior,
                         spacing: Sequence[float], masker: Masker, cfg: PromptConfig
                         ) -> PriorBoxCheck | None:
    """Mask one structure with the prior's box alone and compare with the student.

    Args:
        prob: ``XxYxZ`` float32 student probability in [0, 1] (its kept component).
        windowed: ``XxYxZ`` uint8 windowed image (what the masker sees).
        prior: the structure's prior; without a box there is nothing to check (None).
        spacing: voxel size in mm (for the prior's component choice).
        masker: the round's masker.
        cfg: ``prior_box_grow``, ``prior_box_min_agreement``, ``slice_axis``, ``threshold``.

    Returns:
        The `PriorBoxCheck`, or None when the prior has no box.
    """
    axis = cfg.slice_axis
    prompts = prior_box_prompts(prob.shape, prior, axis, cfg.prior_box_grow)
    if not prompts:
        return None
    indices = [p.index for p in prompts]
    probs = masker.mask_slices(stack_slices(windowed, indices, axis), prompts)
    answer = put_slices(np.zeros(prob.shape, np.float32), indices, axis, probs)
    answer = keep_component(answer, 0.5, spacing, prior)
    agreement = float(dice(answer > 0.5, prob > cfg.threshold))
    replaced = agreement < cfg.prior_box_min_agreement
    log.debug("prior box on %d slices: agreement %.2f (minimum %.2f)", len(indices), agreement,
              cfg.prior_box_min_agreement)
    return PriorBoxCheck(agreement, replaced, answer if replaced else prob)



def trained_on_loose_boxes(masker: Masker) -> bool:
    """Whether ``masker`` was loaded from a checkpoint adapted with loose boxes (its adaptation
    meta's ``box.loose_prob`` > 0): what ``prompts.prior_box`` None asks."""
    meta = getattr(masker, "adaptation", None) or {}
    box = (meta.get("config") or {}).get("box") or {}
    return bool(box.get("loose_prob") or 0.0)


def prior_box_on(cfg: PromptConfig, masker: Masker) -> bool:
    """``prompts.prior_box`` for a round with ``masker``: its value when set; None = on when the
    component is the prior's and the masker was adapted with loose boxes."""
    if cfg.prior_box is not None:
        return cfg.prior_box
    return cfg.component == "prior" and trained_on_loose_boxes(masker)
