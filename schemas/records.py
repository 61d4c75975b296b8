"""Records written into the store: per-volume metadata, per-volume round results, round state."""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from pathlib import PurePath

from pydantic import AliasChoices, Field

from .base import StrictModel

OLD_NAMES = {"student_masker_dice": "student_sam_dice", "masker_checkpoint": "sam_checkpoint",
             "masker_sha256": "sam_sha256"}
"""Fields renamed when the masker stopped being called "sam" -> the name stores before the
rename hold (read under either name, written under the new one)."""


def _old_name(name: str) -> AliasChoices:
    return AliasChoices(name, OLD_NAMES[name])


def utcnow() -> str:
    """ISO-8601 UTC timestamp, millisecond resolution (throughput from record times)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class VolumeMeta(StrictModel):
    """Attributes of ``volumes/<id>``: where the volume came from and its geometry.

    ``affine`` maps voxel indices (i, j, k) to world millimetres (4x4, RAS as nibabel reports it);
    ``spacing`` is the voxel size in mm along the array axes.

    The source is identified by its file name and sha256; its absolute path (hospital paths name
    people and sites) only when the ingest was asked to record it (``source_path``). Stores
    ingested before that hold the absolute path in ``source``: `source_name` and
    `recorded_path` read both kinds alike.
    """

    volume_id: str
    source: str = Field(description="file name of the source (a DICOM series: its folder's "
                        "name); stores ingested before names were recorded: its absolute path")
    source_path: str | None = Field(
        None, description="absolute path of the source, only when the ingest was asked to "
        "record it (ingest --record-paths)", exclude_if=lambda v: v is None)
    source_format: str = Field(description="nifti | nrrd | h5 | npy")
    sha256: str = Field(description="sha256 of the source file bytes (image file)")
    label_sha256: str | None = None
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    affine: list[list[float]]
    image_dtype: str
    labeled: bool = False
    ingested_at: str = Field(default_factory=utcnow)

    @property
    def source_name(self) -> str:
        """The source's file (or DICOM folder) name, whatever kind of store holds it."""
        return PurePath(self.source).name or self.source

    @property
    def recorded_path(self) -> str | None:
        """The source's absolute path when the store records one (``source_path``, or an older
        store's absolute ``source``); None otherwise."""
        if self.source_path:
            return self.source_path
        return self.source if PurePath(self.source).is_absolute() else None


class VolumeStatus(str, Enum):
    done = "done"
    failed = "failed"
    pending = "pending"


class ClassStats(StrictModel):
    """One structure's statistics in a multi-class round (its one-structure pipeline's)."""

    name: str
    slices_prompted: int = 0
    foreground_voxels: int = Field(0, description="voxels of this class in the combined label")
    student_masker_dice: float | None = Field(None, validation_alias=_old_name("student_masker_dice"))
    masker_score: float | None = None
    fused_student_dice: float | None = None
    masker_rejected: bool = False


class VolumeStats(StrictModel):
    """Per-volume statistics of one round (multi-class rounds: over all classes, and per class
    in ``classes``)."""

    slices_total: int = 0
    slices_prompted: int = 0
    foreground_voxels: int = 0
    foreground_fraction: float = 0.0
    mean_confidence: float = 0.0
    student_masker_dice: float | None = Field(
        None, validation_alias=_old_name("student_masker_dice"),
        description="Dice of student vs masker on prompted slices (None if none prompted)",
    )
    masker_score: float | None = Field(
        None, description="mean of the masker's own per-slice quality score over prompted "
        "slices (SAM-family: the decoder's predicted IoU); None without one",
    )
    fused_student_dice: float | None = Field(
        None, description="Dice of the fused pseudo-label with the student's largest component "
        "(None if no slice was prompted)",
    )
    masker_rejected: bool = Field(
        False, description="the fused label agreed with the student less than "
        "fusion.min_student_agreement: the student's answer was stored instead",
    )
    prior_box_agreement: dict[int, float] | None = Field(
        None, description="prompts.prior_box: per class value checked, the Dice of the "
        "student's structure and the masker's prior-box answer")
    prior_box_replaced: list[int] = Field(
        default_factory=list, description="prompts.prior_box: the class values whose student "
        "map the masker's prior-box answer replaced (agreement below the minimum)")
    classes: dict[int, ClassStats] | None = Field(
        None, description="multi-class rounds: per class value, that class's statistics (the "
        "volume-level masker figures are then means over classes, masker_rejected any class)")


class VolumeRecord(StrictModel):
    """``rounds/<r>/records/<id>`` attributes. ``status=done`` is written last."""

    volume_id: str
    status: VolumeStatus
    attempt: int = 1
    error: str | None = None
    retryable: bool = Field(False, description="failure may pass on another attempt")
    timings_s: dict[str, float] = Field(default_factory=dict)
    stats: VolumeStats | None = None
    checksums: dict[str, str] = Field(
        default_factory=dict, description="array name -> sha256 of its C-order bytes"
    )
    node: str | None = None
    worker_pid: int | None = None
    peak_rss_mb: float | None = Field(None, description="worker process peak resident memory so far")
    peak_device_mb: float | None = Field(None, description="peak CUDA memory allocated, this volume")
    finished_at: str = Field(default_factory=utcnow)


class RoundStatus(str, Enum):
    running = "running"
    finished = "finished"
    finished_with_failures = "finished_with_failures"


class RoundMeta(StrictModel):
    """``rounds/<r>`` attributes: the validated config that produced the round and its inputs."""

    round: int
    config: dict
    fingerprint: str
    student_checkpoint: str
    student_sha256: str
    masker_checkpoint: str | None = Field(
        None, validation_alias=_old_name("masker_checkpoint"),
        description="the masker's checkpoint path (None: it loads none)")
    masker_sha256: str | None = Field(None, validation_alias=_old_name("masker_sha256"))
    status: RoundStatus = RoundStatus.running
    created_at: str = Field(default_factory=utcnow)
    finished_at: str | None = None
    semisam_version: str = "0.1.0"
