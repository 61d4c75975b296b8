"""Did the masker help? The round's pseudo-label against the student's own answer, both scored on the
ground truth.

For every finished unlabeled volume of a round whose store holds a ``reference`` (truth kept
for evaluation only), the round's student is re-run on the stored image (its checkpoint must
still be there, unchanged) and

    student Dice      = Dice(student mask, reference)     student mask: p > 0.5 (multi-class:
                                                          argmax, in class values)
    pseudo-label Dice = Dice(pseudo-label, reference)
    gain              = pseudo-label Dice - student Dice  (> 0: the masker and fusion improved
                                                          on the student)

Dice as `report.reference_dice` (multi-class: mean over the store's classes).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import zarr
from pydantic import Field

from semisam.schemas import ClassMap, RoundConfig, StrictModel, VolumeStatus
from semisam.store import (
    list_metas,
    read_class_map,
    read_image,
    read_output,
    read_record,
    read_round_meta,
)
from semisam.training.metrics import class_dice

log = logging.getLogger(__name__)


class VolumeGain(StrictModel):
    """One volume's Dice against its reference: the student's, the pseudo-label's, the gain."""

    volume_id: str
    student_dice: float
    pseudo_label_dice: float
    gain: float = Field(description="pseudo_label_dice - student_dice")


class GainSummary(StrictModel):
    """Means over the volumes of `VolumeGain`, and on how many the pseudo-label was better."""

    volumes: int
    student_dice: float
    pseudo_label_dice: float
    gain: float
    better: int = Field(description="volumes where the pseudo-label beats the student")
    worse: int = Field(description="volumes where the student beats the pseudo-label")

    def sentence(self) -> str:
        """One line for the report and the demo."""
        return (f"pseudo-labels {self.pseudo_label_dice:.3f} vs student {self.student_dice:.3f} "
                f"Dice vs reference (gain {self.gain:+.3f}; better on {self.better}, worse on "
                f"{self.worse} of {self.volumes} volumes)")


def _dice(label: np.ndarray, ref: np.ndarray, classes: ClassMap) -> float:
    return float(class_dice(label, ref, classes.values if classes.multiclass else None))


def student_mask(prob: np.ndarray, classes: ClassMap) -> np.ndarray:
    """The student's label: ``XxYxZ`` probability > 0.5 -> 1 (one structure), or the argmax of
    a ``(K+1)xXxYxZ`` softmax in the store's class values (multi-class). ``XxYxZ`` uint8."""
    if prob.ndim == 4:
        values = np.asarray([0, *classes.values], dtype=np.uint8)
        return values[np.argmax(prob, axis=0)]
    return (prob > 0.5).astype(np.uint8) * np.uint8(classes.values[0])


def _student(root: zarr.Group, round_index: int):
    """``(predict, reason)``: a function image -> probability with the round's student, or
    None and why not."""
    from .presentation.inspect import round_student

    meta = read_round_meta(root, round_index)
    student = round_student(meta)
    if student is None:
        return None, f"student {Path(meta.student_checkpoint)} is gone or changed since round {round_index}"
    cfg = RoundConfig.model_validate(meta.config).student
    classes = read_class_map(root)
    student.check_fits(classes)
    return (lambda image: student.probabilities(image, cfg, classes)), None


def volume_gains(root: zarr.Group, round_index: int) -> dict[str, VolumeGain]:
    """`VolumeGain` of every finished unlabeled volume with a reference ({} when there is none,
    or the round's student checkpoint is gone: logged)."""
    todo = []
    for meta in list_metas(root):
        key = f"volumes/{meta.volume_id}/reference"
        record = read_record(root, round_index, meta.volume_id) if not meta.labeled else None
        if record is not None and record.status == VolumeStatus.done and key in root:
            todo.append(meta.volume_id)
    if not todo:
        return {}
    predict, reason = _student(root, round_index)
    if predict is None:
        log.info("student Dice left out: %s", reason)
        return {}
    classes = read_class_map(root)
    out = {}
    for vid in todo:
        ref = np.asarray(root[f"volumes/{vid}/reference"][...], dtype=np.uint8)
        pseudo = read_output(root, round_index, "pseudo_label", vid)
        if pseudo is None or pseudo.shape != ref.shape:
            continue
        s = _dice(student_mask(predict(read_image(root, vid)), classes), ref, classes)
        p = _dice(pseudo, ref, classes)
        out[vid] = VolumeGain(volume_id=vid, student_dice=round(s, 4), pseudo_label_dice=round(p, 4),
                              gain=round(p - s, 4))
    return out


def summarize_gains(gains: dict[str, VolumeGain]) -> GainSummary | None:
    """Means over ``gains`` (None when empty)."""
    if not gains:
        return None
    rows = list(gains.values())
    return GainSummary(
        volumes=len(rows), student_dice=round(float(np.mean([g.student_dice for g in rows])), 4),
        pseudo_label_dice=round(float(np.mean([g.pseudo_label_dice for g in rows])), 4),
        gain=round(float(np.mean([g.gain for g in rows])), 4),
        better=sum(g.gain > 0 for g in rows), worse=sum(g.gain < 0 for g in rows))
