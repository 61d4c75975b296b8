"""`semisam train` (supervised round-0 student; the SemiSAM stage extends it)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import render
from ..cli_app import app, guard


@app.command()
@guard
def train(
    store: Annotated[str, typer.Argument(help="store directory or URL")],
    out: Annotated[Path, typer.Option(help="student checkpoint to write")],
    iterations: Annotated[int, typer.Option(help="optimizer steps")] = 200,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
) -> None:
    """Fit a student on the store's labeled volumes (supervised CE + Dice)."""
    from semisam.training import fit_supervised

    with render.step_bar("training", iterations) as bar:
        fit_supervised(store, out, iterations=iterations, seed=seed, on_step=bar)
    typer.echo(str(out))
