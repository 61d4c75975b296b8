"""One contract every `Masker` passes. Masker test modules subclass `MaskerContract` and
provide the ``masker`` fixture."""

from __future__ import annotations

import numpy as np
import pytest

from semisam.workers.maskers import Masker, SlicePrompt


def disk_slice(h: int, w: int, cy: float, cx: float, r: float, seed: int = 0) -> np.ndarray:
    """``HxW`` uint8 slice: a bright noisy disk on a dark noisy background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    img = np.where(inside, 190.0, 50.0) + rng.normal(0, 12, (h, w))
    return np.clip(img, 0, 255).astype(np.uint8)


def disk_prompt(index: int, cy: float, cx: float, r: float, margin: float = 4) -> SlicePrompt:
    box = np.array([cx - r - margin, cy - r - margin, cx + r + margin, cy + r + margin], np.float32)
    return SlicePrompt(
        index=index,
        box=box,
        points=np.array([[cx, cy]], np.float32),
        point_labels=np.array([1], np.int64),
    )


class MaskerContract:
    """Behaviour shared by all maskers."""

    @pytest.fixture
    def masker(self) -> Masker:  # pragma: no cover - overridden
        raise NotImplementedError

    def _batch(self, h: int, w: int, n: int = 3):
        slices, prompts = [], []
        for i in range(n):
            cy, cx, r = h * (0.4 + 0.05 * i), w * (0.5 - 0.05 * i), min(h, w) * 0.2
            slices.append(disk_slice(h, w, cy, cx, r, seed=i))
            prompts.append(disk_prompt(i, cy, cx, r))
        return np.stack(slices), prompts

    @pytest.mark.parametrize("hw", [(48, 48), (40, 64), (70, 36)])
    def test_shape_dtype_range(self, masker: Masker, hw):
        slices, prompts = self._batch(*hw)
        out = masker.mask_slices(slices, prompts)
        assert out.shape == slices.shape
        assert out.dtype == np.float32
        assert np.isfinite(out).all()
        assert out.min() >= 0.0 and out.max() <= 1.0

    def test_deterministic(self, masker: Masker):
        slices, prompts = self._batch(48, 56)
        a = masker.mask_slices(slices, prompts)
        b = masker.mask_slices(slices, prompts)
        np.testing.assert_array_equal(a, b)

    def test_order_independent(self, masker: Masker):
        """A slice's result does not depend on the other slices of the batch."""
        slices, prompts = self._batch(48, 56, n=3)
        full = masker.mask_slices(slices, prompts)
        single = masker.mask_slices(slices[1:2], prompts[1:2])
        np.testing.assert_allclose(full[1], single[0], atol=1e-4)

    def test_empty_batch(self, masker: Masker):
        out = masker.mask_slices(np.zeros((0, 32, 32), np.uint8), [])
        assert out.shape == (0, 32, 32) and out.dtype == np.float32

    def test_length_mismatch_rejected(self, masker: Masker):
        slices, prompts = self._batch(32, 32, n=2)
        with pytest.raises(ValueError):
            masker.mask_slices(slices, prompts[:1])
