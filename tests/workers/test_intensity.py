"""Intensity windowing: MR percentiles, CT level/width, degenerate volumes."""

from __future__ import annotations

import numpy as np
import pytest

from semisam.schemas import IntensityConfig, Modality
from semisam.workers.intensity import percentiles, window_bounds, window_volume


def test_mr_percentile_window():
    image = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)  # values 0..999
    config = IntensityConfig(modality=Modality.mr, percentile_low=10, percentile_high=90)
    low, high = window_bounds(image, config)
    assert low == pytest.approx(99.9) and high == pytest.approx(899.1)
    out = window_volume(image, config)
    assert out.dtype == np.uint8 and out.shape == image.shape
    flat = out.ravel()
    assert (flat[:100] == 0).all() and (flat[900:] == 255).all()
    assert int(flat[500]) == round((500 - low) / (high - low) * 255)
    assert np.all(np.diff(flat.astype(int)) >= 0)  # monotone


def test_mr_outliers_clipped():
    rng = np.random.default_rng(0)
    image = rng.normal(100, 10, (16, 16, 16)).astype(np.float32)
    image[0, 0, 0] = 1e6  # one hot voxel must not squash the window
    out = window_volume(image, IntensityConfig())
    assert out[0, 0, 0] == 255
    assert 100 < np.median(out) < 155


def test_ct_window():
    image = np.array([-1000, -160, 40, 240, 3000], np.float32).reshape(5, 1, 1)
    config = IntensityConfig(modality=Modality.ct, ct_level=40, ct_width=400)
    assert window_bounds(image, config) == (-160.0, 240.0)
    out = window_volume(image, config).ravel()
    np.testing.assert_array_equal(out, [0, 0, 128, 255, 255])


def test_constant_volume_is_zero():
    out = window_volume(np.full((4, 5, 6), 7.0, np.float32), IntensityConfig())
    assert out.dtype == np.uint8 and out.shape == (4, 5, 6)
    assert not out.any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_dtype_and_range(dtype):
    rng = np.random.default_rng(1)
    image = (rng.normal(0, 500, (8, 9, 10))).astype(dtype)
    for config in (IntensityConfig(), IntensityConfig(modality=Modality.ct)):
        out = window_volume(image, config)
        assert out.dtype == np.uint8 and out.shape == image.shape
        assert out.min() == 0 and out.max() == 255


def test_bad_inputs_named():
    with pytest.raises(ValueError, match="3D"):
        window_volume(np.zeros((4, 4), np.float32), IntensityConfig())
    image = np.zeros((3, 3, 3), np.float32)
    image[1, 1, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        window_volume(image, IntensityConfig())


def _values(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "normal":
        return rng.normal(size=n)  # float64
    if kind == "ties":
        return rng.integers(0, 5, n).astype(np.float32)
    if kind == "sorted":  # the strided sample sees a biased picture
        return np.sort(rng.random(n)).astype(np.float32)
    if kind == "background":
        return np.where(rng.random(n) < 0.7, 0.0, rng.exponential(size=n)).astype(np.float32)
    if kind == "sample_misleads":  # every sampled value is 0 or 100: the tails must be redone
        x = rng.random(n).astype(np.float32) + 1
        step = n // 8192
        x[:: 2 * step], x[step :: 2 * step] = 0, 100
        return x
    blocks = np.repeat(rng.normal(size=n // 64), 64)[::-1]
    return np.concatenate([[np.inf] * 5, [-np.inf] * 4, blocks]).astype(np.float32)


@pytest.mark.parametrize(
    "kind", ["normal", "ties", "sorted", "background", "blocks_with_inf", "sample_misleads"])
def test_percentiles_equal_numpy(kind):
    rng = np.random.default_rng(len(kind))
    for n in (1 << 16, 100_003, 300_000):
        x = _values(kind, n, rng)
        for q in ([0.5, 99.5], [0, 100], [50, 50.5], [0.001, 99.999], [33.3, 66.6]):
            with np.errstate(invalid="ignore"):  # inf - inf, as in numpy
                expected, got = np.percentile(x, q), percentiles(x, q)
            assert got.dtype == expected.dtype
            np.testing.assert_array_equal(got, expected)


def test_window_of_a_large_volume_matches_np_percentile():
    rng = np.random.default_rng(5)
    image = np.abs(rng.normal(100, 40, (64, 48, 40))).astype(np.float32)
    image[:, :, :8] = 0  # a background of ties at the low percentile
    config = IntensityConfig()
    low, high = (float(v) for v in np.percentile(image, [config.percentile_low, config.percentile_high]))
    assert window_bounds(image, config) == (low, high)
    scaled = (np.clip(image, low, high) - np.float32(low)) * np.float32(255.0 / (high - low))
    np.testing.assert_array_equal(window_volume(image, config),
                                  np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8))
    image[1, 2, 3] = np.nan  # window_bounds alone falls back to numpy (NaN bounds)
    assert all(np.isnan(window_bounds(image, config)))
