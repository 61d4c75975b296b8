"""The metrics agree with medpy's dc, jc, hd95 and asd (medpy is a test dependency only)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from semisam.training.metrics import asd, case_metrics, dice, hd95, jaccard, largest_component

binary = pytest.importorskip("medpy.metric.binary")


def _agree(pred: np.ndarray, ref: np.ndarray, spacing) -> None:
    assert dice(pred, ref) == pytest.approx(binary.dc(pred, ref))
    assert jaccard(pred, ref) == pytest.approx(binary.jc(pred, ref))
    assert hd95(pred, ref, spacing) == pytest.approx(binary.hd95(pred, ref, voxelspacing=spacing))
    assert asd(pred, ref, spacing) == pytest.approx(binary.asd(pred, ref, voxelspacing=spacing))


@pytest.mark.parametrize("seed", range(6))
def test_random_masks_agree_with_medpy(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in rng.integers(6, 24, 3))
    pred = rng.random(shape) < rng.uniform(0.05, 0.5)
    ref = rng.random(shape) < rng.uniform(0.05, 0.5)
    for spacing in (None, tuple(rng.uniform(0.3, 3.0, 3))):
        _agree(pred, ref, spacing)


def _blob(shape, centre, radius) -> np.ndarray:
    grid = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius ** 2


@pytest.mark.parametrize("spacing", [None, (0.7, 0.7, 2.5), (1.0, 3.0, 0.5)])
def test_shifted_blobs_and_anisotropic_spacing(spacing):
    pred = _blob((30, 28, 20), (14, 12, 9), 6)
    ref = _blob((30, 28, 20), (16, 13, 10), 7)
    _agree(pred, ref, spacing)
    assert hd95(pred, ref, (1.0, 1.0, 5.0)) != pytest.approx(hd95(pred, ref, None))


def test_masks_touching_the_border():
    pred = np.zeros((10, 12, 8), bool)
    ref = np.zeros_like(pred)
    pred[:4, :, :3] = True
    ref[:5, 2:, :] = True
    _agree(pred, ref, (0.5, 1.5, 2.0))


def test_single_voxels():
    pred = np.zeros((9, 9, 9), bool)
    ref = np.zeros_like(pred)
    pred[4, 4, 4] = True
    ref[1, 7, 4] = True
    _agree(pred, ref, (1.0, 2.0, 0.5))
    _agree(pred, pred.copy(), None)
    assert hd95(pred, pred) == 0.0 and dice(pred, pred) == 1.0


def test_empty_prediction_or_truth():
    ref = _blob((12, 12, 12), (6, 6, 6), 3)
    empty = np.zeros_like(ref)
    for pred, truth in ((empty, ref), (ref, empty)):
        assert dice(pred, truth) == binary.dc(pred, truth) == 0.0
        assert jaccard(pred, truth) == binary.jc(pred, truth) == 0.0
        with pytest.raises(RuntimeError):
            binary.hd95(pred, truth)
        assert math.isnan(hd95(pred, truth)) and math.isnan(asd(pred, truth, (1, 2, 3)))
    # both empty: medpy's jc says 1.0; its dc means to (ZeroDivisionError branch) but numpy
    # integer division gives NaN instead. Both are 1.0 here: two empty masks agree perfectly.
    assert jaccard(empty, empty) == binary.jc(empty, empty) == 1.0
    assert dice(empty, empty) == 1.0 and math.isnan(binary.dc(empty, empty))
    values = case_metrics(empty, ref, (1.0, 1.0, 2.0))
    assert values["dice"] == 0.0 and all(math.isnan(values[k]) for k in ("hd95_mm", "asd_voxels"))


def test_case_metrics_units():
    pred = _blob((20, 20, 20), (9, 10, 10), 5)
    ref = _blob((20, 20, 20), (11, 10, 10), 5)
    spacing = (2.0, 1.0, 1.0)
    values = case_metrics(pred, ref, spacing)
    assert values["hd95_voxels"] == pytest.approx(binary.hd95(pred, ref))
    assert values["hd95_mm"] == pytest.approx(binary.hd95(pred, ref, voxelspacing=spacing))
    assert values["asd_mm"] == pytest.approx(binary.asd(pred, ref, voxelspacing=spacing))


def test_largest_component():
    mask = np.zeros((20, 20, 20), bool)
    mask[2:5, 2:5, 2:5] = True
    mask[10:18, 10:18, 10:18] = True
    kept = largest_component(mask)
    assert kept.sum() == 8 ** 3 and not kept[3, 3, 3]
    assert not largest_component(np.zeros((4, 4, 4), bool)).any()
