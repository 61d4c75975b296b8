"""Fusion: pseudo-label modes, confidence formula and encoding, per-volume statistics."""

from __future__ import annotations

import numpy as np
import pytest

from semisam.schemas import CONFIDENCE_SCALE, FusionConfig, FusionMode
from semisam.workers.fusion import (
    MaskerView,
    confidence_from_uint8,
    confidence_to_uint8,
    fuse,
    margin,
    volume_stats,
)


def _case(axis: int = 2):
    """Student XxYxZ (2x2x3 along axis 2) and masker for prompted slices [2, 0] (2x2x2 each)."""
    student = np.array(
        [[[0.9, 0.2, 0.8], [0.6, 0.1, 0.3]], [[0.4, 0.7, 0.5], [0.95, 0.05, 0.0]]], np.float32
    )
    # masker slices in the frame of np.take(volume, i, 2): rows = axis 0, columns = axis 1
    masker = np.array([[[0.9, 0.1], [0.5, 0.2]], [[0.7, 0.3], [0.8, 0.6]]], np.float32)
    student = np.moveaxis(student, 2, axis)
    return student, masker, [2, 0]


def _slices(volume: np.ndarray, axis: int) -> list[np.ndarray]:
    return [np.take(volume, i, axis) for i in range(volume.shape[axis])]


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize(
    "mode, expected_prompted",
    [
        # slice 2: student [[.8,.3],[.5,0]] masker [[.9,.1],[.5,.2]];
        # slice 0: student [[.9,.6],[.4,.95]] masker [[.7,.3],[.8,.6]]
        (FusionMode.masker_on_prompted, {2: [[1, 0], [0, 0]], 0: [[1, 0], [1, 1]]}),
        (FusionMode.intersection, {2: [[1, 0], [0, 0]], 0: [[1, 0], [0, 1]]}),
        (FusionMode.union, {2: [[1, 0], [0, 0]], 0: [[1, 1], [1, 1]]}),
        # means: slice 2 [[.85,.2],[.5,.1]]; slice 0 [[.8,.45],[.6,.775]]
        (FusionMode.average, {2: [[1, 0], [0, 0]], 0: [[1, 0], [1, 1]]}),
    ],
)
def test_modes(axis, mode, expected_prompted):
    student, masker, prompted = _case(axis)
    result = fuse(student, masker, prompted, FusionConfig(mode=mode), slice_axis=axis)
    assert result.pseudo_label.dtype == np.uint8 and result.pseudo_label.shape == student.shape
    labels = _slices(result.pseudo_label, axis)
    for index, expected in expected_prompted.items():
        np.testing.assert_array_equal(labels[index], expected)
    np.testing.assert_array_equal(labels[1], [[0, 0], [1, 0]])  # student > 0.5 off the prompts


def test_confidence_formula():
    student, masker, prompted = _case()
    result = fuse(student, masker, prompted, FusionConfig(), slice_axis=2)
    conf = confidence_from_uint8(result.confidence)
    s2, m2 = student[:, :, 2], masker[0]
    expected2 = np.abs(2 * m2 - 1) * (1 - np.abs(m2 - s2))
    np.testing.assert_allclose(conf[:, :, 2], expected2, atol=0.5 / CONFIDENCE_SCALE)
    np.testing.assert_allclose(
        conf[:, :, 1], np.abs(2 * student[:, :, 1] - 1), atol=0.5 / CONFIDENCE_SCALE
    )
    assert conf[1, 0, 2] == 0.0  # masker at 0.5 -> no confidence
    assert ((conf >= 0) & (conf <= 1)).all()


def test_average_mode_weight_and_confidence():
    student, masker, prompted = _case()
    # masker weight 0.25 on slice 0: .25*[[.7,.3],[.8,.6]] + .75*[[.9,.6],[.4,.95]]
    cfg = FusionConfig(mode=FusionMode.average, masker_weight=0.25)
    result = fuse(student, masker, prompted, cfg, slice_axis=2)
    fused0 = 0.25 * masker[1] + 0.75 * student[:, :, 0]
    np.testing.assert_array_equal(result.pseudo_label[:, :, 0], fused0 > 0.5)
    np.testing.assert_array_equal(result.pseudo_label[:, :, 0], [[1, 1], [0, 1]])
    conf = confidence_from_uint8(result.confidence)
    np.testing.assert_allclose(conf[:, :, 0], np.abs(2 * fused0 - 1), atol=0.5 / CONFIDENCE_SCALE)
    # weight 1 is the masker alone, weight 0 the student alone
    only_masker = fuse(student, masker, prompted, FusionConfig(mode=FusionMode.average, masker_weight=1.0), 2)
    np.testing.assert_array_equal(only_masker.pseudo_label[:, :, 0], masker[1] > 0.5)
    only_student = fuse(student, masker, prompted, FusionConfig(mode=FusionMode.average, masker_weight=0.0), 2)
    np.testing.assert_array_equal(only_student.pseudo_label, (student > 0.5).astype(np.uint8))


