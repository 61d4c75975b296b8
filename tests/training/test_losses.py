"""Every loss term can be turned off, and moves the gradient when on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from semisam.schemas import (
    SamConsistencyConfig,
    SamLoss,
    SamNormalization,
    StudentSpec,
    SupervisedConfig,
    TrainConfig,
)
from semisam.training.dataset import Batch
from semisam.training.losses import (
    class_dice_loss,
    sam_consistency,
    sam_voxel_weights,
    soft_dice_loss,
    supervised_terms,
)
from semisam.training.step import build_nets, loss_terms

TINY = StudentSpec(channels=(4, 8), strides=(2,), num_res_units=0, patch_size=(16, 16, 8))


def _logits(shape=(2, 2, 6, 6, 4), seed=0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).requires_grad_(True)


@pytest.mark.parametrize("loss", list(SamLoss))
@pytest.mark.parametrize("normalization", list(SamNormalization))
def test_sam_gradient_is_zero_exactly_where_confidence_is_zero(loss, normalization):
    logits = _logits()
    pseudo = (torch.rand(2, 6, 6, 4, generator=torch.Generator().manual_seed(1)) > 0.5).long()
    confidence = torch.rand(2, 6, 6, 4, generator=torch.Generator().manual_seed(2))
    confidence[:, :3] = 0.0
    cfg = SamConsistencyConfig(loss=loss, normalization=normalization)
    value = sam_consistency(logits, pseudo, confidence, cfg)
    value.backward()
    grad = logits.grad.abs().sum(dim=1)  # per voxel
    assert value.item() > 0
    assert torch.all(grad[:, :3] == 0)
    assert torch.all(grad[:, 3:] > 0)


def test_sam_loss_is_not_normalised_away():
    """SemiSAM+'s s / (s + eps) is 1 for any s > 0 and has no gradient; this loss scales with s."""
    logits = _logits()
    pseudo = torch.ones(2, 6, 6, 4, dtype=torch.long)
    cfg = SamConsistencyConfig()
    full = sam_consistency(logits, pseudo, torch.ones(2, 6, 6, 4), cfg)
    half = sam_consistency(logits, pseudo, torch.full((2, 6, 6, 4), 0.5), cfg)
    assert half.item() == pytest.approx(0.5 * full.item())
    zero = sam_consistency(logits, pseudo, torch.zeros(2, 6, 6, 4), cfg)
    zero.backward()
    assert zero.item() == 0.0 and torch.all(logits.grad == 0)


def test_ce_dice_adds_the_weighted_foreground_dice():
    logits = _logits()
    pseudo = (torch.rand(2, 6, 6, 4, generator=torch.Generator().manual_seed(3)) > 0.7).long()
    confidence = torch.rand(2, 6, 6, 4, generator=torch.Generator().manual_seed(4))
    ce = sam_consistency(logits, pseudo, confidence, SamConsistencyConfig(loss=SamLoss.ce))
    both = sam_consistency(logits, pseudo, confidence, SamConsistencyConfig(loss=SamLoss.ce_dice))
    p = torch.softmax(logits, 1)[:, 1]
    y = (pseudo == 1).float()
    dice = 1 - (2 * (confidence * p * y).sum() + 1e-5) / ((confidence * p * p).sum() + (confidence * y).sum() + 1e-5)
    assert both.item() == pytest.approx(ce.item() + dice.item(), rel=1e-5)
    # a perfect, confident prediction of the pseudo-label has (almost) no Dice part left
    sharp = (torch.nn.functional.one_hot(pseudo, 2).movedim(-1, 1).float() * 40 - 20).requires_grad_(True)
    assert sam_consistency(sharp, pseudo, confidence, SamConsistencyConfig(loss=SamLoss.ce_dice)).item() < 1e-6


