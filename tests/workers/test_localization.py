"""Localization: foreground mask, per-slice prompts and the slice coordinate frame."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from semisam.schemas import PromptConfig
from semisam.workers.localization import (
    NEGATIVE_CLEARANCE,
    foreground_mask,
    negative_points,
    positive_points,
    put_slices,
    slice_box,
    slice_image,
    slice_prompts,
    stack_slices,
)

SHAPE = (40, 52, 34)  # every slice plane is non-square
BLOB_CENTRE, BLOB_RADII = (13.0, 33.0, 21.0), (6.0, 9.0, 5.0)  # off-centre ellipsoid
SMALL_CENTRE, SMALL_RADIUS = (31.0, 9.0, 7.0), 3.0


def _ellipsoid(centre, radii) -> np.ndarray:
    grid = np.indices(SHAPE, dtype=np.float64)
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0


@pytest.fixture(scope="module")
def phantom() -> tuple[np.ndarray, np.ndarray]:
    """(prob XxYxZ float32, the big blob's bool mask)."""
    blob = _ellipsoid(BLOB_CENTRE, BLOB_RADII)
    small = _ellipsoid(SMALL_CENTRE, (SMALL_RADIUS,) * 3)
    rng = np.random.default_rng(0)
    prob = rng.uniform(0.0, 0.2, SHAPE)
    prob[blob] = rng.uniform(0.7, 1.0, int(blob.sum()))
    prob[small] = 0.95
    return prob.astype(np.float32), blob


def test_slice_frame_is_np_take():
    volume = np.arange(np.prod(SHAPE)).reshape(SHAPE)
    np.testing.assert_array_equal(slice_image(volume, 5, 0), volume[5])
    np.testing.assert_array_equal(slice_image(volume, 5, 1), volume[:, 5])
    np.testing.assert_array_equal(slice_image(volume, 5, 2), volume[:, :, 5])
    assert slice_image(volume, 5, 1).shape == (SHAPE[0], SHAPE[2])


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_stack_put_round_trip(axis):
    rng = np.random.default_rng(axis)
    volume = rng.random(SHAPE).astype(np.float32)
    indices = [7, 2, 11]
    stack = stack_slices(volume, indices, axis)
    plane = tuple(s for a, s in enumerate(SHAPE) if a != axis)
    assert stack.shape == (3,) + plane
    for k, i in enumerate(indices):
        np.testing.assert_array_equal(stack[k], slice_image(volume, i, axis))
    rebuilt = np.zeros_like(volume)
    assert put_slices(rebuilt, indices, axis, stack) is rebuilt
    np.testing.assert_array_equal(stack_slices(rebuilt, indices, axis), stack)
    untouched = np.ones(SHAPE[axis], bool)
    untouched[indices] = False
    assert not stack_slices(rebuilt, np.flatnonzero(untouched), axis).any()
    assert stack_slices(volume, [], axis).shape == (0,) + plane


def test_frame_helpers_reject_bad_input():
    volume = np.zeros(SHAPE)
    with pytest.raises(ValueError, match="axis"):
        slice_image(volume, 0, 3)
    with pytest.raises(ValueError, match="40"):
        stack_slices(volume, [40], 0)
    with pytest.raises(ValueError, match="shape"):
        put_slices(volume, [1, 2], 2, np.zeros((2, 40, 40)))


def test_foreground_mask_largest_component(phantom):
    prob, blob = phantom
    kept = foreground_mask(prob, PromptConfig(largest_component=True))
    np.testing.assert_array_equal(kept, blob)
    both = foreground_mask(prob, PromptConfig(largest_component=False))
    assert both.sum() > blob.sum() and (both & blob).sum() == blob.sum()
    assert not foreground_mask(np.zeros(SHAPE, np.float32), PromptConfig()).any()


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_prompts_follow_the_blob(phantom, axis):
    prob, blob = phantom
    config = PromptConfig(slice_axis=axis, box_margin=3, positive_points=3, negative_points=2)
    mask = foreground_mask(prob, config)
    prompts = slice_prompts(mask, prob, config)
    counts = blob.sum(axis=tuple(a for a in range(3) if a != axis))
    assert [p.index for p in prompts] == np.flatnonzero(counts >= config.min_slice_pixels).tolist()
    for prompt in prompts:
        fg = slice_image(blob, prompt.index, axis)
        h, w = fg.shape
        rows, cols = np.nonzero(fg)
        x0, y0, x1, y1 = prompt.box
        assert prompt.box.dtype == np.float32
        m = config.box_margin
        assert x0 == max(cols.min() - m, 0) and x1 == min(cols.max() + m, w - 1)
        assert y0 == max(rows.min() - m, 0) and y1 == min(rows.max() + m, h - 1)
        assert prompt.points.shape == (5, 2) and prompt.points.dtype == np.float32
        assert prompt.point_labels.dtype == np.int64
        np.testing.assert_array_equal(prompt.point_labels, [1, 1, 1, 0, 0])
        xs, ys = prompt.points[:, 0].astype(int), prompt.points[:, 1].astype(int)
        assert fg[ys[:3], xs[:3]].all()  # positives on the foreground
        assert not fg[ys[3:], xs[3:]].any()  # negatives off it ...
        assert ((x0 <= xs[3:]) & (xs[3:] <= x1) & (y0 <= ys[3:]) & (ys[3:] <= y1)).all()  # in box
        assert prompt.mask_logits is None


def test_positive_points_are_interior_and_separated():
    fg = np.zeros((30, 70), bool)
    fg[10:20, 5:65] = True  # a long bar: 3 maxima spread along it
    prob = np.full(fg.shape, 0.9, np.float32)
    points = positive_points(fg, prob, 3)
    assert points.shape == (3, 2)
    assert (points[:, 1] >= 13).all() and (points[:, 1] <= 16).all()  # on the ridge rows
    xs = np.sort(points[:, 0])
    assert np.diff(xs).min() >= 5  # at least the inscribed radius apart
    np.testing.assert_array_equal(points, positive_points(fg, prob, 3))


def test_few_pixels_repeat_the_best_point():
    fg = np.zeros((10, 12), bool)
    fg[4, 6] = fg[4, 7] = True
    prob = np.zeros(fg.shape, np.float32)
    prob[4, 7] = 0.8
    prob[4, 6] = 0.6
    points = positive_points(fg, prob, 4)
    assert points.shape == (4, 2)
    np.testing.assert_array_equal(points[0], [7, 4])  # tie on distance: higher prob wins
    assert {tuple(p) for p in points.tolist()} == {(7.0, 4.0), (6.0, 4.0)}


def test_negative_points_keep_clearance_and_spread():
    fg = np.zeros((40, 50), bool)
    fg[15:25, 20:32] = True
    box = slice_box(fg, 6)
    np.testing.assert_array_equal(box, [14, 9, 37, 30])
    prob = np.where(fg, 0.9, 0.1).astype(np.float32)
    points = negative_points(fg, prob, box, 4)
    dist = ndimage.distance_transform_edt(~fg)
    xs, ys = points[:, 0].astype(int), points[:, 1].astype(int)
    assert (dist[ys, xs] > NEGATIVE_CLEARANCE).all()
    assert len({tuple(p) for p in points.tolist()}) == 4
    np.testing.assert_array_equal(points[0], [14, 9])  # farthest from the foreground first
    corners = np.array([[14, 9], [37, 9], [14, 30], [37, 30]], np.float32)
    gaps = np.linalg.norm(points[:, None] - corners[None], axis=-1)
    assert (gaps.min(axis=0) <= 2).all()  # spread: one point near each corner of the box


def test_negative_points_fallbacks():
    fg = np.zeros((12, 14), bool)
    fg[3:9, 4:10] = True  # margin 0: the box is all foreground
    prob = np.where(fg, 0.9, 0.1).astype(np.float32)
    points = negative_points(fg, prob, slice_box(fg, 0), 2)
    assert points.shape == (2, 2)
    assert not fg[points[:, 1].astype(int), points[:, 0].astype(int)].any()
    full = np.ones((6, 7), bool)
    points = negative_points(full, prob[:6, :7], slice_box(full, 0), 3)
    assert points.shape == (3, 2)


def test_no_prompts_for_an_empty_map():
    prob = np.full(SHAPE, 0.1, np.float32)
    config = PromptConfig(positive_points=2, negative_points=2)
    assert slice_prompts(foreground_mask(prob, config), prob, config) == []


def test_min_slice_pixels_and_border_clipping():
    prob = np.zeros((20, 30, 10), np.float32)
    prob[0:3, 0:2, 4] = 0.9  # 6 pixels in the corner of slice 4
    prob[10, 10, 6] = 0.9  # 1 pixel on slice 6 (another component)
    config = PromptConfig(min_slice_pixels=4, box_margin=5, largest_component=False)
    prompts = slice_prompts(foreground_mask(prob, config), prob, config)
    assert [p.index for p in prompts] == [4]
    np.testing.assert_array_equal(prompts[0].box, [0, 0, 6, 7])  # x: columns 0..1, y: rows 0..2


def test_mask_prompt_logits(phantom):
    prob, _ = phantom
    config = PromptConfig(mask_prompt=True, negative_points=1)
    prompts = slice_prompts(foreground_mask(prob, config), prob, config)
    assert prompts
    p = slice_image(prob, prompts[0].index, 2).astype(np.float64)
    logits = prompts[0].mask_logits
    assert logits.dtype == np.float32 and logits.shape == p.shape
    expected = np.log(np.clip(p, 1e-4, 1 - 1e-4) / (1 - np.clip(p, 1e-4, 1 - 1e-4)))
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    all_one = slice_prompts(np.ones((3, 4, 5), bool), np.ones((3, 4, 5), np.float32), config)
    assert np.isfinite(all_one[0].mask_logits).all()


def test_deterministic_and_shape_checked(phantom):
    prob, _ = phantom
    config = PromptConfig(positive_points=4, negative_points=4)
    mask = foreground_mask(prob, config)
    a, b = slice_prompts(mask, prob, config), slice_prompts(mask, prob, config)
    for pa, pb in zip(a, b, strict=True):
        np.testing.assert_array_equal(pa.points, pb.points)
        np.testing.assert_array_equal(pa.box, pb.box)
    with pytest.raises(ValueError, match="differs"):
        slice_prompts(mask[:-1], prob, config)