def test_margin_with_other_threshold():
    np.testing.assert_allclose(margin(np.array([0.0, 0.3, 0.65, 1.0]), 0.3), [1, 0, 0.5, 1])


def test_confidence_in_range_on_random_inputs():
    rng = np.random.default_rng(0)
    student = rng.uniform(-0.1, 1.1, (5, 6, 7)).astype(np.float32)  # clipped to [0, 1]
    masker = rng.random((3, 5, 6)).astype(np.float32)
    for mode in FusionMode:
        result = fuse(student, masker, [0, 3, 6], FusionConfig(mode=mode), slice_axis=2)
        assert result.confidence.dtype == np.uint8
        assert set(np.unique(result.pseudo_label)) <= {0, 1}
        assert 0.0 <= result.stats.mean_confidence <= 1.0


def test_uint8_encoding():
    c = np.array([0.0, 0.5, 1.0, 1 / 255, 0.999, 1.2, -0.1], np.float32)
    np.testing.assert_array_equal(confidence_to_uint8(c), [0, 128, 255, 1, 255, 255, 0])
    assert confidence_to_uint8(c).dtype == np.uint8
    np.testing.assert_allclose(confidence_from_uint8(np.array([0, 51, 255], np.uint8)), [0, 0.2, 1])
    with pytest.raises(ValueError, match="non-finite"):
        confidence_to_uint8(np.array([np.nan]))


def test_stats_by_hand():
    student, masker, prompted = _case()
    result = fuse(student, masker, prompted, FusionConfig(), slice_axis=2)
    stats = result.stats
    assert stats.slices_total == 3 and stats.slices_prompted == 2
    # pseudo-label: slice 2 -> 1 voxel, slice 0 -> 3 voxels, slice 1 (student) -> 1 voxel
    assert stats.foreground_voxels == 5
    assert stats.foreground_fraction == pytest.approx(5 / 12)
    # student fg on prompted slices: slice 2 {(0,0)}, slice 0 {(0,0),(0,1),(1,1)} -> 4 voxels
    # masker fg: slice 2 {(0,0)}, slice 0 {(0,0),(1,0),(1,1)} -> 4 voxels; both: 3
    assert stats.student_masker_dice == pytest.approx(2 * 3 / (4 + 4))
    s, m = student[:, :, [2, 0]], np.moveaxis(masker, 0, 2)
    conf = np.abs(2 * student - 1)
    conf[:, :, [2, 0]] = np.abs(2 * m - 1) * (1 - np.abs(m - s))
    assert stats.mean_confidence == pytest.approx(conf.mean(), abs=1e-6)


def test_no_prompted_slices():
    student, _, _ = _case()
    for masker in (None, np.zeros((0, 2, 2), np.float32)):
        result = fuse(student, masker, [], FusionConfig(), slice_axis=2)
        np.testing.assert_array_equal(result.pseudo_label, student > 0.5)
        assert result.stats.student_masker_dice is None and result.stats.slices_prompted == 0


def test_dice_of_two_empty_masks_is_one():
    student = np.zeros((3, 3, 2), np.float32)
    masker = np.zeros((1, 3, 3), np.float32)
    stats = volume_stats(
        np.zeros((3, 3, 2), np.uint8), np.ones((3, 3, 2)), student, masker, [1], FusionConfig(), 2
    )
    assert stats.student_masker_dice == 1.0 and stats.mean_confidence == 1.0


def test_bad_inputs_named():
    student, masker, prompted = _case()
    with pytest.raises(ValueError, match="shape"):
        fuse(student, masker[:1], prompted, FusionConfig(), slice_axis=2)
    with pytest.raises(ValueError, match="unique"):
        fuse(student, masker, [0, 0], FusionConfig(), slice_axis=2)
    with pytest.raises(ValueError, match="None"):
        fuse(student, None, [0], FusionConfig(), slice_axis=2)
    with pytest.raises(ValueError, match="axis"):
        fuse(student, masker, prompted, FusionConfig(), slice_axis=3)
    with pytest.raises(ValueError, match="non-finite"):
        fuse(student * np.nan, masker, prompted, FusionConfig(), slice_axis=2)


