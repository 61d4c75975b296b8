"""DICOM-SEG (highdicom) of pseudo-labels and `predict` outputs of DICOM volumes: read back
with highdicom, frame by frame on the source SOP instances, equal to the label voxel by voxel;
the source series referenced; one segment per class; non-DICOM volumes refused in one line."""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

hd = pytest.importorskip("highdicom")
import pydicom  # noqa: E402

from semisam.pipeline.export.dicom_seg import build_segmentation, ordered_slices  # noqa: E402
from semisam.pipeline.ingest import ingest  # noqa: E402
from semisam.pipeline.phantoms import make_phantom  # noqa: E402
from semisam.pipeline.rounds.driver import run_round  # noqa: E402
from semisam.schemas import RoundConfig  # noqa: E402
from semisam.store import open_store, read_output  # noqa: E402
from tests.pipeline.cli_invoke import invoke  # noqa: E402
from tests.pipeline.test_dicom import _oblique_ras_affine, write_series  # noqa: E402

SHAPE = (48, 44, 20)


def _source_uids_by_k(folder: Path, affine: np.ndarray, prefix: str = "") -> list[str]:
    """SOP Instance UIDs of the files `write_series` wrote, ordered by the slice index k they
    were written for (found from ImagePositionPatient, independently of the exporter)."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    step, origin = lps[:3, 2], lps[:3, 3]
    by_k = {}
    for f in folder.glob(f"{prefix}*"):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        k = round(float((np.asarray(ds.ImagePositionPatient, float) - origin) @ step / (step @ step)))
        by_k[k] = str(ds.SOPInstanceUID)
    return [by_k[k] for k in range(len(by_k))]


def _read_back(path: Path, uids: list[str]) -> tuple[object, np.ndarray]:
    """The SEG and its ``XxYxZ`` label (segment numbers) on the source instances ``uids``."""
    seg = hd.seg.segread(path)
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids,
                                               combine_segments=True)
    return seg, np.asarray(frames).transpose(2, 1, 0)


def write_clinical_series(folder: Path, volume: np.ndarray, affine: np.ndarray,
                          **kwargs) -> list[Path]:
    """`write_series` plus what a scanner's series also carries and a SEG copies: a frame of
    reference, patient and study attributes."""
    files = write_series(folder, volume, affine, **kwargs)
    frame_of_reference = pydicom.uid.generate_uid()
    for f in files:
        ds = pydicom.dcmread(f)
        ds.FrameOfReferenceUID = frame_of_reference
        ds.PatientName, ds.PatientID, ds.PatientSex = "Phantom^One", "PH001", "O"
        ds.PatientBirthDate, ds.StudyDate, ds.StudyTime = "", "20261205", "120000"
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
        ds.save_as(f)
    return files


@pytest.fixture(scope="module")
def dicom_round(local_ray, trained_student, tmp_path_factory):
    """Two oblique DICOM series and one NIfTI phantom ingested unlabeled, round 1."""
    tmp = tmp_path_factory.mktemp("dicomseg")
    sources = tmp / "sources"
    affines = {"ct_a": _oblique_ras_affine((0.8, 0.9, 2.0)), "ct_b": np.diag([0.9, 0.9, 2.5, 1])}
    for i, (name, affine) in enumerate(affines.items()):
        image, _ = make_phantom(SHAPE, seed=60 + i)
        write_clinical_series(sources / name, np.rint(image * 100).astype(np.float32), affine)
    image, _ = make_phantom(SHAPE, seed=62)
    nib.save(nib.Nifti1Image(image, np.diag([1.0, 1.0, 2.0, 1.0])), sources / "plain.nii.gz")
    store = tmp / "s.zarr"
    assert ingest(store, [sources], labeled=set()).ok
    summary = run_round(store, 1, trained_student, RoundConfig(masker={"kind": "random_walker"}),
                        show_progress=False)
    assert summary.done == 3
    return store, sources, affines


def test_pseudo_labels_round_trip_exactly(dicom_round, tmp_path):
    store, sources, affines = dicom_round
    out = tmp_path / "seg"
    invoke("export", str(store), "--round", "1", "--to", str(out), "--format", "dicom-seg",
           "--volume", "ct_a", "--volume", "ct_b", "--dicom-source", str(sources))
    root = open_store(store, read_only=True)
    for name, affine in affines.items():
        uids = _source_uids_by_k(sources / name, affine)
        seg, back = _read_back(out / f"{name}.seg.dcm", uids)
        label = read_output(root, 1, "pseudo_label", name)
        assert label.any()
        np.testing.assert_array_equal(back, label)
        source = pydicom.dcmread(next((sources / name).iterdir()), stop_before_pixels=True)
        assert seg.StudyInstanceUID == source.StudyInstanceUID
        ref = seg.ReferencedSeriesSequence[0]
        assert ref.SeriesInstanceUID == source.SeriesInstanceUID
        assert {r.ReferencedSOPInstanceUID for r in ref.ReferencedInstanceSequence} == set(uids)
        assert [s.SegmentLabel for s in seg.SegmentSequence] == ["foreground"]
        assert seg.SeriesNumber == 9901


def test_multiclass_segments_by_name_and_value(dicom_round, tmp_path):
    _, sources, affines = dicom_round
    label = np.zeros(SHAPE, np.uint8)
    label[5:20, 4:30, 2:9] = 1
    label[25:40, 10:38, 8:17] = 3  # class values need not be contiguous
    names = {1: "anterior", 3: "posterior"}
    seg = build_segmentation(label, ordered_slices(sources / "ct_a"), names, description="t")
    path = tmp_path / "mc.seg.dcm"
    seg.save_as(path)
    back_seg, back = _read_back(path, _source_uids_by_k(sources / "ct_a", affines["ct_a"]))
    assert [(s.SegmentNumber, s.SegmentLabel) for s in back_seg.SegmentSequence] == [
        (1, "anterior"), (2, "posterior")]
    np.testing.assert_array_equal(back, np.where(label == 3, 2, label))


def test_non_dicom_volume_refused_in_one_line(dicom_round, tmp_path):
    store, _, _ = dicom_round
    result = invoke("export", str(store), "--round", "1", "--to", str(tmp_path / "x"),
                    "--format", "dicom-seg", code=2)
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "volume 'plain'" in lines[0] and "not from a DICOM" in lines[0]
    assert not (tmp_path / "x").exists()


def test_moved_or_changed_source_series(dicom_round, tmp_path):
    import shutil

    store, sources, _ = dicom_round
    moved = tmp_path / "moved"
    shutil.copytree(sources / "ct_b", moved / "ct_b")
    invoke("export", str(store), "--round", "1", "--to", str(tmp_path / "ok"), "--format",
           "dicom-seg", "--volume", "ct_b", "--dicom-source", str(moved))
    assert (tmp_path / "ok" / "ct_b.seg.dcm").is_file()
    first = sorted((moved / "ct_b").iterdir())[0]
    ds = pydicom.dcmread(first)
    ds.PatientName = "changed"
    ds.save_as(first)
    result = invoke("export", str(store), "--round", "1", "--to", str(tmp_path / "no"),
                    "--format", "dicom-seg", "--volume", "ct_b", "--dicom-source",
                    str(moved / "ct_b"), code=2)
    assert "not the one ingested" in result.output and len(result.output.splitlines()) == 1


def test_source_series_by_name_hash_or_recorded_path(dicom_round, tmp_path):
    """The store records the series' folder name and hash only: without --dicom-source the
    export is refused in one line; a store ingested with --record-paths finds it alone."""
    import shutil

    store, sources, _ = dicom_round
    result = invoke("export", str(store), "--round", "1", "--to", str(tmp_path / "no"),
                    "--format", "dicom-seg", "--volume", "ct_a", code=2)
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert lines == ["error: volume 'ct_a': the store records the source series by name (ct_a) "
                     "and sha256 only; pass --dicom-source FOLDER (the series folder or its "
                     "parent)"], lines
    assert str(sources) not in "".join(p.read_text() for p in store.rglob("zarr.json"))
    copy = tmp_path / "paths.zarr"
    shutil.copytree(store, copy)
    report = ingest(copy, [sources], labeled=set(), record_paths=True)  # records, nothing else
    assert {v.status.value for v in report.volumes} == {"unchanged"}
    invoke("export", str(copy), "--round", "1", "--to", str(tmp_path / "ok"), "--format",
           "dicom-seg", "--volume", "ct_a")
    assert (tmp_path / "ok" / "ct_a.seg.dcm").is_file()


def test_series_without_frame_of_reference_refused_in_one_line(tmp_path):
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    image, label = make_phantom((24, 20, 6), seed=3)
    write_series(tmp_path / "bare", np.rint(image * 100).astype(np.float32), affine)
    from semisam.schemas import InputError

    with pytest.raises(InputError, match="no Frame Of Reference UID"):
        build_segmentation(label, ordered_slices(tmp_path / "bare"), {1: "x"}, description="t")


def test_missing_highdicom_says_how_to_install(dicom_round, tmp_path, monkeypatch):
    store, _, _ = dicom_round
    monkeypatch.setitem(sys.modules, "highdicom", None)  # import highdicom -> ImportError
    result = invoke("export", str(store), "--round", "1", "--to", str(tmp_path), "--format",
                    "dicom-seg", "--volume", "ct_a", code=2)
    assert "pip install 'semisam[dicom-seg]'" in result.output


def test_predict_writes_dicom_seg_of_dicom_inputs(dicom_round, trained_student, tmp_path):
    _, sources, affines = dicom_round
    out = tmp_path / "pred"
    invoke("predict", str(sources / "ct_a"), "--student", str(trained_student), "--out",
           str(out), "--dicom-seg", "--no-progress")
    label = np.asarray(nib.load(out / "ct_a.nii.gz").dataobj)
    assert label.any()
    _, back = _read_back(out / "ct_a.seg.dcm", _source_uids_by_k(sources / "ct_a", affines["ct_a"]))
    np.testing.assert_array_equal(back, label)
    result = invoke("predict", str(sources / "plain.nii.gz"), "--student", str(trained_student),
                    "--out", str(tmp_path / "p2"), "--dicom-seg", "--no-progress", code=2)
    assert "not a DICOM series" in result.output and len(result.output.splitlines()) == 1


def test_predict_dicom_seg_of_each_series_of_a_folder(trained_student, tmp_path):
    """A folder with two series: predict makes one input per series, one SEG each, each on
    its own series."""
    study = tmp_path / "study"
    affines = {3: _oblique_ras_affine((0.8, 0.9, 2.0)), 5: np.diag([1.0, 1.0, 2.0, 1.0])}
    for number, affine in affines.items():
        image, _ = make_phantom(SHAPE, seed=70 + number)
        write_clinical_series(study, np.rint(image * 100).astype(np.float32), affine,
                              number=number, names=lambda k, n=number: f"s{n}_{k:03d}.dcm")
    out = tmp_path / "pred"
    invoke("predict", str(study), "--student", str(trained_student), "--out", str(out),
           "--dicom-seg", "--no-progress")
    for number, affine in affines.items():
        vid = f"study_s{number}"
        label = np.asarray(nib.load(out / f"{vid}.nii.gz").dataobj)
        uids = _source_uids_by_k(study, affine, prefix=f"s{number}_")
        seg, back = _read_back(out / f"{vid}.seg.dcm", uids)
        np.testing.assert_array_equal(back, label)
        first = pydicom.dcmread(next(study.glob(f"s{number}_*")), stop_before_pixels=True)
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == first.SeriesInstanceUID
