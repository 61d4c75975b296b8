"""`semisam run-round`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from semisam.schemas import (
    ConfigError,
    MaskerKind,
    RoundConfig,
    SamFamily,
    SamType,
    load_round_config,
)
from semisam.workers.maskers.registry import masker_spec

from ..cli_app import app, guard
from ..presentation import render


def round_config(config: Optional[Path], overrides: dict) -> RoundConfig:
    """The config file (or defaults) with the command-line options applied on top
    (`RoundConfig.with_overrides`; dotted field path -> value, None values left alone)."""
    return load_round_config(config).with_overrides(overrides)


@app.command("run-round")
@guard
def run_round_cmd(
    store: Annotated[str, typer.Argument(help="store directory or URL")],
    round_index: Annotated[int, typer.Option("--round", help="round number r")],
    student: Annotated[Path, typer.Option(help="student checkpoint (.pt)")],
    config: Annotated[Optional[Path], typer.Option(help="round config JSON")] = None,
    masker: Annotated[Optional[str], typer.Option(
        help="litemedsam (default: trained weights bundled), sam (vit_b/l/h: needs "
             "--masker-checkpoint), random_walker (weight-free) or a kind a masker plugin "
             "registers (docs/masker-plugins.md)")] = None,
    masker_checkpoint: Annotated[Optional[Path], typer.Option(
        "--masker-checkpoint", "--sam-checkpoint",
        help="checkpoint of the SAM-family masker: a fine-tuned LiteMedSAM .pth, or with "
             "--sam-type/--sam-family (which imply --masker sam) a SAM/MedSAM state dict")] = None,
    sam_type: Annotated[Optional[SamType], typer.Option(help="SAM encoder size; implies --masker sam")] = None,
    sam_family: Annotated[Optional[SamFamily], typer.Option(
        help="SAM preprocessing family; implies --masker sam")] = None,
    embedding_cache: Annotated[Optional[Path], typer.Option(
        help="LiteMedSAM: keep image embeddings in this directory (4 MiB a slice); a later "
             "round over the same volumes skips the image encoder")] = None,
    address: Annotated[Optional[str], typer.Option(help="Ray address (auto, ray://...); default: a local Ray")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Ray worker actors")] = None,
    gpus_per_worker: Annotated[Optional[float], typer.Option(help="GPUs per worker (fractional allowed)")] = None,
    force: Annotated[bool, typer.Option(help="redo a round whose config/checkpoints changed")] = False,
    retry_failed: Annotated[bool, typer.Option(help="also redo volumes recorded as failed")] = False,
    break_lock: Annotated[bool, typer.Option(
        help="take the round's lock even if its holder looks alive (its host is gone)")] = False,
    progress: Annotated[bool, typer.Option(help="progress bar")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Produce pseudo-labels and confidence maps for every unlabeled volume (resumable)."""
    if (sam_type is not None or sam_family is not None) and masker is None:
        masker = MaskerKind.sam
    cfg = round_config(config, {
        "masker.kind": masker, "masker.sam.model_type": sam_type, "masker.sam.family": sam_family,
        "runtime.workers": workers, "runtime.gpus_per_worker": gpus_per_worker,
        "masker.litemedsam.embedding_cache": str(embedding_cache) if embedding_cache else None,
    })
    spec = masker_spec(cfg.masker.kind)
    if masker_checkpoint is not None:
        spec.set_checkpoint(cfg.masker, masker_checkpoint)
    ckpt = spec.given_checkpoint(cfg.masker)
    if ckpt is not None and not Path(ckpt).is_file():
        raise ConfigError(f"{ckpt}: {cfg.masker.kind} checkpoint file not found")
    if not student.is_file():
        raise ConfigError(f"{student}: student checkpoint file not found")
    from ..rounds.driver import run_round  # Ray and torch load only once the options are valid

    summary = run_round(store, round_index, student, cfg, address=address, force=force,
                        retry_failed=retry_failed, show_progress=progress and not as_json,
                        break_lock=break_lock)
    render.round_summary(summary, as_json)
    if summary.failed or summary.pending:
        raise typer.Exit(1)
