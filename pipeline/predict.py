"""``semisam predict``: segment new scans with a trained student (as ``nnUNetv2_predict`` does).

Per input scan (any file ingest reads, or a folder of DICOM slices):

1. read and validate it with ingest's readers (same errors, same geometry);
2. the student's foreground probability by sliding-window inference
   (`semisam.workers.student.predict_probability`), optionally the mean over flips
   (``flip_axes``, test-time augmentation);
3. threshold (``> threshold``), optionally keep the largest 26-connected 3D component;
4. write ``OUT/<id>.nii.gz`` (uint8 {0,1}, intent ``label``; multi-class students: class
   values, below) and, on request,
   ``OUT/<id>_prob.nii.gz`` (float32 in [0, 1]) with the input's voxel grid and affine
   (voxel index -> world mm, RAS) as both qform and sform.

Files are written under a temporary name and renamed, the probability map before the label,
so a label file is there only when the scan is complete. Each label file's header
(``descrip``) names the prediction's fingerprint (student sha256 and the output-relevant
options); a rerun skips scans whose label (and, with ``probabilities``, probability map) is
there with the same fingerprint, and redoes the others.

Multi-class students (their checkpoint's ``meta["classes"]``, `checkpoint_classes`: ``K``
structures, ``K + 1`` softmax channels, channel ``c`` the class value ``values[c - 1]``):

* ``K > 1``: the label is the argmax of the ``K + 1`` channels (averaged over the flips) mapped
  to the class values (channel 0 -> 0), as `semisam evaluate` predicts; ``threshold`` does not
  apply (anything but its default 0.5 is refused); ``largest_component`` keeps each class's
  largest 26-connected component (the rest of that class becomes background);
* ``K = 1`` (one structure under another value or name): as a one-structure student, the
  label holding the class value instead of 1;
* ``OUT/<id>.nii.gz`` holds the class values (uint8, 0 background) and ``OUT/classes.json``
  names them (``{"1": "left", ...}``, as `semisam export` writes it), rewritten on every run;
* ``OUT/<id>_prob.nii.gz`` (``probabilities``) is the per-voxel confidence of that label: for
  ``K > 1`` the softmax probability of the winning channel (the argmax, background included),
  in ``[1 / (K + 1), 1]``, before any largest-component step (the one-structure map is the
  foreground probability, likewise before it). The winning probability was chosen over the
  top-two margin because it stays a probability, like the one-structure map: 1 where the
  student is sure, low where channels compete (boundaries between touching structures);
* the report names the classes and counts each one's voxels (``class_voxels``);
* ``flip_axes``: a flip along an axis that orders the structures (left/right ones) shows the
  student each one where the other lies; averaging it in mixes them up. ``semisam train``
  records those axes in the checkpoint (``meta["ordered_axes"]``) and they are left out of
  ``flip_axes`` with a warning (rounds do the same with ``student.flip_axes``).

A student with more than 2 channels but no class map, or whose class map does not fit its
channels, is refused before any scan (one line).

With ``address``, every scan is one Ray task (``num_cpus`` 1, ``num_gpus`` ``gpus_per_scan``)
on the cluster at that address (``local``: a Ray started on this machine); the nodes must
read the inputs and the checkpoint and write ``OUT`` (a shared file system).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field, SerializerFunctionWrapHandler, model_serializer

from semisam.schemas import (
    ClassMap,
    ConfigError,
    SemisamError,
    StrictModel,
    StudentSpec,
)

if TYPE_CHECKING:
    from semisam.workers.student_model import Student

log = logging.getLogger(__name__)

LABEL_SUFFIX = ".nii.gz"
PROB_SUFFIX = "_prob.nii.gz"
CLASSES_FILE = "classes.json"
_DESCRIP_PREFIX = "semisam predict "


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


def collect_inputs(inputs: list[Path | str]) -> list[Path]:
    """Files named, the supported files directly inside folders named (ingest's rule), and
    folders of DICOM slices as one input each."""
    from .ingest import collect_sources

    files: list[Path] = []
    plain: list[Path] = []
    for source in map(Path, inputs):
        if source.is_dir() and _is_dicom_dir(source):
            from .image_io import dicom

            series = dicom.series_volume_ids(source)  # several series: one input each
            files += [source if uid is None else Path(f"{source}{_SERIES}{uid}")
                      for _, uid in series]
        else:
            plain.append(source)
    return files + collect_sources(plain)


_SERIES = "#series="
"""Marks one series of a multi-series DICOM folder in an input path: ``FOLDER#series=UID``."""


def _dicom_input(source: Path) -> tuple[Path, str | None] | None:
    """``(folder, SeriesInstanceUID or None)`` of a DICOM input, None for a file."""
    text = str(source)
    if _SERIES in text:
        folder, uid = text.rsplit(_SERIES, 1)
        return Path(folder), uid
    return (source, None) if source.is_dir() else None


def _volume_id(source: Path) -> str:
    """The output name of an input: ingest's volume id (a series: ``<folder>_s<number>``)."""
    from .image_io import volume_id_for

    found = _dicom_input(source)
    if found is None:
        return volume_id_for(source)
    from .image_io import dicom

    folder, uid = found
    if uid is None:
        return dicom.dicom_volume_id(folder)
    ids = {u: vid for vid, u in dicom.series_volume_ids(folder)}
    if uid not in ids:
        from .image_io.validate import input_error

        raise input_error(folder, f"no DICOM image series {uid} in the folder")
    return ids[uid]


def check_unique_ids(sources: list[Path]) -> None:
    """Refuse, before any work, two inputs that would write the same output (``a.nii`` and
    ``a.nii.gz``; ingest refuses the second as a duplicate id too). An input whose id cannot be
    made is left to fail on its own when it is segmented.

    Raises:
        ConfigError: one line naming both inputs and the id they share.
    """
    from semisam.schemas import InputError

    seen: dict[str, Path] = {}
    for source in sources:
        try:
            vid = _volume_id(source)
        except InputError:
            continue
        if vid in seen:
            raise ConfigError(
                f"{seen[vid]} and {source} would both be written as '{vid}' (one output per "
                "volume id): rename one, or predict them into separate --out folders"
            )
        seen[vid] = source


def _is_dicom_dir(path: Path) -> bool:
    try:
        from .image_io import dicom
    except ImportError:  # DICOM support not installed
        return False
    return dicom.is_dicom_dir(path)


def _read(source: Path):
    """The `LoadedVolume` of one input (a file, a DICOM folder or one series of one)."""
    from .image_io import read_volume

    found = _dicom_input(source)
    if found is not None:
        from .image_io import dicom

        return dicom.read_dicom_series(*found)
    return read_volume(source)


def output_paths(out_dir: Path, volume_id: str) -> tuple[Path, Path]:
    """``(label, probability)`` files of a volume."""
    return out_dir / f"{volume_id}{LABEL_SUFFIX}", out_dir / f"{volume_id}{PROB_SUFFIX}"


def fingerprint(student_sha256: str, options: PredictOptions) -> str:
    """12 hex digits naming the student and the output-relevant options."""
    skip = {"probabilities"} | (set() if options.prior_component else {"prior_component"})
    blob = json.dumps({"student": student_sha256,  # outputs from before an option keep theirs
                       "options": options.model_dump(mode="json", exclude=skip)},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _descrip(path: Path) -> str | None:
    import nibabel as nib

    try:
        raw = nib.load(str(path)).header["descrip"]
    except Exception:  # noqa: BLE001 (an unreadable leftover is simply redone)
        return None
    return bytes(np.asarray(raw).item()).decode("ascii", "replace").rstrip("\x00")


def finished(out_dir: Path, volume_id: str, fp: str, probabilities: bool) -> bool:
    """True when the outputs of ``volume_id`` are there and were made with fingerprint ``fp``."""
    label, prob = output_paths(out_dir, volume_id)
    if not label.is_file() or (probabilities and not prob.is_file()):
        return False
    return _descrip(label) == _DESCRIP_PREFIX + fp


def _nifti(data: np.ndarray, affine: np.ndarray, descrip: str, *, label: bool):
    import nibabel as nib

    image = nib.Nifti1Image(data, affine)
    header = image.header
    header.set_data_dtype(data.dtype)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    header.set_xyzt_units(xyz="mm")
    if label:
        header.set_intent("label")
    else:
        header["cal_min"], header["cal_max"] = 0.0, 1.0
    header["descrip"] = descrip.encode()[:80]
    return image


def _save(image, path: Path) -> None:
    import nibabel as nib

    tmp = path.with_name(f".{path.name[: -len(LABEL_SUFFIX)]}.partial{LABEL_SUFFIX}")
    nib.save(image, str(tmp))
    os.replace(tmp, path)


def segment(prob: np.ndarray, options: PredictOptions) -> np.ndarray:
    """``XxYxZ`` uint8 {0,1}: ``prob > threshold``, optionally its largest 3D component."""
    from semisam.schemas import PromptConfig
    from semisam.workers.localization import foreground_mask

    cfg = PromptConfig(threshold=options.threshold, largest_component=options.largest_component)
    return foreground_mask(prob, cfg).astype(np.uint8)


def segment_classes(probs: np.ndarray, classes: ClassMap,
                    options: PredictOptions) -> tuple[np.ndarray, np.ndarray]:
    """Label and confidence of a multi-class student's softmax (see the module docstring).

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


def write_classes_file(out_dir: Path, classes: ClassMap) -> Path:
    """``OUT/classes.json`` (``{"value": "name"}``, as export writes it), atomically; a
    different map already there is replaced (logged)."""
    path = Path(out_dir) / CLASSES_FILE
    text = json.dumps(classes.to_attrs(), indent=2)
    if path.is_file():
        try:
            old = path.read_text()
        except OSError:
            old = None
        if old == text:
            return path
        log.warning("%s: replaced (it named other classes: %s)", path, (old or "?").strip()[:120])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{CLASSES_FILE}.partial")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


_MODEL_CACHE: dict[tuple[str, str], Student] = {}


def _student(path: Path, device: str) -> Student:
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


def predict_scan(student: Path, source: Path, out_dir: Path, options: PredictOptions, fp: str,
                 device: str = "cpu", overwrite: bool = False) -> PredictItem:
    """Segment one scan and write its outputs (or skip it when they are finished).

    A user error on this scan (unreadable, bad geometry) becomes a failed item with its
    one-line reason; the other scans go on.
    """
    from semisam.schemas import StudentInferenceConfig

    start = time.perf_counter()
    source, out_dir = Path(source), Path(out_dir)
    node = os.uname().nodename
    try:
        volume_id = _volume_id(source)
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
        volume = _read(source)
        loaded = _student(student, device)
        classes, meta = loaded.classes, loaded.meta
        cfg = StudentInferenceConfig(flip_axes=options.flip_axes, overlap=options.overlap,
                                     sw_batch_size=options.sw_batch_size)
        mask: np.ndarray | None = None
        prob = loaded.probabilities(volume.image, cfg, classes)
        if classes is not None:  # the class-valued label and the winning channel's probability
            mask, prob = segment_classes(prob, classes, options)
    except SemisamError as exc:
        item.status, item.reason = PredictStatus.failed, str(exc)
        item.label = item.probability = None
        return item
    if mask is None:
        mask = segment(prob, options)
    if options.prior_component:
        from semisam.workers.components import checkpoint_priors, keep_prior_components

        mask = keep_prior_components(mask, volume.spacing, checkpoint_priors(meta))
    affine = np.asarray(volume.affine, dtype=np.float64)
    out_dir.mkdir(parents=True, exist_ok=True)
    descrip = _DESCRIP_PREFIX + fp
    if options.probabilities:
        _save(_nifti(np.clip(prob, 0, 1).astype(np.float32), affine, descrip, label=False), prob_path)
    _save(_nifti(mask, affine, descrip, label=True), label_path)
    item.status = PredictStatus.written
    if classes is None:
        item.foreground_voxels = int(mask.sum())
    else:
        item.foreground_voxels = int(np.count_nonzero(mask))
        item.class_voxels = {v: int(np.count_nonzero(mask == v)) for v in classes.values}
    item.seconds = round(time.perf_counter() - start, 3)
    return item


def _device(requested: str | None, gpus: float) -> str:
    """``requested`` unless None/``auto``; then CUDA where there is one and GPUs were asked."""
    import torch

    if requested and requested != "auto":
        from semisam.workers.devices import check_device

        check_device(requested)  # one line before any scan, not a driver traceback per scan
        return requested
    return "cuda" if gpus > 0 and torch.cuda.is_available() else "cpu"


def predict(student: Path, inputs: list[Path | str], out_dir: Path, *,
            options: PredictOptions | None = None, address: str | None = None,
            gpus_per_scan: float = 0.0, device: str | None = None, overwrite: bool = False,
            on_item=None, ray_num_cpus: int | None = None) -> PredictReport:
    """Segment every input scan; see the module docstring.

    Args:
        inputs: files, folders of files, folders of DICOM slices.
        address: None: in this process, one scan after another; ``local``: a Ray started here
            (``ray_num_cpus`` CPUs); else the address of a running Ray cluster (``auto``,
            ``ray://...``). A Ray already initialised in this process is used as it is.
        on_item: called with each `PredictItem` as it finishes (progress bar).

    Raises:
        ConfigError: no inputs, a missing student checkpoint, or a ``threshold`` for a
            multi-class student (`check_options`).
        CheckpointError: the checkpoint is not a readable semisam student, or its channels do
            not fit its class map (`Student.classes`).
    """
    from .round_state import sha256_file

    options = options or PredictOptions()
    student, out_dir = Path(student), Path(out_dir)
    if not student.is_file():
        raise ConfigError(f"{student}: student checkpoint file not found")
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir}: exists and is not a directory (predict writes a "
                          "folder of outputs there)")
    sources = collect_inputs(list(inputs))
    if not sources:
        raise ConfigError("no input scans (files of a format ingest reads, or DICOM folders)")
    check_unique_ids(sources)
    if address is None:
        dev = _device(device, 1.0)
        loaded = _student(student, dev)  # a bad checkpoint fails once, before any scan
    else:
        from semisam.workers.student_model import Student

        loaded = Student.load(student)  # check on the driver before any task starts
    classes, meta = loaded.classes, loaded.meta
    options = _safe_flips(student, options, meta)
    _check_prior(student, options, meta)
    fp = fingerprint(sha256_file(student), options)
    report = PredictReport(out_dir=str(out_dir), student=str(student), fingerprint=fp)
    on_item = on_item or (lambda _item: None)
    _start_classes(report, classes, options, student, out_dir)
    if address is None:
        for source in sources:
            item = predict_scan(student, source, out_dir, options, fp, dev, overwrite)
            _log_item(item)
            report.items.append(item)
            on_item(item)
    else:
        report.items = _predict_ray(student, sources, out_dir, options, fp, address,
                                    gpus_per_scan, device, overwrite, on_item, ray_num_cpus)
    return report


def _check_prior(student: Path, options: PredictOptions, meta: dict) -> None:
    """Refuse ``prior_component`` for a checkpoint without a recorded prior, before any scan."""
    from semisam.workers.components import checkpoint_priors

    if options.prior_component and not checkpoint_priors(meta):
        raise ConfigError(f"--prior-component: {student} records no component prior (trained "
                          "before semisam recorded one, or on a store without labeled volumes); "
                          "use --largest-component")


def _safe_flips(student: Path, options: PredictOptions, meta: dict) -> PredictOptions:
    """``options`` without the test-time flips along axes the checkpoint ``student`` (its
    ``meta``) records as ordering its structures (`safe_flip_axes`; a warning names them)."""
    from semisam.workers.student import safe_flip_axes

    kept, dropped = safe_flip_axes(options.flip_axes, meta)
    if not dropped:
        return options
    log.warning("--flip: leaving out axis %s: %s records its structures lie one after the "
                "other along it (a flip swaps them)", ", ".join(map(str, dropped)), student)
    return options.model_copy(update={"flip_axes": kept})


def _start_classes(report: PredictReport, classes: ClassMap | None, options: PredictOptions,
                   student: Path, out_dir: Path) -> None:
    """Before any scan: refuse options a multi-class student cannot take, name its classes in
    the report and write ``OUT/classes.json``."""
    check_options(classes, options, student)
    if classes is not None:
        report.classes = dict(classes.names)
        write_classes_file(out_dir, classes)


def _log_item(item: PredictItem) -> None:
    if item.status == PredictStatus.skipped:
        log.info("skipped %s: %s (%s)", item.volume_id, item.reason, item.label)
    elif item.status == PredictStatus.failed:
        log.warning("failed %s: %s", item.source, item.reason)


def _predict_ray(student: Path, sources: list[Path], out_dir: Path, options: PredictOptions,
                 fp: str, address: str, gpus_per_scan: float, device: str | None,
                 overwrite: bool, on_item, ray_num_cpus: int | None) -> list[PredictItem]:
    """One Ray task per scan; items in input order."""
    import ray

    from .driver import ensure_ray

    started = ensure_ray(None if address == "local" else address,
                         ray_num_cpus or os.cpu_count() or 1, object_store_bytes=128 * 1024 * 1024)
    try:
        task = ray.remote(_scan_task).options(num_cpus=1, num_gpus=gpus_per_scan,
                                               max_retries=1)
        refs = {task.remote(str(student), str(s), str(out_dir), options.model_dump(mode="json"),
                            fp, device, gpus_per_scan, overwrite): i
                for i, s in enumerate(sources)}
        items: list[PredictItem | None] = [None] * len(sources)
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            i = refs[ready[0]]
            try:
                item = PredictItem.model_validate(ray.get(ready[0]))
            except ray.exceptions.RayError as exc:
                lines = [ln for ln in str(exc).splitlines() if ln.strip()]
                item = PredictItem(source=str(sources[i]), status=PredictStatus.failed,
                                   reason=(lines[-1] if lines else type(exc).__name__)[:300])
            items[i] = item
            _log_item(item)
            on_item(item)
        return [it for it in items if it is not None]
    finally:
        if started:
            ray.shutdown()


def _scan_task(student: str, source: str, out_dir: str, options: dict, fp: str,
               device: str | None, gpus: float, overwrite: bool) -> dict:
    """The Ray task of one scan (a plain function: Ray pickles it by reference)."""
    item = predict_scan(Path(student), Path(source), Path(out_dir),
                        PredictOptions.model_validate(options), fp,
                        _device(device, gpus), overwrite)
    return item.model_dump(mode="json")


__all__ = [
    "PredictItem",
    "PredictOptions",
    "PredictReport",
    "PredictStatus",
    "collect_inputs",
    "fingerprint",
    "output_paths",
    "predict",
    "predict_scan",
    "segment",
    "segment_classes",
    "student_classes",
    "write_classes_file",
]
