"""`semisam adapt`: tune the masker on the store's labeled volumes (resumable)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from semisam.schemas import ConfigError, load_adapt_config, load_round_config

from ..cli_app import app, guard
from .train import train_bar


@app.command()
@guard
def adapt(
    store: Annotated[str, typer.Argument(help="store directory or URL")],
    out: Annotated[Path, typer.Option(help="adapted masker checkpoint to write (.pth; resume "
                                           "state: OUT.state.pt); a round loads it with "
                                           "--masker-checkpoint")],
    config: Annotated[Optional[Path], typer.Option(
        help="adaptation config JSON (schemas/adaptation.py)")] = None,
    round_config: Annotated[Optional[Path], typer.Option(
        help="the round config the masker is for (masker, intensity window, slice axes)")] = None,
    pseudo_labels: Annotated[Optional[int], typer.Option(
        "--pseudo-labels", help="also adapt on this round's most confident pseudo-labels")] = None,
    embedding_cache: Annotated[Optional[Path], typer.Option(
        help="keep image embeddings in this directory (shared with rounds)")] = None,
    iterations: Annotated[Optional[int], typer.Option(help="override the config's iterations")] = None,
    seed: Annotated[Optional[int], typer.Option(help="override the config's seed")] = None,
    resume: Annotated[bool, typer.Option(help="continue from OUT.state.pt")] = False,
    progress: Annotated[bool, typer.Option(help="progress bar with the loss terms")] = True,
) -> None:
    """Fine-tune the masker (LiteMedSAM) on the labeled volumes' slices with round-like boxes."""
    cfg = load_adapt_config(config).model_copy(deep=True)
    data = cfg.model_dump(mode="json")
    for key, value in (("iterations", iterations), ("seed", seed)):
        if value is not None:
            data[key] = value
    if embedding_cache is not None:
        data["embedding_cache"] = str(embedding_cache)
    if pseudo_labels is not None:
        data["pseudo_labels"] = {**(data.get("pseudo_labels") or {}), "round": pseudo_labels}
    cfg = _validated(data)
    if out.is_dir():
        raise ConfigError(f"{out}: --out names a directory; give a file such as adapted.pth")
    from semisam.training.adaptation import adapt_masker  # torch loads once options are valid

    with train_bar(cfg.iterations, progress) as bar:
        result = adapt_masker(store, out, cfg, load_round_config(round_config), resume=resume,
                              on_step=bar)
    meta = result.meta
    checked = (f"held-out Dice {_fmt(meta.held_out_dice_base)} -> {_fmt(meta.held_out_dice)}, "
               f"step {meta.best_iteration} of {meta.iterations}" if meta.held_out else
               f"no held-out slices: the last of {meta.iterations} steps kept")
    typer.echo(f"{result.checkpoint}  ({checked}, {meta.seconds:.0f} s, lr {meta.config.lr:g})")


def _validated(data: dict):
    from pydantic import ValidationError

    from semisam.schemas import AdaptConfig, first_validation_error

    try:
        return AdaptConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"option: {first_validation_error(exc)}") from None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
