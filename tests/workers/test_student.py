import os
import pickle

import numpy as np
import pytest
import torch

from semisam.schemas import CheckpointError, StudentInferenceConfig
from semisam.workers.student import (
    build_student,
    load_student,
    predict_probability,
    save_student,
    zscore,
)
from tests.conftest import TEST_SPEC


def test_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_student(TEST_SPEC)
    save_student(tmp_path / "s.pt", model, TEST_SPEC, {"iterations": 3})
    loaded, spec, meta = load_student(tmp_path / "s.pt")
    assert spec == TEST_SPEC and meta["iterations"] == 3
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k


def test_probability_map_shape_and_range(tmp_path):
    model = build_student(TEST_SPEC).eval()
    img = np.random.default_rng(0).normal(size=(40, 36, 20)).astype(np.float32)
    prob = predict_probability(model, img, TEST_SPEC, StudentInferenceConfig())
    assert prob.shape == img.shape and prob.dtype == np.float32
    assert 0.0 <= prob.min() and prob.max() <= 1.0


def test_flip_tta_is_the_mean_of_flipped_views():
    torch.manual_seed(1)
    model = build_student(TEST_SPEC).eval()
    img = np.random.default_rng(2).normal(size=(40, 36, 28)).astype(np.float32)
    plain = predict_probability(model, img, TEST_SPEC, StudentInferenceConfig())
    tta = predict_probability(model, img, TEST_SPEC, StudentInferenceConfig(flip_axes=(0, 2)))
    flipped = [np.flip(predict_probability(model, np.flip(img, a).copy(), TEST_SPEC,
                                           StudentInferenceConfig()), a) for a in (0, 2)]
    np.testing.assert_allclose(tta, (plain + flipped[0] + flipped[1]) / 3, atol=1e-5)
    assert np.abs(tta - plain).max() > 1e-3  # the flipped views do change the answer
    assert tta.shape == img.shape and tta.dtype == np.float32


@pytest.mark.parametrize("axes", [(3,), (0, 0), (-1,)])
def test_flip_axes_validated(axes):
    with pytest.raises(ValueError, match="flip_axes"):
        StudentInferenceConfig(flip_axes=axes)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_student(tmp_path / "absent.pt")


def test_corrupt_file(tmp_path):
    path = tmp_path / "bad.pt"
    path.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match=str(path)):
        load_student(path)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-checkpoint",))


def test_code_executing_pickle_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"format": "semisam-student", "x": _Evil()}, path, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(CheckpointError, match="refused"):
        load_student(path)
    assert not (tmp_path / "pwned-by-checkpoint").exists()


def test_not_a_student_checkpoint(tmp_path):
    torch.save({"a": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a semisam student checkpoint"):
        load_student(tmp_path / "other.pt")


def test_zscore_matches_the_definition_on_ordinary_volumes():
    image = np.random.default_rng(0).normal(300.0, 40.0, (12, 10, 8)).astype(np.float32)
    expected = (image.astype(np.float64) - image.mean(dtype=np.float64)) / image.std(dtype=np.float64)
    np.testing.assert_allclose(zscore(image), expected, atol=1e-5)
    assert zscore(image).dtype == np.float32


@pytest.mark.parametrize("scale", [3.0e38, -3.0e38, 1.0e30])
def test_zscore_of_intensities_near_the_float32_limit_is_finite(scale):
    """A scaled export can hold values near float32's limit: no overflow warning, no Inf/NaN,
    and the z-score still separates the two intensity groups."""
    image = np.zeros((8, 8, 8), np.float32)
    image[2:5, 2:5, 2:5] = scale
    with np.errstate(all="raise"):
        z = zscore(image)
    assert np.isfinite(z).all()
    assert abs(float(z.mean())) < 1e-4 and abs(float(z.std()) - 1.0) < 1e-3
    assert (z[2:5, 2:5, 2:5] > 0).all() == (scale > 0)


def test_zscore_of_a_constant_volume_is_zero():
    np.testing.assert_array_equal(zscore(np.full((4, 4, 4), 7.0, np.float32)), 0.0)
