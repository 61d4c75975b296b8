"""`semisam inspect`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from semisam.schemas import ConfigError

from ..cli_app import app, guard
from ..presentation import render

log = logging.getLogger(__name__)


@app.command()
@guard
def inspect(
    store: Annotated[str, typer.Argument(help="store directory or URL")],
    round_index: Annotated[Optional[int], typer.Option("--round", help="round to show")] = None,
    volume: Annotated[Optional[str], typer.Option(help="one volume id")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    png: Annotated[Optional[Path], typer.Option(help="write an overlay montage of --volume")] = None,
    worst: Annotated[Optional[int], typer.Option(
        help="rank the K volumes most in need of review")] = None,
    png_dir: Annotated[Optional[Path], typer.Option(
        help="with --worst: overlay PNGs into this folder")] = None,
    verify: Annotated[bool, typer.Option(
        "--verify", help="re-read every array of --round R and check it against its recorded checksum")] = False,
) -> None:
    """Rounds, per-volume status with reasons, statistics and timings; optional overlay PNG."""
    from semisam.store import open_store

    from ..presentation import inspect as insp

    if worst is not None and round_index is None:
        raise ConfigError("--worst needs --round R")
    if verify and round_index is None:
        raise ConfigError("--verify needs --round R")
    root = open_store(store, read_only=True)
    if verify:
        _verify(root, store, round_index, as_json)
        return
    if round_index is None:
        render.overview(insp.store_overview(root, store), as_json)
        return
    summary = insp.summarize_round(root, round_index)
    if summary.status is None:
        raise ConfigError(f"round {round_index}: not in {store}")
    if png_dir is not None and worst is None:
        raise ConfigError("--png-dir needs --worst K")
    if worst is not None:
        from ..presentation import review

        items = review.worst_volumes(root, round_index, worst, png_dir)
        review.print_review(items, round_index, as_json)
        return
    if volume is not None:
        summary.volumes = [v for v in summary.volumes if v.volume_id == volume]
        if not summary.volumes:
            raise ConfigError(f"volume '{volume}': not an unlabeled volume of {store}")
    render.round_summary(summary, as_json)
    if png is not None:
        vid = volume or next((v.volume_id for v in summary.volumes if v.status.value == "done"), None)
        if vid is None:
            raise ConfigError("--png: no finished volume to draw")
        path = insp.write_montage(root, round_index, vid, png)
        log.info("montage of %s written to %s", vid, path)


def _verify(root, store: str, round_index: int, as_json: bool) -> None:
    """``--verify``: one line per problem (stdout), the totals; exit 1 when anything is wrong."""
    import json

    from ..presentation.verify import verify_round

    report = verify_round(root, store, round_index)
    if as_json:
        typer.echo(json.dumps(report.model_dump(mode="json"), indent=2))
    else:
        for line in report.lines():
            typer.echo(line)
    if not report.ok:
        raise typer.Exit(1)
