"""Windowing volumes whose intensities reach the ends of float32: right values, no warnings."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from semisam.schemas import IntensityConfig
from semisam.workers.intensity import percentiles, window_volume

BIG = np.finfo(np.float32).max


@pytest.mark.parametrize("shape", [(8, 8, 8), (64, 64, 32)])  # np.percentile path, selection path
def test_extreme_intensities_window_without_overflow(shape):
    rng = np.random.default_rng(0)
    image = rng.uniform(-BIG / 4, BIG / 4, shape).astype(np.float32)
    image[:2] = BIG
    image[2:4] = -BIG
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any RuntimeWarning (overflow, invalid) fails the test
        q = percentiles(image, [0.5, 99.5])
        out = window_volume(image, IntensityConfig())
    expected = np.percentile(image.astype(np.float64), [0.5, 99.5])
    np.testing.assert_array_equal(q, expected)
    assert np.isfinite(q).all()
    assert out.dtype == np.uint8
    assert (out[:2] == 255).all() and (out[2:4] == 0).all()
    # the middle of the range lands mid-scale, as a linear window says
    lo, hi = (float(v) for v in q)
    mid = image[4:]
    ref = np.rint(np.clip((np.clip(mid.astype(np.float64), lo, hi) - lo) * 255.0 / (hi - lo), 0, 255))
    np.testing.assert_array_equal(out[4:], ref.astype(np.uint8))
