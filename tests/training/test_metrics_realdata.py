"""Metrics on real masks with their file's voxel spacing agree with medpy (skipped without data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
HIPPO = DATA / "hippocampus" / "labels"
if not HIPPO.is_dir():
    pytest.skip(f"real data not found at {DATA}", allow_module_level=True)

import nibabel as nib  # noqa: E402

from semisam.training.metrics import case_metrics  # noqa: E402

binary = pytest.importorskip("medpy.metric.binary")
pytestmark = pytest.mark.realdata


def test_hippocampus_masks_match_medpy():
    files = sorted(HIPPO.glob("*.nii.gz"))[:2]
    img = nib.load(files[0])
    ref = np.asarray(img.dataobj) > 0
    spacing = tuple(float(s) for s in img.header.get_zooms()[:3])
    pred = np.roll(ref, 2, axis=0) & (np.asarray(img.dataobj) != 2)  # shifted, one class dropped
    values = case_metrics(pred, ref, spacing)
    assert values["dice"] == pytest.approx(binary.dc(pred, ref))
    assert values["jaccard"] == pytest.approx(binary.jc(pred, ref))
    assert values["hd95_mm"] == pytest.approx(binary.hd95(pred, ref, voxelspacing=spacing))
    assert values["asd_mm"] == pytest.approx(binary.asd(pred, ref, voxelspacing=spacing))
    assert values["hd95_voxels"] == pytest.approx(binary.hd95(pred, ref))
