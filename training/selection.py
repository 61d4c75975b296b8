"""Ranking a round's pseudo-labeled volumes and keeping the best share of them.

`rank_round_volumes` scores each volume with a done record by `PseudoLabelRank` (the record's
student-masker agreement, or the mean stored confidence over the pseudo-label's foreground);
`select_round_volumes` keeps the best ``top_fraction`` of them (at least one). The training
stage (`SamConsistencyConfig.volumes`) and the masker adaptation (`PseudoLabelSelection`) both
select through here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import zarr

from semisam.schemas import CONFIDENCE_SCALE, PseudoLabelRank, RoundVolumeSelection, VolumeStatus
from semisam.store import read_output, read_record

log = logging.getLogger(__name__)

__all__ = ["kept_count", "rank_round_volumes", "select_round_volumes"]

UNRANKED = -1.0  # the score of a volume without the figure it is ranked by


def _score(root: zarr.Group, round_index: int, volume_id: str, by: PseudoLabelRank) -> float | None:
    """The volume's score in [0, 1]; `UNRANKED` when its pseudo-label is empty (or missing) or
    the ranked figure is absent; None without a done record."""
    record = read_record(root, round_index, volume_id)
    if record is None or record.status != VolumeStatus.done:
        return None
    label = read_output(root, round_index, "pseudo_label", volume_id)
    if label is None or not (label > 0).any():
        return UNRANKED
    if by == PseudoLabelRank.agreement:
        value = record.stats.student_masker_dice if record.stats is not None else None
        return UNRANKED if value is None else float(value)
    confidence = read_output(root, round_index, "confidence", volume_id)
    if confidence is None:
        return UNRANKED
    return float(np.asarray(confidence)[np.asarray(label) > 0].mean()) / CONFIDENCE_SCALE


def rank_round_volumes(root: zarr.Group, round_index: int, volume_ids: Iterable[str],
                       by: PseudoLabelRank) -> list[tuple[float, str]]:
    """``(score, volume id)`` of each of ``volume_ids`` with a done record in round
    ``round_index``, best first (ties by id); a volume without the ranked figure scores
    `UNRANKED` (-1) and comes last."""
    scored = []
    for vid in volume_ids:
        score = _score(root, round_index, vid, by)
        if score is not None:
            scored.append((score, vid))
    return sorted(scored, key=lambda s: (-s[0], s[1]))


def kept_count(total: int, fraction: float) -> int:
    """How many of ``total`` ranked volumes a share ``fraction`` keeps: rounded to the nearest
    whole volume, at least one (0 of none)."""
    return max(1, int(round(fraction * total))) if total else 0


def select_round_volumes(root: zarr.Group, round_index: int, volume_ids: Iterable[str],
                         selection: RoundVolumeSelection) -> tuple[list[str], list[str]]:
    """``(kept, left out)``: the best ``selection.top_fraction`` of the ranked volumes (at least
    one; rounded to the nearest whole volume) and the rest, both best first. Volumes without a
    done record are in neither list."""
    ranked = rank_round_volumes(root, round_index, volume_ids, selection.rank_by)
    keep = kept_count(len(ranked), selection.top_fraction)
    return [vid for _, vid in ranked[:keep]], [vid for _, vid in ranked[keep:]]
