"""`semisam evaluate`: a student's predictions, or a round's pseudo-labels, against ground truth.

Ground truth of a volume is ``volumes/<id>/label`` (labeled) or ``volumes/<id>/reference``
(ingested as unlabeled, kept for evaluation only). Metrics (`semisam.training.metrics`, medpy's
definitions): Dice, Jaccard, 95% Hausdorff and average surface distance, in voxels and in mm
(the store's spacing), per volume and as mean +- std over the volumes where they are defined.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
import zarr
from pydantic import Field

from semisam.schemas import (
    CheckpointError,
    ConfigError,
    InputError,
    StrictModel,
    StudentInferenceConfig,
    VolumeStatus,
    validate_volume_id,
    volume_path,
)
from semisam.store import (
    list_metas,
    open_store,
    read_image,
    read_output,
    read_record,
    read_reference,
    read_round_meta,
)
from semisam.training.metrics import METRICS, case_metrics, largest_component
from semisam.workers.student import load_student, predict_probability

from .round_state import sha256_file

log = logging.getLogger(__name__)


class CaseMetrics(StrictModel):
    """Metrics of one volume; None where undefined (an empty mask has no surface)."""

    volume_id: str
    dice: float
    jaccard: float
    hd95_voxels: float | None = None
    asd_voxels: float | None = None
    hd95_mm: float | None = None
    asd_mm: float | None = None
    predicted_voxels: int = 0
    reference_voxels: int = 0


class MetricSummary(StrictModel):
    mean: float | None = None
    std: float | None = None
    n: int = Field(0, description="volumes where the metric is defined")


class EvaluationReport(StrictModel):
    """Per-volume metrics of one prediction source and their summary."""

    store: str
    source: str = Field(description="student checkpoint path, or 'round r pseudo-labels'")
    largest_component: bool = False
    cases: list[CaseMetrics] = Field(default_factory=list)
    summary: dict[str, MetricSummary] = Field(default_factory=dict)

    def mean(self, metric: str) -> float | None:
        return self.summary[metric].mean if metric in self.summary else None


class RoundEvaluation(StrictModel):
    """A round's pseudo-labels and its student's own predictions on the same volumes."""

    round: int
    pseudo_label: EvaluationReport
    student: EvaluationReport
    gain: dict[str, float | None] = Field(
        default_factory=dict, description="mean(pseudo-label) - mean(student) per metric")


def summarize(cases: list[CaseMetrics]) -> dict[str, MetricSummary]:
    """Mean and (population) std of every metric over the cases where it is defined."""
    out = {}
    for metric in METRICS:
        values = [getattr(c, metric) for c in cases if getattr(c, metric) is not None]
        out[metric] = (MetricSummary(mean=float(np.mean(values)), std=float(np.std(values)),
                                     n=len(values)) if values else MetricSummary())
    return out


def score(volume_id: str, pred: np.ndarray, ref: np.ndarray, spacing, keep_largest: bool) -> CaseMetrics:
    """`CaseMetrics` of one binary prediction ``XxYxZ`` against its truth ``XxYxZ``."""
    pred = pred > 0
    if keep_largest:
        pred = largest_component(pred)
    values = case_metrics(pred, ref > 0, spacing)
    clean = {k: (None if np.isnan(v) else float(v)) for k, v in values.items()}
    return CaseMetrics(volume_id=volume_id, predicted_voxels=int(pred.sum()),
                       reference_voxels=int((ref > 0).sum()), **clean)


def has_reference(root: zarr.Group, volume_id: str) -> bool:
    """True when the volume has a label or a reference (without reading either)."""
    base = volume_path(volume_id)
    return f"{base}/reference" in root or f"{base}/label" in root


def select_volumes(root: zarr.Group, volumes: Iterable[str] | None) -> list[str]:
    """The ids to evaluate: ``volumes`` (each checked), or every volume with ground truth."""
    metas = {m.volume_id: m for m in list_metas(root)}
    if volumes is None:
        return [vid for vid in metas if has_reference(root, vid)]
    ids = [validate_volume_id(v) for v in volumes]
    for vid in ids:
        if vid not in metas:
            raise InputError(f"volume '{vid}': not in the store")
        if not has_reference(root, vid):
            raise InputError(f"volume '{vid}': has no label or reference to evaluate against")
    return ids


def read_volume_list(value: str | Path) -> list[str]:
    """``--volumes``: a text file with one id per line, or comma-separated ids."""
    path = Path(value)
    if path.is_file():
        return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if any(sep in str(value) for sep in ("/", "\\")) or str(value).endswith(".txt"):
        raise ConfigError(f"{value}: volume list file not found")
    return [v.strip() for v in str(value).split(",") if v.strip()]


def _evaluate(root: zarr.Group, store: str, source: str, ids: list[str],
              predict: Callable[[str], np.ndarray], keep_largest: bool,
              on_volume: Callable[[str, str], None] | None) -> EvaluationReport:
    spacing = {m.volume_id: m.spacing for m in list_metas(root)}
    cases = []
    for vid in ids:
        cases.append(score(vid, predict(vid), read_reference(root, vid), spacing[vid], keep_largest))
        if on_volume is not None:
            on_volume(vid, f"Dice {cases[-1].dice:.3f}")
    return EvaluationReport(store=store, source=source, largest_component=keep_largest,
                            cases=cases, summary=summarize(cases))


def student_predictor(root: zarr.Group, checkpoint: Path, inference: StudentInferenceConfig,
                      device: str = "auto") -> Callable[[str], np.ndarray]:
    """``volume id -> XxYxZ bool`` prediction (sliding window, foreground probability > 0.5)."""
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       "cpu" if device == "auto" else device)
    model, spec, _ = load_student(checkpoint, dev)

    def predict(volume_id: str) -> np.ndarray:
        return predict_probability(model, read_image(root, volume_id), spec, inference, dev) > 0.5

    return predict


def evaluate_student(store: str | Path, checkpoint: Path, volumes: Iterable[str] | None = None,
                     largest_component: bool = False, inference: StudentInferenceConfig | None = None,
                     device: str = "auto", on_volume: Callable[[str, str], None] | None = None
                     ) -> EvaluationReport:
    """Sliding-window predictions of a student checkpoint against the ground truth.

    Args:
        volumes: ids to evaluate; None = every volume with a label or reference.
        largest_component: keep only the largest connected component of each prediction.
    """
    root = open_store(store, read_only=True)
    ids = select_volumes(root, volumes)
    predict = student_predictor(root, Path(checkpoint), inference or StudentInferenceConfig(), device)
    return _evaluate(root, str(store), str(checkpoint), ids, predict, largest_component, on_volume)


def evaluate_round(store: str | Path, round_index: int, student: Path | None = None,
                   volumes: Iterable[str] | None = None, largest_component: bool = False,
                   device: str = "auto", on_volume: Callable[[str, str], None] | None = None
                   ) -> RoundEvaluation:
    """A round's pseudo-labels and its student's predictions on the round's done volumes that have
    a reference: how much did the masker add to the student?

    Args:
        student: the round's student checkpoint if it moved (its sha256 must still match the
            round's record); default the path stored in the round.

    Raises:
        ConfigError: no such round, or no done volume with ground truth.
        CheckpointError: the student checkpoint differs from the one the round used.
    """
    root = open_store(store, read_only=True)
    meta = read_round_meta(root, round_index)
    if meta is None:
        raise ConfigError(f"round {round_index}: not in {store}")
    done = [m.volume_id for m in list_metas(root) if not m.labeled
            and (r := read_record(root, round_index, m.volume_id)) is not None
            and r.status == VolumeStatus.done and has_reference(root, m.volume_id)]
    ids = done if volumes is None else [v for v in select_volumes(root, volumes) if v in done]
    if not ids:
        raise ConfigError(f"round {round_index}: no done volume with a reference to evaluate")
    checkpoint = Path(student or meta.student_checkpoint)
    if sha256_file(checkpoint) != meta.student_sha256:
        raise CheckpointError(f"{checkpoint}: sha256 differs from round {round_index}'s student "
                              f"({meta.student_sha256[:12]})")
    inference = StudentInferenceConfig.model_validate(meta.config.get("student", {}))
    pseudo = _evaluate(root, str(store), f"round {round_index} pseudo-labels", ids,
                       lambda vid: read_output(root, round_index, "pseudo_label", vid),
                       largest_component, on_volume)
    own = _evaluate(root, str(store), str(checkpoint), ids,
                    student_predictor(root, checkpoint, inference, device), largest_component, on_volume)
    gain = {}
    for metric in METRICS:
        a, b = pseudo.mean(metric), own.mean(metric)
        gain[metric] = None if a is None or b is None else a - b
    return RoundEvaluation(round=round_index, pseudo_label=pseudo, student=own, gain=gain)
