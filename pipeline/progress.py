"""Driver-side progress bar for a round (rich), silent when disabled or not a terminal."""

from __future__ import annotations

import logging

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from semisam.schemas import VolumeRecord, VolumeStatus

log = logging.getLogger(__name__)


class RoundProgress:
    """``with RoundProgress(total, already) as p: p.advance(record)``."""

    def __init__(self, total: int, already: int, enabled: bool = True) -> None:
        self.total, self.already, self.enabled = total, already, enabled
        self.failed = 0
        self._progress: Progress | None = None

    def __enter__(self) -> RoundProgress:
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]round[/bold] {task.description}"), BarColumn(),
                MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(), transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task("volumes", total=self.total, completed=self.already)
        return self

    def advance(self, record: VolumeRecord) -> None:
        if record.status == VolumeStatus.failed:
            self.failed += 1
            log.warning("failed: %s", record.error)
        else:
            log.debug("done: %s", record.volume_id)
        if self._progress is not None:
            desc = f"volumes ({self.failed} failed)" if self.failed else "volumes"
            self._progress.update(self._task, advance=1, description=desc)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
