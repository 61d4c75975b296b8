"""OME-Zarr export of real volumes (3 Left Atrium h5, 3 MSD hippocampus NIfTI) read back by
ome-zarr-models, ngff-zarr and ome-zarr-py, equal to the store. Skipped without
``../shared/data``, as on a user's machine."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
LA, HIPPO = DATA / "la", DATA / "hippocampus"

if not (LA.is_dir() and (HIPPO / "images").is_dir() and (HIPPO / "labels").is_dir()):
    pytest.skip(f"real data not found at {DATA} (la/, hippocampus/images, hippocampus/labels)",
                allow_module_level=True)

import numpy as np  # noqa: E402

from semisam.pipeline.export.ngff import ngff_geometry  # noqa: E402
from semisam.pipeline.ingest import ingest  # noqa: E402
from semisam.pipeline.rounds.driver import run_round  # noqa: E402
from semisam.schemas import RoundConfig  # noqa: E402
from semisam.store import list_metas, open_store  # noqa: E402
from tests.pipeline.cli_invoke import invoke  # noqa: E402
from tests.pipeline.ome_readers import check_volume  # noqa: E402

pytestmark = [pytest.mark.realdata, pytest.mark.slow]
HIPPO_IDS = ("hippocampus_001", "hippocampus_003", "hippocampus_004")


def test_real_volumes_read_back_in_three_readers(local_ray, trained_student, tmp_path):
    la_ids = [ln.strip() for ln in (LA / "volumes.list").read_text().splitlines()
              if ln.strip()][:3]
    store = tmp_path / "real.zarr"
    assert ingest(store, [LA / f"{vid}.h5" for vid in la_ids], labeled=set()).ok
    assert ingest(store, [HIPPO / "images" / f"{vid}.nii.gz" for vid in HIPPO_IDS],
                  labeled=set()).ok
    summary = run_round(store, 1, trained_student, RoundConfig(masker={"kind": "random_walker"}),
                        show_progress=False)
    assert summary.done == 6
    out = tmp_path / "ome"
    invoke("export", str(store), "--round", "1", "--to", str(out), "--format", "ome-zarr")
    root = open_store(store, read_only=True)
    metas = {m.volume_id: m for m in list_metas(root)}
    for vid in [*la_ids, *HIPPO_IDS]:
        # both sets are axis-aligned with positive steps: NGFF coordinates are world mm
        assert ngff_geometry(np.asarray(metas[vid].affine))[2] == "world"
        attrs = check_volume(root, out, 1, vid, world=True)
        assert attrs["geometry"] == "world"
        assert attrs["source_path"] is None and attrs["source_sha256"] == metas[vid].sha256
