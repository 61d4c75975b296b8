"""Round summaries read back from the store (used by run-round and inspect).

A volume's status and whether it is left to do come from the one rule,
`semisam.schemas.volume_work`."""

from __future__ import annotations

from collections import Counter

import zarr
from pydantic import Field

from semisam.schemas import StrictModel, VolumeRecord, VolumeStatus, volume_work
from semisam.store import list_metas, read_record, read_round_meta


class VolumeRow(StrictModel):
    """One line of a round table."""

    volume_id: str
    status: VolumeStatus
    error: str | None = None
    attempt: int = 0
    node: str | None = None
    slices_prompted: int | None = None
    slices_total: int | None = None
    foreground_fraction: float | None = None
    mean_confidence: float | None = None
    student_masker_dice: float | None = None
    masker_rejected: bool = Field(False, description="the student's answer was kept (fusion."
                                  "min_student_agreement)")
    seconds: float | None = None


class RoundSummary(StrictModel):
    round: int
    status: str | None = None
    fingerprint: str | None = None
    total: int
    done: int
    failed: int
    pending: int
    left_to_do: int = Field(0, description="volumes a rerun of the same command would process: "
                            "pending ones and failures another attempt may pass "
                            "(schemas.volume_work)")
    skipped: int = Field(0, description="volumes found done/failed and not redone by this run")
    seconds: float = 0.0
    per_node: dict[str, int] = Field(default_factory=dict)
    volumes: list[VolumeRow] = Field(default_factory=list)


def volume_row(root: zarr.Group, round_index: int, volume_id: str) -> VolumeRow:
    """The table row of one volume of round ``round_index``."""
    return _row(volume_id, read_record(root, round_index, volume_id))


def _row(volume_id: str, record: VolumeRecord | None) -> VolumeRow:
    status = volume_work(record).status
    if record is None:
        return VolumeRow(volume_id=volume_id, status=status)
    row = VolumeRow(volume_id=volume_id, status=status, error=record.error,
                    attempt=record.attempt, node=record.node,
                    seconds=round(sum(record.timings_s.values()), 3) if record.timings_s else None)
    if record.stats is not None:
        s = record.stats
        row.slices_prompted, row.slices_total = s.slices_prompted, s.slices_total
        row.foreground_fraction, row.mean_confidence = s.foreground_fraction, s.mean_confidence
        row.student_masker_dice, row.masker_rejected = s.student_masker_dice, s.masker_rejected
    return row


def summarize_round(root: zarr.Group, round_index: int, seconds: float = 0.0,
                    skipped: int = 0) -> RoundSummary:
    """Counts and per-volume rows of round ``round_index`` over the store's unlabeled volumes."""
    meta = read_round_meta(root, round_index)
    records = {m.volume_id: read_record(root, round_index, m.volume_id)
               for m in list_metas(root) if not m.labeled}
    rows = [_row(vid, record) for vid, record in records.items()]
    left = sum(volume_work(record).left_to_do() for record in records.values())
    counts = Counter(r.status for r in rows)
    per_node = Counter(r.node or "?" for r in rows if r.status == VolumeStatus.done)
    return RoundSummary(
        round=round_index,
        status=meta.status.value if meta else None,
        fingerprint=meta.fingerprint if meta else None,
        total=len(rows), done=counts[VolumeStatus.done], failed=counts[VolumeStatus.failed],
        pending=counts[VolumeStatus.pending], left_to_do=left, skipped=skipped, seconds=round(seconds, 3),
        per_node=dict(per_node), volumes=rows,
    )
