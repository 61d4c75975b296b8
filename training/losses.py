"""Loss terms of the training stage. Every function takes logits or softmax ``BxCxXxYxZ``.

``C = K + 1`` channels for a store of ``K`` structures: channel 0 the background, channel ``c``
the ``c``-th structure; targets are class INDICES ``0..K`` (`semisam.training.dataset` maps the
store's class values to them). The Dice terms are the mean over the foreground classes
``1..K`` of the per-class soft Dice; for ``K = 1`` (``C = 2``) they are the single
foreground-channel Dice, computed exactly as before multi-class stores existed.

The SAM term is a confidence-weighted per-voxel loss with constant (detached) weights: its
gradient is non-zero wherever the confidence is > 0 and exactly zero where it is 0. SemiSAM+'s
public code instead normalises the loss ``s / (s + 1e-16)``, which is 1 for any ``s > 0`` and so
carries no gradient; that normalisation is deliberately not reproduced.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from semisam.schemas import SamConsistencyConfig, SamLoss, SamNormalization, SupervisedConfig


def soft_dice_loss(prob: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5,
                   weights: torch.Tensor | None = None) -> torch.Tensor:
    """UA-MT's ``dice_loss``: ``1 - (2 sum(p y) + s) / (sum(p^2) + sum(y^2) + s)`` over the batch.

    With ``weights`` every sum is weighted voxel by voxel (``sum(w p y)`` ...): a voxel of
    weight 0 takes no part and gets no gradient.

    Args:
        prob: ``BxXxYxZ`` probability of one class (the foreground of a one-structure store).
        target: ``BxXxYxZ`` {0, 1} (or bool): membership of that class.
        weights: ``BxXxYxZ`` in [0, 1], constant; None = every voxel 1.
    """
    target = target.float()
    if weights is not None:
        prob_w, target_w = weights * prob, weights * target
    else:
        prob_w, target_w = prob, target
    intersect = torch.sum(prob_w * target)
    denominator = torch.sum(prob_w * prob) + torch.sum(target_w * target)
    return 1.0 - (2.0 * intersect + smooth) / (denominator + smooth)


def class_dice_loss(prob: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5,
                    weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the foreground classes ``1..C-1`` of the per-class `soft_dice_loss`.

    For ``C = 2`` this is ``soft_dice_loss(prob[:, 1], target == 1)`` itself (same operations,
    bit-identical to the one-structure loss).

    Args:
        prob: ``BxCxXxYxZ`` softmax probabilities, ``C >= 2``.
        target: ``BxXxYxZ`` int64 class indices in ``0..C-1``.
        weights: ``BxXxYxZ`` in [0, 1], constant, shared by every class; None = every voxel 1.

    Returns:
        Scalar loss.
    """
    channels = prob.shape[1]
    if channels == 2:
        return soft_dice_loss(prob[:, 1], target == 1, smooth, weights)
    losses = [soft_dice_loss(prob[:, c], target == c, smooth, weights) for c in range(1, channels)]
    return torch.stack(losses).mean()


def supervised_terms(logits: torch.Tensor, label: torch.Tensor,
                     config: SupervisedConfig) -> dict[str, torch.Tensor]:
    """Cross-entropy over the ``C`` classes and soft Dice (`class_dice_loss`: mean over the
    foreground classes) of labeled patches, unweighted.

    Args:
        logits: ``BxCxXxYxZ``.
        label: ``BxXxYxZ`` int64 class indices in ``0..C-1``.

    Returns:
        ``{"ce": ..., "dice": ...}`` (a term whose weight is 0 is not computed).
    """
    terms = {}
    if config.ce_weight > 0:
        terms["ce"] = F.cross_entropy(logits, label)
    if config.dice_weight > 0:
        terms["dice"] = class_dice_loss(torch.softmax(logits, dim=1), label)
    return terms


def softmax_mse(student_prob: torch.Tensor, target_prob: torch.Tensor) -> torch.Tensor:
    """Half the mean squared difference over every element (``sum / (2 numel)`` in UA-MT/SemiSAM).

    Args:
        student_prob: ``BxCxXxYxZ`` softmax of the student (gradient flows).
        target_prob: ``BxCxXxYxZ`` teacher softmax or one-hot target (treated as constant).
    """
    return 0.5 * torch.mean((student_prob - target_prob.detach()) ** 2)


def sam_voxel_weights(confidence: torch.Tensor, config: SamConsistencyConfig) -> torch.Tensor:
    """Per-voxel weights ``BxXxYxZ`` in [0, 1] from the stored confidence (no gradient).

    Voxels with confidence 0 (or below ``min_confidence``) get weight 0; the others get their
    confidence (``confidence_weighted``) or 1.
    """
    conf = confidence.float()
    keep = conf >= config.min_confidence if config.min_confidence > 0 else conf > 0
    base = conf if config.confidence_weighted else torch.ones_like(conf)
    return torch.where(keep, base, torch.zeros_like(base)).detach()


def sam_consistency(student_logits: torch.Tensor, pseudo_label: torch.Tensor,
                    confidence: torch.Tensor, config: SamConsistencyConfig) -> torch.Tensor:
    """Confidence-weighted loss between the student's softmax and the one-hot pseudo-label.

    Args:
        student_logits: ``BxCxXxYxZ``.
        pseudo_label: ``BxXxYxZ`` int64 class indices in ``0..C-1``.
        confidence: ``BxXxYxZ`` float in [0, 1] (0 where there is no pseudo-label, e.g. padding
            or a volume without a done record). Without ``confidence_weighted`` every voxel with
            confidence > 0 counts with weight 1.

    Returns:
        Scalar: ``sum(w d) / N`` (``normalization=voxels``; equals SemiSAM's plain mean when
        ``w == 1``) or ``sum(w d) / sum(w)`` (``confidence``); 0 (with a zero gradient) when
        every weight is 0. ``d`` is ``0.5 * mean_c (p_c - y_c)^2`` (``mse``) or ``-log p_y``
        (``ce`` and ``ce_dice``), over the ``C`` classes; ``ce_dice`` adds the
        ``weights``-weighted `class_dice_loss` (mean over the foreground classes ``1..C-1``), so
        that a small structure counts as much as the background around it (the per-voxel mean
        alone is dominated by easy background voxels).
    """
    weights = sam_voxel_weights(confidence, config)
    if config.loss == SamLoss.mse:
        prob = torch.softmax(student_logits, dim=1)
        onehot = F.one_hot(pseudo_label, prob.shape[1]).movedim(-1, 1).to(prob.dtype)
        dist = 0.5 * torch.mean((prob - onehot) ** 2, dim=1)
    else:
        dist = F.cross_entropy(student_logits, pseudo_label, reduction="none")
    weighted = torch.sum(weights * dist)
    if config.normalization == SamNormalization.voxels:
        value = weighted / weights.numel()
    else:
        value = weighted / torch.sum(weights).clamp_min(1e-6)
    if config.loss == SamLoss.ce_dice:
        prob = torch.softmax(student_logits, dim=1)
        value = value + class_dice_loss(prob, pseudo_label, weights=weights)
    return value
