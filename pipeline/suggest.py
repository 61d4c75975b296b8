"""Which unlabeled volume to label next: a ranking from what a round measured.

Every unlabeled volume with a finished record in round ``r`` gets

    score = disagreement + uncertainty + rejected

    disagreement = 1 - Dice(student, masker)   on the prompted slices (the record's
                                               ``student_masker_dice``); 1 when no slice was
                                               prompted (the masker never checked the student)
    uncertainty  = 1 - mean confidence over the pseudo-label's foreground voxels
                   (confidence stored as value/255; 1 when the pseudo-label is empty)
    rejected     = 1 when fusion rejected the masker's answer (``masker_rejected``; multi-class:
                   any class), else 0

Each term lies in [0, 1], so the score lies in [0, 3]; higher means the round was less sure
of that volume, and an expert's label there is expected to teach the student most. Ties are
broken by volume id so the ranking is deterministic. The first two terms are those of
`review.review_score` (which pseudo-label to look at); the rejection term adds what fusion
decided. Failed and pending volumes are not ranked.
"""

from __future__ import annotations

import logging

import numpy as np
import zarr
from pydantic import Field

from semisam.schemas import CONFIDENCE_SCALE, StoreError, VolumeStatus
from semisam.schemas.base import StrictModel
from semisam.store import list_metas, list_rounds, read_output, read_record

log = logging.getLogger(__name__)


class Suggestion(StrictModel):
    """One unlabeled volume's score in a round (see the module docstring for the formula)."""

    volume_id: str
    score: float = Field(description="disagreement + uncertainty + rejected, in [0, 3]")
    disagreement: float = Field(description="1 - student-masker Dice on prompted slices")
    uncertainty: float = Field(description="1 - mean confidence over the pseudo-label's foreground")
    rejected: float = Field(description="1 if fusion rejected the masker's answer, else 0")
    rank: int = Field(0, description="1 = label this one first")


def foreground_uncertainty(pseudo_label: np.ndarray | None, confidence: np.ndarray | None) -> float:
    """``1 - mean(confidence / 255)`` over voxels where ``pseudo_label > 0``.

    Args:
        pseudo_label: ``XxYxZ`` uint8 class values (0 background).
        confidence: ``XxYxZ`` uint8, value/255 = confidence.

    Returns:
        A value in [0, 1]; 1 when either array is missing or the pseudo-label is empty.
    """
    if pseudo_label is None or confidence is None:
        return 1.0
    mask = pseudo_label > 0
    if not mask.any():
        return 1.0
    return float(1.0 - confidence[mask].astype(np.float64).mean() / CONFIDENCE_SCALE)


def score_volume(root: zarr.Group, round_index: int, volume_id: str) -> Suggestion | None:
    """The volume's `Suggestion` in round ``round_index``, or None without a done record."""
    record = read_record(root, round_index, volume_id)
    if record is None or record.status != VolumeStatus.done or record.stats is None:
        return None
    stats = record.stats
    agreement = stats.student_masker_dice
    disagreement = 1.0 if agreement is None else float(np.clip(1.0 - agreement, 0.0, 1.0))
    rejected = stats.masker_rejected or any(c.masker_rejected for c in (stats.classes or {}).values())
    uncertainty = foreground_uncertainty(read_output(root, round_index, "pseudo_label", volume_id),
                                         read_output(root, round_index, "confidence", volume_id))
    score = disagreement + uncertainty + float(rejected)
    return Suggestion(volume_id=volume_id, score=round(score, 6), disagreement=round(disagreement, 6),
                      uncertainty=round(uncertainty, 6), rejected=float(rejected))


def rank_unlabeled(root: zarr.Group, round_index: int | None = None) -> tuple[int, list[Suggestion]]:
    """Every unlabeled volume with a done record in the round, best first (rank 1 = highest score).

    Args:
        round_index: the round whose records are read (default: the store's last round).

    Returns:
        ``(round_index, suggestions)``. Raises `StoreError` when the store has no such round.
    """
    rounds = list_rounds(root)
    if not rounds:
        raise StoreError("store has no round yet: run `semisam run-round` first")
    if round_index is None:
        round_index = rounds[-1]
    if round_index not in rounds:
        raise StoreError(f"round {round_index} is not in the store (rounds: "
                         f"{', '.join(map(str, rounds))})")
    found = [score_volume(root, round_index, m.volume_id) for m in list_metas(root) if not m.labeled]
    ranked = sorted((s for s in found if s is not None), key=lambda s: (-s.score, s.volume_id))
    for i, s in enumerate(ranked, start=1):
        s.rank = i
    log.debug("round %d: %d unlabeled volumes scored", round_index, len(ranked))
    return round_index, ranked


def suggest(root: zarr.Group, round_index: int | None = None, k: int = 5) -> tuple[int, list[Suggestion]]:
    """The ``k`` unlabeled volumes of highest score in the round (all of them when ``k <= 0``)."""
    round_index, ranked = rank_unlabeled(root, round_index)
    return round_index, ranked if k <= 0 else ranked[:k]
