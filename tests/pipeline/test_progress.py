"""The driver's progress bar label: failures and worker start-up."""

from semisam.pipeline.rounds.progress import RoundProgress
from semisam.schemas import VolumeRecord, VolumeStatus


def test_label_shows_failures_and_workers_starting():
    with RoundProgress(3, 0, enabled=False) as bar:
        assert bar.description == "volumes"
        bar.workers_up(0, 2)
        assert bar.description == "volumes (workers starting: 0/2 up)"
        bar.advance(VolumeRecord(volume_id="a", status=VolumeStatus.failed, error="bad"))
        assert bar.description == "volumes (1 failed, workers starting: 0/2 up)"
        bar.workers_up(2, 2)
        assert bar.description == "volumes (1 failed)"
        bar.advance(VolumeRecord(volume_id="b", status=VolumeStatus.done))
        assert bar.failed == 1
