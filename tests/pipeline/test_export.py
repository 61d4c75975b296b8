"""`semisam export`: NIfTI pseudo-labels and confidence maps with the source's geometry.

Round trip: NIfTI sources with a rotated, flipped, anisotropic affine -> ingest -> round ->
export -> nibabel: same affine, same voxel grid, and voxel (i, j, k) of an export is voxel
(i, j, k) of the source (the pseudo-label lands on the source's structure).
"""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from semisam.pipeline.export.nifti import export_round
from semisam.pipeline.ingest import ingest
from semisam.pipeline.phantoms import make_phantom
from semisam.pipeline.rounds.driver import run_round
from semisam.schemas import CONFIDENCE_SCALE, InputError, RoundConfig
from semisam.store import open_store, read_output
from tests.pipeline.test_review import invoke

SHAPE = (48, 48, 32)


def oblique_affine() -> np.ndarray:
    """30 degrees about z, then 10 about x; spacing 0.8 x 1.1 x 2.5 mm; first axis flipped."""
    a, b = np.deg2rad(30), np.deg2rad(10)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rx @ rz @ np.diag([-0.8, 1.1, 2.5])
    affine[:3, 3] = [61.5, -102.25, 37.0]
    return affine


@pytest.fixture(scope="module")
def exported_round(local_ray, trained_student, tmp_path_factory):
    """Two oblique NIfTI volumes (labels kept as reference only), one round, exported."""
    tmp_path = tmp_path_factory.mktemp("export")
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for i in range(2):
        image, label = make_phantom(SHAPE, seed=40 + i)
        nib.save(nib.Nifti1Image(image, oblique_affine()), images / f"obl{i}.nii.gz")
        nib.save(nib.Nifti1Image(label, oblique_affine()), labels / f"obl{i}.nii.gz")
    store = tmp_path / "s.zarr"
    assert ingest(store, [images], labels_dir=labels, labeled=set()).ok
    summary = run_round(store, 1, trained_student, RoundConfig(masker={"kind": "random_walker"}), show_progress=False)
    assert summary.done == 2
    out = tmp_path / "export"
    invoke("export", str(store), "--round", "1", "--to", str(out))
    return store, images, labels, out


def test_nifti_round_trip_keeps_geometry(exported_round):
    store, images, labels, out = exported_round
    root = open_store(store, read_only=True)
    for vid in ("obl0", "obl1"):
        src = nib.load(images / f"{vid}.nii.gz")
        ref = np.asarray(nib.load(labels / f"{vid}.nii.gz").dataobj) > 0
        pl_img = nib.load(out / "pseudo_label" / f"{vid}.nii.gz")
        conf_img = nib.load(out / "confidence" / f"{vid}.nii.gz")
        for img in (pl_img, conf_img):
            assert img.shape == src.shape
            np.testing.assert_allclose(img.affine, src.affine, atol=1e-6)
            np.testing.assert_allclose(img.get_qform(), src.affine, atol=1e-4)
            np.testing.assert_allclose(img.header.get_zooms(), src.header.get_zooms(), atol=1e-6)
            assert nib.aff2axcodes(img.affine) == nib.aff2axcodes(src.affine)
            assert img.header.get_xyzt_units()[0] == "mm"
        pl = np.asarray(pl_img.dataobj)
        np.testing.assert_array_equal(pl, read_output(root, 1, "pseudo_label", vid))
        raw = read_output(root, 1, "confidence", vid)
        np.testing.assert_array_equal(np.asarray(conf_img.dataobj.get_unscaled()), raw)
        np.testing.assert_allclose(conf_img.get_fdata(), raw / CONFIDENCE_SCALE, atol=1e-6)
        # same index, same place: the pseudo-label covers the source's own structure
        dice = 2 * np.logical_and(pl > 0, ref).sum() / (pl.astype(bool).sum() + ref.sum())
        assert dice > 0.6, (vid, dice)
    report = json.loads((out / "export.json").read_text())
    written = {v["volume_id"] for v in report["volumes"] if v["written"]}
    assert report["round"] == 1 and written == {"obl0", "obl1"}


def test_export_skips_unfinished_and_refuses_unknown_ids(exported_round, tmp_path):
    store = tmp_path / "copy.zarr"
    shutil.copytree(exported_round[0], store)
    root = open_store(store)
    del root["rounds/1/records/obl1"]  # as if the round had not reached it
    report = export_round(root, 1, tmp_path / "again", store=str(store))
    assert [(v.volume_id, v.written) for v in report.volumes] == [("obl0", True), ("obl1", False)]
    assert "not done" in report.volumes[1].reason
    with pytest.raises(InputError, match="'nope'"):
        export_round(root, 1, tmp_path / "x", volumes=["nope"])
    bad = invoke("export", str(store), "--round", "9", "--to", str(tmp_path / "y"), code=2)
    assert "round 9" in bad.output
