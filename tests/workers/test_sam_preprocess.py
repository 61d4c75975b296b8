"""Coordinate frames of the two preprocessing families, and the way back to the slice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything.utils.transforms import ResizeLongestSide

from semisam.schemas import SamFamily
from semisam.workers.maskers.sam import (
    input_shape,
    low_res_probabilities,
    mask_prompt_to_low_res,
    preprocess_slices,
    resized_shape,
    scale_coords,
    upsample_logits,
)

from .sam_models import gray_to_rgb, small_sam, textured_slice

torch.set_num_threads(2)

MEAN = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)


@pytest.mark.parametrize("hw", [(1, 1), (64, 64), (48, 96), (100, 40), (333, 517), (1100, 900)])
def test_resized_shape_matches_resize_longest_side(hw):
    assert resized_shape(*hw) == ResizeLongestSide.get_preprocess_shape(*hw, 1024)


def test_box_and_point_frames_sam_vs_medsam():
    """H=100, W=40: SAM keeps the aspect (1024x410), MedSAM stretches x to 1024."""
    box = torch.tensor([10.0, 20.0, 30.0, 80.0]).reshape(2, 2)
    point = torch.tensor([[20.0, 50.0]])
    sam_box = scale_coords(box, (100, 40), SamFamily.sam).reshape(4)
    med_box = scale_coords(box, (100, 40), SamFamily.medsam).reshape(4)
    # SAM: x * 410/40 = 10.25, y * 1024/100 = 10.24
    torch.testing.assert_close(sam_box, torch.tensor([102.5, 204.8, 307.5, 819.2]))
    # MedSAM: x * 1024/40 = 25.6, y * 1024/100 = 10.24
    torch.testing.assert_close(med_box, torch.tensor([256.0, 204.8, 768.0, 819.2]))
    torch.testing.assert_close(scale_coords(point, (100, 40), SamFamily.sam),
                               torch.tensor([[205.0, 512.0]]))
    torch.testing.assert_close(scale_coords(point, (100, 40), SamFamily.medsam),
                               torch.tensor([[512.0, 512.0]]))


@pytest.mark.parametrize("hw", [(48, 96), (100, 40), (1100, 900)])
def test_sam_coords_match_apply_coords(hw):
    coords = np.array([[0.0, 0.0], [3.5, 7.25], [hw[1] - 1.0, hw[0] - 1.0]])
    ref = ResizeLongestSide(1024).apply_coords(coords, hw)
    ours = scale_coords(torch.as_tensor(coords), hw, SamFamily.sam).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-4)


def test_sam_preprocess_matches_predictor_input():
    """Same frame, normalisation and padding as apply_image + Sam.preprocess (PIL: < 1 level)."""
    sam = small_sam()
    img = textured_slice(100, 40, seed=2)
    ours = preprocess_slices(torch.from_numpy(img)[None], SamFamily.sam, sam.pixel_mean,
                             sam.pixel_std)[0]
    rgb = torch.as_tensor(ResizeLongestSide(1024).apply_image(gray_to_rgb(img)))
    ref = sam.preprocess(rgb.permute(2, 0, 1).float())
    assert ours.shape == ref.shape == (3, 1024, 1024)
    newh, neww = input_shape(100, 40, SamFamily.sam)
    assert (newh, neww) == (1024, 410)
    assert torch.all(ours[:, :, neww:] == 0) and torch.all(ours[:, newh:, :] == 0)
    # within one gray level of PIL's uint8 resize, in normalised units
    assert (ours - ref).abs().max().item() <= 1.0 / 57.12 + 1e-5


def test_sam_preprocess_constant_slice():
    img = torch.full((2, 30, 50), 200, dtype=torch.uint8)
    out = preprocess_slices(img, SamFamily.sam, MEAN, STD)
    newh, neww = resized_shape(30, 50)
    expect = (200.0 - MEAN.view(3)) / STD.view(3)
    torch.testing.assert_close(out[:, :, 5, 5], expect.expand(2, 3))
    torch.testing.assert_close(out[:, :, newh - 1, neww - 1], expect.expand(2, 3))
    assert torch.all(out[:, :, newh:, :] == 0)


def test_medsam_preprocess_stretches_and_minmaxes():
    img = torch.from_numpy(np.stack([textured_slice(100, 40, seed=s) for s in range(2)]))
    img[1] = img[1] // 4 + 10  # another range: min-max is per slice
    out = preprocess_slices(img, SamFamily.medsam, MEAN, STD)
    assert out.shape == (2, 3, 1024, 1024)
    for i in range(2):
        assert out[i].min().item() == pytest.approx(0.0, abs=1e-6)
        assert out[i].max().item() == pytest.approx(1.0, abs=1e-6)
        assert torch.equal(out[i, 0], out[i, 1]) and torch.equal(out[i, 0], out[i, 2])


def test_medsam_constant_slice_does_not_divide_by_zero():
    out = preprocess_slices(torch.full((1, 20, 20), 7, dtype=torch.uint8), SamFamily.medsam,
                            MEAN, STD)
    assert torch.isfinite(out).all() and out.abs().max().item() == 0.0


def test_upsample_logits_is_postprocess_masks():
    sam = small_sam()
    low = torch.randn(2, 1, 256, 256)
    hw = (100, 40)
    ref = sam.postprocess_masks(low, resized_shape(*hw), hw)
    torch.testing.assert_close(upsample_logits(low, resized_shape(*hw), hw), ref)


def _box_logits_low_res(box_xyxy: np.ndarray, hw, family: SamFamily, low: int = 256):
    """Low-res logits: +10 inside the box mapped to the input frame, -10 elsewhere."""
    frame = scale_coords(torch.as_tensor(box_xyxy).reshape(2, 2), hw, family).reshape(4)
    x0, y0, x1, y1 = (frame * low / 1024).tolist()
    yy, xx = torch.meshgrid(torch.arange(low) + 0.5, torch.arange(low) + 0.5, indexing="ij")
    inside = (xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1)
    return torch.where(inside, 10.0, -10.0)[None, None]


@pytest.mark.parametrize("family", [SamFamily.sam, SamFamily.medsam])
@pytest.mark.parametrize("hw", [(100, 40), (48, 96), (200, 200)])
def test_low_res_mask_comes_back_at_the_same_spot(family, hw):
    """A box drawn in the low-res frame lands on the same slice pixels (within ~1 px)."""
    h, w = hw
    box = np.array([0.3 * w, 0.2 * h, 0.6 * w, 0.7 * h], np.float32)  # XYXY, pixel edges
    probs = low_res_probabilities(_box_logits_low_res(box, hw, family), family, hw)[0, 0]
    assert probs.shape == (h, w) and 0.0 <= probs.min() and probs.max() <= 1.0
    yy, xx = np.mgrid[0:h, 0:w] + 0.5  # pixel centres
    inside = (xx >= box[0]) & (xx <= box[2]) & (yy >= box[1]) & (yy <= box[3])
    fg = probs.numpy() > 0.5
    ys, xs = np.nonzero(fg)
    assert abs(xs.min() - box[0]) <= 1.5 and abs(xs.max() + 1 - box[2]) <= 1.5
    assert abs(ys.min() - box[1]) <= 1.5 and abs(ys.max() + 1 - box[3]) <= 1.5
    assert (fg == inside).mean() > 0.97


@pytest.mark.parametrize("family", [SamFamily.sam, SamFamily.medsam])
def test_mask_prompt_round_trip(family):
    """Slice-frame logits -> low-res prompt -> slice frame: the mask stays where it was."""
    h, w = 120, 60
    yy, xx = np.mgrid[0:h, 0:w]
    disk = ((yy - 70) ** 2 + (xx - 25) ** 2) <= 15**2
    logits = torch.as_tensor(np.where(disk, 8.0, -8.0), dtype=torch.float32)[None]
    low = mask_prompt_to_low_res(logits, family)
    assert low.shape == (1, 1, 256, 256)
    back = low_res_probabilities(low, family, (h, w))[0, 0].numpy() > 0.5
    assert (back == disk).mean() > 0.98
    ys, xs = np.nonzero(back)
    assert abs(ys.mean() - 70) < 1.0 and abs(xs.mean() - 25) < 1.0


def test_sigmoid_not_threshold():
    """Probabilities are sigmoid(logits), not a hard threshold."""
    low = torch.full((1, 1, 256, 256), 0.5)
    probs = low_res_probabilities(low, SamFamily.sam, (10, 10))
    torch.testing.assert_close(probs, torch.sigmoid(torch.full((1, 1, 10, 10), 0.5)))
