"""The training loop: supervised CE + Dice, Mean Teacher consistency, confidence-weighted SAM
consistency with a round's pseudo-labels (SemiSAM, with its public code's defects fixed).

One iteration (``t`` of ``T``: the loss terms, the SGD step and the EMA teacher) is `step.py`,
whose docstring gives the loss formula.

On a store of ``K`` structures (its class map) the student has ``K + 1`` output channels
(`fit_out_channels`), labels and pseudo-labels enter the losses as class indices ``0..K``, CE
and the SAM term's per-voxel part run over the ``K + 1`` classes, and both Dice terms are the
mean of the per-class Dice over the structures; the Mean Teacher term (MSE of the two
softmaxes over every channel) needs no change. The student checkpoint's ``meta["classes"]``
records the class map (absent for a one-structure store ``{1: "foreground"}``).

Resume checkpoints (`checkpoint.py`) are written every ``checkpoint_every`` iterations and at
the end; the student checkpoint is written at the end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import zarr

from semisam.schemas import (
    CheckpointError,
    ClassMap,
    ConfigError,
    TrainConfig,
    binary_classes,
)
from semisam.store import open_store, read_class_map
from semisam.workers.components import COMPONENT_PRIOR_META_KEY, store_priors
from semisam.workers.devices import resolve_device
from semisam.workers.student import ORDERED_AXES_META_KEY, read_checkpoint, save_student

from .checkpoint import (
    CLASSES_META_KEY,
    capture_rng,
    check_resumable,
    hold_after_checkpoint,
    load_state,
    restore_rng,
    save_state,
    state_path,
)
from .dataset import PatchSampler, TrainingData, open_training_data
from .step import Nets, build_nets, train_step

log = logging.getLogger(__name__)

StepCallback = Callable[[int, dict[str, float]], None]


@dataclass
class TrainResult:
    """What a `train_student` call produced."""

    checkpoint: Path
    state: Path
    iterations: int
    started_at: int = 0
    seconds: float = 0.0
    last: dict[str, float] = field(default_factory=dict)


DEFAULT_OUT_CHANNELS = 2  # StudentSpec.out_channels' default: one structure + background


def fit_out_channels(config: TrainConfig, classes: ClassMap, store: str | Path) -> TrainConfig:
    """The config with ``student.out_channels = K + 1`` for a store of ``K`` structures.

    A config that leaves ``student.out_channels`` at the default 2 gets ``K + 1`` (logged); one
    that already has ``K + 1`` is returned as it is (so is every config on a one-structure store
    with the default).

    Raises:
        ConfigError: ``student.out_channels`` is set to neither ``K + 1`` nor the default 2
            (one line naming the field, the store and K).
    """
    have, need = config.student.out_channels, classes.count + 1
    if have == need:
        return config
    if have != DEFAULT_OUT_CHANNELS:
        names = ", ".join(f"{v}={n}" for v, n in classes.names.items())
        raise ConfigError(f"student.out_channels {have}: store {store} has K={classes.count} "
                          f"class(es) ({names}), so the student needs K+1={need} output channels "
                          f"(set {need} or leave the default {DEFAULT_OUT_CHANNELS})")
    log.info("store %s has %d classes: student.out_channels %d -> %d", store, classes.count,
             have, need)
    student = config.student.model_copy(update={"out_channels": need})
    return config.model_copy(update={"student": student})


def augmentation_warning(config: TrainConfig, classes: ClassMap) -> str | None:
    """A warning for random rot90/flips on a store of several structures with class-aware
    augmentation turned off, else None.

    Flipping or rotating a patch moves each structure to where another one sits (left and
    right, anterior and posterior), so the network must tell the classes apart by shape alone.
    Measured on hippocampus with both structures (4 labels, docs/benchmarks.md): held-out Dice
    0.72 with SemiSAM's rot90 + flips, 0.82 without.
    """
    on = [name for name in ("rot90", "flip") if getattr(config.augment, name)]
    if classes.count < 2 or not on or config.augment.class_aware:
        return None
    return (f"augment.{'/'.join(on)} on a store of {classes.count} structures with "
            f"augment.class_aware off: random {' and '.join(on)} can swap structures that differ "
            f"by position (hippocampus: Dice 0.72 with them, 0.82 without); turn class_aware on, "
            f"or rot90 and flip off, unless the classes are symmetric")


@dataclass
class _Session:
    """One training run's moving parts (so the loop functions stay short)."""

    nets: Nets
    sampler: PatchSampler
    config: TrainConfig
    fingerprint: str
    round_index: int | None
    device: torch.device
    state: Path
    rng: np.random.Generator = field(init=False)
    gen: torch.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.config.seed)
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(self.config.seed)

    def resume(self) -> tuple[int, float]:
        """Load ``state`` into the nets and random generators: ``(iteration, elapsed seconds)``."""
        payload = load_state(self.state)
        check_resumable(payload, self.state, self.config, self.fingerprint, self.round_index)
        self.nets.model.load_state_dict(payload["model"])
        self.nets.ema.load_state_dict(payload["ema"])
        self.nets.optimizer.load_state_dict(payload["optimizer"])
        restore_rng(payload["rng"], self.rng, self.gen)
        log.info("resuming %s at iteration %d of %d", self.state, payload["iteration"],
                 self.config.iterations)
        return int(payload["iteration"]), float(payload.get("elapsed_s", 0.0))

    def begin(self, resume: bool) -> tuple[int, float]:
        """Where the run starts, ``(iteration, elapsed seconds)``: the resume state's when
        ``resume`` and ``state`` exists (`resume`), else ``(0, 0.0)``."""
        if resume and self.state.is_file():
            return self.resume()
        if resume:
            log.info("no training state at %s: starting from iteration 0", self.state)
        return 0, 0.0

    def checkpoint(self, iteration: int, elapsed: float) -> None:
        save_state(self.state, model=self.nets.model, ema=self.nets.ema,
                   optimizer=self.nets.optimizer, iteration=iteration, config=self.config,
                   fingerprint=self.fingerprint, round_index=self.round_index,
                   rng=capture_rng(self.rng, self.gen), elapsed_s=elapsed)

    def run(self, start: int, elapsed: float, on_step: StepCallback | None) -> TrainResult:
        """Iterations ``start .. T-1``; a resume checkpoint every ``checkpoint_every`` and at the end."""
        config, t0, info = self.config, time.perf_counter(), {}
        self.nets.model.train()
        self.nets.ema.train()
        for iteration in range(start, config.iterations):
            batch = self.sampler.sample(self.rng)
            info = train_step(self.nets, batch, config, iteration, self.gen, self.device)
            if on_step is not None:
                on_step(iteration, info)
            done = iteration + 1
            if done % config.checkpoint_every == 0 or done == config.iterations:
                self.checkpoint(done, elapsed + time.perf_counter() - t0)
                log.info("iteration %d/%d: %s", done, config.iterations,
                         ", ".join(f"{k} {v:.4g}" for k, v in info.items()))
                hold_after_checkpoint(self.state)
        if start >= config.iterations:
            log.info("%s: already at iteration %d; nothing to train", self.state, start)
        return TrainResult(checkpoint=Path(), state=self.state, iterations=config.iterations,
                           started_at=start, seconds=elapsed + time.perf_counter() - t0, last=info)

    def export(self, out: Path, meta: dict, result: TrainResult) -> None:
        """Write the exported network (the EMA teacher or the student, ``config.export``) to
        ``out`` with ``meta``, unless ``result`` is a resumed finished run that finds its own
        export there already (`_exported_already`: the file is then left as it is)."""
        config = self.config
        if result.started_at >= config.iterations and _exported_already(out, meta, config):
            log.info("%s: already exported by this finished run (same config, store and round); "
                     "left as it is", out)
            return
        exported = self.nets.ema if config.export.value == "teacher" else self.nets.model
        save_student(out, exported.eval(), config.student, meta)
        log.info("student written to %s (%d iterations, %.1f s)", out, config.iterations,
                 result.seconds)


