"""One rule for what a round has left to do (`schemas.volume_work`): the plan of a rerun, the
round summary (run-round's table, inspect), the HTML report's table and the driver's "left to
do" line after a full store all read a store's records the same way."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from semisam.pipeline.presentation.report import volume_rows
from semisam.pipeline.rounds.driver import _left_to_do
from semisam.pipeline.rounds.state import plan_round
from semisam.pipeline.rounds.summary import summarize_round
from semisam.schemas import (
    RoundConfig,
    RoundMeta,
    VolumeRecord,
    VolumeStatus,
    left_to_do,
    output_path,
)
from semisam.store import open_store, read_record, write_outputs, write_record, write_round_meta
from tests.conftest import build_phantom_store

FINGERPRINT = "a" * 64


def _store(tmp_path: Path):
    """ph01 done, ph02 failed for good, ph03 cut short (retryable), ph04 never started, ph05 a
    torn record (unreadable)."""
    root = open_store(build_phantom_store(tmp_path / "s.zarr", count=6, labeled=1, seed=3))
    config = RoundConfig(masker={"kind": "random_walker"})
    write_round_meta(root, RoundMeta(round=1, config=config.model_dump(mode="json"),
                                     fingerprint=FINGERPRINT, student_checkpoint="s.pt",
                                     student_sha256="b" * 64))
    ref = np.asarray(root["volumes/ph01/reference"][...]).astype(np.uint8)
    sums = write_outputs(root, 1, "ph01", ref, np.full(ref.shape, 255, np.uint8), slice_axis=2)
    write_record(root, 1, VolumeRecord(volume_id="ph01", status=VolumeStatus.done, checksums=sums))
    write_record(root, 1, VolumeRecord(volume_id="ph02", status=VolumeStatus.failed,
                                       error="InputError: ph02: NaN voxels"))
    write_record(root, 1, VolumeRecord(volume_id="ph03", status=VolumeStatus.failed, retryable=True,
                                       error="OSError: no space left on device"))
    root.require_group(output_path(1, "records", "ph05")).attrs.update({"record": {"torn": 1}})
    return root, config


def test_plan_summary_report_and_driver_agree(tmp_path) -> None:
    root, config = _store(tmp_path)
    vids = [f"ph0{i}" for i in range(1, 6)]
    expected = [v for v in vids if left_to_do(read_record(root, 1, v))]
    assert expected == ["ph03", "ph04", "ph05"]

    hashes = (FINGERPRINT, "b" * 64, None)
    plan = plan_round(root, 1, config, Path("s.pt"), hashes=hashes)
    assert plan.resumed and plan.todo == expected
    assert plan.done == ["ph01"] and plan.failed == ["ph02"]
    again = plan_round(root, 1, config, Path("s.pt"), retry_failed=True, hashes=hashes)
    assert again.todo == ["ph02", "ph03", "ph04", "ph05"]

    summary = summarize_round(root, 1)
    assert (summary.done, summary.failed, summary.pending, summary.left_to_do) == (1, 2, 2, 3)
    shown = {row.volume_id: row.status.value for row in summary.volumes}
    assert shown == {"ph01": "done", "ph02": "failed", "ph03": "failed", "ph04": "pending",
                     "ph05": "pending"}
    assert {row["volume"]: row["status"] for row in volume_rows(root, 1)[0]} == shown
    assert _left_to_do(root, 1).startswith("1 volume(s) done, 3 left to do")
