"""`semisam train`: the training stage (supervised + Mean Teacher + SAM consistency)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer
from pydantic import ValidationError
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from semisam.schemas import ConfigError, TrainConfig, first_validation_error, load_train_config

from ..cli_app import app, guard

_TERMS = ("loss", "ce", "dice", "mt", "sam", "lr")


class TrainBar:
    """A rich progress bar showing the loss terms; usable as a training ``on_step`` callback.

    A new run (an iteration lower than the last one seen) restarts the bar.
    """

    def __init__(self, progress: Progress, total: int) -> None:
        self.progress, self.total, self.last = progress, total, -1
        self.task = progress.add_task("train", total=total, terms="")

    def __call__(self, iteration: int, info: dict[str, float]) -> None:
        if iteration < self.last:
            self.progress.reset(self.task, total=self.total)
        self.last = iteration
        terms = "  ".join(f"{k} {info[k]:.4f}" if k != "lr" else f"lr {info[k]:.2e}"
                          for k in _TERMS if k in info)
        self.progress.update(self.task, completed=iteration + 1, terms=terms)


@contextlib.contextmanager
def train_bar(total: int, enabled: bool = True) -> Iterator:
    """``with train_bar(T) as on_step: train_student(..., on_step=on_step)``."""
    if not enabled:
        yield None
        return
    with Progress(TextColumn("[bold]train[/bold]"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[terms]}"), TimeElapsedColumn(), TimeRemainingColumn()) as progress:
        yield TrainBar(progress, total)


def train_config(config: Optional[Path], iterations: Optional[int], seed: Optional[int]) -> TrainConfig:
    """The config file (or the defaults) with ``--iterations`` / ``--seed`` applied."""
    cfg = load_train_config(config)
    data = cfg.model_dump(mode="json")
    if iterations is not None:
        data["iterations"] = iterations
    if seed is not None:
        data["seed"] = seed
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"option: {first_validation_error(exc)}") from None


@app.command()
@guard
def train(
    store: Annotated[str, typer.Argument(help="store directory or URL")],
    out: Annotated[Path, typer.Option(help="student checkpoint to write (resume state: OUT.state.pt)")],
    round_index: Annotated[Optional[int], typer.Option(
        "--round", help="train on this round's pseudo-labels too (SAM consistency)")] = None,
    config: Annotated[Optional[Path], typer.Option(help="training config JSON (schemas/training.py)")] = None,
    resume: Annotated[bool, typer.Option(help="continue from OUT.state.pt")] = False,
    init: Annotated[Optional[Path], typer.Option(help="start from this student's weights")] = None,
    iterations: Annotated[Optional[int], typer.Option(help="override the config's iterations")] = None,
    seed: Annotated[Optional[int], typer.Option(help="override the config's seed")] = None,
    progress: Annotated[bool, typer.Option(help="progress bar with the loss terms")] = True,
) -> None:
    """Train a student: supervised CE + Dice, Mean Teacher, and (with --round) SAM consistency."""
    from semisam.training import train_student

    cfg = train_config(config, iterations, seed)
    if init is not None and not init.is_file():
        raise ConfigError(f"{init}: student checkpoint file not found")
    with train_bar(cfg.iterations, progress) as bar:
        result = train_student(store, out, cfg, round_index=round_index, resume=resume, init=init,
                               on_step=bar)
    typer.echo(str(result.checkpoint))
