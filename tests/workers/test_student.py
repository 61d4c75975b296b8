import os
import pickle

import numpy as np
import pytest
import torch
from monai.networks.nets import DynUNet, UNet, VNet
from pydantic import ValidationError

from semisam.schemas import CheckpointError, StudentInferenceConfig, StudentSpec
from semisam.workers.student import (
    build_student,
    load_student,
    predict_probability,
    read_checkpoint,
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


# --- architectures: monai.UNet (default), monai.VNet, monai.DynUNet -------------------------

VNET_SPEC = StudentSpec(architecture="monai.VNet", patch_size=(32, 32, 32))
DYNUNET_SPEC = StudentSpec(architecture="monai.DynUNet", channels=(4, 8, 16), strides=(2, 2),
                           num_res_units=1, patch_size=(16, 16, 16))
ARCH_SPECS = {"monai.UNet": TEST_SPEC, "monai.VNet": VNET_SPEC, "monai.DynUNet": DYNUNET_SPEC}
ARCH_CLASSES = {"monai.UNet": UNet, "monai.VNet": VNet, "monai.DynUNet": DynUNet}


@pytest.mark.parametrize("arch", list(ARCH_SPECS))
def test_each_architecture_maps_the_input_size_to_logits_of_that_size(arch):
    """``1x1x32x32x32`` z-scored input -> ``1x{out_channels}x32x32x32`` finite logits."""
    spec = ARCH_SPECS[arch]
    torch.manual_seed(0)
    model = build_student(spec).eval()
    assert type(model) is ARCH_CLASSES[arch]
    with torch.no_grad():
        out = model(torch.randn(1, 1, 32, 32, 32))
    assert out.shape == (1, spec.out_channels, 32, 32, 32) and torch.isfinite(out).all()


@pytest.mark.parametrize("arch", ["monai.VNet", "monai.DynUNet"])
def test_new_architectures_round_trip_through_a_checkpoint(arch, tmp_path):
    spec = ARCH_SPECS[arch]
    torch.manual_seed(3)
    model = build_student(spec).eval()
    x = torch.randn(1, 1, *spec.patch_size)
    with torch.no_grad():
        before = model(x)
    save_student(tmp_path / "s.pt", model, spec, {"iterations": 1})
    assert read_checkpoint(tmp_path / "s.pt")["spec"]["architecture"] == arch  # weights_only=True
    loaded, loaded_spec, _ = load_student(tmp_path / "s.pt")
    assert loaded_spec == spec and type(loaded) is ARCH_CLASSES[arch] and not loaded.training
    with torch.no_grad():
        after = loaded(x)
    assert torch.equal(before, after)


@pytest.mark.parametrize("arch", ["monai.VNet", "monai.DynUNet"])
def test_new_architectures_give_probabilities_on_an_odd_sized_volume(arch):
    """37x51x29: larger than the patch on some axes (overlapping windows), smaller on others
    (padded), not divisible by 16 anywhere."""
    spec = ARCH_SPECS[arch]
    torch.manual_seed(4)
    model = build_student(spec).eval()
    img = np.random.default_rng(5).normal(100.0, 20.0, size=(37, 51, 29)).astype(np.float32)
    prob = predict_probability(model, img, spec, StudentInferenceConfig())
    assert prob.shape == img.shape and prob.dtype == np.float32
    assert np.isfinite(prob).all() and 0.0 <= prob.min() and prob.max() <= 1.0


def test_vnet_dropout_is_the_spec_dropout_everywhere():
    """MONAI fixes some VNet skip dropouts at 0.5; the spec's dropout overrides all of them."""
    for p in (0.0, 0.3):
        model = build_student(StudentSpec(architecture="monai.VNet", patch_size=(32, 32, 32),
                                          dropout=p))
        probs = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout3d)]
        assert probs and all(q == p for q in probs)


def test_vnet_patch_must_be_divisible_by_16():
    with pytest.raises(ValidationError, match=r"patch_size \[32, 32, 40\].*16"):
        StudentSpec(architecture="monai.VNet", patch_size=(32, 32, 40))
    with pytest.raises(ValidationError, match="patch_size"):  # assignment is validated too
        StudentSpec(architecture="monai.VNet", patch_size=(32, 32, 32)).patch_size = (24, 32, 32)


def test_dynunet_needs_one_more_channel_than_strides():
    with pytest.raises(ValidationError, match=r"channels \[4, 8, 16, 32\].*len\(strides\) \+ 1"):
        StudentSpec(architecture="monai.DynUNet", channels=(4, 8, 16, 32), strides=(2, 2))
    with pytest.raises(ValidationError, match="strides"):
        StudentSpec(architecture="monai.DynUNet", channels=(4, 8), strides=(2,))


def test_unknown_architecture_refused():
    with pytest.raises(ValidationError, match="architecture"):
        StudentSpec(architecture="monai.SwinUNETR")


def test_unet_stays_the_default_with_unchanged_defaults_and_weights():
    assert StudentSpec().model_dump(mode="json") == {
        "architecture": "monai.UNet", "channels": [8, 16, 32, 64], "strides": [2, 2, 2],
        "num_res_units": 1, "dropout": 0.0, "patch_size": [64, 64, 48], "out_channels": 2,
        "normalization": "zscore"}
    torch.manual_seed(0)
    ours = build_student(TEST_SPEC).state_dict()
    torch.manual_seed(0)
    plain = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=TEST_SPEC.channels,
                 strides=TEST_SPEC.strides, num_res_units=TEST_SPEC.num_res_units).state_dict()
    assert list(ours) == list(plain) and all(torch.equal(ours[k], plain[k]) for k in plain)


def test_old_checkpoint_without_architecture_loads_as_unet(tmp_path):
    torch.manual_seed(6)
    model = build_student(TEST_SPEC)
    save_student(tmp_path / "s.pt", model, TEST_SPEC)
    payload = read_checkpoint(tmp_path / "s.pt")
    del payload["spec"]["architecture"]  # what semisam wrote before the field had choices
    torch.save(payload, tmp_path / "old.pt")
    loaded, spec, _ = load_student(tmp_path / "old.pt")
    assert spec == TEST_SPEC and spec.architecture == "monai.UNet" and type(loaded) is UNet
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                  loaded.state_dict().values()))
