"""`semisam inspect`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from semisam.schemas import ConfigError

from .. import render
from ..cli_app import app, guard

log = logging.getLogger(__name__)


@app.command()
@guard
def inspect(
    store: Annotated[str, typer.Argument(help="store directory or URL")],
    round_index: Annotated[Optional[int], typer.Option("--round", help="round to show")] = None,
    volume: Annotated[Optional[str], typer.Option(help="one volume id")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    png: Annotated[Optional[Path], typer.Option(help="write an overlay montage of --volume")] = None,
) -> None:
    """Rounds, per-volume status with reasons, statistics and timings; optional overlay PNG."""
    from semisam.store import open_store

    from .. import inspect as insp

    root = open_store(store, read_only=True)
    if round_index is None:
        render.overview(insp.store_overview(root, store), as_json)
        return
    summary = insp.summarize_round(root, round_index)
    if summary.status is None:
        raise ConfigError(f"round {round_index}: not in {store}")
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
