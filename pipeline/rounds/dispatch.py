"""The Ray dispatcher of `run-round`: keeps the round's volumes in flight on stateful workers.

One volume is one unit of work. Workers write each volume's arrays and then its record; the
dispatcher only schedules, retries and counts (`pipeline.rounds.driver.run_round` plans the round and
finishes it).

Faults (docs/reliability.md): a worker that dies is restarted by Ray; the volume it was running
is retried (one attempt used), the volumes queued behind it are resubmitted without using an
attempt; no volume goes to a worker until that worker answers a ping, so a worker that cannot be
placed again (its node is gone, no free resources) is simply not used.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import ray
from ray.exceptions import ActorDiedError, GetTimeoutError, RayActorError, RayError, RayTaskError

from semisam.schemas import RoundConfig, RoundError, VolumeRecord, VolumeStatus
from semisam.store import store_write_failure, write_record

from .actor import actor_class
from .lock import RoundLock
from .progress import RoundProgress
from .ray_start import ray_error_line

log = logging.getLogger(__name__)

_PING_RETRY_S = 1.0  # a restarting worker is pinged again after this long
_FENCE_WAIT_S = 30.0  # how long the other volumes of a dead worker get to report


def _outcome(ref: ray.ObjectRef) -> object:
    """What a resolved (or not) volume task gave: a record dict, a Ray error, or None.

    A `RayTaskError` is an exception raised by the volume's code; any other `RayError` means
    the worker (or its node, or the result) was lost.
    """
    try:
        return ray.get(ref, timeout=0)
    except (GetTimeoutError, TimeoutError):
        return None
    except RayError as exc:
        return exc


def _never_ran(outcome: object) -> bool:
    """True for a task that surely did not start: sent while its worker was restarting."""
    return outcome is None or "is restarting" in str(outcome)


class StoreWriteFailed(Exception):
    """A volume failed because the store takes no more writes (full, quota, read-only): every
    other volume would fail the same way, so the round stops; the volume stays to do."""

    def __init__(self, volume_id: str, failure: str) -> None:
        super().__init__(f"volume '{volume_id}': {failure}")
        self.volume_id, self.failure = volume_id, failure


@dataclass(frozen=True)
class _Task:
    volume_id: str
    attempt: int
    actor: int
    seq: int  # submission order: a sequential actor runs its tasks in this order


class Dispatcher:
    """Keeps ``tasks_in_flight`` volumes queued on each live actor; retries what faults cost.

    Args:
        lock: the round lock; checked on every turn (a lost lock stops the round).
    """

    def __init__(self, root, store: str, round_index: int, config: RoundConfig,
                 student: Path, todo: list[str], progress: RoundProgress,
                 lock: RoundLock | None = None) -> None:
        self.root, self.round, self.config = root, round_index, config
        self.progress, self.lock = progress, lock
        self.queue: deque[tuple[str, int]] = deque((vid, 1) for vid in todo)
        self._cls = actor_class(config)
        self._args = (store, round_index, config.model_dump(mode="json"), str(student))
        n = min(config.runtime.workers, len(todo))
        self.actors = [self._cls.remote(*self._args) for _ in range(n)]
        self.ready = [False] * n
        self.load = [0] * n
        self.inflight: dict[ray.ObjectRef, _Task] = {}
        self.pings: dict[ray.ObjectRef, int] = {}
        self.ping_at: dict[int, float] = {}
        self.records: dict[str, VolumeRecord] = {}
        self._seq = itertools.count()
        self._replaced = 0
        self._up_since = self._started = time.monotonic()
        for i in range(n):
            self._ping(i)
        progress.workers_up(0, n)

    # -- workers ---------------------------------------------------------------------------
    def _ping(self, i: int) -> None:
        self.pings[self.actors[i].where.remote()] = i

    def _on_ping(self, ref: ray.ObjectRef) -> None:
        """A worker answered (it is up) or failed (restarting: ask again later; dead: replace)."""
        i = self.pings.pop(ref)
        try:
            where = ray.get(ref)
        except RayActorError as exc:
            if exc.actor_init_failed:
                raise RoundError(f"worker failed to start: {ray_error_line(exc)}") from None
            if isinstance(exc, ActorDiedError):
                self._replace(i, exc)
            else:
                self.ping_at[i] = time.monotonic() + _PING_RETRY_S
            return
        if not self.ready[i]:
            log.info("worker %d up: %s pid %s", i, where.get("node"), where.get("pid"))
        self.ready[i] = True
        self.progress.workers_up(sum(self.ready), len(self.ready))

    def _replace(self, i: int, exc: BaseException) -> None:
        """A worker Ray will not restart: start a new one in its place (a few times at most)."""
        self._replaced += 1
        if self._replaced > 3 * len(self.actors):
            raise RoundError(f"workers keep dying for good ({self._replaced} replaced); last: "
                             f"{ray_error_line(exc)}")
        log.warning("worker %d is gone for good (%s); starting a new one", i, ray_error_line(exc))
        self.actors[i] = self._cls.remote(*self._args)
        self._ping(i)

    def _due_pings(self) -> None:
        now = time.monotonic()
        for i, at in list(self.ping_at.items()):
            if now >= at:
                del self.ping_at[i]
                self._ping(i)

    def _check_up(self) -> None:
        """Abort when no worker has been up for ``runtime.worker_start_timeout_s``."""
        now = time.monotonic()
        if any(self.ready) or not self.queue:
            self._up_since = now
            return
        rt = self.config.runtime
        if now - self._up_since > rt.worker_start_timeout_s:
            raise RoundError(
                f"no worker was up for {rt.worker_start_timeout_s:g} s "
                f"(runtime.worker_start_timeout_s): does the cluster have {rt.cpus_per_worker:g} "
                f"CPU and {rt.gpus_per_worker:g} GPU free for a worker?")

    # -- volumes ---------------------------------------------------------------------------
    def _fill(self) -> None:
        if not all(self.ready) and time.monotonic() - self._started < self.config.runtime.startup_grace_s:
            return  # give every worker the chance to come up, so the first volumes spread out
        for i, actor in enumerate(self.actors):
            while self.ready[i] and self.queue and self.load[i] < self.config.runtime.tasks_in_flight:
                vid, attempt = self.queue.popleft()
                ref = actor.process.remote(vid, attempt)
                self.inflight[ref] = _Task(vid, attempt, i, next(self._seq))
                self.load[i] += 1

    def _finish(self, record: VolumeRecord) -> None:
        if record.volume_id in self.records:  # cannot happen by design; never count twice
            log.warning("volume %s: a second result was ignored", record.volume_id)
            return
        self.records[record.volume_id] = record
        self.progress.advance(record)

    def _retry_or_fail(self, task: _Task, reason: str, limit: int,
                       final: VolumeRecord | None = None) -> None:
        """Queue attempt + 1 if ``limit`` allows; else store ``final`` (or a 'gave up' record)."""
        if task.attempt < limit:
            log.warning("volume %s: attempt %d failed (%s); retrying", task.volume_id,
                        task.attempt, reason)
            self.queue.append((task.volume_id, task.attempt + 1))
            return
        if final is None:
            final = VolumeRecord(
                volume_id=task.volume_id, status=VolumeStatus.failed, attempt=task.attempt,
                error=f"volume '{task.volume_id}': gave up after {task.attempt} attempts: {reason}")
            write_record(self.root, self.round, final)
        self._finish(final)

    def _handle(self, task: _Task, record: VolumeRecord) -> None:
        """A worker's record: done, or failed (retried within the limit of its kind)."""
        rt = self.config.runtime
        if record.status != VolumeStatus.failed:
            self._finish(record)
        elif record.retryable and (failure := store_write_failure(record.error)):
            raise StoreWriteFailed(task.volume_id, failure)  # its record stays retryable
        elif record.retryable:
            self._retry_or_fail(task, record.error or "unknown error", rt.max_attempts)
        else:  # deterministic (bad data): the worker's record is already the final one
            limit = min(rt.max_attempts_bad_input, rt.max_attempts)
            self._retry_or_fail(task, record.error or "bad input", limit, final=record)

    def _on_volume(self, ref: ray.ObjectRef) -> None:
        task = self.inflight.pop(ref)
        self.load[task.actor] -= 1
        outcome = _outcome(ref)
        if isinstance(outcome, RayTaskError) and (failure := store_write_failure(outcome)):
            raise StoreWriteFailed(task.volume_id, failure)  # the worker could not even record it
        if isinstance(outcome, RayTaskError):
            self._retry_or_fail(task, ray_error_line(outcome), self.config.runtime.max_attempts)
        elif isinstance(outcome, RayError):
            self._worker_lost(task, outcome)
        else:
            self._handle(task, VolumeRecord.model_validate(outcome))

    def _worker_lost(self, task: _Task, exc: BaseException) -> None:
        """Settle every volume of a dead worker: the one it was running uses an attempt, the
        ones queued behind it (they never started: an actor runs its tasks in order) do not."""
        i = task.actor
        self.ready[i] = False
        mine = [(ref, t) for ref, t in self.inflight.items() if t.actor == i]
        for ref, _ in mine:
            del self.inflight[ref]
        self.load[i] = 0
        if mine:
            ray.wait([r for r, _ in mine], num_returns=len(mine), timeout=_FENCE_WAIT_S)
        outcomes = [(task, exc)] + [(t, _outcome(ref)) for ref, t in mine]
        charged = False
        for t, out in sorted(outcomes, key=lambda o: o[0].seq):
            if isinstance(out, dict):
                self._handle(t, VolumeRecord.model_validate(out))
            elif isinstance(out, RayTaskError) and (failure := store_write_failure(out)):
                raise StoreWriteFailed(t.volume_id, failure)
            elif isinstance(out, RayTaskError):
                self._retry_or_fail(t, ray_error_line(out), self.config.runtime.max_attempts)
            elif charged or _never_ran(out):
                self.queue.appendleft((t.volume_id, t.attempt))  # not started: no attempt used
            else:
                charged = True
                self._retry_or_fail(t, f"worker died ({type(out).__name__})",
                                    self.config.runtime.max_attempts)
        log.warning("worker %d died with %d volume(s) in flight; they go to the live workers",
                    i, len(outcomes))
        self._ping(i)

    def run(self) -> dict[str, VolumeRecord]:
        """Dispatch until every volume is done or failed; the actors are released at the end.

        Raises:
            RoundError: the lock was taken over, a worker cannot start (its constructor fails),
                or no worker was up for ``runtime.worker_start_timeout_s``.
            StoreWriteFailed: a volume failed because the store takes no more writes.
        """
        try:
            while self.queue or self.inflight:
                if self.lock is not None:
                    self.lock.check()
                self._fill()
                self._due_pings()
                waiting = [*self.inflight, *self.pings]
                ready = ray.wait(waiting, num_returns=1, timeout=1.0)[0] if waiting else []
                if not waiting:
                    time.sleep(0.2)
                for ref in ready:
                    if ref in self.pings:
                        self._on_ping(ref)
                    elif ref in self.inflight:
                        self._on_volume(ref)
                self._check_up()
        finally:
            for actor in self.actors:
                ray.kill(actor, no_restart=True)
        return self.records
