"""A per-slice LiteMedSAM reference, written from the official inference script's steps
(``CVPR24_LiteMedSAM_infer.py``, branch LiteMedSAM of bowang-lab/MedSAM): one slice at a time,
NumPy/OpenCV preprocessing, the stock ``prompt_encoder`` and ``mask_decoder`` calls.

Used only to check the project's batched path against it (same weights, same slices).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

SIDE = 256


def _resize_longest(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    ratio = SIDE * 1.0 / max(h, w)
    neww, newh = int(w * ratio + 0.5), int(h * ratio + 0.5)
    return cv2.resize(image, (neww, newh), interpolation=cv2.INTER_AREA)


@torch.no_grad()
def reference_slice(model, image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, float]:
    """One ``HxW`` uint8 slice and its XYXY pixel box -> (``HxW`` float32 probability, IoU)."""
    img_3c = np.repeat(image[:, :, None], 3, axis=-1)
    h, w = img_3c.shape[:2]
    small = _resize_longest(img_3c)
    newh, neww = small.shape[:2]
    small = (small - small.min()) / np.clip(small.max() - small.min(), a_min=1e-8, a_max=None)
    padded = np.pad(small, ((0, SIDE - newh), (0, SIDE - neww), (0, 0)))
    tensor = torch.tensor(padded).float().permute(2, 0, 1).unsqueeze(0)
    embedding = model.image_encoder(tensor)
    ratio = SIDE / max(h, w)
    box_256 = np.array([int(v * ratio) for v in np.asarray(box, np.float64)], np.float64)
    box_torch = torch.as_tensor(box_256[None, None, ...], dtype=torch.float)
    sparse, dense = model.prompt_encoder(points=None, boxes=box_torch, masks=None)
    logits, iou = model.mask_decoder(image_embeddings=embedding,
                                     image_pe=model.prompt_encoder.get_dense_pe(),
                                     sparse_prompt_embeddings=sparse,
                                     dense_prompt_embeddings=dense, multimask_output=False)
    logits = F.interpolate(logits[..., :newh, :neww], size=(h, w), mode="bilinear",
                           align_corners=False)
    return torch.sigmoid(logits).squeeze().numpy().astype(np.float32), float(iou.squeeze())
