"""`semisam export`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..cli_app import app, guard
from ..export.records import ExportFormat


@app.command()
@guard
def export(
    store: Annotated[str, typer.Argument(help="store directory or URL")],
    round_index: Annotated[int, typer.Option("--round", help="round to export")],
    to: Annotated[str, typer.Option(
        "--to", help="output directory (ome-zarr: also an fsspec URL, e.g. s3://bucket/out)")],
    fmt: Annotated[ExportFormat, typer.Option(
        "--format", help="nifti (ITK-SNAP, Slicer), ome-zarr (NGFF 0.5 for napari, "
        "Neuroglancer), dicom-seg (volumes ingested from DICOM)")] = ExportFormat.nifti,
    volume: Annotated[
        list[str] | None, typer.Option(help="only these volume ids (repeatable)")] = None,
    oblique: Annotated[str, typer.Option(
        help="ome-zarr, affines NGFF 0.5 cannot express (rotated, flipped): 'scale-only' "
             "writes the voxel frame with the true spacing, 'refuse' stops")] = "scale-only",
    levels: Annotated[int | None, typer.Option(
        help="ome-zarr: pyramid levels (default: halve to about 32 voxels)")] = None,
    record_paths: Annotated[bool, typer.Option(
        "--record-paths", help="ome-zarr: record the source's absolute path (off: file name "
                               "and sha256 only)")] = False,
    dicom_source: Annotated[Path | None, typer.Option(
        help="dicom-seg: folder holding the source series (or their parent folder) when "
             "they moved since ingest")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Pseudo-labels and confidence maps of a round as NIfTI files with the source geometry,
    as OME-Zarr images with labels, or as DICOM-SEG objects referencing the source series."""
    from pydantic import ValidationError

    from semisam.schemas import ConfigError, first_validation_error
    from semisam.store import open_store

    from ..export.formats import export_options
    from ..export.nifti import export_round

    try:
        options = export_options(fmt, oblique=oblique, levels=levels, record_paths=record_paths,
                                 dicom_source=dicom_source)
    except ValidationError as exc:
        raise ConfigError(f"option: {first_validation_error(exc)}") from None
    if "://" not in to and Path(to).exists() and not Path(to).is_dir():
        raise ConfigError(f"--to {to}: exists and is not a directory (export writes a folder)")
    root = open_store(store, read_only=True)
    report = export_round(root, round_index, to, fmt=fmt, volumes=volume or None, store=store,
                          options=options)
    if as_json:
        typer.echo(json.dumps(report.model_dump(mode="json"), indent=2))
    else:
        skipped = [v for v in report.volumes if not v.written]
        typer.echo(f"round {round_index}: {report.written} volumes exported to {report.out_dir}"
                   + (f", {len(skipped)} skipped" if skipped else ""))
        for v in skipped:
            typer.echo(f"  skipped {v.volume_id}: {v.reason}")