def test_unweighted_sam_loss_is_semisam_mean():
    logits = _logits()
    pseudo = torch.zeros(2, 6, 6, 4, dtype=torch.long)
    cfg = SamConsistencyConfig(confidence_weighted=False)
    value = sam_consistency(logits, pseudo, torch.full((2, 6, 6, 4), 0.3), cfg)
    onehot = torch.nn.functional.one_hot(pseudo, 2).movedim(-1, 1).float()
    expected = 0.5 * torch.mean((torch.softmax(logits, 1) - onehot) ** 2)
    assert value.item() == pytest.approx(expected.item())


def _batch(seed: int = 0) -> Batch:
    rng = np.random.default_rng(seed)
    size = TINY.patch_size
    return Batch(image=rng.normal(size=(4, 1, *size)).astype(np.float32),
                 label=(rng.random((2, *size)) > 0.7).astype(np.int64),
                 pseudo_label=(rng.random((2, *size)) > 0.7).astype(np.int64),
                 confidence=rng.random((2, *size)).astype(np.float32))


def _config(**switches) -> TrainConfig:
    cfg = TrainConfig(student=TINY, iterations=10, seed=3)
    cfg.mean_teacher.schedule = cfg.sam.schedule = "constant"
    cfg.supervised.ce_weight = switches.get("ce", 1.0)
    cfg.supervised.dice_weight = switches.get("dice", 1.0)
    cfg.mean_teacher.enabled = switches.get("mt", True)
    cfg.sam.enabled = switches.get("sam", True)
    return cfg


def _grad(cfg: TrainConfig, batch: Batch) -> tuple[torch.Tensor, dict]:
    nets = build_nets(cfg, torch.device("cpu"))
    with torch.no_grad():  # a teacher that differs from the student, as after some training
        for p in nets.ema.parameters():
            p.add_(0.05 * torch.randn_like(p))
    gen = torch.Generator().manual_seed(0)
    loss, info = loss_terms(nets, batch, cfg, 5, gen, torch.device("cpu"))
    loss.backward()
    return torch.cat([p.grad.flatten() for p in nets.model.parameters()]), info


@pytest.mark.parametrize("term,key", [("ce", "ce"), ("dice", "dice"), ("mt", "mt"), ("sam", "sam")])
def test_each_term_can_be_turned_off_and_moves_the_gradient(term, key):
    batch = _batch()
    on, info_on = _grad(_config(), batch)
    off, info_off = _grad(_config(**{term: 0.0 if term in ("ce", "dice") else False}), batch)
    assert key in info_on and key not in info_off
    assert info_on[key] > 0
    assert not torch.allclose(on, off, rtol=0, atol=1e-9)


def test_sam_term_needs_pseudo_labels():
    batch = _batch()
    batch.pseudo_label = batch.confidence = None
    _, info = _grad(_config(), batch)
    assert "sam" not in info and "mt" in info


# --- multi-class (K structures, K + 1 channels) ----------------------------------------------

