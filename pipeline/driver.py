"""`run-round`: the Ray driver that shards a round's volumes over stateful workers.

One volume is one unit of work. The store is the source of truth: workers write each volume's
arrays and then its record; the driver only schedules, retries and reports, so a killed driver
loses nothing that was stored and a rerun resumes from the records.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from pathlib import Path

import ray
from ray.exceptions import RayActorError, RayTaskError, WorkerCrashedError

from semisam.schemas import RoundConfig, VolumeRecord, VolumeStatus
from semisam.store import open_store, write_record

from .actor import actor_class
from .progress import RoundProgress
from .round_state import finish_round, plan_round
from .summary import RoundSummary, summarize_round

log = logging.getLogger(__name__)

_WORKER_DIED = (RayActorError, WorkerCrashedError)


def start_ray(address: str | None, config: RoundConfig) -> bool:
    """Join ``address`` or start a local Ray (the embedded default). Returns True if started here."""
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
        return True
    ray.init(
        address="local",
        num_cpus=max(os.cpu_count() or 1, int(config.runtime.workers * config.runtime.cpus_per_worker)),
        include_dashboard=False,
        object_store_memory=256 * 1024 * 1024,
        logging_level=logging.WARNING,
        log_to_driver=True,
    )
    return True


class Dispatcher:
    """Keeps ``tasks_in_flight`` volumes queued on each actor; retries volumes of dead workers."""

    def __init__(self, root, store: str, round_index: int, config: RoundConfig,
                 student: Path, todo: list[str], progress: RoundProgress) -> None:
        self.root, self.round, self.config = root, round_index, config
        self.progress = progress
        self.queue: deque[tuple[str, int]] = deque((vid, 1) for vid in todo)
        n = min(config.runtime.workers, len(todo))
        cls = actor_class(config)
        payload = config.model_dump(mode="json")
        self.actors = [cls.remote(store, round_index, payload, str(student)) for _ in range(n)]
        self.load = [0] * n
        self.inflight: dict[ray.ObjectRef, tuple[str, int, int]] = {}
        self.records: dict[str, VolumeRecord] = {}

    def _fill(self) -> None:
        for i, actor in enumerate(self.actors):
            while self.queue and self.load[i] < self.config.runtime.tasks_in_flight:
                vid, attempt = self.queue.popleft()
                ref = actor.process.remote(vid, attempt)
                self.inflight[ref] = (vid, attempt, i)
                self.load[i] += 1

    def _retry_or_fail(self, vid: str, attempt: int, reason: str) -> None:
        if attempt < self.config.runtime.max_attempts:
            log.warning("volume %s: attempt %d failed (%s); retrying", vid, attempt, reason)
            self.queue.append((vid, attempt + 1))
            return
        record = VolumeRecord(volume_id=vid, status=VolumeStatus.failed, attempt=attempt,
                              error=f"volume '{vid}': gave up after {attempt} attempts: {reason}")
        write_record(self.root, self.round, record)
        self._finish(record)

    def _finish(self, record: VolumeRecord) -> None:
        self.records[record.volume_id] = record
        self.progress.advance(record)

    def _collect(self, ref: ray.ObjectRef) -> None:
        vid, attempt, i = self.inflight.pop(ref)
        self.load[i] -= 1
        try:
            record = VolumeRecord.model_validate(ray.get(ref))
        except _WORKER_DIED as exc:
            self._retry_or_fail(vid, attempt, f"worker died ({type(exc).__name__})")
            return
        except RayTaskError as exc:
            self._retry_or_fail(vid, attempt, str(exc).splitlines()[-1][:300])
            return
        if record.status == VolumeStatus.failed and record.retryable:
            self._retry_or_fail(vid, attempt, record.error or "unknown error")
            return
        self._finish(record)

    def run(self) -> dict[str, VolumeRecord]:
        """Dispatch until every volume is done or failed; the actors are released at the end."""
        try:
            self._fill()
            while self.inflight:
                ready, _ = ray.wait(list(self.inflight), num_returns=1, timeout=1.0)
                for ref in ready:
                    self._collect(ref)
                self._fill()
        finally:
            for actor in self.actors:
                ray.kill(actor, no_restart=True)
        return self.records


def run_round(
    store: str | Path,
    round_index: int,
    student: Path,
    config: RoundConfig | None = None,
    address: str | None = None,
    force: bool = False,
    retry_failed: bool = False,
    show_progress: bool = True,
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

    Returns:
        The round summary (counts, per-volume rows, per-node counts).
    """
    config = config or RoundConfig()
    store = str(store)
    root = open_store(store)
    started = time.perf_counter()
    plan = plan_round(root, round_index, config, Path(student), force=force, retry_failed=retry_failed)
    total = len(plan.todo) + len(plan.done) + len(plan.failed)
    log.info("round %d: %d volumes, %d to do (%s)", round_index, total, len(plan.todo),
             "resumed" if plan.resumed else "new")
    if plan.todo:
        started_ray = start_ray(address, config)
        try:
            with RoundProgress(total, len(plan.done) + len(plan.failed), show_progress) as progress:
                Dispatcher(root, store, round_index, config, Path(student), plan.todo, progress).run()
        finally:
            if started_ray:
                ray.shutdown()
    summary = summarize_round(root, round_index, time.perf_counter() - started,
                              skipped=len(plan.done) + len(plan.failed))
    if summary.pending == 0:
        summary.status = finish_round(root, store, plan.meta, any_failed=summary.failed > 0).status.value
    for node, count in sorted(summary.per_node.items()):
        log.info("node %s: %d volumes done", node, count)
    return summary
