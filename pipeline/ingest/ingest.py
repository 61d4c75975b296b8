"""``semisam ingest``: read input volumes and write them into the Zarr store.

Per volume, in this order (metadata last, so a volume is complete exactly when it has metadata):

1. an existing ``meta`` attribute of ``volumes/<id>`` is removed (re-ingest with ``overwrite``);
2. ``volumes/<id>/reference`` (uint8 ground truth of a volume that has a label but is ingested
   as unlabeled) is written, or a stale one deleted;
3. `semisam.store.write_volume` writes ``image``, ``label`` (labeled volumes only) and then the
   `VolumeMeta`.

Labels are binary {0, 1} unless the ingest keeps classes (``classes``: a `ClassMap`, or
``"auto"`` for default names ``class_<v>``; a store that already has a class map keeps using
it): then they are stored as their integer values and the store root records the class map,
which is updated before a volume with a new value is written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import Enum
from pathlib import Path

import numpy as np
import zarr
from pydantic import Field

from semisam.schemas import (
    ClassMap,
    InputError,
    SemisamError,
    StrictModel,
    VolumeMeta,
    default_name,
    volume_path,
)
from semisam.store import (
    open_store,
    read_class_map,
    read_meta,
    slice_chunks,
    store_full_error,
    store_write_failure,
    write_class_map,
    write_volume,
)
from semisam.store.volumes import DIMENSION_NAMES

from ..image_io import (
    LoadedVolume,
    read_label_file,
    read_volume,
    source_sha256,
)
from ..image_io.validate import (
    align_label,
    check_label_shape,
    display_path,
    input_error,
    split_suffix,
)
from .sources import (
    SourcePlan,
    check_unchanged,
    plan_sources,
    source_fields,
    update_source_fields,
)

log = logging.getLogger(__name__)

REFERENCE_ARRAY = "reference"  # volumes/<id>/reference: ground truth kept for evaluation only


class IngestStatus(str, Enum):
    added = "added"
    unchanged = "unchanged"
    replaced = "replaced"
    failed = "failed"


class VolumeIngest(StrictModel):
    """Outcome for one source file."""

    volume_id: str
    source: str
    status: IngestStatus
    labeled: bool = False
    has_reference: bool = False
    reason: str | None = None


class IngestReport(StrictModel):
    """Outcome of one `ingest` call, one entry per source file in the order processed."""

    store: str
    volumes: list[VolumeIngest] = Field(default_factory=list)
    missing_labeled: list[str] = Field(
        default_factory=list, description="ids in the labeled list that matched no source file"
    )

    def count(self, status: IngestStatus | str) -> int:
        """Number of volumes with ``status``."""
        return sum(1 for v in self.volumes if v.status == IngestStatus(status))

    @property
    def failed(self) -> list[VolumeIngest]:
        return [v for v in self.volumes if v.status == IngestStatus.failed]

    @property
    def ok(self) -> bool:
        """True when no volume failed."""
        return not self.failed


def _existing_status(root: zarr.Group, plan: SourcePlan, overwrite: bool) -> IngestStatus:
    """``added`` (new id), ``unchanged`` (same files and flag) or ``replaced`` (``overwrite``)."""
    group_path = volume_path(plan.volume_id)
    if group_path not in root or "meta" not in root[group_path].attrs:
        return IngestStatus.added
    old = read_meta(root, plan.volume_id)
    same_files = old.sha256 == plan.sha256 and old.label_sha256 == plan.label_sha256
    if same_files and old.labeled == plan.labeled:
        return IngestStatus.unchanged
    if overwrite:
        return IngestStatus.replaced
    if not same_files:
        problem = (f"already exists from {old.source_name} with a different sha256; "
                   "use --overwrite")
    else:
        problem = f"already exists with labeled={old.labeled}; changing it needs --overwrite"
    raise input_error(plan.path, f"volume '{plan.volume_id}' {problem}")


class _ClassPolicy:
    """What an ingest does with label values: binary labels only (``keep`` False: today's
    one-structure stores), or class values under the store's class map, which ``auto`` grows
    with a default-named class for every new value."""

    def __init__(self, root: zarr.Group, classes: ClassMap | str | None, binarize: bool) -> None:
        stored = "classes" in root.attrs
        existing = read_class_map(root)
        if binarize and classes is not None:
            raise InputError("--binarize and --classes exclude each other: drop one")
        if binarize and stored:
            raise InputError(f"--binarize: the store keeps classes ({existing.to_attrs()}); "
                             "binary labels go into a store of their own")
        self.root, self.keep, self.auto = root, classes is not None or stored, classes == "auto"
        self.names: dict[int, str] = dict(existing.names) if stored else {}
        if isinstance(classes, ClassMap):
            clash = {v: (n, classes.names[v]) for v, n in self.names.items()
                     if v in classes.names and classes.names[v] != n}
            if clash:
                v, (old, new) = next(iter(clash.items()))
                raise InputError(f"--classes names class {v} {new!r}; the store calls it {old!r}")
            self.names.update(classes.names)
            write_class_map(root, ClassMap(names=self.names))

    def check(self, label: np.ndarray | None, where: Path) -> None:
        """Refuse (``InputError`` naming ``where``) a label value the class map does not hold;
        in ``auto`` mode record it instead (before the volume is written)."""
        if not self.keep or label is None:
            return
        values = [int(v) for v in np.unique(label) if v]
        unknown = [v for v in values if v not in self.names]
        if not unknown:
            return
        if not self.auto:
            known = ", ".join(f"{v}={n}" for v, n in self.names.items()) or "none"
            raise input_error(where, f"label has class value(s) {unknown} that the class map "
                              f"({known}) does not name: add them to --classes, or use "
                              "--classes auto")
        self.names.update({v: default_name(v) for v in unknown})
        classes = ClassMap(names=self.names)
        self.names = dict(classes.names)
        write_class_map(self.root, classes)
        log.info("class map: %s", ", ".join(f"{v}={n}" for v, n in self.names.items()))


def _load(plan: SourcePlan, binarize: bool, keep_classes: bool = False
          ) -> tuple[LoadedVolume, np.ndarray | None]:
    """Read the image and its label (``XxYxZ`` uint8 or None), on the image's voxel grid."""
    volume = read_volume(plan.path, binarize=binarize, keep_classes=keep_classes)
    check_unchanged(plan.path, plan.sha256, volume.sha256)
    label = volume.label
    if plan.label_file is not None:
        loaded = read_label_file(plan.label_file, binarize=binarize, keep_classes=keep_classes)
        check_unchanged(plan.label_file, plan.label_sha256, source_sha256(plan.label_file))
        label = loaded.label
        if volume.has_geometry and loaded.has_geometry:
            label = align_label(label, loaded.affine, volume.image.shape, volume.affine,
                                plan.label_file)
        else:
            check_label_shape(label.shape, volume.image.shape, plan.label_file)
    if label is not None and plan.labeled and not label.any():
        where = plan.label_file if plan.label_file is not None else plan.path
        raise input_error(
            where,
            "label is empty (no voxel is 1): a failed export? ingest the volume without its "
            "label (not in --labeled) if it has no structure",
        )
    return volume, label