def _exported_already(out: Path, meta: dict, config: TrainConfig) -> bool:
    """Whether ``out`` is the student a finished run exported: its spec and meta (but the last
    step's loss terms, which a resume that trains nothing does not have) equal ``meta``. A
    resumed finished run then leaves the file, its loss terms and its mtime as they are."""
    if not out.is_file():
        return False
    try:
        payload = read_checkpoint(out)
    except CheckpointError:
        return False
    written = dict(payload.get("meta") or {})
    written.pop("final_terms", None)
    expected = {k: v for k, v in meta.items() if k != "final_terms"}
    return written == expected and payload.get("spec") == config.student.model_dump(mode="json")


def student_meta(root: zarr.Group, data: TrainingData, sampler: PatchSampler,
                 config: TrainConfig, round_index: int | None, last: dict[str, float]) -> dict:
    """The student checkpoint's ``meta``: stage, iteration count, config, store fingerprint,
    round, export choice, labeled volume ids and the last step's loss terms (``last``); plus the
    class map (any store but one ``foreground`` structure), the axes class-aware augmentation
    keeps ordered (K > 1) and where the labeled structures lie (`store_priors`, read by
    ``predict --component prior``) when the store has them."""
    meta = {
        "stage": "semisam-train", "iteration": config.iterations,
        "config": config.model_dump(mode="json"), "store_fingerprint": data.fingerprint,
        "round": round_index, "export": config.export.value,
        "labeled": [s.meta.volume_id for s in data.labeled], "final_terms": last}
    if data.classes != binary_classes():
        meta[CLASSES_META_KEY] = data.classes.to_attrs()
    if data.classes.count > 1:
        meta[ORDERED_AXES_META_KEY] = list(sampler.augment.ordered_axes)
    priors = store_priors(root)
    if priors:
        meta[COMPONENT_PRIOR_META_KEY] = {str(v): p.model_dump(mode="json")
                                          for v, p in priors.items()}
    return meta