def test_end_to_end_on_a_phantom():
    """Window -> prompts -> random walker -> fusion recovers a sphere the student over-segments."""
    from semisam.schemas import IntensityConfig, PromptConfig, RandomWalkerConfig
    from semisam.workers.intensity import window_volume
    from semisam.workers.localization import foreground_mask, slice_prompts, stack_slices
    from semisam.workers.maskers.random_walker import RandomWalkerMasker

    grid = np.indices((40, 36, 24), dtype=np.float64)
    dist = np.sqrt((grid[0] - 18) ** 2 + (grid[1] - 20) ** 2 + ((grid[2] - 12) * 1.5) ** 2)
    truth = dist <= 10
    rng = np.random.default_rng(0)
    image = np.where(truth, 300.0, 100.0) + rng.normal(0, 20, truth.shape)
    student = np.clip(1.3 - dist / 14.0, 0, 1).astype(np.float32)  # too wide: radius ~11
    prompts_cfg = PromptConfig(positive_points=2, negative_points=2, box_margin=4)
    prompts = slice_prompts(foreground_mask(student, prompts_cfg), student, prompts_cfg)
    indices = [p.index for p in prompts]
    windowed = window_volume(image.astype(np.float32), IntensityConfig())
    masker_prob = RandomWalkerMasker(RandomWalkerConfig()).mask_slices(
        stack_slices(windowed, indices, 2), prompts
    )
    result = fuse(student, masker_prob, indices, FusionConfig(), 2)

    def dice(a, b):
        return 2 * (a & b).sum() / (a.sum() + b.sum())

    assert dice(result.pseudo_label > 0, truth) >= 0.9
    assert dice(result.pseudo_label > 0, truth) > dice(student > 0.5, truth)
    assert result.stats.slices_prompted == len(prompts) > 0


def _reference_margin(p: np.ndarray, t: float) -> np.ndarray:
    above, below = (p - t) / (1.0 - t), (t - p) / t
    return np.clip(np.where(p >= t, above, below), 0.0, 1.0).astype(np.float32)


def _reference_fuse(student, views, config):
    """The rules of the module docstring, voxel by voxel over the covered voxels."""
    s = np.clip(student.astype(np.float32), 0.0, 1.0)
    total, count = np.zeros(s.shape, np.float32), np.zeros(s.shape, np.uint8)
    for axis, indices, prob in views:
        np.moveaxis(total, axis, 0)[indices] += np.clip(prob, 0.0, 1.0)
        np.moveaxis(count, axis, 0)[indices] += 1
    covered = count > 0
    m = np.where(covered, total / np.maximum(count, 1), 0.0).astype(np.float32)
    label, conf = s > 0.5, _reference_margin(s, 0.5)
    ps, pm, t = s[covered], m[covered], config.masker_threshold
    if config.mode == FusionMode.average:
        fused = config.masker_weight * pm + (1.0 - config.masker_weight) * ps
        label[covered], conf[covered] = fused > 0.5, _reference_margin(fused, 0.5)
    else:
        label[covered] = {FusionMode.masker_on_prompted: pm > t,
                          FusionMode.intersection: (pm > t) & (ps > 0.5),
                          FusionMode.union: (pm > t) | (ps > 0.5)}[config.mode]
        conf[covered] = _reference_margin(pm, t) * (1.0 - np.abs(pm - ps))
    dice_s, dice_m = ps > 0.5, pm > t
    total_fg = int(dice_s.sum()) + int(dice_m.sum())
    dice = 1.0 if total_fg == 0 else 2.0 * int((dice_s & dice_m).sum()) / total_fg
    encoded = np.rint(np.clip(conf, 0.0, 1.0) * CONFIDENCE_SCALE).astype(np.uint8)
    return label.astype(np.uint8), encoded, float(np.mean(conf, dtype=np.float64)), dice


