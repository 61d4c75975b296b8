"""``semisam predict``: segment new scans with a trained student (as ``nnUNetv2_predict`` does).

Per input scan (any file ingest reads, or a folder of DICOM slices):

1. read and validate it with ingest's readers (same errors, same geometry);
2. the student's foreground probability by sliding-window inference
   (`semisam.workers.student.predict_probability`), optionally the mean over flips
   (``flip_axes``, test-time augmentation);
3. threshold (``> threshold``), optionally keep the largest 26-connected 3D component;
4. write ``OUT/<id>.nii.gz`` (uint8 {0,1}, intent ``label``) and, on request,
   ``OUT/<id>_prob.nii.gz`` (float32 in [0, 1]) with the input's voxel grid and affine
   (voxel index -> world mm, RAS) as both qform and sform.

Files are written under a temporary name and renamed, the probability map before the label,
so a label file is there only when the scan is complete. Each label file's header
(``descrip``) names the prediction's fingerprint (student sha256 and the output-relevant
options); a rerun skips scans whose label (and, with ``probabilities``, probability map) is
there with the same fingerprint, and redoes the others.

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

import numpy as np
from pydantic import Field

from semisam.schemas import ConfigError, SemisamError, StrictModel

log = logging.getLogger(__name__)

LABEL_SUFFIX = ".nii.gz"
PROB_SUFFIX = "_prob.nii.gz"
_DESCRIP_PREFIX = "semisam predict "


class PredictStatus(str, Enum):
    written = "written"
    skipped = "skipped"
    failed = "failed"


class PredictOptions(StrictModel):
    """What changes the outputs (the fingerprint covers these and the student's sha256)."""

    flip_axes: tuple[int, ...] = ()
    largest_component: bool = False
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
    foreground_voxels: int | None = None
    node: str | None = None


class PredictReport(StrictModel):
    out_dir: str
    student: str
    fingerprint: str
    items: list[PredictItem] = Field(default_factory=list)

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
            from .ingest import dicom

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
    from .ingest import volume_id_for

    found = _dicom_input(source)
    if found is None:
        return volume_id_for(source)
    from .ingest import dicom

    folder, uid = found
    if uid is None:
        return dicom.dicom_volume_id(folder)
    ids = {u: vid for vid, u in dicom.series_volume_ids(folder)}
    if uid not in ids:
        from .ingest.validate import input_error

        raise input_error(folder, f"no DICOM image series {uid} in the folder")
    return ids[uid]


def _is_dicom_dir(path: Path) -> bool:
    try:
        from .ingest import dicom
    except ImportError:  # DICOM support not installed
        return False
    return dicom.is_dicom_dir(path)


def _read(source: Path):
    """The `LoadedVolume` of one input (a file, a DICOM folder or one series of one)."""
    from .ingest import read_volume

    found = _dicom_input(source)
    if found is not None:
        from .ingest import dicom

        return dicom.read_dicom_series(*found)
    return read_volume(source)


def output_paths(out_dir: Path, volume_id: str) -> tuple[Path, Path]:
    """``(label, probability)`` files of a volume."""
    return out_dir / f"{volume_id}{LABEL_SUFFIX}", out_dir / f"{volume_id}{PROB_SUFFIX}"


def fingerprint(student_sha256: str, options: PredictOptions) -> str:
    """12 hex digits naming the student and the output-relevant options."""
    blob = json.dumps({"student": student_sha256,
                       "options": options.model_dump(mode="json", exclude={"probabilities"})},
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


_MODEL_CACHE: dict[tuple[str, str], tuple] = {}


def _student(path: Path, device: str):
    """Model and spec of a checkpoint, loaded once per process (and device)."""
    from semisam.workers.student import load_student

    key = (str(Path(path).resolve()), device)
    if key not in _MODEL_CACHE:
        model, spec, _ = load_student(path, device=device)
        _MODEL_CACHE.clear()
        _MODEL_CACHE[key] = (model, spec)
    return _MODEL_CACHE[key]


def predict_scan(student: Path, source: Path, out_dir: Path, options: PredictOptions, fp: str,
                 device: str = "cpu", overwrite: bool = False) -> PredictItem:
    """Segment one scan and write its outputs (or skip it when they are finished).

    A user error on this scan (unreadable, bad geometry) becomes a failed item with its
    one-line reason; the other scans go on.
    """
    from semisam.schemas import StudentInferenceConfig
    from semisam.workers.student import predict_probability

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
        model, spec = _student(student, device)
        cfg = StudentInferenceConfig(flip_axes=options.flip_axes, overlap=options.overlap,
                                     sw_batch_size=options.sw_batch_size)
        prob = predict_probability(model, volume.image, spec, cfg, device=device)
    except SemisamError as exc:
        item.status, item.reason = PredictStatus.failed, str(exc)
        item.label = item.probability = None
        return item
    mask = segment(prob, options)
    affine = np.asarray(volume.affine, dtype=np.float64)
    out_dir.mkdir(parents=True, exist_ok=True)
    descrip = _DESCRIP_PREFIX + fp
    if options.probabilities:
        _save(_nifti(np.clip(prob, 0, 1).astype(np.float32), affine, descrip, label=False), prob_path)
    _save(_nifti(mask, affine, descrip, label=True), label_path)
    item.status = PredictStatus.written
    item.foreground_voxels = int(mask.sum())
    item.seconds = round(time.perf_counter() - start, 3)
    return item


def _device(requested: str | None, gpus: float) -> str:
    """``requested`` unless None/``auto``; then CUDA where there is one and GPUs were asked."""
    import torch

    if requested and requested != "auto":
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
        ConfigError: no inputs, or a missing student checkpoint.
        CheckpointError: the checkpoint is not a readable semisam student.
    """
    from .round_state import sha256_file

    options = options or PredictOptions()
    student, out_dir = Path(student), Path(out_dir)
    if not student.is_file():
        raise ConfigError(f"{student}: student checkpoint file not found")
    sources = collect_inputs(list(inputs))
    if not sources:
        raise ConfigError("no input scans (files of a format ingest reads, or DICOM folders)")
    fp = fingerprint(sha256_file(student), options)
    report = PredictReport(out_dir=str(out_dir), student=str(student), fingerprint=fp)
    on_item = on_item or (lambda _item: None)
    if address is None:
        dev = _device(device, 1.0)
        _student(student, dev)  # a bad checkpoint fails once, before any scan
        for source in sources:
            item = predict_scan(student, source, out_dir, options, fp, dev, overwrite)
            _log_item(item)
            report.items.append(item)
            on_item(item)
    else:
        from semisam.workers.student import load_student

        load_student(student)  # check on the driver before any task starts
        report.items = _predict_ray(student, sources, out_dir, options, fp, address,
                                    gpus_per_scan, device, overwrite, on_item, ray_num_cpus)
    return report


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

    started = False
    if not ray.is_initialized():
        if address == "local":
            ray.init(address="local", num_cpus=ray_num_cpus or os.cpu_count() or 1,
                     include_dashboard=False, object_store_memory=128 * 1024 * 1024,
                     logging_level=logging.WARNING)
        else:
            ray.init(address=address, logging_level=logging.WARNING)
        started = True
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
]
