"""Per-class fused labels combined into one label map (`combine_classes`)."""

from __future__ import annotations

import numpy as np
import pytest

from semisam.workers.class_fusion import combine_classes


def _student(shape, k):
    return np.full((k + 1, *shape), 1.0 / (k + 1), np.float32)


def test_claims_overlaps_and_background():
    shape = (4, 1, 1)
    a = np.array([1, 1, 0, 0], bool).reshape(shape)
    b = np.array([0, 1, 1, 0], bool).reshape(shape)
    ca = np.array([0.9, 0.8, 0.3, 0.7], np.float32).reshape(shape)
    cb = np.array([0.2, 0.5, 0.6, 0.4], np.float32).reshape(shape)
    label, conf = combine_classes([a, b], [ca, cb], _student(shape, 2), values=[1, 4])
    np.testing.assert_array_equal(label.ravel(), [1, 1, 4, 0])
    # overlap (voxel 1): class 1 wins by confidence, confidence = margin over class 4
    np.testing.assert_allclose(conf.ravel(), [0.9, 0.3, 0.6, 0.4], atol=1e-6)
    assert label.dtype == np.uint8 and conf.dtype == np.float32


def test_equal_confidence_goes_to_the_student_then_the_lower_value():
    shape = (2, 1, 1)
    both = np.ones(shape, bool)
    c = np.full(shape, 0.5, np.float32)
    student = _student(shape, 2)
    student[2, 0] = 0.6  # voxel 0: the student prefers the second class
    label, _ = combine_classes([both, both], [c, c], student, values=[2, 3])
    np.testing.assert_array_equal(label.ravel(), [3, 2])


def test_one_class_is_the_fused_label_itself():
    rng = np.random.default_rng(0)
    lab = rng.random((5, 6, 7)) > 0.5
    conf = rng.random((5, 6, 7)).astype(np.float32)
    label, out = combine_classes([lab], [conf], _student(lab.shape, 1), values=[1])
    np.testing.assert_array_equal(label, lab.astype(np.uint8))
    np.testing.assert_array_equal(out, conf)


def test_mismatched_inputs_are_refused():
    lab = np.zeros((2, 2, 2), bool)
    with pytest.raises(ValueError, match="3-channel student"):
        combine_classes([lab], [lab.astype(np.float32)], _student(lab.shape, 2), values=[1])
