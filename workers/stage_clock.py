"""Seconds per stage of one volume's work (`VolumeRecord.timings_s`), by a context manager."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["StageClock"]


class StageClock:
    """Wall-clock seconds per named stage, summed over every time a stage runs.

    Example::

        clock = StageClock()
        with clock("read"):
            image = read_image(...)
        clock.seconds  # {"read": 0.012}
    """

    def __init__(self, *stages: str) -> None:
        """``stages``: stages that start at 0.0, in this order (every record holds them)."""
        self.seconds: dict[str, float] = dict.fromkeys(stages, 0.0)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        """Time the block as ``stage`` (added to what the stage already holds)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start