def _write(root: zarr.Group, plan: SourcePlan, volume: LoadedVolume, label: np.ndarray | None,
           record_paths: bool = False) -> bool:
    """Write one volume in the module docstring's order; True if a reference was kept."""
    group = root.require_group(volume_path(plan.volume_id))
    if "meta" in group.attrs:
        del group.attrs["meta"]  # incomplete until write_volume puts the new metadata
    keep_reference = label is not None and not plan.labeled
    if keep_reference:
        group.create_array(
            REFERENCE_ARRAY, data=label, chunks=slice_chunks(label.shape), overwrite=True,
            dimension_names=DIMENSION_NAMES,
        )
    elif REFERENCE_ARRAY in group:
        del group[REFERENCE_ARRAY]
    meta = VolumeMeta(
        volume_id=plan.volume_id,
        **source_fields(plan.path, record_paths),
        source_format=volume.source_format,
        sha256=plan.sha256,
        label_sha256=plan.label_sha256,
        shape=volume.image.shape,
        spacing=volume.spacing,
        affine=volume.affine,
        image_dtype=volume.source_dtype,
        labeled=plan.labeled,
    )
    write_volume(root, meta, volume.image, label if plan.labeled else None)
    return keep_reference


def _ingest_checked(
    root: zarr.Group,
    path: Path,
    claimed: dict[str, Path],
    *,
    labels_dir: Path | None,
    labeled_ids: set[str] | None,
    overwrite: bool,
    binarize: bool,
    policy: _ClassPolicy,
    record_paths: bool = False,
) -> VolumeIngest:
    """Ingest one file; raises `SemisamError` (one line) if it cannot be."""
    plan = SourcePlan(path, labels_dir, labeled_ids)
    if plan.volume_id in claimed:
        raise input_error(
            path,
            f"duplicate volume id '{plan.volume_id}' (also from "
            f"{display_path(claimed[plan.volume_id])} in this ingest)",
        )
    claimed[plan.volume_id] = path
    status = _existing_status(root, plan, overwrite)
    has_reference = False
    if status == IngestStatus.unchanged:
        has_reference = f"{volume_path(plan.volume_id)}/{REFERENCE_ARRAY}" in root
        update_source_fields(root, plan, record_paths)
    else:
        volume, label = _load(plan, binarize, policy.keep)
        policy.check(label, plan.label_file if plan.label_file is not None else plan.path)
        has_reference = _write(root, plan, volume, label, record_paths)
    return VolumeIngest(
        volume_id=plan.volume_id,
        source=str(path),
        status=status,
        labeled=plan.labeled,
        has_reference=has_reference,
    )


