"""`run-round`: the Ray driver that shards a round's volumes over stateful workers.

One volume is one unit of work. The store is the source of truth: workers write each volume's
arrays and then its record; the driver only schedules, retries and reports, so a killed driver
loses nothing that was stored and a rerun resumes from the records (which volumes are left to
do: `schemas.volume_work`).

Here: the round from start to finish (checkpoints, lock, plan, finish) and its Ray start
(`start_ray`, on `pipeline.rounds.ray_start.ensure_ray`); the scheduling, retries and fault handling
are `pipeline.rounds.dispatch.Dispatcher`'s (docs/reliability.md). One driver per round:
`acquire_round_lock`.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import ray
import zarr

from semisam.schemas import RoundConfig, SemisamError, StoreError
from semisam.store import open_store, read_class_map, store_full_error, store_write_failure
from semisam.workers.components import with_store_priors

from .dispatch import Dispatcher, StoreWriteFailed
from .interrupt import sigterm_as_interrupt
from .lock import RoundLock, acquire_round_lock
from .progress import RoundProgress
from .ray_start import ensure_ray
from .state import (
    RoundPlan,
    check_checkpoints,
    checkpoints_vetted,
    current_fingerprint,
    finish_round,
    keep_begun_behaviour,
    plan_round,
)
from .summary import RoundSummary, summarize_round

log = logging.getLogger(__name__)


def start_ray(address: str | None, config: RoundConfig) -> bool:
    """Join ``address`` or start a local Ray (the embedded default) with CPUs for the round's
    workers. Returns True if started here."""
    cpus = max(os.cpu_count() or 1, int(config.runtime.workers * config.runtime.cpus_per_worker))
    return ensure_ray(address, cpus)


def _left_to_do(root, round_index: int) -> str:
    """``2 volume(s) done, 3 left to do (retryable, not bad data);`` from the round's summary
    (`schemas.volume_work`: what a rerun of the same command processes)."""
    try:
        summary = summarize_round(root, round_index)
        return (f"{summary.done} volume(s) done, {summary.left_to_do} left to do (retryable, "
                "not bad data);")
    except Exception:  # noqa: BLE001 - the message matters more than the counts
        return ""


def _store_full(exc: Exception, root: zarr.Group, store: str, round_index: int) -> StoreError | None:
    """The one-line `StoreError` for a round stopped because the store takes no more writes
    (full, quota, read-only), naming what was being written and what is left to do; None for
    any other error."""
    failure = exc.failure if isinstance(exc, StoreWriteFailed) else store_write_failure(exc)
    if failure is None or isinstance(exc, SemisamError):
        return None
    what = f"writing volume '{exc.volume_id}'" if isinstance(exc, StoreWriteFailed) \
        else "writing the round's state"
    return store_full_error(store, failure, f"{what} of round {round_index}",
                            _left_to_do(root, round_index))


def _prepare(store: str, round_index: int, student: Path,
             config: RoundConfig) -> tuple[zarr.Group, RoundConfig, tuple[str, str, str | None]]:
    """Open the store, settle the config (a begun round's behaviour, the store's location
    priors), hash the checkpoints and vet them on the driver unless the round began with these
    very bytes. Returns the store root, the config and `current_fingerprint`'s hashes."""
    root = open_store(store, storage=config.runtime.storage)
    config = keep_begun_behaviour(root, round_index, config)
    config = with_store_priors(config, root)  # prompts.component 'prior': fitted here, recorded
    hashes = current_fingerprint(config, student)
    if checkpoints_vetted(root, round_index, config, hashes):
        log.debug("round %d: checkpoints unchanged since the round began (same sha256); "
                  "not loaded again on the driver", round_index)
    else:
        check_checkpoints(config, student, read_class_map(root))
    return root, config, hashes


def _dispatch(root: zarr.Group, store: str, round_index: int, config: RoundConfig, student: Path,
              plan: RoundPlan, lock: RoundLock, address: str | None, show_progress: bool) -> None:
    """Run the plan's volumes to do on Ray (started here unless it is up) under ``lock``."""
    finished = len(plan.done) + len(plan.failed)
    total = len(plan.todo) + finished
    log.info("round %d: %d volumes, %d to do (%s)", round_index, total, len(plan.todo),
             "resumed" if plan.resumed else "new")
    if not plan.todo:
        return
    started_ray = start_ray(address, config)
    try:
        with sigterm_as_interrupt(), RoundProgress(total, finished, show_progress) as bar:
            Dispatcher(root, store, round_index, config, student, plan.todo, bar, lock=lock).run()
    finally:
        if started_ray:
            ray.shutdown()
    lock.confirm()  # taken over, or the store deleted, since the last heartbeat?


def run_round(
    store: str | Path,
    round_index: int,
    student: Path,
    config: RoundConfig | None = None,
    address: str | None = None,
    force: bool = False,
    retry_failed: bool = False,
    show_progress: bool = True,
    break_lock: bool = False,
) -> RoundSummary:
    """Produce round ``round_index`` of pseudo-labels for every unlabeled volume of ``store``.

    Args:
        store: local directory or URL of the store.
        round_index: round number (``rounds/<r>``).
        student: student checkpoint (readable on every worker node).
        config: round config (defaults: random-walker masker).
        address: Ray address to join; None starts a local Ray.
        force: redo a round whose stored fingerprint differs.
        retry_failed: also redo volumes recorded as failed.
        break_lock: take the round's lock even if its holder looks alive.

    Returns:
        The round summary (counts, per-volume rows, per-node counts).

    Raises:
        CheckpointError: a checkpoint is unusable (checked on the driver before Ray starts,
            unless the round exists with the same fingerprint: those bytes passed before).
        RoundError: the round is locked by another driver, its fingerprint differs, or it
            cannot run (see `Dispatcher.run`).
        StoreError: the store takes no more writes (no space left, quota, read-only): one line
            naming the store; the lock is released first, the volumes it cost stay to do.
    """
    store, student = str(store), Path(student)
    root, config, hashes = _prepare(store, round_index, student, config or RoundConfig())
    started = time.perf_counter()
    try:
        with acquire_round_lock(root, store, round_index, config.runtime.lock_timeout_s,
                                break_lock=break_lock) as lock:
            plan = plan_round(root, round_index, config, student, force=force,
                              retry_failed=retry_failed, hashes=hashes)
            _dispatch(root, store, round_index, config, student, plan, lock, address,
                      show_progress)
            summary = summarize_round(root, round_index, time.perf_counter() - started,
                                      skipped=len(plan.done) + len(plan.failed))
            if summary.left_to_do == 0:  # schemas.volume_work: nothing a rerun would redo
                lock.check()
                summary.status = finish_round(root, store, plan.meta, summary.failed > 0).status.value
    except Exception as exc:
        full = _store_full(exc, root, store, round_index)
        if full is None:
            raise
        raise full from None
    for node, count in sorted(summary.per_node.items()):
        log.info("node %s: %d volumes done", node, count)
    return summary
