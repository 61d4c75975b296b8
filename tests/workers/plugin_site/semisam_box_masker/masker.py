"""The box masker: each slice's probability is `inside` within its prompt's box, else `outside`."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

from semisam.workers.maskers import Masker, SlicePrompt, check_batch

from .settings import BoxSettings


class BoxMasker(Masker):
    """Fills boxes (a weight-free masker: no checkpoint)."""

    name = "box"

    def __init__(self, settings: BoxSettings) -> None:
        self.settings = settings
        if settings.trace_dir is not None:
            note = settings.trace_dir / f"built-{os.getpid()}.json"
            note.write_text(json.dumps(settings.model_dump(mode="json")))

    def mask_slices(self, slices: np.ndarray, prompts: Sequence[SlicePrompt]) -> np.ndarray:
        """``NxHxW`` float32: `inside` on the pixels of each box (inclusive), `outside` elsewhere."""
        slices = check_batch(slices, prompts)
        out = np.full(slices.shape, self.settings.outside, np.float32)
        for plane, prompt in zip(out, prompts):
            x0, y0, x1, y1 = np.round(prompt.box).astype(int)
            plane[max(y0, 0):y1 + 1, max(x0, 0):x1 + 1] = self.settings.inside
        return out
