"""Which of a round's pseudo-labels a later stage learns from (SFR+-style volume selection).

A round's pseudo-labels are not equally good: on Left Atrium (docs/benchmarks.md, "Which
pseudo-labels to train on") a volume's Dice against its reference follows how well the student
and the masker agreed on it (the record's ``student_masker_dice``, correlation 0.85) more closely
than it follows the stored confidence (0.70-0.80). Keeping the best-ranked share of the volumes
gives a smaller but cleaner set. Both the training stage's SAM term
(`SamConsistencyConfig.volumes`) and the masker adaptation's pseudo-label examples
(`PseudoLabelSelection`) rank volumes with `PseudoLabelRank`.
"""

from __future__ import annotations

from enum import Enum

from pydantic import Field

from .base import StrictModel


class PseudoLabelRank(str, Enum):
    """What ranks a round's done volumes, best first.

    - ``agreement``: the round record's ``stats.student_masker_dice`` (Dice of the student's
      and the masker's masks on the prompted slices; a volume without one ranks last);
    - ``confidence``: the mean stored confidence over the pseudo-label's foreground (a volume
      whose pseudo-label is empty ranks last).
    """

    agreement = "agreement"
    confidence = "confidence"


class RoundVolumeSelection(StrictModel):
    """The best-ranked share of a round's pseudo-labeled volumes (at least one is kept)."""

    top_fraction: float = Field(1.0, gt=0, le=1, description="share of the round's done "
                                "volumes kept, best first by rank_by (1 = every volume)")
    rank_by: PseudoLabelRank = PseudoLabelRank.agreement

    @property
    def selects(self) -> bool:
        """Whether any volume can be left out."""
        return self.top_fraction < 1.0
