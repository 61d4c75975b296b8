"""`semisam export`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..cli_app import app, guard
from ..export import ExportFormat


@app.command()
@guard
def export(
    store: Annotated[str, typer.Argument(help="store directory or URL")],
    round_index: Annotated[int, typer.Option("--round", help="round to export")],
    to: Annotated[Path, typer.Option("--to", help="output directory")],
    fmt: Annotated[ExportFormat, typer.Option("--format", help="file format")] = ExportFormat.nifti,
    volume: Annotated[
        list[str] | None, typer.Option(help="only these volume ids (repeatable)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Pseudo-labels and confidence maps of a round as NIfTI files with the source geometry."""
    from semisam.store import open_store

    from ..export import export_round

    root = open_store(store, read_only=True)
    report = export_round(root, round_index, to, fmt=fmt, volumes=volume or None, store=store)
    if as_json:
        typer.echo(json.dumps(report.model_dump(mode="json"), indent=2))
    else:
        skipped = [v for v in report.volumes if not v.written]
        typer.echo(f"round {round_index}: {report.written} volumes exported to {report.out_dir}"
                   + (f", {len(skipped)} skipped" if skipped else ""))
        for v in skipped:
            typer.echo(f"  skipped {v.volume_id}: {v.reason}")