def _check_out(out: Path) -> None:
    """Refuse, before any work, an ``out`` or resume state path that exists and is not a file.

    Raises:
        ConfigError: one line naming ``--out`` and the offending path.
    """
    for path in (out, state_path(out)):
        if path.exists() and not path.is_file():
            raise ConfigError(f"--out {out}: {path} exists and is not a file")


def _fit_config(config: TrainConfig, classes: ClassMap, store: str | Path) -> TrainConfig:
    """`fit_out_channels` for the store's class map, logging the `augmentation_warning` if any."""
    config = fit_out_channels(config, classes, store)
    warning = augmentation_warning(config, classes)
    if warning is not None:
        log.warning("%s", warning)
    return config


def _device(config: TrainConfig) -> torch.device:
    """The training device (`resolve_device`); on CPU, ``config.threads`` threads when set."""
    device = resolve_device(config.device)
    if device.type == "cpu" and config.threads:
        torch.set_num_threads(config.threads)
    return device


def _sampler(data: TrainingData, config: TrainConfig, round_index: int | None) -> PatchSampler:
    """Patches of the labeled volumes, and of the unlabeled ones when a consistency term uses
    them (Mean Teacher, or the SAM term with a round)."""
    use_unlabeled = config.mean_teacher.enabled or (config.sam.enabled and round_index is not None)
    sampler = PatchSampler(data, config, use_unlabeled)
    if sampler.augment.reason:
        log.info("%s", sampler.augment.reason)
    return sampler


def train_student(
    store: str | Path,
    out: Path,
    config: TrainConfig | None = None,
    round_index: int | None = None,
    resume: bool = False,
    init: Path | None = None,
    on_step: StepCallback | None = None,
) -> TrainResult:
    """Train a student on the store (labeled + unlabeled + round ``round_index``'s pseudo-labels).

    Args:
        store: store directory or URL.
        out: student checkpoint to write (resume state goes to ``out.state.pt``).
        config: training config (defaults: SemiSAM on LA).
        round_index: round whose pseudo-labels feed the SAM term; None = no SAM term.
        resume: continue from ``out.state.pt`` when it exists (else start from iteration 0).
        init: student checkpoint to start from instead of random weights (warm start).
        on_step: called with ``(iteration, terms)`` after every update.

    Returns:
        Paths, iteration count and the last step's loss terms.

    Raises:
        CheckpointError: ``resume`` with a state from another config, round or store content.
        ConfigError: ``config.student.out_channels`` does not fit the store's class map
            (`fit_out_channels`).
    """
    out = Path(out)
    _check_out(out)  # before the work, not when the student is written
    root = open_store(store, read_only=True)
    config = _fit_config(config or TrainConfig(), read_class_map(root), store)
    device = _device(config)
    data = open_training_data(root, config, round_index)
    sampler = _sampler(data, config, round_index)
    session = _Session(build_nets(config, device, init), sampler,
                       config, data.fingerprint, round_index, device, state_path(out))
    start, elapsed = session.begin(resume)
    result = session.run(start, elapsed, on_step)
    result.checkpoint = out
    session.export(out, student_meta(root, data, sampler, config, round_index, result.last), result)
    return result
