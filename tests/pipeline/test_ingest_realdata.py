"""Ingest of the real data in ``../shared/data`` (Left Atrium h5, MSD hippocampus NIfTI).

Skipped when the folder is absent, as on a user's machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
LA, HIPPO = DATA / "la", DATA / "hippocampus"

if not (LA.is_dir() and (HIPPO / "images").is_dir() and (HIPPO / "labels").is_dir()):
    pytest.skip(
        f"real data not found at {DATA} (la/, hippocampus/images, hippocampus/labels)",
        allow_module_level=True,
    )

from semisam.pipeline.ingest import IngestStatus, ingest  # noqa: E402  (after the skip check)
from semisam.store import list_metas, open_store, read_image, read_label  # noqa: E402

pytestmark = pytest.mark.realdata


def test_ingest_la_and_hippocampus(tmp_path: Path) -> None:
    la_ids = [
        line.strip() for line in (LA / "volumes.list").read_text().splitlines() if line.strip()
    ][:2]
    la_files = [LA / f"{vid}.h5" for vid in la_ids]
    hippo_files = [
        HIPPO / "images" / "hippocampus_001.nii.gz",  # uint8 image, uint8 {0,1,2} label
        HIPPO / "images" / "hippocampus_003.nii.gz",
    ]  # float32 image and label
    store = tmp_path / "real.zarr"

    report = ingest(store, la_files)
    assert report.ok, report.failed
    report = ingest(
        store, hippo_files, labels_dir=HIPPO / "labels", binarize=True, labeled={"hippocampus_001"}
    )
    assert report.ok, report.failed

    root = open_store(store, read_only=True)
    metas = {m.volume_id: m for m in list_metas(root)}
    assert set(metas) == {*la_ids, "hippocampus_001", "hippocampus_003"}
    for vid in la_ids:
        meta = metas[vid]
        assert meta.source_format == "h5" and meta.labeled and meta.shape[2] == 88
        assert meta.spacing == (1.0, 1.0, 1.0)
        label = read_label(root, vid)
        assert label is not None and label.shape == meta.shape
        assert set(np.unique(label).tolist()) == {0, 1}
        assert 0.02 < label.mean() < 0.25
        assert read_image(root, vid).shape == meta.shape

    h1, h3 = metas["hippocampus_001"], metas["hippocampus_003"]
    assert h1.shape == (35, 51, 35) and h3.shape == (34, 52, 35)
    assert h1.spacing == pytest.approx((1.0, 1.0, 1.0)) and h3.spacing == pytest.approx(
        (1.0, 1.0, 1.0)
    )
    assert h1.image_dtype == "uint8" and h3.image_dtype == "float32"
    assert h1.labeled and not h3.labeled
    assert set(np.unique(read_label(root, "hippocampus_001")).tolist()) == {0, 1}
    assert read_label(root, "hippocampus_003") is None
    reference = np.asarray(root["volumes/hippocampus_003/reference"][...])
    assert reference.dtype == np.uint8 and reference.shape == h3.shape
    assert set(np.unique(reference).tolist()) == {0, 1}

    again = ingest(
        store, hippo_files, labels_dir=HIPPO / "labels", binarize=True, labeled={"hippocampus_001"}
    )
    assert [v.status for v in again.volumes] == [IngestStatus.unchanged] * 2
