"""`export`: a round's pseudo-labels and confidence maps as files that review tools open.

NIfTI-1 (``.nii.gz``), one pair per finished volume::

    DIR/pseudo_label/<id>.nii.gz   uint8 {0,1} (multi-class: class values), intent "label"
    DIR/confidence/<id>.nii.gz     uint8 v on disk with scl_slope = 1/255, scl_inter = 0, so a
                                   reader that applies the scaling (nibabel ``get_fdata``, ITK,
                                   3D Slicer, ITK-SNAP) sees the confidence v/255 in [0, 1]
    DIR/export.json                what was written and skipped, the round's fingerprint
    DIR/classes.json               multi-class stores: label value -> structure name (the
                                   pseudo-labels hold the store's class values)

Geometry is the source's: the array keeps the stored axis order (the file's own order at ingest)
and the header carries the stored 4x4 affine (voxel index -> world mm, RAS) as both qform and
sform (code 1, scanner; a sheared affine is exact in the sform, nearest rigid + zooms in the
qform), spacing (the affine's column norms) and units mm. A voxel (i, j, k) of an
exported file is therefore the voxel (i, j, k) of the source image, at the same world position.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from semisam.schemas import CONFIDENCE_SCALE, InputError, StoreError, validate_volume_id

from .records import ExportedVolume, ExportFormat, ExportReport, skip_reason, volume_affine

if TYPE_CHECKING:  # the heavy imports load on use: the CLI imports this module for --help
    import nibabel as nib
    import numpy as np
    import zarr

log = logging.getLogger(__name__)

KINDS = ("pseudo_label", "confidence")


def nifti_image(data: np.ndarray, affine: np.ndarray, kind: str,
                round_index: int) -> nib.Nifti1Image:
    """A NIfTI-1 image of one output array (``XxYxZ`` uint8) with the source geometry."""
    import numpy as np

    from ..image_io.nifti import output_image

    if data.dtype != np.uint8 or data.ndim != 3:
        raise StoreError(f"{kind}: expected a 3D uint8 array, got {data.dtype} {data.shape}")
    slope = 1.0 / CONFIDENCE_SCALE if kind == "confidence" else None
    return output_image(data, affine, f"semisam round {round_index} {kind}",
                        label=kind != "confidence", slope=slope)


def _export_volume(root: zarr.Group, round_index: int, volume_id: str, out: Path) -> ExportedVolume:
    import nibabel as nib

    from semisam.store import read_output

    reason = skip_reason(root, round_index, volume_id)
    if reason is not None:
        return ExportedVolume(volume_id=volume_id, written=False, reason=reason)
    affine = volume_affine(root, round_index, volume_id)
    item = ExportedVolume(volume_id=volume_id, written=True,
                          orientation="".join(nib.aff2axcodes(affine)))
    for kind in KINDS:
        data = read_output(root, round_index, kind, volume_id)
        if data is None:
            return ExportedVolume(volume_id=volume_id, written=False,
                                  reason=f"{kind} array missing")
        path = out / kind / f"{volume_id}.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nifti_image(data, affine, kind, round_index), path)
        item.files[kind] = str(path)
    return item


def export_round(root: zarr.Group, round_index: int, out_dir: Path | str, *,
                 fmt: ExportFormat = ExportFormat.nifti, volumes: list[str] | None = None,
                 store: str = "", options: dict | None = None) -> ExportReport:
    """Write the finished volumes of round ``round_index`` to ``out_dir`` (see module docstring).

    Args:
        volumes: ids to export (default: every unlabeled volume); unfinished ones are skipped
            and reported, not errors.
        store: the store's location, recorded in the report.
        options: settings of the other formats (`formats.export_round_as`); ``out_dir``
            may be an fsspec URL for ``ome-zarr``.

    Raises:
        StoreError: the round is not in the store.
        InputError: a requested id is not an unlabeled volume of the store.
    """
    from semisam.store import is_url, list_metas, read_round_meta

    meta = read_round_meta(root, round_index)
    if meta is None:
        raise StoreError(f"round {round_index}: not in {store or 'the store'}")
    unlabeled = [m.volume_id for m in list_metas(root) if not m.labeled]
    ids = unlabeled if volumes is None else [validate_volume_id(v) for v in volumes]
    unknown = sorted(set(ids) - set(unlabeled))
    if unknown:
        where = store or "the store"
        raise InputError(f"volume '{unknown[0]}': not an unlabeled volume of {where}")
    fmt = ExportFormat(fmt)
    if fmt is not ExportFormat.nifti:
        from .formats import export_round_as

        return export_round_as(root, round_index, str(out_dir), ids=ids, fmt=fmt,
                               fingerprint=meta.fingerprint, store=store, options=options)
    if is_url(str(out_dir)):
        raise InputError(f"--to {out_dir}: NIfTI export writes local files; use a local "
                         "folder, or --format ome-zarr for an object store")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = ExportReport(store=store, round=round_index, fingerprint=meta.fingerprint,
                          out_dir=str(out), format=fmt)
    for vid in ids:
        item = _export_volume(root, round_index, vid, out)
        report.volumes.append(item)
        log.info("%s: %s", vid, "exported" if item.written else f"skipped, {item.reason}")
    (out / "export.json").write_text(report.model_dump_json(indent=2))
    from semisam.store import read_class_map

    classes = read_class_map(root)
    if classes.multiclass:
        (out / "classes.json").write_text(json.dumps(classes.to_attrs(), indent=2))
    log.info("round %d: %d of %d volumes exported to %s", round_index, report.written, len(ids),
             out)
    return report
