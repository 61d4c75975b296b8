"""`semisam report`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..cli_app import app, guard


@app.command()
@guard
def report(
    store: Annotated[str, typer.Argument(help="store directory or URL")],
    out: Annotated[Path, typer.Option("--out", help="HTML file to write")] = Path("report.html"),
    round_index: Annotated[Optional[int], typer.Option(
        "--round", help="round to report (default: the last one)")] = None,
    worst: Annotated[int, typer.Option(help="montages of the K volumes most in need of review")] = 6,
    loop_state: Annotated[Optional[Path], typer.Option(
        help="a `semisam loop` workdir or its loop.json (default: STORE.loop/ if there)")] = None,
    student_panels: Annotated[bool, typer.Option(
        help="recompute the student's panel of each montage from the round's checkpoint")] = True,
) -> None:
    """One self-contained HTML page about a round: summary, sortable per-volume table,
    distributions, the worst montages, Dice per round."""
    from ..presentation.report import write_report

    path = write_report(store, out, round_index, worst=worst, loop_state=loop_state,
                        student_panels=student_panels)
    typer.echo(f"report written to {path.resolve()} (open file://{path.resolve()})")
