"""`semisam predict`: NIfTI outputs on the source's grid and affine, flips, largest component,
probability maps, reruns that skip finished scans, and the fan-out over a local Ray."""

from __future__ import annotations

import nibabel as nib
import nrrd
import numpy as np
import pytest

from semisam.pipeline.phantoms import make_phantom
from semisam.pipeline.predict import PredictOptions, PredictStatus, predict, segment
from semisam.schemas import StudentInferenceConfig
from semisam.workers.student import load_student, predict_probability
from tests.conftest import PHANTOM_SHAPE
from tests.pipeline.cli_invoke import invoke


def _oblique_affine() -> np.ndarray:
    """A rotated, anisotropic, shifted voxel -> world map (what a real scan has)."""
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.8, 0.9, 2.0])
    affine[:3, 3] = [-20.0, 14.5, 3.25]
    return affine


@pytest.fixture
def scans(tmp_path):
    """Two phantoms on disk: one NIfTI with an oblique affine, one NRRD (LPS space)."""
    src = tmp_path / "in"
    src.mkdir()
    a, _ = make_phantom(PHANTOM_SHAPE, seed=11)
    nib.save(nib.Nifti1Image(a.astype(np.float32), _oblique_affine()), str(src / "scan_a.nii.gz"))
    b, _ = make_phantom(PHANTOM_SHAPE, seed=12)
    nrrd.write(str(src / "scan_b.nrrd"), b.astype(np.int16), {
        "space": "left-posterior-superior", "space origin": [5.0, -3.0, 1.0],
        "space directions": [[0.7, 0, 0], [0, 0.7, 0], [0, 0, 1.5]]})
    return src


def _expected(student, image, flip_axes=(), largest=False):
    model, spec, _ = load_student(student)
    prob = predict_probability(model, image, spec, StudentInferenceConfig(flip_axes=flip_axes))
    return prob, segment(prob, PredictOptions(flip_axes=flip_axes, largest_component=largest))


def test_predict_cli_writes_source_geometry_and_rerun_skips(trained_student, scans, tmp_path):
    out = tmp_path / "out"
    args = ("predict", str(scans), "--student", str(trained_student), "--out", str(out),
            "--flip", "0,1", "--largest-component", "--probabilities", "--no-progress")
    first = invoke(*args)
    assert "2 written, 0 skipped" in first.stdout, first.output

    src = nib.load(str(scans / "scan_a.nii.gz"))
    seg = nib.load(str(out / "scan_a.nii.gz"))
    assert seg.shape == src.shape == PHANTOM_SHAPE
    np.testing.assert_allclose(seg.affine, src.affine, atol=1e-5)
    np.testing.assert_allclose(seg.get_qform(), src.affine, atol=1e-5)
    assert seg.get_data_dtype() == np.uint8
    prob, mask = _expected(trained_student, src.get_fdata().astype(np.float32), (0, 1), True)
    np.testing.assert_array_equal(np.asarray(seg.dataobj), mask)
    assert mask.any()
    pmap = nib.load(str(out / "scan_a_prob.nii.gz"))
    assert pmap.get_data_dtype() == np.float32
    np.testing.assert_allclose(pmap.affine, src.affine, atol=1e-5)
    np.testing.assert_allclose(np.asarray(pmap.dataobj), prob, atol=1e-6)

    # the NRRD scan: the reader's RAS affine (LPS flipped), on the file's grid
    seg_b = nib.load(str(out / "scan_b.nii.gz"))
    assert seg_b.shape == PHANTOM_SHAPE
    np.testing.assert_allclose(seg_b.affine, np.array(
        [[-0.7, 0, 0, -5.0], [0, -0.7, 0, 3.0], [0, 0, 1.5, 1.0], [0, 0, 0, 1]]), atol=1e-6)

    mtime = (out / "scan_a.nii.gz").stat().st_mtime_ns
    again = invoke(*args)
    assert "0 written, 2 skipped" in again.stdout, again.output
    assert "skipped scan_a: finished outputs" in again.output  # logged, with the reason
    assert (out / "scan_a.nii.gz").stat().st_mtime_ns == mtime
    # other options -> another fingerprint -> redone
    redo = invoke("predict", str(scans / "scan_a.nii.gz"), "--student", str(trained_student),
                  "--out", str(out), "--no-progress")
    assert "1 written, 0 skipped" in redo.stdout, redo.output
    assert not list(out.glob(".*partial*"))


def test_predict_bad_scan_is_one_line_and_others_go_on(trained_student, scans, tmp_path):
    (scans / "broken.nii.gz").write_bytes(b"not a nifti file")
    proc = invoke("predict", str(scans), "--student", str(trained_student), "--out",
                  str(tmp_path / "o"), "--no-progress", code=1)
    assert "2 written, 0 skipped (finished), 1 failed" in proc.stdout, proc.output
    assert "broken.nii.gz" in proc.output
    bad = invoke("predict", str(scans), "--student", str(tmp_path / "nope.pt"), "--out",
                 str(tmp_path / "o"), code=2)
    assert "student checkpoint file not found" in bad.output


def test_predict_over_local_ray_matches_in_process(trained_student, scans, tmp_path, local_ray):
    opts = PredictOptions(flip_axes=(2,))
    here = predict(trained_student, [scans], tmp_path / "here", options=opts)
    fanned = predict(trained_student, [scans], tmp_path / "ray", options=opts, address="local",
                     ray_num_cpus=2)
    assert [it.status for it in fanned.items] == [PredictStatus.written] * 2
    assert [it.volume_id for it in fanned.items] == [it.volume_id for it in here.items]
    for it in here.items:
        a = nib.load(it.label)
        b = nib.load(str(tmp_path / "ray" / f"{it.volume_id}.nii.gz"))
        np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
        np.testing.assert_array_equal(a.affine, b.affine)
    rerun = predict(trained_student, [scans], tmp_path / "ray", options=opts, address="local")
    assert [it.status for it in rerun.items] == [PredictStatus.skipped] * 2
