"""`semisam loop`: student 0 -> round 1 -> student 1 -> ... -> student K, resumable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from semisam.schemas import AdaptConfig, load_loop_config

from ..cli_app import app, guard
from .train import train_bar

_console = Console()


@app.command()
@guard
def loop(
    store: Annotated[str, typer.Argument(help="store directory or URL")],
    rounds: Annotated[int, typer.Option(help="pseudo-label rounds K (students 0..K)")],
    config: Annotated[Optional[Path], typer.Option(
        help='loop config JSON: {"train": {...}, "round": {...}, "warm_start": false}')] = None,
    workdir: Annotated[Optional[Path], typer.Option(
        help="students, resume states, loop.json and the table (default STORE.loop)")] = None,
    holdout: Annotated[Optional[str], typer.Option(
        help="held-out ids of STORE (file, one per line, or comma-separated): never trained on, "
             "evaluated after each student")] = None,
    eval_store: Annotated[Optional[str], typer.Option(
        help="a separate store to evaluate each student on (all its volumes with ground truth)")] = None,
    address: Annotated[Optional[str], typer.Option(help="Ray address; default: a local Ray")] = None,
    embedding_cache: Annotated[Optional[Path], typer.Option(
        help="LiteMedSAM rounds: keep image embeddings in this directory (4 MiB a slice) so "
             "rounds 2..K skip the image encoder")] = None,
    adapt: Annotated[bool, typer.Option(
        help="adapt the masker (LiteMedSAM) to the labeled volumes before each round "
             "(the config's 'adapt' section, default settings if it has none)")] = False,
    progress: Annotated[bool, typer.Option(help="progress bars")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the loop state as JSON")] = False,
) -> None:
    """Alternate training and pseudo-labelling; rerun the same command to resume."""
    from ..evaluate import read_volume_list
    from ..loop import run_loop, table_lines

    cfg = load_loop_config(config)
    if adapt and cfg.adapt is None:
        cfg.adapt = AdaptConfig()
    if embedding_cache is not None:
        cfg.round.masker.litemedsam.embedding_cache = embedding_cache
    ids = read_volume_list(holdout) if holdout else None
    with train_bar(cfg.train.iterations, progress and not as_json) as bar:
        state = run_loop(store, rounds, cfg, workdir, ids, eval_store, address,
                         show_progress=progress and not as_json, on_step=bar)
    if as_json:
        typer.echo(json.dumps(state.model_dump(mode="json"), indent=2))
        return
    for line in table_lines(state):
        _console.print(line, markup=False)