def _ingest_one(root: zarr.Group, path: Path, claimed: dict[str, Path], **options) -> VolumeIngest:
    """Ingest one file; any failure becomes a ``failed`` entry with a one-line reason, except a
    store that cannot take writes (full, read-only): that stops the ingest (`StoreError`)."""
    try:
        result = _ingest_checked(root, path, claimed, **options)
    except SemisamError as exc:
        return _failed(path, str(exc))
    except Exception as exc:  # a library failing in an unforeseen way must not stop the rest
        if store_write_failure(exc):
            raise

        log.exception("unexpected error ingesting %s", display_path(path))
        return _failed(path, str(input_error(path, f"unexpected {type(exc).__name__}: {exc}")))
    state = "labeled" if result.labeled else "unlabeled"
    log.info("%s: %s (%s)", result.volume_id, result.status.value, state)
    return result


def ingest(
    store: str | Path,
    sources: list[Path],
    labels_dir: Path | None = None,
    labeled: set[str] | Path | None = None,
    overwrite: bool = False,
    binarize: bool = False,
    on_volume: Callable[[str, str], None] | None = None,
    classes: ClassMap | str | None = None,
    allow_missing_labeled: bool = False,
    record_paths: bool = False,
) -> IngestReport:
    """Ingest image files into the store, one volume per file.

    Args:
        store: store directory or fsspec URL; created if absent.
        sources: files and/or directories (every supported file directly inside, sorted).
        labels_dir: directory of label files named like their images (``<labels_dir>/<name>``).
        labeled: ids to ingest as labeled (a set, or a text file with one id per line); they must
            have a label. None: every volume with a label is labeled. A volume with a label that
            is not labeled keeps it as ``volumes/<id>/reference`` (evaluation only).
        overwrite: replace a volume whose files (sha256) or labeled flag changed.
        binarize: map label values ``> 0`` to 1 instead of refusing non-binary labels.
        on_volume: called as ``on_volume(volume_id, status)`` after each file.
        classes: keep label values as classes: a `ClassMap` (every value must be in it), or
            ``"auto"`` (new values get the names ``class_<v>``); None: binary labels, unless
            the store already has a class map.
        allow_missing_labeled: ingest even when the labeled list names ids no source has
            (they are only listed in ``missing_labeled``); by default that is refused before
            anything is read: a mistyped id would leave its volume unlabeled.
        record_paths: record each source's absolute path in its metadata (``source_path``);
            by default only its file name and sha256 (paths name people and sites). A rerun
            updates an unchanged volume's recorded path either way, nothing else.

    Returns:
        An `IngestReport`; a bad file is recorded as ``failed`` with a one-line reason and does
        not stop the others.

    Raises:
        StoreError: the store cannot be opened or created.
        InputError: ``labels_dir`` is not a directory, the labeled list is unreadable/invalid,
            or ``classes`` contradicts the store's class map or ``binarize``, or the labeled
            list names ids that no source has (unless ``allow_missing_labeled``).
    """
    if classes is not None and not isinstance(classes, ClassMap) and classes != "auto":
        raise InputError(f"classes must be a ClassMap or 'auto', got {classes!r}")
    labeled_ids, paths, missing = plan_sources(sources, labeled, allow_missing_labeled, labels_dir)
    root = open_store(store, create=True)
    report = IngestReport(store=str(store))
    _ingest_all(root, store, paths, report, on_volume,
                labels_dir=Path(labels_dir) if labels_dir else None, labeled_ids=labeled_ids,
                overwrite=overwrite, binarize=binarize,
                policy=_ClassPolicy(root, classes, binarize), record_paths=record_paths)
    report.missing_labeled = missing  # [] without a labeled list
    for vid in missing:
        log.warning("labeled id '%s' matched no source file", vid)
    log.info("ingest into %s: %s", store,
             ", ".join(f"{s.value} {report.count(s)}" for s in IngestStatus))
    return report


def _ingest_all(root: zarr.Group, store: str | Path, paths: list[Path], report: IngestReport,
                on_volume: Callable[[str, str], None] | None, **options) -> None:
    """Ingest ``paths`` in order into ``report`` (``options``: `_ingest_checked`'s); a bad file
    is a failed entry, a full store stops the ingest with one line."""
    claimed: dict[str, Path] = {}
    for path in paths:
        try:
            result = _ingest_one(root, path, claimed, **options)
        except Exception as exc:
            if (error := _store_full(exc, store, path, report)) is None:
                raise
            raise error from None
        report.volumes.append(result)
        if on_volume is not None:
            on_volume(result.volume_id, result.status.value)


def _store_full(exc: Exception, store: str | Path, path: Path,
                report: IngestReport) -> Exception | None:
    """The one-line store-full error for a write that ran out of room; None for any other
    failure (re-raised as it is)."""
    failure = store_write_failure(exc)
    if failure is None:
        return None
    done = report.count(IngestStatus.added) + report.count(IngestStatus.replaced)
    return store_full_error(
        str(store), failure, f"writing volume from {display_path(path)}",
        f"{done} volume(s) were ingested before it, it is not (a volume counts only "
        "once its metadata is written);")


def _failed(path: Path, reason: str) -> VolumeIngest:
    log.error("%s", reason)
    split = split_suffix(path)
    name = display_path(split[0] if split else path.name)
    return VolumeIngest(
        volume_id=name, source=display_path(path), status=IngestStatus.failed, reason=reason
    )
