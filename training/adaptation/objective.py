"""The adaptation loss and the held-out score, in the masker's low-res frame.

Logits ``Nx1xSxS`` (S = 256 for LiteMedSAM) are compared with soft targets brought into the
same frame (`Adaptable.target_frame`); padding pixels (outside the slice) do not count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["adaptation_loss", "hard_overlap"]

_SMOOTH = 1.0


def hard_overlap(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per slice ``(intersection, predicted, reference)`` pixel counts of ``logits > 0`` and
    ``targets > 0.5`` over the ``valid`` pixels; each ``N`` float32."""
    pred = (logits[:, 0] > 0) & valid
    ref = (targets > 0.5) & valid
    dims = (1, 2)
    return ((pred & ref).sum(dims).float(), pred.sum(dims).float(), ref.sum(dims).float())


def adaptation_loss(logits: torch.Tensor, iou: torch.Tensor, targets: torch.Tensor,
                    valid: torch.Tensor, iou_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    """BCE + soft Dice per slice (mean over the batch) + ``iou_weight`` x MSE between the
    decoder's predicted IoU and the real IoU of its thresholded mask.

    Args:
        logits: ``Nx1xSxS`` mask logits; iou: ``N`` predicted IoUs.
        targets: ``NxSxS`` float32 in [0, 1]; valid: ``NxSxS`` bool.

    Returns:
        The loss (scalar tensor) and its terms as floats (``bce``, ``dice``, ``iou``).
    """
    x = logits[:, 0]
    weight = valid.float()
    count = weight.sum((1, 2)).clamp(min=1.0)
    bce = (F.binary_cross_entropy_with_logits(x, targets, reduction="none") * weight
           ).sum((1, 2)) / count
    prob = torch.sigmoid(x) * weight
    inter = (prob * targets).sum((1, 2))
    dice = 1.0 - (2.0 * inter + _SMOOTH) / (prob.sum((1, 2)) + (targets * weight).sum((1, 2))
                                            + _SMOOTH)
    with torch.no_grad():
        i, p, r = hard_overlap(logits, targets, valid)
        union = p + r - i
        real_iou = torch.where(union > 0, i / union.clamp(min=1.0), torch.ones_like(union))
    iou_term = F.mse_loss(iou.float(), real_iou)
    loss = bce.mean() + dice.mean() + iou_weight * iou_term
    return loss, {"bce": bce.mean().item(), "dice": dice.mean().item(), "iou": iou_term.item()}
