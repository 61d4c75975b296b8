"""DICOM series: written here from phantoms with pydicom, read back by geometry (not file
names); the voxel grid and the world geometry equal the source's; each bad folder one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import FileDataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

from semisam.pipeline.image_io import dicom  # noqa: E402
from semisam.pipeline.phantoms import make_phantom  # noqa: E402
from semisam.schemas import InputError  # noqa: E402

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _oblique_ras_affine(spacing=(0.7, 0.8, 2.5)) -> np.ndarray:
    """Rotated about two axes, anisotropic, shifted."""
    a, b = 0.35, -0.2
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag(spacing)
    affine[:3, 3] = [31.0, -12.5, 40.25]
    return affine


def write_series(folder: Path, volume: np.ndarray, ras_affine: np.ndarray, *,
                 series_uid: str | None = None, number: int = 1, description: str = "phantom",
                 names=None, slope: float = 1.0, intercept: float = 0.0) -> list[Path]:
    """``volume[i, j, k]`` (column i, row j, slice k) as one CT slice file per k, with the
    geometry of ``ras_affine``; file names from ``names(k)`` (default shuffled vs. order)."""
    folder.mkdir(parents=True, exist_ok=True)
    lps = LPS_TO_RAS @ ras_affine
    col_step, row_step, slice_step = (lps[:3, n] for n in range(3))
    dc, dr = float(np.linalg.norm(col_step)), float(np.linalg.norm(row_step))
    iop = [*(col_step / dc), *(row_step / dr)]
    series_uid = series_uid or generate_uid()
    study = generate_uid()
    stored = np.rint((volume - intercept) / slope).astype(np.int16)
    paths = []
    n = volume.shape[2]
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT image storage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        name = names(k) if names else f"IM{(k * 7919) % 1000:04d}.dcm"  # not in slice order
        path = folder / name
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series_uid
        ds.SeriesNumber, ds.SeriesDescription, ds.Modality = number, description, "CT"
        ds.InstanceNumber = n - k  # reversed on purpose: order comes from the geometry
        ds.ImageOrientationPatient = [f"{v:.10f}" for v in iop]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in lps[:3, 3] + k * slice_step]
        ds.PixelSpacing = [f"{dr:.10f}", f"{dc:.10f}"]  # between rows, between columns
        ds.SliceThickness = f"{np.linalg.norm(slice_step):.6f}"
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _phantom(seed=0, shape=(40, 36, 12)):
    image, _ = make_phantom(shape, seed=seed)
    return np.rint(image * 100).astype(np.float32)  # integer values survive int16 storage


def test_oblique_series_round_trips_grid_and_geometry(tmp_path):
    image = _phantom()
    affine = _oblique_ras_affine()
    write_series(tmp_path / "case_01", image, affine, slope=2.0, intercept=-1024.0)
    (vol,) = dicom.read_dicom_dir(tmp_path / "case_01")
    assert vol.volume_id == "case_01"
    assert vol.image.shape == image.shape
    np.testing.assert_array_equal(vol.image, np.rint((image + 1024) / 2) * 2 - 1024)
    np.testing.assert_allclose(np.asarray(vol.affine), affine, atol=1e-5)
    np.testing.assert_allclose(vol.spacing, (0.7, 0.8, 2.5), atol=1e-6)
    # the world position of any voxel is the source's
    ijk = np.array([7, 30, 9, 1.0])
    np.testing.assert_allclose(np.asarray(vol.affine) @ ijk, affine @ ijk, atol=1e-4)


def test_read_volume_and_predict_take_a_dicom_folder(tmp_path, trained_student):
    from semisam.pipeline.ingest import read_volume
    from semisam.pipeline.predict import predict

    image, affine = _phantom(1, (48, 48, 32)), _oblique_ras_affine((0.8, 0.9, 2.0))
    write_series(tmp_path / "in" / "scan_d", image, affine)
    loaded = read_volume(tmp_path / "in" / "scan_d")
    assert loaded.source_format == "dicom" and loaded.image.shape == image.shape
    report = predict(trained_student, [tmp_path / "in" / "scan_d"], tmp_path / "out")
    assert report.items[0].status.value == "written", report.items[0].reason
    seg = nib.load(str(tmp_path / "out" / "scan_d.nii.gz"))
    assert seg.shape == image.shape
    np.testing.assert_allclose(seg.affine, affine, atol=1e-5)


def test_multi_series_folder_gives_one_volume_per_series(tmp_path):
    a, b = _phantom(2), _phantom(3, (32, 32, 8))
    folder = tmp_path / "study"
    write_series(folder, a, _oblique_ras_affine(), number=3, description="T1",
                 names=lambda k: f"a{k:03d}.dcm")
    write_series(folder, b, np.diag([1.0, 1.0, 3.0, 1.0]), number=5, description="T2",
                 names=lambda k: f"b{k:03d}.dcm")
    vols = dicom.read_dicom_dir(folder)
    assert [v.volume_id for v in vols] == ["study_s3", "study_s5"]
    assert vols[0].image.shape == a.shape and vols[1].image.shape == b.shape
    np.testing.assert_allclose(np.asarray(vols[1].affine), np.diag([1.0, 1.0, 3.0, 1.0]), atol=1e-6)
    with pytest.raises(InputError, match=r"holds 2 DICOM series: .*T1.*T2.*own folder"):
        dicom.read_dicom_series(folder)


def test_predict_segments_each_series_of_a_multi_series_folder(tmp_path, trained_student):
    """A study folder with two series: one output per series, named as ingest names them, each
    on its own series' grid and affine; a rerun skips both."""
    from semisam.pipeline.predict import predict

    a, b = _phantom(4, (40, 40, 24)), _phantom(5, (32, 36, 20))
    aff_a, aff_b = _oblique_ras_affine((0.8, 0.9, 2.0)), np.diag([1.2, 1.1, 3.0, 1.0])
    folder = tmp_path / "study"
    write_series(folder, a, aff_a, number=3, description="T1", names=lambda k: f"a{k:03d}.dcm")
    write_series(folder, b, aff_b, number=5, description="T2", names=lambda k: f"b{k:03d}.dcm")
    report = predict(trained_student, [folder], tmp_path / "out")
    assert [i.status.value for i in report.items] == ["written", "written"], report.items
    for name, image, affine in (("study_s3", a, aff_a), ("study_s5", b, aff_b)):
        seg = nib.load(str(tmp_path / "out" / f"{name}.nii.gz"))
        assert seg.shape == image.shape
        np.testing.assert_allclose(seg.affine, affine, atol=1e-5)
    again = predict(trained_student, [folder], tmp_path / "out")
    assert [i.status.value for i in again.items] == ["skipped", "skipped"]


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_missing_duplicated_and_mixed_slices_each_one_line(tmp_path):
    image, affine = _phantom(4), _oblique_ras_affine()
    base = tmp_path / "base"
    paths = write_series(base, image, affine, names=lambda k: f"s{k:03d}.dcm")

    missing = tmp_path / "missing"
    shutil.copytree(base, missing)
    (missing / "s005.dcm").unlink()
    with pytest.raises(InputError) as exc:
        dicom.read_dicom_dir(missing)
    assert "1 slice(s) missing between s004.dcm and s006.dcm" in _one_line(exc)

    dup = tmp_path / "dup"
    shutil.copytree(base, dup)
    shutil.copy(paths[3], dup / "s003_copy.dcm")
    with pytest.raises(InputError) as exc:
        dicom.read_dicom_dir(dup)
    assert "duplicated slice" in _one_line(exc) and "s003" in str(exc.value)

    mixed = tmp_path / "mixed"
    shutil.copytree(base, mixed)
    ds = pydicom.dcmread(mixed / "s002.dcm")
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]  # a coronal slice in an oblique series
    ds.save_as(mixed / "s002.dcm")
    with pytest.raises(InputError) as exc:
        dicom.read_dicom_dir(mixed)
    assert "mixed orientations" in _one_line(exc) and "s002.dcm" in str(exc.value)


