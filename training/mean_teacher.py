"""The training loop: supervised CE + Dice, Mean Teacher consistency, confidence-weighted SAM
consistency with a round's pseudo-labels (SemiSAM, with its public code's defects fixed).

One iteration (``t`` of ``T``)::

    batch   = L labeled + U unlabeled patches (z-scored, rot90/flip augmented)
    logits  = student(batch);  p = softmax(logits)
    loss    = ce_w * CE(labeled) + dice_w * Dice(labeled)
            + w_mt(t)  * 0.5 * mean (p - softmax(teacher(batch + clamp(N(0, s), -c, c))))^2
            + w_sam(t) * sum(conf * d(p, onehot(pseudo_label))) / N        (unlabeled part)
    SGD step at lr(t); teacher <- EMA(student)

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

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from semisam.schemas import (
    CheckpointError,
    ClassMap,
    ConfigError,
    OptimizerKind,
    TrainConfig,
    binary_classes,
)
from semisam.store import open_store, read_class_map
from semisam.workers.components import COMPONENT_PRIOR_META_KEY, store_priors
from semisam.workers.devices import resolve_device
from semisam.workers.student import (
    ORDERED_AXES_META_KEY,
    build_student,
    load_student,
    read_checkpoint,
    save_student,
)

from . import schedules
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
from .dataset import Batch, PatchSampler, open_training_data
from .losses import sam_consistency, softmax_mse, supervised_terms

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


@dataclass
class Nets:
    """Student, EMA teacher and the student's optimizer."""

    model: torch.nn.Module
    ema: torch.nn.Module
    optimizer: torch.optim.Optimizer


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


def build_nets(config: TrainConfig, device: torch.device, init: Path | None = None) -> Nets:
    """Student initialised from ``config.seed`` (or the weights of ``init``), its EMA copy and
    the optimizer (SGD or Adam as configured)."""
    torch.manual_seed(config.seed)
    model = build_student(config.student)
    if init is not None:
        warm, spec, _ = load_student(init)
        if spec != config.student:
            log.warning("%s: spec differs from the config's student; not warm-starting", init)
        else:
            model.load_state_dict(warm.state_dict())
    model = model.to(device).train()
    ema = copy.deepcopy(model)
    for param in ema.parameters():
        param.requires_grad_(False)
    opt = config.optimizer
    if opt.kind == OptimizerKind.sgd:
        optimizer = torch.optim.SGD(model.parameters(), lr=opt.lr, momentum=opt.momentum,
                                    weight_decay=opt.weight_decay)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=opt.lr, weight_decay=opt.weight_decay)
    return Nets(model, ema, optimizer)


@torch.no_grad()
def update_ema(model: torch.nn.Module, ema: torch.nn.Module, decay: float, iteration: int) -> None:
    """``ema <- a * ema + (1 - a) * model`` with ``a = min(1 - 1/(t + 1), decay)``; buffers copied."""
    alpha = schedules.ema_decay(decay, iteration)
    for ema_param, param in zip(ema.parameters(), model.parameters()):
        ema_param.mul_(alpha).add_(param.detach(), alpha=1.0 - alpha)
    for ema_buf, buf in zip(ema.buffers(), model.buffers()):
        ema_buf.copy_(buf)


def teacher_noise(shape: torch.Size, config: TrainConfig, gen: torch.Generator,
                  device: torch.device) -> torch.Tensor:
    """``clamp(N(0, noise_std), -noise_clip, noise_clip)`` drawn from the run's noise generator."""
    mt = config.mean_teacher
    noise = torch.randn(shape, generator=gen, device=gen.device) * mt.noise_std
    return noise.clamp(-mt.noise_clip, mt.noise_clip).to(device)


