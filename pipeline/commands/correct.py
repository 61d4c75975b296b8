"""`semisam correct`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..cli_app import app, guard


@app.command()
@guard
def correct(
    store: Annotated[str, typer.Argument(help="store directory or URL")],
    sources: Annotated[list[Path], typer.Argument(
        help="corrected label files named <volume id>.nii.gz (.nii, .nrrd), or folders of them "
        "(an `export` folder: its pseudo_label/ is searched)")],
    round_index: Annotated[Optional[int], typer.Option(
        "--round", help="round whose pseudo-labels were corrected (default: the last round "
        "with a finished pseudo-label of each volume)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable report")] = False,
) -> None:
    """Bring labels corrected in ITK-SNAP/Slicer back: each volume becomes labeled (geometry
    checked against the stored image, provenance recorded); a rerun changes nothing."""
    from semisam.store import open_store

    from ..corrections import apply_corrections

    done = apply_corrections(open_store(store), sources, round_index)
    if as_json:
        typer.echo(json.dumps([d.model_dump(mode="json") for d in done], indent=2))
        return
    for d in done:
        c = d.correction
        changed = "" if c.changed_voxels is None else f", {c.changed_voxels} voxels changed"
        source = f"round {c.round}" if c.round is not None else "no round"
        typer.echo(f"{d.volume_id}: {d.status.value} ({c.source_name} from {source}{changed})")
    counts = {s: sum(d.status.value == s for d in done) for s in ("added", "replaced", "unchanged")}
    typer.echo("labeled from corrections: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
