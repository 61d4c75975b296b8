"""One scan through a student: read it, the student's probabilities (1 structure or ``K``
classes), the label (threshold or argmax, optional component steps) and its outputs."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from semisam.schemas import ClassMap, SemisamError, StudentSpec

from .inputs import input_volume_id, read_input
from .options import PredictItem, PredictOptions, PredictStatus
from .outputs import finished, output_paths, write_scan

if TYPE_CHECKING:
    from semisam.workers.student_model import Student

    from ..image_io import LoadedVolume

__all__ = ["load_student", "predict_scan", "segment", "segment_classes", "student_classes"]


def segment(prob: np.ndarray, options: PredictOptions) -> np.ndarray:
    """``XxYxZ`` uint8 {0,1}: ``prob > threshold``, optionally its largest 3D component."""
    from semisam.schemas import PromptConfig
    from semisam.workers.localization import foreground_mask

    cfg = PromptConfig(threshold=options.threshold, largest_component=options.largest_component)
    return foreground_mask(prob, cfg).astype(np.uint8)


def segment_classes(probs: np.ndarray, classes: ClassMap,
                    options: PredictOptions) -> tuple[np.ndarray, np.ndarray]:
    """Label and confidence of a multi-class student's softmax (see the package docstring).

    Args:
        probs: ``(K+1)xXxYxZ`` float softmax, channel 0 the background, channel ``c`` the class
            value ``classes.values[c - 1]``.
        classes: the student's class map (``K`` structures).
        options: ``largest_component`` (per class) and, for ``K = 1``, ``threshold``.

    Returns:
        ``(label, confidence)``: ``XxYxZ`` uint8 class values (0 background) and ``XxYxZ``
        float32 in [0, 1]: ``K = 1`` the structure's probability, else the probability of the
        winning channel (before the largest-component step).

    Raises:
        ValueError: ``probs`` is not ``(K+1)xXxYxZ``.
    """
    probs = np.asarray(probs)
    if probs.ndim != 4 or probs.shape[0] != classes.count + 1:
        raise ValueError(f"expected a {classes.count + 1}xXxYxZ softmax for {classes.count} "
                         f"class(es), got shape {probs.shape}")
    values = np.asarray([0, *classes.values], np.uint8)
    if classes.count == 1:
        prob = np.clip(probs[1], 0, 1).astype(np.float32)
        return segment(prob, options) * values[1], prob
    winner = np.argmax(probs, axis=0)
    label = values[winner]
    confidence = np.take_along_axis(probs, winner[None], axis=0)[0]
    if options.largest_component:
        from semisam.training.metrics import largest_component

        for value in classes.values:
            mask = label == value
            if mask.any():
                label[mask & ~largest_component(mask)] = 0
    return label, np.clip(confidence, 0, 1).astype(np.float32)


def student_classes(spec: StudentSpec, meta: dict, path: Path | str) -> ClassMap | None:
    """The class map a student predicts in (`semisam.workers.student_model.predicted_classes`):
    None for a one-structure student, else the map its checkpoint records."""
    from semisam.workers.student_model import predicted_classes

    return predicted_classes(spec, meta, path)


_MODEL_CACHE: dict[tuple[str, str], Student] = {}


def load_student(path: Path, device: str) -> Student:
    """The checkpoint's `Student`, loaded once per process (and device); its class map
    (`Student.classes`) is checked on loading."""
    from semisam.workers.student_model import Student

    key = (str(Path(path).resolve()), device)
    if key not in _MODEL_CACHE:
        student = Student.load(path, device)
        _ = student.classes
        _MODEL_CACHE.clear()
        _MODEL_CACHE[key] = student
    return _MODEL_CACHE[key]


def _label(student: Path, volume: LoadedVolume, options: PredictOptions, device: str
           ) -> tuple[np.ndarray, np.ndarray, ClassMap | None]:
    """``(label, confidence, class map or None)`` of one read scan (``XxYxZ`` each): the
    student's probabilities, then the threshold (one structure) or argmax (``K`` classes) and
    the optional component steps."""
    from semisam.schemas import StudentInferenceConfig

    loaded = load_student(student, device)
    classes = loaded.classes
    cfg = StudentInferenceConfig(flip_axes=options.flip_axes, overlap=options.overlap,
                                 sw_batch_size=options.sw_batch_size)
    prob = loaded.probabilities(volume.image, cfg, classes)
    if classes is not None:  # the class-valued label and the winning channel's probability
        mask, prob = segment_classes(prob, classes, options)
    else:
        mask = segment(prob, options)
    if options.prior_component:
        from semisam.workers.components import checkpoint_priors, keep_prior_components

        mask = keep_prior_components(mask, volume.spacing, checkpoint_priors(loaded.meta))
    return mask, prob, classes


def _count(item: PredictItem, mask: np.ndarray, classes: ClassMap | None) -> None:
    """The voxels of the label in ``item`` (per class for a multi-class student)."""
    if classes is None:
        item.foreground_voxels = int(mask.sum())
    else:
        item.foreground_voxels = int(np.count_nonzero(mask))
        item.class_voxels = {v: int(np.count_nonzero(mask == v)) for v in classes.values}


def predict_scan(student: Path, source: Path, out_dir: Path, options: PredictOptions, fp: str,
                 device: str = "cpu", overwrite: bool = False) -> PredictItem:
    """Segment one scan and write its outputs (or skip it when they are finished).

    A user error on this scan (unreadable, bad geometry) becomes a failed item with its
    one-line reason; the other scans go on.
    """
    start = time.perf_counter()
    source, out_dir = Path(source), Path(out_dir)
    node = os.uname().nodename
    try:
        volume_id = input_volume_id(source)
    except SemisamError as exc:
        return PredictItem(source=str(source), status=PredictStatus.failed, reason=str(exc), node=node)
    label_path, prob_path = output_paths(out_dir, volume_id)
    item = PredictItem(source=str(source), volume_id=volume_id, status=PredictStatus.skipped,
                       label=str(label_path), node=node,
                       probability=str(prob_path) if options.probabilities else None)
    if not overwrite and finished(out_dir, volume_id, fp, options.probabilities):
        item.reason = "finished outputs with the same student and options"
        return item
    try:
        volume = read_input(source)
        mask, prob, classes = _label(student, volume, options, device)
    except SemisamError as exc:
        item.status, item.reason = PredictStatus.failed, str(exc)
        item.label = item.probability = None
        return item
    write_scan(out_dir, volume_id, mask, prob if options.probabilities else None,
               np.asarray(volume.affine, dtype=np.float64), fp)
    item.status = PredictStatus.written
    _count(item, mask, classes)
    item.seconds = round(time.perf_counter() - start, 3)
    return item
