"""SIGTERM stops a round the way Ctrl-C does.

Batch schedulers (SLURM pre-emption, Kubernetes pod deletion, `timeout`, `kill`) send SIGTERM.
Without a handler the driver dies where it stands: its actors are not stopped by it and its round
lock stays held until it looks stale (at once on the same host, after `runtime.lock_timeout_s`
elsewhere). With `sigterm_as_interrupt`, SIGTERM raises `Interrupted` in the driver's main
thread: the `finally` blocks run (actors killed, Ray shut down, the lock marked released), so a
rerun anywhere resumes at once. What was stored stays stored either way.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Interrupted(KeyboardInterrupt):
    """The driver got a termination signal; ``signum`` names it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises `Interrupted` (main thread only; elsewhere a no-op).

    Installed after Ray starts (Ray's own handler for the driver would otherwise end the
    process without running the block's clean-up); the previous handler is restored on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, _frame) -> None:
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
