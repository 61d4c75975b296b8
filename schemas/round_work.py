"""What a round has left to do: the one rule, read from a volume's record.

A worker writes a volume's arrays first and its record (`VolumeRecord`) last, so the record
alone says where the volume stands. Every part that asks which volumes of a round still need
work asks `volume_work` (or `left_to_do`): the plan of a (re)run
(`pipeline.rounds.state.plan_round`), the driver's count when the store stops taking writes
(`pipeline.rounds.driver`), the round summary behind `run-round`'s table, `inspect` and the round's
finish (`pipeline.rounds.summary`), and the HTML report (`pipeline.presentation.report`).
"""

from __future__ import annotations

from enum import Enum

from .records import VolumeRecord, VolumeStatus


class VolumeWork(str, Enum):
    """Where one volume of a round stands, and so what a rerun of the same command does with it."""

    done = "done"
    """Arrays and done record stored: a rerun skips it."""
    failed = "failed"
    """A final failure (bad input, or gave up after its attempts): skipped unless
    ``--retry-failed``."""
    cut_short = "cut_short"
    """A failure another attempt may pass (``retryable``: e.g. the store stopped taking writes):
    redone."""
    not_started = "not_started"
    """No readable record (never started, killed before its record was written, or a torn
    record): redone."""

    @property
    def status(self) -> VolumeStatus:
        """The status a table shows: ``done``, ``failed`` (final or cut short) or ``pending``."""
        if self is VolumeWork.done:
            return VolumeStatus.done
        if self is VolumeWork.not_started:
            return VolumeStatus.pending
        return VolumeStatus.failed

    def left_to_do(self, retry_failed: bool = False) -> bool:
        """Whether a rerun processes the volume (``retry_failed``: ``--retry-failed``)."""
        if self is VolumeWork.done:
            return False
        return retry_failed or self is not VolumeWork.failed


def volume_work(record: VolumeRecord | None) -> VolumeWork:
    """Where a volume stands, from its record (None: absent or unreadable)."""
    if record is None or record.status == VolumeStatus.pending:
        return VolumeWork.not_started
    if record.status == VolumeStatus.done:
        return VolumeWork.done
    return VolumeWork.cut_short if record.retryable else VolumeWork.failed


def left_to_do(record: VolumeRecord | None, retry_failed: bool = False) -> bool:
    """Whether a rerun of the round processes the volume of ``record`` (see `VolumeWork`)."""
    return volume_work(record).left_to_do(retry_failed)
