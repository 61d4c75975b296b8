"""The CLI's log filters: an orphaned asyncio store error never prints a traceback after the
command's own one-line error (it did on CI, after a read-only store refused a zarr write)."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from semisam.pipeline.cli_app import quiet_orphaned_store_errors


def _orphan(exc: BaseException) -> None:
    """Set ``exc`` on a future nobody awaits, then collect it: asyncio reports it as
    "Future exception was never retrieved" on the ``asyncio`` logger."""
    loop = asyncio.new_event_loop()
    try:
        fut = loop.create_future()
        fut.set_exception(exc)
        del fut
        gc.collect()
    finally:
        loop.close()


@pytest.fixture
def asyncio_logger():
    logger = logging.getLogger("asyncio")
    saved = list(logger.filters)
    yield logger
    logger.filters[:] = saved


def test_orphaned_os_error_is_dropped_other_errors_kept(asyncio_logger, caplog):
    caplog.set_level(logging.ERROR, logger="asyncio")
    _orphan(OSError(30, "Read-only file system"))
    assert any("never retrieved" in r.getMessage() for r in caplog.records)  # the bug, unfiltered

    caplog.clear()
    quiet_orphaned_store_errors()
    quiet_orphaned_store_errors()  # idempotent
    kinds = [type(f).__name__ for f in asyncio_logger.filters]
    assert kinds.count("_DropOrphanedStoreErrors") == 1
    _orphan(OSError(28, "No space left on device"))
    assert not any("never retrieved" in r.getMessage() for r in caplog.records)

    _orphan(ValueError("a bug, not the store"))
    assert any("never retrieved" in r.getMessage() for r in caplog.records)
