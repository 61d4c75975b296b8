"""`semisam demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..cli_app import app, guard
from ..presentation import render


@app.command()
@guard
def demo(
    workdir: Annotated[Path, typer.Option(help="where phantoms, store and checkpoints go")] = Path("demo-out"),
    volumes: Annotated[int, typer.Option(help="phantom volumes")] = 10,
    labeled: Annotated[int, typer.Option(help="how many of them are labeled")] = 2,
    iterations: Annotated[int, typer.Option(help="student training steps")] = 150,
    workers: Annotated[int, typer.Option(help="Ray workers")] = 2,
) -> None:
    """Phantoms -> ingest -> student -> one round on a local Ray -> inspect."""
    from ..demo import run_demo

    result = run_demo(workdir, volumes=volumes, labeled=labeled, iterations=iterations, workers=workers)
    render.demo_result(result)
    if result.summary.failed or result.summary.pending:
        raise typer.Exit(1)
