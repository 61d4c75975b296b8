"""Slice-aligned batched SAM mask decoding.

The stock ``MaskDecoder.predict_masks`` takes ONE image embedding and repeats it for every
prompt. Here N slices, each with its own prompt set, are decoded in one call built from the
model's own submodules (``prompt_encoder``, ``mask_decoder.transformer``, ``output_upscaling``,
``output_hypernetworks_mlps``, ``iou_prediction_head``, the IoU and mask tokens): embedding i
goes with prompt i, nothing is repeated.

Slices whose prompts differ in token count (number of points, box or not) or in having a mask
prompt are decoded in separate groups: padding with not-a-point tokens would change results,
so every slice gets exactly what a stock per-slice ``SamPredictor.predict`` call computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from segment_anything.modeling import MaskDecoder, Sam

__all__ = ["InputPrompt", "decode_aligned", "decode_slices", "select_masks"]


@dataclass(frozen=True)
class InputPrompt:
    """One slice's prompts in the encoder input frame (1024 pixels), on the model's device.

    Attributes:
        box: ``(4,)`` float32 XYXY, or None.
        points: ``(P, 2)`` float32 XY (P may be 0), or None.
        labels: ``(P,)`` int, 1 = foreground, 0 = background; required with points.
        mask: ``1x256x256`` float32 low-res mask logits, or None.
    """

    box: torch.Tensor | None = None
    points: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    @property
    def num_points(self) -> int:
        return 0 if self.points is None else int(self.points.shape[0])

    def group_key(self) -> tuple[bool, int, bool]:
        """Prompts with equal keys produce equal token counts and can share a call."""
        return (self.box is not None, self.num_points, self.mask is not None)


def decode_aligned(
    decoder: MaskDecoder,
    embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    sparse: torch.Tensor,
    dense: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``MaskDecoder.predict_masks`` with embedding i paired to prompt i (no repeat).

    Args:
        decoder: the model's mask decoder (its modules are used, not copied).
        embeddings: ``BxCxhxw`` image embeddings, one per slice.
        image_pe: ``1xCxhxw`` dense positional encoding.
        sparse: ``BxTxC`` point/box embeddings (same T for all B).
        dense: ``BxCxhxw`` mask-prompt embeddings.

    Returns:
        ``BxKx4hx4w`` mask logits for all K = 1 + num_multimask_outputs tokens, and ``BxK``
        predicted IoUs.
    """
    b = embeddings.shape[0]
    out_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat([out_tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)
    src = embeddings + dense
    pos = image_pe.expand(b, -1, -1, -1)
    _, c, h, w = src.shape
    hs, src = decoder.transformer(src, pos, tokens)
    iou_out = hs[:, 0, :]
    mask_out = hs[:, 1 : 1 + decoder.num_mask_tokens, :]
    upscaled = decoder.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
    hyper = torch.stack(
        [mlp(mask_out[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)],
        dim=1,
    )  # BxKxC'
    _, cu, hu, wu = upscaled.shape
    masks = (hyper @ upscaled.reshape(b, cu, hu * wu)).reshape(b, -1, hu, wu)
    return masks, decoder.iou_prediction_head(iou_out)


def select_masks(
    masks: torch.Tensor, iou: torch.Tensor, multimask_output: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """One mask per slice, as `SamPredictor` would give it.

    Args:
        masks: ``BxKxhxw`` logits of all K tokens; iou: ``BxK``.
        multimask_output: False = the single-mask token 0; True = of tokens 1..K-1 the one
            with the best predicted IoU.

    Returns:
        ``Bx1xhxw`` logits and ``B`` IoUs.
    """
    if not multimask_output:
        return masks[:, :1], iou[:, 0]
    multi, multi_iou = masks[:, 1:], iou[:, 1:]
    best = multi_iou.argmax(dim=1)
    rows = torch.arange(masks.shape[0], device=masks.device)
    return multi[rows, best].unsqueeze(1), multi_iou[rows, best]


def _decode_group(
    model: Sam, embeddings: torch.Tensor, prompts: Sequence[InputPrompt], multimask_output: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode slices whose prompts share a `InputPrompt.group_key`."""
    first = prompts[0]
    points = None
    if first.num_points > 0:
        coords = torch.stack([p.points for p in prompts]).to(torch.float32)
        labels = torch.stack([p.labels for p in prompts]).to(torch.int64)
        points = (coords, labels)
    boxes = masks = None
    if first.box is not None:
        boxes = torch.stack([p.box for p in prompts]).to(torch.float32)
    if first.mask is not None:
        masks = torch.stack([p.mask for p in prompts]).to(torch.float32)
    sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=masks)
    logits, iou = decode_aligned(
        model.mask_decoder, embeddings, model.prompt_encoder.get_dense_pe(), sparse, dense
    )
    return select_masks(logits, iou, multimask_output)


def decode_slices(
    model: Sam,
    embeddings: torch.Tensor,
    prompts: Sequence[InputPrompt],
    multimask_output: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode N slices, each with its own prompts, in one call per prompt group.

    Args:
        model: the SAM model (its prompt encoder and mask decoder).
        embeddings: ``NxCxhxw`` float32 image embeddings, ``embeddings[i]`` for ``prompts[i]``.
        prompts: N prompts in the input frame.
        multimask_output: see `select_masks`.

    Returns:
        ``Nx1x256x256`` low-res mask logits and ``N`` predicted IoUs, in the input order.

    Raises:
        ValueError: lengths differ, or a prompt has neither box nor points.
    """
    n = embeddings.shape[0]
    if len(prompts) != n:
        raise ValueError(f"got {n} embeddings but {len(prompts)} prompts")
    groups: dict[tuple[bool, int, bool], list[int]] = {}
    for i, prompt in enumerate(prompts):
        if prompt.box is None and prompt.num_points == 0:
            raise ValueError(f"prompt {i} has neither a box nor points")
        groups.setdefault(prompt.group_key(), []).append(i)
    side = model.prompt_encoder.mask_input_size
    low_res = embeddings.new_zeros((n, 1, *side))
    ious = embeddings.new_zeros((n,))
    for idx in groups.values():
        rows = torch.tensor(idx, device=embeddings.device)
        logits, iou = _decode_group(
            model, embeddings[rows].float(), [prompts[i] for i in idx], multimask_output
        )
        low_res[rows] = logits
        ious[rows] = iou
    return low_res, ious
