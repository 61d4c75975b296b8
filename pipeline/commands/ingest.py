"""`semisam ingest`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..cli_app import app, guard
from ..presentation import render


@app.command()
@guard
def ingest(
    sources: Annotated[list[Path], typer.Argument(help="files or folders (.nii/.nii.gz/.nrrd/.h5/.npy)")],
    store: Annotated[str, typer.Option(help="store directory or URL")],
    labels: Annotated[Optional[Path], typer.Option(help="folder of label files named like the images")] = None,
    labeled: Annotated[Optional[Path], typer.Option(help="text file: ids that count as labeled")] = None,
    allow_missing_labeled: Annotated[bool, typer.Option(
        help="ingest even if --labeled names ids that no source has (refused by default)")] = False,
    overwrite: Annotated[bool, typer.Option(help="replace volumes whose source changed")] = False,
    binarize: Annotated[bool, typer.Option(help="labels > 0 become 1 (one structure from a multi-class set)")] = False,
    classes: Annotated[Optional[str], typer.Option(
        help="keep label values as classes: VALUE=NAME pairs (1=anterior,2=posterior), a JSON "
        "file {\"1\": \"anterior\"}, or 'auto' (names class_<v>)")] = None,
    record_paths: Annotated[bool, typer.Option(
        help="record each source's absolute path in the store (default: its file name and "
        "sha256 only; hospital paths name people and sites)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable report")] = False,
) -> None:
    """Ingest volumes (and labels) into a store; re-ingesting the same file is a no-op."""
    from semisam.schemas import parse_classes

    from ..image_io import collect_sources
    from ..ingest import ingest as ingest_fn

    class_map = None if classes is None else "auto" if classes == "auto" else parse_classes(classes)
    total = len(collect_sources(sources)) if not as_json else 0
    with render.count_bar("ingest", total, enabled=not as_json) as tick:
        report = ingest_fn(store, sources, labels_dir=labels, labeled=labeled, overwrite=overwrite,
                           binarize=binarize, on_volume=tick, classes=class_map,
                           allow_missing_labeled=allow_missing_labeled, record_paths=record_paths)
    render.ingest_report(report, as_json)
    if report.failed:
        raise typer.Exit(1)