@pytest.mark.parametrize("mode", list(FusionMode))
def test_fuse_equals_the_voxelwise_reference(mode):
    rng = np.random.default_rng(len(mode.value))
    shape = (9, 8, 7)
    for trial in range(12):
        student = rng.uniform(-0.2, 1.2, shape).astype(np.float32)
        student[rng.random(shape) < 0.1] = 0.5  # exactly at the threshold
        student[rng.random(shape) < 0.05] = -0.0
        axes = [2, 0, 1][: 1 + trial % 3]
        views = []
        for axis in axes:
            indices = sorted(rng.choice(shape[axis], int(rng.integers(1, shape[axis])), replace=False))
            plane = tuple(n for a, n in enumerate(shape) if a != axis)
            prob = np.round(rng.uniform(-0.1, 1.1, (len(indices), *plane)), 1).astype(np.float32)
            views.append((axis, [int(i) for i in indices], prob))
        config = FusionConfig(mode=mode, masker_threshold=[0.5, 0.3][trial % 2],
                              masker_weight=[0.5, 0.25, 1.0][trial % 3])
        (axis, indices, prob), extra = views[0], views[1:]
        result = fuse(student, prob, indices, config, axis,
                      extra_views=[MaskerView(a, i, p) for a, i, p in extra])
        label, conf, mean_conf, dice = _reference_fuse(student, views, config)
        np.testing.assert_array_equal(result.pseudo_label, label)
        np.testing.assert_array_equal(result.confidence, conf)
        assert result.pseudo_label.dtype == result.confidence.dtype == np.uint8
        assert result.stats.mean_confidence == mean_conf and result.stats.student_masker_dice == dice
        np.testing.assert_array_equal(margin(student, config.masker_threshold),
                                      _reference_margin(student, config.masker_threshold))


def test_largest_component_keeps_one_blob_and_zeroes_removed_confidence():
    student = np.zeros((12, 12, 6), np.float32)
    student[1:6, 1:6, 1:5] = 0.9  # the structure
    student[9:11, 9:11, 2:4] = 0.95  # a small false positive far from it
    plain = fuse(student, None, [], FusionConfig(), 2)
    kept = fuse(student, None, [], FusionConfig(largest_component=True), 2)
    assert plain.pseudo_label[9, 9, 2] == 1 and kept.pseudo_label[9, 9, 2] == 0
    assert kept.pseudo_label[3, 3, 2] == 1 and kept.confidence[9, 9, 2] == 0
    assert kept.confidence[3, 3, 2] == plain.confidence[3, 3, 2] > 0
    assert kept.stats.foreground_voxels == 5 * 5 * 4


def _two_structures():
    """A student that sees structure A; a masker whose prompted slices hold structure B only."""
    student = np.zeros((16, 16, 6), np.float32)
    student[1:7, 1:7, 1:5] = 0.9
    masker = np.zeros((4, 16, 16), np.float32)
    masker[:, 9:15, 9:15] = 0.95  # slices 1..4 along axis 2, as (N, H, W)
    return student, masker, [1, 2, 3, 4]


def test_a_fused_label_that_left_the_students_structure_falls_back_to_the_student():
    student, masker, prompted = _two_structures()
    cfg = FusionConfig(mode=FusionMode.masker_on_prompted, largest_component=True)
    followed = fuse(student, masker, prompted, cfg, 2)
    assert followed.pseudo_label[12, 12, 2] == 1 and followed.pseudo_label[3, 3, 2] == 0
    assert followed.stats.fused_student_dice == 0.0 and not followed.stats.masker_rejected
    guarded = fuse(student, masker, prompted, cfg.model_copy(update={"min_student_agreement": 0.4}), 2)
    alone = fuse(student, None, [], FusionConfig(largest_component=True), 2)
    np.testing.assert_array_equal(guarded.pseudo_label, alone.pseudo_label)
    np.testing.assert_array_equal(guarded.confidence, alone.confidence)
    assert guarded.stats.masker_rejected and guarded.stats.fused_student_dice == 0.0


def test_a_masker_that_agrees_with_the_student_is_kept_by_the_guard():
    student, masker, prompted = _two_structures()
    masker[:] = 0.0
    masker[:, 1:7, 2:7] = 0.95  # the student's structure, one column narrower
    cfg = FusionConfig(mode=FusionMode.masker_on_prompted, largest_component=True,
                       min_student_agreement=0.4)
    fused = fuse(student, masker, prompted, cfg, 2)
    assert not fused.stats.masker_rejected and fused.stats.fused_student_dice > 0.9
    assert fused.pseudo_label[1, 3, 2] == 1 and fused.pseudo_label[3, 1, 2] == 0
