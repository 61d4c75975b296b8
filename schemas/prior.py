"""Where a structure lies and how big it is, learned from the labeled volumes.

A round's student can find a neighbouring structure of about the right size and call it the
target; the largest 3D component of its foreground is then the wrong one, and the masker,
prompted there, agrees with it (a confident wrong pseudo-label). A `StructurePrior` describes the
labeled volumes' structure: its centroid in normalised array coordinates (0 = first voxel's
centre, 1 = last voxel's centre, per array axis) and its physical volume (log mm^3). The round
then keeps the student's component that fits the prior best instead of the largest
(`PromptConfig.component`).
"""

from __future__ import annotations

from pydantic import Field

from .base import StrictModel

# Floors of the spreads, so that a prior from one or two labeled volumes does not demand the
# same voxel: 0.1 of the field of view per axis, and a factor of about 1.65 in volume.
CENTROID_STD_FLOOR = 0.1
LOG_VOLUME_STD_FLOOR = 0.5


class StructurePrior(StrictModel):
    """One structure's location and size over the labeled volumes (means and spreads)."""

    volumes: int = Field(ge=1, description="labeled volumes the prior was fitted on")
    centroid: tuple[float, float, float] = Field(
        description="mean centroid, normalised array coordinates (0..1 per axis)")
    centroid_std: tuple[float, float, float] = Field(
        description="spread of the centroid per axis (floored at CENTROID_STD_FLOOR)")
    log_volume: float = Field(description="mean of ln(structure volume in mm^3)")
    log_volume_std: float = Field(
        ge=0, description="spread of ln(volume) (floored at LOG_VOLUME_STD_FLOOR)")
    box: tuple[tuple[float, float, float], tuple[float, float, float]] | None = Field(
        None, description="(low, high) corners of the union of the labeled volumes' boxes, as "
        "fractions of the array's extent per axis (voxel i spans [i/n, (i+1)/n)); None in "
        "priors fitted before it existed")
