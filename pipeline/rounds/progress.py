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
        self._up = self._workers = 0
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

    @property
    def description(self) -> str:
        """The bar's label: failures so far and, while workers start, how many are up."""
        notes = [f"{self.failed} failed"] if self.failed else []
        if self._up < self._workers:
            notes.append(f"workers starting: {self._up}/{self._workers} up")
        return f"volumes ({', '.join(notes)})" if notes else "volumes"

    def workers_up(self, up: int, total: int) -> None:
        """Show worker start-up (model loading; a cold ``torch.compile`` can take minutes)."""
        self._up, self._workers = up, total
        if self._progress is not None:
            self._progress.update(self._task, description=self.description)

    def advance(self, record: VolumeRecord) -> None:
        if record.status == VolumeStatus.failed:
            self.failed += 1
            log.warning("failed: %s", record.error)
        else:
            log.debug("done: %s", record.volume_id)
        if self._progress is not None:
            self._progress.update(self._task, advance=1, description=self.description)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
