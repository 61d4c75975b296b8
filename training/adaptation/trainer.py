"""`adapt_masker`: tune a masker's decoder side on the store's labeled slices (resumable).

Steps: encode every example slice once with the frozen image encoder (through the round's
embedding cache when one is set; up to the tuned stage for the encoder targets); hold out a
contiguous block of each labeled track's structure slices; train what ``config.target`` names
(the prompt encoder + mask decoder by default; `AdaptTarget`) with AdamW on
batches of round-like boxes (`boxes.sample_box`); every ``eval_every`` steps score the held-out
slices with fixed boxes and keep the best state; stop after ``patience`` evaluations without a
better score; write the best state as a checkpoint the masker kind loads (`Adaptable.export`).

The resume state ``OUT.state.pt`` (every ``checkpoint_every`` steps and on interruption) holds
the model, optimizer, best state, counters and random states, as tensors and plain values, so
it loads with ``weights_only=True``; a resumed run ends where an uninterrupted one does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from semisam.schemas import AdaptationMeta, AdaptConfig, ConfigError, RoundConfig, utcnow
from semisam.workers.maskers import build_masker, masker_spec
from semisam.workers.maskers.adaptable import Adaptable

from .data import AdaptationData, load_adaptation_data
from .objective import adaptation_loss
from .state import load_resume_state, resume_path, save_resume_state, tuned_state

logger = logging.getLogger(__name__)

__all__ = ["AdaptResult", "adapt_masker"]

StepCallback = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class AdaptResult:
    """What `adapt_masker` wrote and measured."""

    checkpoint: Path
    meta: AdaptationMeta

    @property
    def seconds(self) -> float:
        return self.meta.seconds


def _masker(round_config: RoundConfig, device: torch.device) -> Adaptable:
    masker = build_masker(round_config.masker, device)
    if not isinstance(masker, Adaptable):
        raise ConfigError(f"field 'masker.kind': masker {round_config.masker.kind!r} "
                          "cannot be adapted (litemedsam can)")
    return masker


def _batch(masker: Adaptable, data: AdaptationData, config: AdaptConfig,
           rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
    """One training batch: low-res logits, IoUs, targets, validity."""
    rows, prompts, hws, targets, valid = data.sample(config, rng)
    logits, iou = masker.decode_lowres(masker.embed(data.embeddings[rows], data.target),
                                       prompts, hws)
    return logits, iou, targets, valid


def _train_steps(masker: Adaptable, data: AdaptationData, config: AdaptConfig,
                 optimizer: torch.optim.Optimizer, state: dict, out: Path,
                 on_step: StepCallback | None) -> None:
    """Steps from ``state['iteration']`` to the end or early stop; updates ``state``."""
    rng = state["rng"]
    while state["iteration"] < config.iterations and state["stale"] < config.patience:
        masker.set_training(True)
        logits, iou, targets, valid = _batch(masker, data, config, rng)
        loss, terms = adaptation_loss(logits, iou, targets, valid, config.iou_loss_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        state["iteration"] += 1
        info = {"loss": loss.item(), **terms}
        if data.has_validation and state["iteration"] % config.eval_every == 0:
            score = data.validate(masker)
            info["held_out_dice"] = score
            if score > state["best_dice"]:
                state.update(best_dice=score, best_iteration=state["iteration"], stale=0,
                             best_state=tuned_state(masker, config.target.value))
            else:
                state["stale"] += 1
        if on_step is not None:
            on_step(state["iteration"] - 1, info)
        if state["iteration"] % config.checkpoint_every == 0:
            save_resume_state(resume_path(out), masker, optimizer, state)


def _with_cache(config: AdaptConfig, round_config: RoundConfig) -> RoundConfig:
    """``round_config`` with ``config.embedding_cache`` set in its masker's section when the
    adaptation names a cache and the masker kind keeps one (a copy; else ``round_config``)."""
    section = masker_spec(round_config.masker.kind).section
    if (config.embedding_cache is None
            or "embedding_cache" not in type(getattr(round_config.masker, section)).model_fields):
        return round_config
    round_config = round_config.model_copy(deep=True)
    getattr(round_config.masker, section).embedding_cache = config.embedding_cache
    return round_config


def _resolved(config: AdaptConfig, labeled: int) -> AdaptConfig:
    """``config`` with its learning rate and held-out share for ``labeled`` volumes
    (`AdaptConfig.resolved`) written in, so that the resume state and the checkpoint's meta
    record what was used."""
    resolved = config.resolved(labeled)
    if resolved != config:
        logger.info("adaptation lr %g, held-out share %g, loose boxes %g (%d labeled volume(s)%s)",
                    resolved.lr, resolved.holdout_fraction, resolved.box.loose_prob, labeled,
                    "; no early stopping" if not resolved.holdout_fraction else "")
    return resolved


def _optimizer(masker: Adaptable, config: AdaptConfig) -> torch.optim.Optimizer:
    """AdamW over the parameters ``config.target`` trains; every other parameter frozen."""
    params = masker.trainable_parameters(config.target.value)
    for p in masker.model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    assert config.lr is not None, "resolved by _resolved"
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def _initial_state(masker: Adaptable, data: AdaptationData, config: AdaptConfig,
                   base: float | None, start: float) -> dict:
    """A fresh run's state: step 0, the frozen masker as the best so far (its held-out Dice
    ``base``, -1 without held-out slices), the seeded generator; ``start`` from perf_counter."""
    return {"iteration": 0, "stale": 0, "best_iteration": 0, "elapsed": 0.0, "start": start,
            "config": config, "fingerprint": data.fingerprint,
            "best_dice": base if base is not None else -1.0,
            "best_state": tuned_state(masker, config.target.value), "rng": np.random.default_rng(config.seed)}


def _resume_if_asked(resume: bool, out: Path, masker: Adaptable,
                     optimizer: torch.optim.Optimizer, state: dict) -> None:
    """With ``resume`` and a resume state at ``OUT.state.pt``, load it into the masker, the
    optimizer and ``state`` (its config and store must match: `load_resume_state`)."""
    path = resume_path(out)
    if resume and path.is_file():
        load_resume_state(path, masker, optimizer, state)
        logger.info("resumed adaptation at step %d from %s", state["iteration"], path)


def _train(masker: Adaptable, data: AdaptationData, config: AdaptConfig,
           optimizer: torch.optim.Optimizer, state: dict, out: Path,
           on_step: StepCallback | None) -> None:
    """`_train_steps`, writing the resume state before an interruption propagates."""
    try:
        _train_steps(masker, data, config, optimizer, state, out, on_step)
    except KeyboardInterrupt:
        save_resume_state(resume_path(out), masker, optimizer, state)
        raise


def _meta(store: str | Path, kind: str, masker: Adaptable, data: AdaptationData,
          config: AdaptConfig, state: dict, base: float | None, start: float) -> AdaptationMeta:
    """The adapted checkpoint's record: base weights, store, examples, steps, held-out Dice
    before (``base``) and after, seconds (resumed runs included) since ``start``."""
    base_path, base_sha = masker.base_checkpoint()
    return AdaptationMeta(
        kind=kind, base_checkpoint=base_path.name, base_sha256=base_sha,
        store=str(store), store_fingerprint=data.fingerprint, labeled=data.labeled,
        pseudo_labeled=data.pseudo_labeled, examples=data.train_count,
        held_out=data.held_out_count, iterations=state["iteration"],
        best_iteration=state["best_iteration"] if data.has_validation else state["iteration"],
        held_out_dice_base=base, held_out_dice=state["best_dice"] if base is not None else None,
        seconds=round(state["elapsed"] + time.perf_counter() - start, 1), config=config,
        created_at=utcnow())


def _export(masker: Adaptable, out: Path, meta: AdaptationMeta) -> None:
    """Write the adapted checkpoint with ``meta`` and remove the resume state."""
    masker.export(out, meta.model_dump(mode="json"))
    resume_path(out).unlink(missing_ok=True)
    logger.info("adapted %s on %d labeled volume(s) in %.0f s: held-out Dice %s -> %s (step %d); "
                "wrote %s", meta.kind, len(meta.labeled), meta.seconds,
                _fmt(meta.held_out_dice_base), _fmt(meta.held_out_dice), meta.best_iteration, out)


def adapt_masker(store: str | Path, out: Path, config: AdaptConfig | None = None,
                 round_config: RoundConfig | None = None, resume: bool = False,
                 on_step: StepCallback | None = None, device: str | torch.device = "cpu"
                 ) -> AdaptResult:
    """Adapt the round's masker (``round_config.masker``, default LiteMedSAM with its bundled
    weights) to the store's labeled volumes and write it to ``out``.

    Args:
        store: the store (local directory or URL).
        out: the adapted checkpoint to write (resume state: ``OUT.state.pt``).
        config: adaptation settings (defaults: `AdaptConfig`).
        round_config: the round it is for: its masker, intensity window and slice axes.
        resume: continue from ``OUT.state.pt`` (its config and store must match).
        on_step: called after each step with ``(iteration, terms)``.
        device: where the masker runs.

    Raises:
        ConfigError: the masker kind cannot be adapted, or the store has no labeled volume.
        CheckpointError: the resume state does not fit this run.
    """
    config = config or AdaptConfig()
    round_config = _with_cache(config, round_config or RoundConfig())
    start = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    masker = _masker(round_config, torch.device(device))
    data = load_adaptation_data(store, masker, config, round_config)
    config = _resolved(config, len(data.labeled))
    optimizer = _optimizer(masker, config)
    base = data.validate(masker) if data.has_validation else None
    state = _initial_state(masker, data, config, base, start)
    _resume_if_asked(resume, out, masker, optimizer, state)
    _train(masker, data, config, optimizer, state, out, on_step)
    if data.has_validation:
        masker.model.load_state_dict(state["best_state"], strict=False)
    masker.set_training(False)
    meta = _meta(store, round_config.masker.kind, masker, data, config, state, base, start)
    _export(masker, out, meta)
    return AdaptResult(Path(out), meta)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
