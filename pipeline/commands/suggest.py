"""`semisam suggest`."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from ..cli_app import app, guard


@app.command()
@guard
def suggest(
    store: Annotated[str, typer.Argument(help="store directory or URL")],
    round_index: Annotated[Optional[int], typer.Option(
        "--round", help="round whose measurements rank the volumes (default: the last one)")] = None,
    k: Annotated[int, typer.Option("-k", help="how many volumes to suggest (0: all)")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable list")] = False,
) -> None:
    """Which unlabeled volumes to label next: score = (1 - student-masker Dice) + (1 - mean
    confidence over the pseudo-label's foreground) + (1 if the masker was rejected)."""
    from semisam.store import open_store

    from ..suggest import suggest as suggest_fn

    r, picks = suggest_fn(open_store(store, read_only=True), round_index, k)
    if as_json:
        typer.echo(json.dumps({"round": r, "suggestions": [p.model_dump() for p in picks]}, indent=2))
        return
    typer.echo(f"round {r}: label these {len(picks)} volumes next (highest score first)")
    typer.echo(f"{'rank':>4}  {'volume':<24} {'score':>6} {'disagree':>8} {'uncert':>6} {'rejected':>8}")
    for p in picks:
        typer.echo(f"{p.rank:>4}  {p.volume_id:<24} {p.score:6.3f} {p.disagreement:8.3f} "
                   f"{p.uncertainty:6.3f} {p.rejected:8.0f}")
