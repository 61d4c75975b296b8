"""`export --format ome-zarr | dicom-seg`: the per-volume writers of `export_ome` and
`dicom_seg` behind `export.export_round`, and their report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semisam.schemas import CONFIDENCE_SCALE, InputError

from .ngff import OBLIQUE_REFUSE, ngff_geometry

if TYPE_CHECKING:
    import zarr

    from .records import ExportFormat, ExportReport

log = logging.getLogger(__name__)


def _check_geometry(root: zarr.Group, ids: list[str]) -> None:
    """`InputError` for the first volume whose affine NGFF 0.5 cannot express."""
    import numpy as np

    from semisam.store import read_meta

    for vid in ids:
        ngff_geometry(np.asarray(read_meta(root, vid).affine), oblique=OBLIQUE_REFUSE,
                      where=f"volume '{vid}'")


def export_options(fmt: ExportFormat, *, oblique: str = "scale-only", levels: int | None = None,
                   record_paths: bool = False, dicom_source: Path | None = None,
                   ) -> dict[str, Any] | None:
    """The validated options of ``fmt`` (raises pydantic's ValidationError)."""
    from .ome import OmeExportOptions
    from .records import ExportFormat

    if fmt is ExportFormat.ome_zarr:
        return OmeExportOptions(oblique=oblique, levels=levels,
                                record_paths=record_paths).model_dump()
    if fmt is ExportFormat.dicom_seg:
        from .dicom_seg import DicomSegOptions

        return DicomSegOptions(source=dicom_source).model_dump()
    return None


def export_round_as(root: zarr.Group, round_index: int, out: str, *, ids: list[str],
                    fmt: ExportFormat, fingerprint: str, store: str,
                    options: dict[str, Any] | None) -> ExportReport:
    """Write volumes ``ids`` of a round in ``fmt`` under ``out`` (a folder; for ``ome-zarr``
    also an fsspec URL) and ``out/export.json``.

    Raises:
        InputError: a volume the format cannot express (an oblique affine with
            ``oblique="refuse"``; a volume not ingested from DICOM for ``dicom-seg``), or an
            invalid option.
        ConfigError: ``dicom-seg`` without highdicom installed.
    """
    from semisam.store import is_url

    from .ome import OmeExportOptions, export_volume_ome, write_text
    from .records import ExportFormat, ExportReport

    if fmt is ExportFormat.ome_zarr:
        ome = OmeExportOptions.model_validate(options or {})
        if ome.oblique == OBLIQUE_REFUSE:  # refuse before anything is written
            _check_geometry(root, ids)
        encoding = f"uint8 as stored: value/{CONFIDENCE_SCALE} in [0, 1]"

        def write(vid: str):
            return export_volume_ome(root, round_index, vid, out, fingerprint=fingerprint,
                                     options=ome)
    else:
        from .dicom_seg import DicomSegOptions, check_dicom_volumes, export_volume_seg

        seg = DicomSegOptions.model_validate(options or {})
        if is_url(out):
            raise InputError(f"--to {out}: DICOM-SEG export writes local files")
        encoding = "not exported (DICOM-SEG holds the pseudo-label only)"
        seg.check_available()
        check_dicom_volumes(root, ids)

        def write(vid: str):
            return export_volume_seg(root, round_index, vid, out, options=seg)
    report = ExportReport(store=store, round=round_index, fingerprint=fingerprint,
                          out_dir=out, format=fmt, confidence_encoding=encoding)
    for vid in ids:
        item = write(vid)
        report.volumes.append(item)
        log.info("%s: %s", vid, "exported" if item.written else f"skipped, {item.reason}")
    write_text(out, "export.json", report.model_dump_json(indent=2))
    log.info("round %d: %d of %d volumes exported to %s as %s", round_index, report.written,
             len(ids), out, fmt.value)
    return report
