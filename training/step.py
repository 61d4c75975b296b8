"""One training iteration: the student's loss on a batch, its optimizer update and the EMA
teacher's update after it (`train_step`).

::

    batch   = L labeled + U unlabeled patches (z-scored, rot90/flip augmented)
    logits  = student(batch);  p = softmax(logits)
    loss    = ce_w * CE(labeled) + dice_w * Dice(labeled)
            + w_mt(t)  * 0.5 * mean (p - softmax(teacher(batch + clamp(N(0, s), -c, c))))^2
            + w_sam(t) * sum(conf * d(p, onehot(pseudo_label))) / N        (unlabeled part)
    SGD step at lr(t); teacher <- EMA(student)

Tensors are ``(N, C, X, Y, Z)``: ``N`` patches, ``C`` channels (1 for images, ``K + 1`` for
logits); labels and pseudo-labels are class indices ``(N, X, Y, Z)``.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from semisam.schemas import OptimizerKind, TrainConfig
from semisam.workers.student import build_student, load_student

from . import schedules
from .dataset import Batch
from .losses import sam_consistency, softmax_mse, supervised_terms

log = logging.getLogger(__name__)


@dataclass
class Nets:
    """Student, EMA teacher and the student's optimizer."""

    model: torch.nn.Module
    ema: torch.nn.Module
    optimizer: torch.optim.Optimizer



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
