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


# --- the fast paths against the plain rules of the module docstring (sort everything, scan) ---


def _ranked(rows, cols, keys):
    """Candidate pixels in np.lexsort order of ``keys`` (primary last), as float64 rows, cols."""
    order = np.lexsort((cols, rows, *keys))
    return rows[order].astype(np.float64), cols[order].astype(np.float64)


def _reference_positive(fg: np.ndarray, prob: np.ndarray, k: int) -> np.ndarray:
    dist = ndimage.distance_transform_edt(np.pad(fg, 1))[1:-1, 1:-1]
    rows, cols = np.nonzero(fg)
    radius = max(float(dist[rows, cols].max()), 1.0)
    rows, cols = _ranked(rows, cols, (-prob[rows, cols], -dist[rows, cols]))
    chosen, nearest = [0], (rows - rows[0]) ** 2 + (cols - cols[0]) ** 2
    while len(chosen) < k and radius >= 1.0:
        free = np.flatnonzero(nearest >= radius**2)
        if free.size == 0:
            radius /= 2.0
            continue
        chosen.append(int(free[0]))
        nearest = np.minimum(nearest, (rows - rows[free[0]]) ** 2 + (cols - cols[free[0]]) ** 2)
    chosen += [0] * (k - len(chosen))
    return np.stack([cols[chosen], rows[chosen]], axis=1).astype(np.float32)


def _reference_spread(candidates, away, prob, k):
    rows, cols = np.nonzero(candidates)
    rows, cols = _ranked(rows, cols, (prob[rows, cols], -away[rows, cols]))
    chosen, nearest = [0], (rows - rows[0]) ** 2 + (cols - cols[0]) ** 2
    while len(chosen) < k and nearest.max() > 0:
        pick = int(np.argmax(nearest))
        chosen.append(pick)
        nearest = np.minimum(nearest, (rows - rows[pick]) ** 2 + (cols - cols[pick]) ** 2)
    chosen = [chosen[i % len(chosen)] for i in range(k)]
    return np.stack([cols[chosen], rows[chosen]], axis=1).astype(np.float32)


def _reference_negative(fg, prob, box, k):
    x0, y0, x1, y1 = (int(v) for v in box)
    fg_box, prob_box = fg[y0 : y1 + 1, x0 : x1 + 1], prob[y0 : y1 + 1, x0 : x1 + 1]
    assert fg_box.any() and not fg_box.all()  # the in-box rule only
    cleared = ~ndimage.binary_dilation(fg_box, iterations=NEGATIVE_CLEARANCE)
    candidates = cleared if cleared.any() else ~fg_box
    away = ndimage.distance_transform_edt(~fg_box)
    return _reference_spread(candidates, away, prob_box, k) + np.array([x0, y0], np.float32)


def _random_slice(rng: np.random.Generator, shape=(23, 31)) -> tuple[np.ndarray, np.ndarray]:
    """A blobby foreground with holes and a coarse probability (many ties), some of it NaN."""
    fg = ndimage.gaussian_filter(rng.random(shape), rng.uniform(0.5, 2.5)) > rng.uniform(0.45, 0.55)
    prob = np.round(rng.random(shape) * rng.choice([2, 5, 100])) / 100
    prob[rng.random(shape) < 0.02] = np.nan
    return fg, prob.astype(np.float32)


def test_points_equal_the_sorted_reference():
    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(300):
        fg, prob = _random_slice(rng)
        if not fg.any() or fg.all():
            continue
        k = int(rng.integers(1, 7))
        np.testing.assert_array_equal(positive_points(fg, prob, k), _reference_positive(fg, prob, k))
        box = slice_box(fg, int(rng.integers(0, 6)))
        x0, y0, x1, y1 = (int(v) for v in box)
        if not fg[y0 : y1 + 1, x0 : x1 + 1].all():
            np.testing.assert_array_equal(negative_points(fg, prob, box, k),
                                          _reference_negative(fg, prob, box, k))
            checked += 1
    assert checked > 100


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_prompts_equal_the_per_slice_functions(axis):
    rng = np.random.default_rng(axis)
    prob = ndimage.gaussian_filter(rng.random((26, 19, 22)), 1.5).astype(np.float32)
    prob = (prob - prob.min()) / (prob.max() - prob.min())
    config = PromptConfig(slice_axis=axis, threshold=0.45, positive_points=3, negative_points=2,
                          mask_prompt=True, largest_component=False)
    mask = foreground_mask(prob, config)
    prompts = slice_prompts(mask, prob, config)
    assert len(prompts) > 5
    for prompt in prompts:
        fg, p = slice_image(mask, prompt.index, axis), slice_image(prob, prompt.index, axis)
        box = slice_box(fg, config.box_margin)
        np.testing.assert_array_equal(prompt.box, box)
        expected = np.concatenate([positive_points(fg, p, 3), negative_points(fg, p, box, 2)])
        np.testing.assert_array_equal(prompt.points, expected)


def test_largest_component_equals_labelling_the_whole_volume():
    rng = np.random.default_rng(3)
    for trial in range(40):
        prob = ndimage.gaussian_filter(rng.random((21, 17, 15)), rng.uniform(0.6, 1.5))
        prob = (prob > np.quantile(prob, rng.uniform(0.8, 0.97))).astype(np.float32)
        if trial % 4 == 0:  # two equally large components: the first in scan order wins
            prob[:] = 0
            prob[12:15, 3:6, 9:12] = prob[2:5, 8:11, 4:7] = 1
        labels, count = ndimage.label(prob > 0.5, structure=np.ones((3, 3, 3), bool))
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        expected = labels == np.argmax(sizes) if count > 1 else prob > 0.5
        np.testing.assert_array_equal(foreground_mask(prob, PromptConfig()), expected)
