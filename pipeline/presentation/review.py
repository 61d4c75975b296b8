"""Which pseudo-labels a person should look at first (`semisam inspect --round R --worst K`).

Every finished volume of the round gets a review score in [0, 1], higher = more in need of
review, the mean of two terms:

* ``1 - foreground confidence``: the mean stored confidence (value/255) over the pseudo-label's
  foreground voxels, which lie on the prompted slices wherever the masker ran; there the
  confidence is masker certainty times student-masker agreement, so a low value means a shaky or
  contested mask. An empty pseudo-label counts as confidence 0 (nothing found is suspicious).
* ``1 - student-vs-masker Dice`` from the volume's record (on prompted slices); 1 when no slice
  was prompted (the masker never checked the student).

Ties are broken by volume id. Failed volumes are not ranked (`inspect` lists them with their
reasons); pending ones have nothing to review yet. Ranking reads both output arrays of every
finished volume.

Multi-class stores: the foreground is every structure (``label > 0``, whatever its class
value), so the score is over all of them together, and ``foreground_voxels`` counts them all;
the montages colour each structure by its class (`inspect.montage_image`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import typer
import zarr
from pydantic import Field

from semisam.schemas import CONFIDENCE_SCALE, ConfigError, StrictModel, VolumeStatus
from semisam.store import list_metas, read_output, read_record

from .inspect import write_montage
from .render import print_table

log = logging.getLogger(__name__)


class ReviewItem(StrictModel):
    """One ranked volume."""

    rank: int
    volume_id: str
    score: float = Field(description="0.5 * (1 - fg_confidence) + 0.5 * (1 - dice), in [0, 1]")
    fg_confidence: float = Field(description="mean confidence over the pseudo-label foreground")
    student_masker_dice: float | None = None
    foreground_voxels: int = 0
    slices_prompted: int = 0
    node: str | None = None
    png: str | None = None


def review_score(pseudo_label: np.ndarray, confidence: np.ndarray,
                 dice: float | None) -> tuple[float, float]:
    """``(score, fg_confidence)`` of one volume (see the module docstring).

    Args:
        pseudo_label: ``XxYxZ`` uint8, 0 background, any other value a structure (the store's
            class values: {0,1} in a one-structure store).
        confidence: ``XxYxZ`` uint8, value/255 = confidence.
        dice: student-vs-masker Dice of the record, None when nothing was prompted.
    """
    fg = pseudo_label > 0
    fg_conf = float(confidence[fg].mean()) / CONFIDENCE_SCALE if fg.any() else 0.0
    disagreement = 1.0 if dice is None else 1.0 - float(dice)
    return 0.5 * (1.0 - fg_conf) + 0.5 * disagreement, fg_conf


def rank_round(root: zarr.Group, round_index: int) -> list[ReviewItem]:
    """Every finished volume of the round, most in need of review first."""
    items = []
    for meta in list_metas(root):
        if meta.labeled:
            continue
        record = read_record(root, round_index, meta.volume_id)
        if record is None or record.status != VolumeStatus.done:
            continue
        label = read_output(root, round_index, "pseudo_label", meta.volume_id)
        conf = read_output(root, round_index, "confidence", meta.volume_id)
        if label is None or conf is None:
            log.warning("volume %s: done record without outputs; not ranked", meta.volume_id)
            continue
        stats = record.stats
        dice = stats.student_masker_dice if stats else None
        score, fg_conf = review_score(label, conf, dice)
        items.append(ReviewItem(
            rank=0, volume_id=meta.volume_id, score=round(score, 4),
            fg_confidence=round(fg_conf, 4),
            student_masker_dice=dice, foreground_voxels=int(np.count_nonzero(label)),
            slices_prompted=stats.slices_prompted if stats else 0, node=record.node,
        ))
    items.sort(key=lambda it: (-it.score, it.volume_id))
    for i, item in enumerate(items, start=1):
        item.rank = i
    return items


def worst_volumes(root: zarr.Group, round_index: int, k: int,
                  png_dir: Path | None = None) -> list[ReviewItem]:
    """The ``k`` volumes most in need of review; with ``png_dir``, an overlay montage of each
    (``<rank>_<id>.png``: image | student | pseudo-label | confidence; multi-class stores
    coloured per class, with a legend naming them).

    Raises:
        ConfigError: ``k`` < 1.
    """
    if k < 1:
        raise ConfigError(f"--worst must be >= 1, got {k}")
    items = rank_round(root, round_index)[:k]
    if png_dir is not None:
        png_dir = Path(png_dir)
        png_dir.mkdir(parents=True, exist_ok=True)
        for item in items:
            path = png_dir / f"{item.rank:02d}_{item.volume_id}.png"
            item.png = str(write_montage(root, round_index, item.volume_id, path))
            log.info("montage of %s written to %s", item.volume_id, path)
    return items


def print_review(items: list[ReviewItem], round_index: int, as_json: bool) -> None:
    """The ranking as a table, or as a JSON list."""
    if as_json:
        typer.echo(json.dumps([it.model_dump(mode="json") for it in items], indent=2))
        return
    rows = []
    for it in items:
        dice = "-" if it.student_masker_dice is None else f"{it.student_masker_dice:.3f}"
        rows.append((str(it.rank), it.volume_id, f"{it.score:.3f}", f"{it.fg_confidence:.3f}",
                     dice, str(it.foreground_voxels), str(it.slices_prompted), it.node or "-",
                     it.png or ""))
    print_table(f"round {round_index}: {len(items)} volumes most in need of review",
                ("rank", "volume", "score", "fg conf", "student-vs-masker Dice", "fg voxels",
                 "prompted", "node", "png"), rows, fold=True)