def autocast(config: TrainConfig, device: torch.device) -> torch.autocast:
    """bfloat16 autocast of forward passes when ``config.amp`` and on CUDA; a no-op otherwise."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=config.amp and device.type == "cuda")


def loss_terms(nets: Nets, batch: Batch, config: TrainConfig, iteration: int,
               gen: torch.Generator, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted total loss of one batch and every term's value (for the progress bar)."""
    total_iters = config.iterations
    x = torch.from_numpy(batch.image).to(device)
    with autocast(config, device):
        logits = nets.model(x).float()
    n_lab = batch.labeled
    sup = supervised_terms(logits[:n_lab], torch.from_numpy(batch.label).to(device), config.supervised)
    loss = sum((getattr(config.supervised, f"{name}_weight") * value for name, value in sup.items()),
               torch.zeros((), device=device))
    info = {name: float(value.detach()) for name, value in sup.items()}
    w_mt = schedules.consistency_weight(config.mean_teacher, iteration, total_iters)
    if config.mean_teacher.enabled and (config.mean_teacher.include_labeled or x.shape[0] > n_lab):
        first = 0 if config.mean_teacher.include_labeled else n_lab
        inputs = x[first:]
        noisy = inputs + teacher_noise(inputs.shape, config, gen, device)
        with torch.no_grad(), autocast(config, device):
            teacher = torch.softmax(nets.ema(noisy).float(), dim=1)
        mt = softmax_mse(torch.softmax(logits[first:], dim=1), teacher)
        loss = loss + w_mt * mt
        info.update(mt=float(mt.detach()), w_mt=w_mt)
    if config.sam.enabled and batch.pseudo_label is not None:
        w_sam = schedules.sam_weight(config.sam, iteration, total_iters)
        sam = sam_consistency(logits[n_lab:], torch.from_numpy(batch.pseudo_label).to(device),
                              torch.from_numpy(batch.confidence).to(device), config.sam)
        loss = loss + w_sam * sam
        info.update(sam=float(sam.detach()), w_sam=w_sam)
    info["loss"] = float(loss.detach())
    return loss, info


def train_step(nets: Nets, batch: Batch, config: TrainConfig, iteration: int,
               gen: torch.Generator, device: torch.device) -> dict[str, float]:
    """One optimizer update at ``iteration`` (0-based) and the EMA update after it."""
    lr = schedules.learning_rate(config.optimizer, iteration, config.iterations)
    for group in nets.optimizer.param_groups:
        group["lr"] = lr
    loss, info = loss_terms(nets, batch, config, iteration, gen, device)
    nets.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nets.optimizer.step()
    update_ema(nets.model, nets.ema, config.mean_teacher.ema_decay, iteration)
    info["lr"] = lr
    return info


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
    for path in (out, state_path(out)):  # before the work, not when the student is written
        if path.exists() and not path.is_file():
            raise ConfigError(f"--out {out}: {path} exists and is not a file")
    root = open_store(store, read_only=True)
    classes = read_class_map(root)
    config = fit_out_channels(config or TrainConfig(), classes, store)
    warning = augmentation_warning(config, classes)
    if warning is not None:
        log.warning("%s", warning)
    device = resolve_device(config.device)
    if device.type == "cpu" and config.threads:
        torch.set_num_threads(config.threads)
    data = open_training_data(root, config, round_index)
    use_unlabeled = config.mean_teacher.enabled or (config.sam.enabled and round_index is not None)
    sampler = PatchSampler(data, config, use_unlabeled)
    if sampler.augment.reason:
        log.info("%s", sampler.augment.reason)
    session = _Session(build_nets(config, device, init), sampler,
                       config, data.fingerprint, round_index, device, state_path(out))
    start, elapsed = 0, 0.0
    if resume and session.state.is_file():
        start, elapsed = session.resume()
    elif resume:
        log.info("no training state at %s: starting from iteration 0", session.state)
    result = session.run(start, elapsed, on_step)
    nets = session.nets
    exported = nets.ema if config.export.value == "teacher" else nets.model
    meta = {
        "stage": "semisam-train", "iteration": config.iterations,
        "config": config.model_dump(mode="json"), "store_fingerprint": data.fingerprint,
        "round": round_index, "export": config.export.value,
        "labeled": [s.meta.volume_id for s in data.labeled], "final_terms": result.last}
    if data.classes != binary_classes():
        meta[CLASSES_META_KEY] = data.classes.to_attrs()
    if data.classes.count > 1:
        meta[ORDERED_AXES_META_KEY] = list(sampler.augment.ordered_axes)
    priors = store_priors(root)  # where the labeled structures lie: `predict --component prior`
    if priors:
        meta[COMPONENT_PRIOR_META_KEY] = {str(v): p.model_dump(mode="json")
                                          for v, p in priors.items()}
    result.checkpoint = out
    if start >= config.iterations and _exported_already(out, meta, config):
        log.info("%s: already exported by this finished run (same config, store and round); "
                 "left as it is", out)
        return result
    save_student(out, exported.eval(), config.student, meta)
    log.info("student written to %s (%d iterations, %.1f s)", out, config.iterations, result.seconds)
    return result