def _indices(shape, channels: int, seed: int) -> torch.Tensor:
    return torch.randint(0, channels, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("weighted", [False, True])
def test_class_dice_is_the_mean_of_the_single_class_losses(weighted):
    logits = _logits((2, 4, 6, 6, 4), seed=5)
    prob = torch.softmax(logits, dim=1)
    target = _indices((2, 6, 6, 4), 4, seed=6)
    weights = torch.rand(2, 6, 6, 4, generator=torch.Generator().manual_seed(7)) if weighted else None
    value = class_dice_loss(prob, target, weights=weights)
    single = [soft_dice_loss(prob[:, c], target == c, weights=weights) for c in (1, 2, 3)]
    assert value.item() == pytest.approx(sum(s.item() for s in single) / 3, rel=1e-6)
    if not weighted:  # the supervised term is that loss
        dice = supervised_terms(logits, target, SupervisedConfig(ce_weight=0.0))["dice"]
        assert dice.item() == pytest.approx(value.item(), rel=1e-6)
    with_background = soft_dice_loss(prob[:, 0], target == 0, weights=weights)
    assert value.item() != pytest.approx((sum(s.item() for s in single) + with_background.item()) / 4)


def test_one_structure_dice_is_the_old_formula_bit_for_bit():
    """K = 1: supervised Dice and the SAM term's Dice are exactly the pre-multi-class values."""
    logits = _logits(seed=8)
    label = _indices((2, 6, 6, 4), 2, seed=9)
    p = torch.softmax(logits, dim=1)[:, 1]
    y = (label == 1).float()
    old = 1.0 - (2.0 * torch.sum(p * y) + 1e-5) / (torch.sum(p * p) + torch.sum(y * y) + 1e-5)
    cfg = SupervisedConfig(ce_weight=0.0)
    assert torch.equal(supervised_terms(logits, label, cfg)["dice"], old)
    assert torch.equal(class_dice_loss(torch.softmax(logits, dim=1), label), old)
    conf = torch.rand(2, 6, 6, 4, generator=torch.Generator().manual_seed(10))
    w = sam_voxel_weights(conf, SamConsistencyConfig())
    old_w = 1.0 - (2.0 * torch.sum(w * p * y) + 1e-5) / (torch.sum(w * p * p) + torch.sum(w * y * y) + 1e-5)
    ce = sam_consistency(logits, label, conf, SamConsistencyConfig(loss=SamLoss.ce))
    both = sam_consistency(logits, label, conf, SamConsistencyConfig(loss=SamLoss.ce_dice))
    assert torch.equal(both, ce + old_w)


def test_sam_dice_part_is_the_mean_over_the_structures():
    logits = _logits((2, 3, 6, 6, 4), seed=11)
    pseudo = _indices((2, 6, 6, 4), 3, seed=12)
    conf = torch.rand(2, 6, 6, 4, generator=torch.Generator().manual_seed(13))
    ce = sam_consistency(logits, pseudo, conf, SamConsistencyConfig(loss=SamLoss.ce))
    both = sam_consistency(logits, pseudo, conf, SamConsistencyConfig(loss=SamLoss.ce_dice))
    prob = torch.softmax(logits, 1)
    w = sam_voxel_weights(conf, SamConsistencyConfig())
    dice = [soft_dice_loss(prob[:, c], pseudo == c, weights=w).item() for c in (1, 2)]
    assert both.item() == pytest.approx(ce.item() + sum(dice) / 2, rel=1e-6)
    # every class predicted sharply and right: no Dice left, whatever the class
    sharp = torch.nn.functional.one_hot(pseudo, 3).movedim(-1, 1).float() * 40 - 20
    assert sam_consistency(sharp, pseudo, conf, SamConsistencyConfig(loss=SamLoss.ce_dice)).item() < 1e-6
    # the MSE part's one-hot has all 3 channels
    mse = sam_consistency(logits, pseudo, torch.ones(2, 6, 6, 4), SamConsistencyConfig(confidence_weighted=False))
    onehot = torch.nn.functional.one_hot(pseudo, 3).movedim(-1, 1).float()
    assert mse.item() == pytest.approx(0.5 * torch.mean((prob - onehot) ** 2).item(), rel=1e-6)


def test_three_channel_student_gets_every_term_with_class_indices():
    cfg = _config()
    cfg.student = TINY.model_copy(update={"out_channels": 3})
    batch = _batch()
    rng = np.random.default_rng(4)
    batch.label = rng.integers(0, 3, batch.label.shape).astype(np.int64)
    batch.pseudo_label = rng.integers(0, 3, batch.pseudo_label.shape).astype(np.int64)
    grad, info = _grad(cfg, batch)
    assert {"ce", "dice", "mt", "sam"} <= set(info)
    assert all(np.isfinite(v) and v > 0 for k, v in info.items() if k in ("ce", "dice", "mt", "sam"))
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
