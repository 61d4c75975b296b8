"""The one rule for what a round has left to do (schemas/round_work.py)."""

from __future__ import annotations

import pytest

from semisam.schemas import VolumeRecord, VolumeStatus, VolumeWork, left_to_do, volume_work


def _record(status: str, retryable: bool = False) -> VolumeRecord:
    return VolumeRecord(volume_id="v1", status=VolumeStatus(status), retryable=retryable)


@pytest.mark.parametrize(
    ("record", "work", "shown", "redo", "redo_with_retry_failed"),
    [
        (None, VolumeWork.not_started, VolumeStatus.pending, True, True),
        (_record("pending"), VolumeWork.not_started, VolumeStatus.pending, True, True),
        (_record("done"), VolumeWork.done, VolumeStatus.done, False, False),
        (_record("done", retryable=True), VolumeWork.done, VolumeStatus.done, False, False),
        (_record("failed"), VolumeWork.failed, VolumeStatus.failed, False, True),
        (_record("failed", retryable=True), VolumeWork.cut_short, VolumeStatus.failed, True, True),
    ],
)
def test_volume_work(record, work, shown, redo, redo_with_retry_failed) -> None:
    assert volume_work(record) is work
    assert work.status is shown
    assert left_to_do(record) is redo
    assert left_to_do(record, retry_failed=True) is redo_with_retry_failed
