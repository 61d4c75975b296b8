"""Predict's driver: the checks made once before any scan (checkpoint, options, inputs, output
ids), then every scan in this process or as one Ray task each (`pipeline.rounds.ray_start`: the
round driver's Ray start and its one-line Ray errors)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from semisam.schemas import ClassMap, ConfigError
from semisam.store import sha256_file

from .inputs import check_unique_ids, collect_inputs
from .options import (
    PredictItem,
    PredictOptions,
    PredictReport,
    PredictStatus,
    check_options,
    fingerprint,
)
from .outputs import write_classes_file
from .scan import load_student, predict_scan

__all__ = ["predict"]

log = logging.getLogger(__name__)


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
        loaded = load_student(student, dev)  # a bad checkpoint fails once, before any scan
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

    from ..rounds.ray_start import ensure_ray, ray_error_line

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
                item = PredictItem(source=str(sources[i]), status=PredictStatus.failed,
                                   reason=ray_error_line(exc))
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
