"""`semisam evaluate`: a student's predictions, or a round's pseudo-labels, against ground truth.

Ground truth of a volume is ``volumes/<id>/label`` (labeled) or ``volumes/<id>/reference``
(ingested as unlabeled, kept for evaluation only). Metrics (`semisam.training.metrics`, medpy's
definitions): Dice, Jaccard, 95% Hausdorff and average surface distance, in voxels and in mm
(the store's spacing), per volume and as mean +- std over the volumes where they are defined.

A multi-class store (its class map, `semisam.store.read_class_map`) is scored per structure:
class ``v`` is ``label == v`` in both the prediction and the truth (largest component: per
class). A volume's metrics are then the mean over its classes (where defined) and its
``classes`` hold each class's own; the report's ``summary`` is over those per-volume means and
``class_summary`` per class over the volumes, ``classes`` names the values. A student's
prediction there is the argmax of its ``K + 1`` softmax channels mapped back to class values.
A one-structure store is scored, and reported, exactly as before class maps existed (no
``classes`` keys in the JSON).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import zarr
from pydantic import Field, SerializerFunctionWrapHandler, model_serializer

from semisam.schemas import (
    CheckpointError,
    ClassMap,
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
    read_class_map,
    read_image,
    read_output,
    read_record,
    read_reference,
    read_round_meta,
    sha256_file,
)
from semisam.training.metrics import METRICS, case_metrics, largest_component
from semisam.workers.devices import resolve_device
from semisam.workers.student_model import Student

log = logging.getLogger(__name__)


def _drop_unset(data: dict, keys: tuple[str, ...]) -> dict:
    """``data`` without the ``keys`` whose value is None (a one-structure store's JSON stays
    what it was before class maps)."""
    return {k: v for k, v in data.items() if not (k in keys and v is None)}


class ClassMetrics(StrictModel):
    """Metrics of one structure (``label == value``) in one volume; None where undefined."""

    dice: float
    jaccard: float
    hd95_voxels: float | None = None
    asd_voxels: float | None = None
    hd95_mm: float | None = None
    asd_mm: float | None = None
    predicted_voxels: int = 0
    reference_voxels: int = 0


class CaseMetrics(StrictModel):
    """Metrics of one volume; None where undefined (an empty mask has no surface).

    Multi-class stores: every metric is the mean over the classes where it is defined, the
    voxel counts are sums over the classes, and ``classes`` holds each class's metrics.
    """

    volume_id: str
    dice: float
    jaccard: float
    hd95_voxels: float | None = None
    asd_voxels: float | None = None
    hd95_mm: float | None = None
    asd_mm: float | None = None
    predicted_voxels: int = 0
    reference_voxels: int = 0
    classes: dict[int, ClassMetrics] | None = Field(
        None, description="multi-class stores: label value -> that class's metrics")

    @model_serializer(mode="wrap")
    def _serialize(self, handler: SerializerFunctionWrapHandler) -> dict:
        return _drop_unset(handler(self), ("classes",))


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
    summary: dict[str, MetricSummary] = Field(
        default_factory=dict, description="over the volumes (multi-class: of their class means)")
    classes: dict[int, str] | None = Field(
        None, description="multi-class stores: label value -> structure name")
    class_summary: dict[int, dict[str, MetricSummary]] | None = Field(
        None, description="multi-class stores: label value -> metric -> summary over the volumes")

    @model_serializer(mode="wrap")
    def _serialize(self, handler: SerializerFunctionWrapHandler) -> dict:
        return _drop_unset(handler(self), ("classes", "class_summary"))

    def mean(self, metric: str) -> float | None:
        return self.summary[metric].mean if metric in self.summary else None


class RoundEvaluation(StrictModel):
    """A round's pseudo-labels and its student's own predictions on the same volumes."""

    round: int
    pseudo_label: EvaluationReport
    student: EvaluationReport
    gain: dict[str, float | None] = Field(
        default_factory=dict, description="mean(pseudo-label) - mean(student) per metric")


def summarize(cases: list[CaseMetrics] | list[ClassMetrics]) -> dict[str, MetricSummary]:
    """Mean and (population) std of every metric over the cases where it is defined."""
    out = {}
    for metric in METRICS:
        values = [getattr(c, metric) for c in cases if getattr(c, metric) is not None]
        out[metric] = (MetricSummary(mean=float(np.mean(values)), std=float(np.std(values)),
                                     n=len(values)) if values else MetricSummary())
    return out


def mask_scores(pred: np.ndarray, ref: np.ndarray, spacing, keep_largest: bool) -> dict:
    """Every metric of `METRICS` (None where undefined) and both voxel counts of one ``XxYxZ``
    bool prediction against its ``XxYxZ`` bool truth."""
    if keep_largest:
        pred = largest_component(pred)
    values = case_metrics(pred, ref, spacing)
    clean = {k: (None if np.isnan(v) else float(v)) for k, v in values.items()}
    return {"predicted_voxels": int(pred.sum()), "reference_voxels": int(ref.sum()), **clean}


def score(volume_id: str, pred: np.ndarray, ref: np.ndarray, spacing, keep_largest: bool) -> CaseMetrics:
    """`CaseMetrics` of one binary prediction ``XxYxZ`` against its truth ``XxYxZ``."""
    return CaseMetrics(volume_id=volume_id, **mask_scores(pred > 0, ref > 0, spacing, keep_largest))


def _mean_defined(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def score_classes(volume_id: str, pred: np.ndarray, ref: np.ndarray, spacing, keep_largest: bool,
                  classes: ClassMap) -> CaseMetrics:
    """`CaseMetrics` of one multi-class prediction against its truth, both ``XxYxZ`` uint8
    class values: per class ``v`` (``pred == v`` vs ``ref == v``) and the class means."""
    per = {v: ClassMetrics(**mask_scores(pred == v, ref == v, spacing, keep_largest))
           for v in classes.values}
    cases = list(per.values())
    means = {m: _mean_defined([getattr(c, m) for c in cases]) for m in METRICS}
    return CaseMetrics(volume_id=volume_id, classes=per,
                       predicted_voxels=sum(c.predicted_voxels for c in cases),
                       reference_voxels=sum(c.reference_voxels for c in cases), **means)


def summarize_classes(cases: list[CaseMetrics], classes: ClassMap) -> dict[int, dict[str, MetricSummary]]:
    """`summarize` of every class over the volumes (cases scored by `score_classes`)."""
    return {v: summarize([c.classes[v] for c in cases if c.classes]) for v in classes.values}


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


def _evaluate_variants(root: zarr.Group, store: str, source: str, ids: list[str],
                       predict: Callable[[str], np.ndarray], keep_largest: Sequence[bool],
                       on_volume: Callable[[str, str], None] | None,
                       classes: ClassMap | None = None) -> list[EvaluationReport]:
    """Score ``predict(id)`` against every volume's truth, once per ``keep_largest`` variant
    (each volume predicted and read once); ``classes`` (a multi-class map): per class
    (`score_classes`), else as one structure (`score`)."""
    spacing = {m.volume_id: m.spacing for m in list_metas(root)}
    multi = classes is not None and classes.multiclass
    cases: list[list[CaseMetrics]] = [[] for _ in keep_largest]
    for vid in ids:
        pred, ref = predict(vid), read_reference(root, vid)
        for found, lcc in zip(cases, keep_largest):
            found.append(score_classes(vid, pred, ref, spacing[vid], lcc, classes) if multi
                         else score(vid, pred, ref, spacing[vid], lcc))
        if on_volume is not None:
            on_volume(vid, f"Dice {cases[0][-1].dice:.3f}")
    reports = []
    for found, lcc in zip(cases, keep_largest):
        report = EvaluationReport(store=store, source=source, largest_component=lcc,
                                  cases=found, summary=summarize(found))
        if multi:
            report.classes = dict(classes.names)
            report.class_summary = summarize_classes(found, classes)
        reports.append(report)
    return reports


def _evaluate(root: zarr.Group, store: str, source: str, ids: list[str],
              predict: Callable[[str], np.ndarray], keep_largest: bool,
              on_volume: Callable[[str, str], None] | None,
              classes: ClassMap | None = None) -> EvaluationReport:
    """`_evaluate_variants` with one variant."""
    return _evaluate_variants(root, store, source, ids, predict, (keep_largest,), on_volume,
                              classes)[0]


def student_predictor(root: zarr.Group, checkpoint: Path, inference: StudentInferenceConfig,
                      device: str = "auto", store: str = "",
                      classes: ClassMap | None = None) -> Callable[[str], np.ndarray]:
    """``volume id -> XxYxZ`` prediction by sliding window: one-structure stores bool
    (foreground probability > 0.5); multi-class ``classes`` uint8 class values (the argmax of
    the ``K + 1`` softmax channels, channel ``c`` -> ``classes.values[c - 1]``, 0 -> 0).

    Raises:
        InputError: a multi-class store and a student without ``K + 1`` channels, or one
            trained on another class map (`Student.check_fits`).
    """
    student = Student.load(checkpoint, resolve_device(device))
    classes = classes or read_class_map(root)
    student.check_fits(classes, store)
    if not classes.multiclass:
        def predict(volume_id: str) -> np.ndarray:
            return student.probabilities(read_image(root, volume_id), inference) > 0.5

        return predict
    values = np.asarray([0, *classes.values], dtype=np.uint8)

    def predict_classes(volume_id: str) -> np.ndarray:
        prob = student.probabilities(read_image(root, volume_id), inference, classes)
        return values[np.argmax(prob, axis=0)]

    return predict_classes


def evaluate_student(store: str | Path, checkpoint: Path, volumes: Iterable[str] | None = None,
                     largest_component: bool = False, inference: StudentInferenceConfig | None = None,
                     device: str = "auto", on_volume: Callable[[str, str], None] | None = None
                     ) -> EvaluationReport:
    """Sliding-window predictions of a student checkpoint against the ground truth.

    Args:
        volumes: ids to evaluate; None = every volume with a label or reference.
        largest_component: keep only the largest connected component of each prediction.
    """
    return _evaluate_student(store, checkpoint, volumes, (largest_component,), inference, device,
                             on_volume)[0]


def evaluate_student_both(store: str | Path, checkpoint: Path, volumes: Iterable[str] | None = None,
                          inference: StudentInferenceConfig | None = None, device: str = "auto"
                          ) -> tuple[EvaluationReport, EvaluationReport]:
    """`evaluate_student` without and with largest component, each volume predicted once
    (the papers report both)."""
    plain, largest = _evaluate_student(store, checkpoint, volumes, (False, True), inference,
                                       device, None)
    return plain, largest


def _evaluate_student(store: str | Path, checkpoint: Path, volumes: Iterable[str] | None,
                      keep_largest: Sequence[bool], inference: StudentInferenceConfig | None,
                      device: str, on_volume: Callable[[str, str], None] | None
                      ) -> list[EvaluationReport]:
    root = open_store(store, read_only=True)
    ids = select_volumes(root, volumes)
    classes = read_class_map(root)
    predict = student_predictor(root, Path(checkpoint), inference or StudentInferenceConfig(), device,
                                str(store), classes)
    return _evaluate_variants(root, str(store), str(checkpoint), ids, predict, keep_largest,
                              on_volume, classes)


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
    if not checkpoint.is_file():
        raise CheckpointError(f"{checkpoint}: checkpoint file not found")
    try:
        digest = sha256_file(checkpoint)
    except OSError as exc:
        raise CheckpointError(f"{checkpoint}: cannot read checkpoint ({exc.strerror})") from None
    if digest != meta.student_sha256:
        raise CheckpointError(f"{checkpoint}: sha256 differs from round {round_index}'s student "
                              f"({meta.student_sha256[:12]})")
    inference = StudentInferenceConfig.model_validate(meta.config.get("student", {}))
    classes = read_class_map(root)
    pseudo = _evaluate(root, str(store), f"round {round_index} pseudo-labels", ids,
                       lambda vid: read_output(root, round_index, "pseudo_label", vid),
                       largest_component, on_volume, classes)
    own = _evaluate(root, str(store), str(checkpoint), ids,
                    student_predictor(root, checkpoint, inference, device, str(store), classes),
                    largest_component, on_volume, classes)
    gain = {}
    for metric in METRICS:
        a, b = pseudo.mean(metric), own.mean(metric)
        gain[metric] = None if a is None or b is None else a - b
    return RoundEvaluation(round=round_index, pseudo_label=pseudo, student=own, gain=gain)

