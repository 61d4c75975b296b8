"""Readers: round trips of every format (data, spacing, affine) and reader-level errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import nibabel as nib
import nrrd
import numpy as np
import pytest

from semisam.pipeline.ingest import LoadedVolume, read_label, read_volume, volume_id_for
from semisam.schemas import InputError

SHAPE = (12, 10, 8)


def phantom(shape: tuple[int, int, int] = SHAPE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy float32 image with a bright ellipsoid, and the ellipsoid as a uint8 label."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    label = ((grid**2).sum(0) < 0.4).astype(np.uint8)
    image = (rng.normal(0, 0.1, shape) + label).astype(np.float32)
    return image, label


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rotated_affine() -> np.ndarray:
    """Spacing 0.7, 0.8, 2.5 mm, a 30 degree rotation about z, x flipped, an offset."""
    t = np.deg2rad(30)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    flip = np.diag([-1.0, 1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = rot @ flip @ np.diag([0.7, 0.8, 2.5])
    affine[:3, 3] = [10.0, -20.0, 5.5]
    return affine


def test_nifti_round_trip_keeps_spacing_and_affine(tmp_path: Path) -> None:
    image, _ = phantom()
    affine = rotated_affine()
    path = tmp_path / "case_01.nii.gz"
    nib.save(nib.Nifti1Image(image, affine), path)
    vol = read_volume(path)
    assert isinstance(vol, LoadedVolume)
    assert vol.source_format == "nifti" and vol.source_dtype == "float32"
    assert vol.image.dtype == np.float32 and vol.image.shape == SHAPE
    np.testing.assert_array_equal(vol.image, image)
    np.testing.assert_allclose(vol.spacing, (0.7, 0.8, 2.5), atol=1e-5)
    np.testing.assert_allclose(np.array(vol.affine), affine, atol=1e-5)
    assert vol.label is None
    assert vol.sha256 == sha(path)


def test_nifti_uint8_and_trailing_singleton(tmp_path: Path) -> None:
    image, _ = phantom()
    path = tmp_path / "u8.nii"
    nib.save(
        nib.Nifti1Image((image * 100).clip(0, 255).astype(np.uint8)[..., None], np.eye(4)), path
    )
    vol = read_volume(path)
    assert vol.image.shape == SHAPE and vol.image.dtype == np.float32
    assert vol.source_dtype == "uint8"


def test_nrrd_space_directions_become_ras_affine(tmp_path: Path) -> None:
    image, _ = phantom()
    dirs = np.array([[0.0, 0.7, 0.0], [-0.8, 0.0, 0.0], [0.0, 0.0, 2.5]])  # rows: axis steps (LPS)
    origin = np.array([1.0, 2.0, 3.0])
    path = tmp_path / "case.nrrd"
    nrrd.write(
        str(path),
        image,
        {"space": "left-posterior-superior", "space directions": dirs, "space origin": origin},
    )
    vol = read_volume(path)
    assert vol.source_format == "nrrd"
    np.testing.assert_array_equal(vol.image, image)
    np.testing.assert_allclose(vol.spacing, (0.7, 0.8, 2.5))
    expected = np.eye(4)
    expected[:3, :3] = dirs.T
    expected[:3, 3] = origin
    expected[:2, :] *= -1  # LPS -> RAS
    np.testing.assert_allclose(np.array(vol.affine), expected)
    # voxel (1, 0, 0) is one x step away along the first direction vector
    world = np.array(vol.affine) @ [1, 0, 0, 1] - np.array(vol.affine) @ [0, 0, 0, 1]
    np.testing.assert_allclose(world[:3], [0.0, -0.7, 0.0])


def test_h5_image_and_label(tmp_path: Path) -> None:
    image, label = phantom()
    path = tmp_path / "LA01.h5"
    with h5py.File(path, "w") as fh:
        fh["image"] = image
        fh["label"] = label
    vol = read_volume(path)
    assert vol.source_format == "h5"
    np.testing.assert_array_equal(vol.image, image)
    assert vol.label is not None and vol.label.dtype == np.uint8
    np.testing.assert_array_equal(vol.label, label)
    assert vol.spacing == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(np.array(vol.affine), np.eye(4))


def test_h5_spacing_attribute(tmp_path: Path) -> None:
    image, _ = phantom()
    path = tmp_path / "sp.hdf5"
    with h5py.File(path, "w") as fh:
        fh["image"] = image
        fh.attrs["spacing"] = [0.625, 0.625, 2.5]
    vol = read_volume(path)
    assert vol.spacing == (0.625, 0.625, 2.5)
    np.testing.assert_allclose(np.diag(np.array(vol.affine)), [0.625, 0.625, 2.5, 1.0])


def test_npy_round_trip(tmp_path: Path) -> None:
    image, _ = phantom()
    path = tmp_path / "vol.npy"
    np.save(path, image.astype(np.int16))
    vol = read_volume(path)
    assert vol.source_format == "npy" and vol.source_dtype == "int16"
    np.testing.assert_array_equal(vol.image, image.astype(np.int16).astype(np.float32))
    assert vol.spacing == (1.0, 1.0, 1.0) and vol.label is None


def test_read_label_nifti_float_integral(tmp_path: Path) -> None:
    _, label = phantom()
    path = tmp_path / "lab.nii.gz"
    nib.save(nib.Nifti1Image((label * 2).astype(np.float32), np.diag([1.0, 1.0, 1.0, 1.0])), path)
    with pytest.raises(InputError, match=r"lab\.nii\.gz: label has values \{0, 2\}"):
        read_label(path)
    out, spacing, affine = read_label(path, binarize=True)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, label)
    assert spacing == (1.0, 1.0, 1.0) and len(affine) == 4


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("hippocampus_001.nii.gz", "hippocampus_001"),
        ("a.b.nii", "a.b"),
        ("X.nrrd", "X"),
        ("06SR5RBREL16DQ6M8LWS.h5", "06SR5RBREL16DQ6M8LWS"),
        ("v.hdf5", "v"),
        ("v_1-2.npy", "v_1-2"),
        ("CAPS.NII.GZ", "CAPS"),
    ],
)
def test_volume_id_for(name: str, expected: str) -> None:
    assert volume_id_for(Path("/data") / name) == expected


@pytest.mark.parametrize(
    "name", ["a..b.npy", "bad\x01id.npy", "with space.nii.gz", "-x.npy", ".nii"]
)
def test_volume_id_for_rejects_unsafe_names(name: str) -> None:
    with pytest.raises(InputError) as info:
        volume_id_for(Path("/data") / name)
    message = str(info.value)
    assert "\n" not in message and "\x01" not in message
    assert "/data/" in message


def test_unsupported_suffix(tmp_path: Path) -> None:
    path = tmp_path / "scan.mha"
    path.write_bytes(b"x")
    with pytest.raises(InputError, match=r"scan\.mha: unsupported file type"):
        read_volume(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nothere\.npy: no such file"):
        read_volume(tmp_path / "nothere.npy")


def test_object_npy_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "obj.npy"
    np.save(path, np.empty((2, 2, 2), dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match=r"obj\.npy: .*unsupported dtype object"):
        read_volume(path)