def test_non_image_objects_are_skipped_with_one_line_each(tmp_path, caplog):
    image, affine = _phantom(5), _oblique_ras_affine()
    folder = tmp_path / "with_sr"
    write_series(folder, image, affine)
    sr = pydicom.dcmread(next(folder.glob("*.dcm")))
    del sr.PixelData
    sr.Modality, sr.SOPInstanceUID = "SR", generate_uid()
    sr.save_as(folder / "report.dcm")
    (folder / "DICOMDIR.txt").write_text("not dicom")
    with caplog.at_level("WARNING"):
        (vol,) = dicom.read_dicom_dir(folder)
    assert vol.image.shape == image.shape
    lines = [r.getMessage() for r in caplog.records]
    assert any("report.dcm: not an image object (SR" in ln for ln in lines), lines
    assert any("DICOMDIR.txt: not a DICOM file" in ln for ln in lines), lines
    only_junk = tmp_path / "junk"
    only_junk.mkdir()
    shutil.copy(folder / "report.dcm", only_junk / "report.dcm")
    with pytest.raises(InputError) as exc:
        dicom.read_dicom_dir(only_junk)
    assert "no DICOM image series in the folder (report.dcm: not an image object" in _one_line(exc)


def test_semisam_ingest_takes_dicom_folders(tmp_path):
    """`semisam ingest` of a folder of series folders (and of one series folder): one volume
    per series, the source's grid and world geometry in the store; re-ingest is a no-op."""
    import subprocess
    import sys

    from semisam.store import list_metas, open_store, read_image

    images = tmp_path / "export"
    volumes = {"case_01": np.rint(_phantom(1) / 20),  # int16 in the files
               "case_02": np.rint(_phantom(2, shape=(32, 30, 10)) / 20)}
    affine = _oblique_ras_affine()
    for name, image in volumes.items():
        write_series(images / name, image, affine)
    semisam = str(Path(sys.executable).with_name("semisam"))
    store = tmp_path / "s.zarr"
    for _ in range(2):
        proc = subprocess.run([semisam, "ingest", str(images), "--store", str(store)],
                              capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert "unchanged" in proc.stdout + proc.stderr
    root = open_store(store, read_only=True)
    metas = {m.volume_id: m for m in list_metas(root)}
    assert sorted(metas) == ["case_01", "case_02"]
    for name, image in volumes.items():
        np.testing.assert_array_equal(read_image(root, name), image)
        np.testing.assert_allclose(np.asarray(metas[name].affine), affine, atol=1e-5)
    one = tmp_path / "one.zarr"
    proc = subprocess.run([semisam, "ingest", str(images / "case_02"), "--store", str(one)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0 and [m.volume_id for m in list_metas(open_store(one))] == ["case_02"]


HIPPOCAMPUS = Path(__file__).resolve().parents[3] / "shared" / "data" / "hippocampus"


@pytest.mark.realdata
@pytest.mark.skipif(not (HIPPOCAMPUS / "images").is_dir(), reason="../shared/data absent")
def test_real_hippocampus_volume_round_trips_through_dicom(tmp_path):
    """A real MSD hippocampus scan written as a DICOM series and read back: the voxel grid
    and the world geometry are the NIfTI's (values as stored, int16)."""
    source = HIPPOCAMPUS / "images" / "hippocampus_001.nii.gz"
    nii = nib.load(source)
    image = np.rint(np.asarray(nii.dataobj, np.float64)).astype(np.float32)
    write_series(tmp_path / "hippocampus_001", image, nii.affine, description="real")
    (vol,) = dicom.read_dicom_dir(tmp_path / "hippocampus_001")
    assert vol.image.shape == image.shape
    np.testing.assert_array_equal(vol.image, image)
    np.testing.assert_allclose(np.asarray(vol.affine), nii.affine, atol=1e-4)
