"""Third corpus (issue 26, items 1-7): inputs that were read silently wrong. Real NIfTI files,
real stores, the `semisam` CLI as a user runs it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import zarr

from semisam.pipeline.ingest import read_volume
from semisam.schemas import InputError

from .corpus import volume
from .test_corpus import assert_one_line_error, semisam


def _nifti(path: Path, *, sform: np.ndarray | None = None, qform: np.ndarray | None = None,
           slope: float | None = None, inter: float | None = None) -> Path:
    """A NIfTI of `volume(1)` with the given sform/qform (code 1 each) and scaling fields."""
    img = nib.Nifti1Image(volume(1), np.diag([0.8, 0.8, 2.0, 1.0]))
    if qform is not None:
        img.set_qform(qform, code=1)
    if sform is not None:
        img.set_sform(sform, code=1)
    if slope is not None:
        img.header["scl_slope"], img.header["scl_inter"] = slope, inter
    nib.save(img, path)
    return path


# -- 3: sform and qform disagree: both spacing and affine from the sform, with a warning ----------
def test_sform_qform_disagree_uses_sform_for_both(tmp_path, caplog):
    path = _nifti(tmp_path / "a.nii.gz", qform=np.diag([0.8, 0.8, 2.0, 1.0]),
                  sform=np.diag([1.6, 1.6, 4.0, 1.0]))
    with caplog.at_level(logging.WARNING):
        loaded = read_volume(path)
    assert loaded.spacing == pytest.approx((1.6, 1.6, 4.0))
    assert np.allclose(np.asarray(loaded.affine), np.diag([1.6, 1.6, 4.0, 1.0]))
    assert "sform and qform disagree" in caplog.text and "1.6x1.6x4" in caplog.text


def test_qform_only_gives_pixdim_spacing(tmp_path):
    path = _nifti(tmp_path / "a.nii.gz", qform=np.diag([0.8, 0.8, 2.0, 1.0]))
    img = nib.load(path)
    img.set_sform(np.diag([1.6, 1.6, 4.0, 1.0]), code=0)  # an sform with code 0 is ignored
    nib.save(img, tmp_path / "b.nii.gz")
    loaded = read_volume(tmp_path / "b.nii.gz")
    assert loaded.spacing == pytest.approx((0.8, 0.8, 2.0))
    assert np.allclose(np.abs(np.asarray(loaded.affine)[:3, :3]), np.diag([0.8, 0.8, 2.0]))


# -- 4: a singular sform on an image is refused as on a label -----------------------------------
def test_singular_sform_refused(tmp_path):
    path = _nifti(tmp_path / "a.nii.gz", sform=np.diag([0.8, 0.8, 0.0, 1.0]))
    with pytest.raises(InputError, match=r"a.nii.gz: NIfTI header sform \(code 1\) is singular"):
        read_volume(path)
    proc = semisam("ingest", str(path), "--store", str(tmp_path / "s.zarr"), "--json")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    report = json.loads(proc.stdout)
    assert [v["status"] for v in report["volumes"]] == ["failed"]
    assert "sform (code 1) is singular" in report["volumes"][0]["reason"]


# -- 7: scl_slope 0 with an offset is as ambiguous as the NaN-slope twin ------------------------
@pytest.mark.parametrize("slope", [0.0, float("nan")])
def test_zero_or_nan_slope_with_offset_refused(tmp_path, slope):
    path = _nifti(tmp_path / "a.nii", slope=slope, inter=-1024.0)
    with pytest.raises(InputError, match=r"scl_slope is (0|nan) but scl_inter is -1024: the "
                                         r"intensity scaling is ambiguous"):
        read_volume(path)


def test_zero_slope_without_offset_means_no_scaling(tmp_path):
    path = _nifti(tmp_path / "a.nii", slope=0.0, inter=0.0)
    np.testing.assert_allclose(read_volume(path).image, volume(1), rtol=1e-6)


# -- 6: a labeled list naming an id no source has ------------------------------------------------
def test_labeled_list_with_unknown_id_refused(tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    _nifti(scans / "scan_01.nii.gz")
    listing = tmp_path / "labeled.txt"
    listing.write_text("scan_O1\n")
    store = tmp_path / "s.zarr"
    proc = semisam("ingest", str(scans), "--store", str(store), "--labeled", str(listing))
    assert_one_line_error(proc, "labeled.txt", "'scan_O1'", "match no source file",
                          "--allow-missing-labeled")
    assert not store.exists()
    proc = semisam("ingest", str(scans), "--store", str(store), "--labeled", str(listing),
                   "--allow-missing-labeled", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["missing_labeled"] == ["scan_O1"]


# -- 2: two inputs that would share one output id -----------------------------------------------
def test_predict_refuses_nii_and_nii_gz_of_one_name(trained_student, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    _nifti(scans / "a.nii")
    nib.save(nib.Nifti1Image(volume(2), np.diag([0.8, 0.8, 2.0, 1.0])), scans / "a.nii.gz")
    out = tmp_path / "out"
    proc = semisam("predict", str(scans), "--student", str(trained_student), "--out", str(out),
                   "--no-progress")
    assert_one_line_error(proc, "a.nii and", "a.nii.gz would both be written as 'a'")
    assert not out.exists() or not any(out.iterdir())


def test_dicom_series_sharing_a_number_get_unique_ids(tmp_path):
    from semisam.pipeline.image_io.dicom import read_dicom_dir, series_volume_ids
    from semisam.pipeline.predict import check_unique_ids, collect_inputs
    from tests.pipeline.test_dicom import write_series

    study = tmp_path / "study"
    for seed in (1, 2):
        write_series(study, np.rint(volume(seed)).astype(np.float32),
                     np.diag([0.8, 0.8, 2.0, 1.0]), number=3, names=lambda k, s=seed: f"{s}_{k}.dcm")
    ids = [vid for vid, _ in series_volume_ids(study)]
    assert len(set(ids)) == 2 and all(v.startswith("study_s3_") for v in ids)
    assert sorted(v.volume_id for v in read_dicom_dir(study)) == sorted(ids)
    check_unique_ids(collect_inputs([study]))  # two inputs, two outputs: no refusal


# -- 5: NRRD with a detached data file ----------------------------------------------------------
def _detached_nrrd(header: Path, data_name: str, data: np.ndarray) -> Path:
    """A NRRD header naming ``data_name`` (relative to the header) for raw little-endian floats."""
    header.parent.mkdir(parents=True, exist_ok=True)
    (header.parent / data_name).parent.mkdir(parents=True, exist_ok=True)
    (header.parent / data_name).write_bytes(np.asfortranarray(data, "<f4").tobytes(order="F"))
    header.write_text(
        "NRRD0004\ntype: float\ndimension: 3\n"
        f"sizes: {' '.join(str(n) for n in data.shape)}\nendian: little\nencoding: raw\n"
        "space: left-posterior-superior\nspace directions: (0.8,0,0) (0,0.8,0) (0,0,2)\n"
        f"space origin: (0,0,0)\ndata file: {data_name}\n\n"
    )
    return header


def test_nrrd_data_file_outside_the_folder_refused(tmp_path):
    header = _detached_nrrd(tmp_path / "scans" / "sub" / "det.nrrd", "../../elsewhere/det.raw",
                            volume(1))
    proc = semisam("ingest", str(header.parent), "--store", str(tmp_path / "s.zarr"), "--json")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    (item,) = json.loads(proc.stdout)["volumes"]
    assert item["status"] == "failed"
    assert "det.nrrd: NRRD 'data file: ../../elsewhere/det.raw' is outside the header's folder" \
        in item["reason"]


def test_nrrd_detached_data_change_is_seen(tmp_path):
    from semisam.pipeline.ingest import ingest

    header = _detached_nrrd(tmp_path / "scans" / "det.nrrd", "det.raw", volume(1))
    store = tmp_path / "s.zarr"
    assert ingest(store, [header]).volumes[0].status.value == "added"
    assert ingest(store, [header]).volumes[0].status.value == "unchanged"
    _detached_nrrd(header, "det.raw", volume(2))  # same header bytes, new voxels
    again = ingest(store, [header]).volumes[0]
    assert again.status.value != "unchanged", again
    replaced = ingest(store, [header], overwrite=True).volumes[0]
    assert replaced.status.value == "replaced"


# -- 1: a round's pseudo-label replaced after the round ------------------------------------------
def test_train_leaves_out_a_pseudo_label_changed_since_the_round(phantom_store, caplog):
    from semisam.schemas import output_path
    from semisam.store import list_metas, open_store
    from semisam.training.dataset import open_training_data
    from tests.training.test_train import _config, fake_round

    fake_round(phantom_store, 1)
    root = open_store(phantom_store)
    unlabeled = [m.volume_id for m in list_metas(root) if not m.labeled]
    changed = unlabeled[0]
    arr = zarr.open_array(phantom_store / output_path(1, "pseudo_label", changed), mode="r+")
    arr[:4] = 1 - np.asarray(arr[:4])  # another valid label in the same chunks
    with caplog.at_level(logging.WARNING):
        data = open_training_data(open_store(phantom_store), _config(), 1)
    attached = {s.meta.volume_id for s in data.unlabeled if s.target is not None}
    assert attached == set(unlabeled) - {changed}
    lines = [r.getMessage() for r in caplog.records if changed in r.getMessage()]
    assert len(lines) == 1 and "pseudo_label content changed since the round" in lines[0]
