"""What `predict` is asked (`PredictOptions`) and what it reports (`PredictItem` per scan, one
`PredictReport`), the fingerprint that names a prediction's outputs, and the option checks that
depend on the student."""

from __future__ import annotations

import hashlib
import json
from enum import Enum
from pathlib import Path

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer

from semisam.schemas import ClassMap, ConfigError, StrictModel

__all__ = ["PredictItem", "PredictOptions", "PredictReport", "PredictStatus", "check_options",
           "fingerprint"]


def _drop_unset(data: dict, keys: tuple[str, ...]) -> dict:
    """``data`` without the ``keys`` whose value is None (a one-structure student's report
    stays what it was before class maps)."""
    return {k: v for k, v in data.items() if not (k in keys and v is None)}


class PredictStatus(str, Enum):
    written = "written"
    skipped = "skipped"
    failed = "failed"


class PredictOptions(StrictModel):
    """What changes the outputs (the fingerprint covers these and the student's sha256)."""

    flip_axes: tuple[int, ...] = ()
    largest_component: bool = False
    prior_component: bool = Field(
        False, description="per structure, keep the component the student's recorded location "
        "and size prior picks (`train` records it from the labeled volumes)")
    threshold: float = Field(0.5, gt=0, lt=1)
    probabilities: bool = False
    overlap: float = Field(0.25, ge=0, lt=1)
    sw_batch_size: int = Field(2, ge=1)


class PredictItem(StrictModel):
    """Outcome for one input scan."""

    source: str
    volume_id: str | None = None
    status: PredictStatus
    label: str | None = None
    probability: str | None = None
    reason: str | None = None
    seconds: float = 0.0
    foreground_voxels: int | None = Field(None, description="voxels of any structure (label > 0)")
    class_voxels: dict[int, int] | None = Field(
        None, description="multi-class students: class value -> voxels of that class")
    node: str | None = None

    @model_serializer(mode="wrap")
    def _serialize(self, handler: SerializerFunctionWrapHandler) -> dict:
        return _drop_unset(handler(self), ("class_voxels",))


class PredictReport(StrictModel):
    out_dir: str
    student: str
    fingerprint: str
    classes: dict[int, str] | None = Field(
        None, description="multi-class students: class value -> structure name")
    items: list[PredictItem] = Field(default_factory=list)

    @model_serializer(mode="wrap")
    def _serialize(self, handler: SerializerFunctionWrapHandler) -> dict:
        return _drop_unset(handler(self), ("classes",))

    def count(self, status: PredictStatus | str) -> int:
        return sum(1 for it in self.items if it.status == PredictStatus(status))

    @property
    def ok(self) -> bool:
        return self.count(PredictStatus.failed) == 0


def fingerprint(student_sha256: str, options: PredictOptions) -> str:
    """12 hex digits naming the student and the output-relevant options."""
    skip = {"probabilities"} | (set() if options.prior_component else {"prior_component"})
    blob = json.dumps({"student": student_sha256,  # outputs from before an option keep theirs
                       "options": options.model_dump(mode="json", exclude=skip)},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def check_options(classes: ClassMap | None, options: PredictOptions, student: Path) -> None:
    """A multi-class student's label is the argmax: a ``threshold`` other than 0.5 is refused.

    Raises:
        ConfigError: one line.
    """
    default = PredictOptions.model_fields["threshold"].default
    if classes is not None and classes.count > 1 and options.threshold != default:
        raise ConfigError(f"--threshold {options.threshold:g}: student {student} has "
                          f"{classes.count} classes, whose label is the argmax of its "
                          f"{classes.count + 1} channels; the threshold is for one-structure "
                          "students")
