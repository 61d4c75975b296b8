"""The `semisam` command line: a thin typer layer over the library functions."""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from pydantic import ValidationError

from semisam.schemas import (
    ConfigError,
    MaskerKind,
    RoundConfig,
    SamFamily,
    SamType,
    SemisamError,
    first_validation_error,
    load_round_config,
)

from . import render

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="SAM-assisted pseudo-labels for semi-supervised 3D segmentation.")
log = logging.getLogger("semisam")
_state = {"debug": False}


def _guard(fn):
    """One-line error and exit 2 for user errors; traceback only with --debug."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SemisamError as exc:
            if _state["debug"]:
                raise
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="tracebacks and debug logs")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="warnings and errors only")] = False,
) -> None:
    _state["debug"] = debug
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@app.command()
@_guard
def ingest(
    sources: Annotated[list[Path], typer.Argument(help="files or folders (.nii/.nii.gz/.nrrd/.h5/.npy)")],
    store: Annotated[str, typer.Option(help="store directory or URL")],
    labels: Annotated[Optional[Path], typer.Option(help="folder of label files named like the images")] = None,
    labeled: Annotated[Optional[Path], typer.Option(help="text file: ids that count as labeled")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace volumes whose source changed")] = False,
    binarize: Annotated[bool, typer.Option(help="labels > 0 become 1 (multi-class sets)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable report")] = False,
) -> None:
    """Ingest volumes (and labels) into a store; re-ingesting the same file is a no-op."""
    from .ingest import ingest as ingest_fn

    report = ingest_fn(store, sources, labels_dir=labels, labeled=labeled, overwrite=overwrite,
                       binarize=binarize)
    render.ingest_report(report, as_json)
    if report.failed:
        raise typer.Exit(1)


def _round_config(config: Optional[Path], overrides: dict) -> RoundConfig:
    base = load_round_config(config).model_dump(mode="json")
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = base
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value.value if hasattr(value, "value") else value
    try:
        return RoundConfig.model_validate(base)
    except ValidationError as exc:
        raise ConfigError(f"option: {first_validation_error(exc)}") from None


@app.command("run-round")
@_guard
def run_round_cmd(
    store: Annotated[str, typer.Argument(help="store directory or URL")],
    round_index: Annotated[int, typer.Option("--round", help="round number r")],
    student: Annotated[Path, typer.Option(help="student checkpoint (.pt)")],
    config: Annotated[Optional[Path], typer.Option(help="round config JSON")] = None,
    masker: Annotated[Optional[MaskerKind], typer.Option(help="masker (default: config, random_walker)")] = None,
    sam_checkpoint: Annotated[Optional[Path], typer.Option(help="SAM/MedSAM state dict; implies --masker sam")] = None,
    sam_type: Annotated[Optional[SamType], typer.Option(help="SAM encoder size")] = None,
    sam_family: Annotated[Optional[SamFamily], typer.Option(help="preprocessing family")] = None,
    address: Annotated[Optional[str], typer.Option(help="Ray address (auto, ray://...); default: local Ray")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Ray worker actors")] = None,
    gpus_per_worker: Annotated[Optional[float], typer.Option(help="GPUs per worker (fractional allowed)")] = None,
    force: Annotated[bool, typer.Option(help="redo a round whose config/checkpoints changed")] = False,
    retry_failed: Annotated[bool, typer.Option(help="also redo volumes recorded as failed")] = False,
    progress: Annotated[bool, typer.Option(help="progress bar")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Produce pseudo-labels and confidence maps for every unlabeled volume (resumable)."""
    from .driver import run_round

    if sam_checkpoint is not None and masker is None:
        masker = MaskerKind.sam
    cfg = _round_config(config, {
        "masker.kind": masker, "masker.sam.checkpoint": str(sam_checkpoint) if sam_checkpoint else None,
        "masker.sam.model_type": sam_type, "masker.sam.family": sam_family,
        "runtime.workers": workers, "runtime.gpus_per_worker": gpus_per_worker,
    })
    if cfg.masker.kind == MaskerKind.sam and cfg.masker.sam.checkpoint is not None:
        if not Path(cfg.masker.sam.checkpoint).is_file():
            raise ConfigError(f"{cfg.masker.sam.checkpoint}: SAM checkpoint file not found")
    summary = run_round(store, round_index, student, cfg, address=address, force=force,
                        retry_failed=retry_failed, show_progress=progress and not as_json)
    render.round_summary(summary, as_json)
    if summary.failed or summary.pending:
        raise typer.Exit(1)


@app.command()
@_guard
def inspect(
    store: Annotated[str, typer.Argument(help="store directory or URL")],
    round_index: Annotated[Optional[int], typer.Option("--round", help="round to show")] = None,
    volume: Annotated[Optional[str], typer.Option(help="one volume id")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    png: Annotated[Optional[Path], typer.Option(help="write an overlay montage of --volume")] = None,
) -> None:
    """Show rounds, per-volume status, statistics and timings; optional overlay PNG."""
    from . import inspect as insp
    from semisam.store import open_store

    root = open_store(store, read_only=True)
    if round_index is None:
        render.overview(insp.store_overview(root, store), as_json)
        return
    summary = insp.summarize_round(root, round_index)
    if volume is not None:
        summary.volumes = [v for v in summary.volumes if v.volume_id == volume]
        if not summary.volumes:
            raise ConfigError(f"volume '{volume}': not an unlabeled volume of this store")
    render.round_summary(summary, as_json)
    if png is not None:
        vid = volume or next((v.volume_id for v in summary.volumes if v.status == "done"), None)
        if vid is None:
            raise ConfigError("--png: no finished volume to draw")
        path = insp.write_montage(root, round_index, vid, png)
        log.info("montage of %s written to %s", vid, path)


@app.command()
@_guard
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


@app.command()
@_guard
def demo(
    workdir: Annotated[Path, typer.Option(help="where the phantoms, store and checkpoints go")] = Path("demo-out"),
    volumes: Annotated[int, typer.Option(help="phantom volumes")] = 10,
    labeled: Annotated[int, typer.Option(help="how many of them are labeled")] = 2,
    iterations: Annotated[int, typer.Option(help="student training steps")] = 150,
    workers: Annotated[int, typer.Option(help="Ray workers")] = 2,
) -> None:
    """Phantoms -> ingest -> student -> one round on a local Ray -> inspect."""
    from .demo import run_demo

    result = run_demo(workdir, volumes=volumes, labeled=labeled, iterations=iterations, workers=workers)
    render.demo_result(result)
    if result.summary.failed or result.summary.pending:
        raise typer.Exit(1)


def main() -> None:
    app()
