"""The round lock: at most one `run-round` driver works on a round of a store at a time.

The lock lives in the store itself, so it works wherever the store does (a local directory, or
object storage through the same zarr store object)::

    rounds/<r>/lock/                       zarr group
    rounds/<r>/lock/<generation>/zarr.json zarr group whose attributes hold ``semisam_lock``:
                                           host, pid, pid start time, start time, heartbeat,
                                           a random token, released

Rules (docs/reliability.md explains them for users):

- The holder is the newest (highest) generation; it is held unless ``released`` or stale.
- A driver takes the lock by *creating* generation ``newest + 1`` with the store's
  create-if-absent (``set_if_not_exists``; an exclusive hard link on a local disk), reads it back
  and checks that it is still the newest. Of two drivers racing for the same generation only one
  can create it; a slow driver that creates an old generation sees a newer one and withdraws.
  Generations only grow (a released lock is marked, never deleted), so a generation number is
  never reused.
- Stale: same host as the reader and the holder's pid is not running (or is another process
  that reused the pid: its start time differs), or no heartbeat for ``runtime.lock_timeout_s``
  (the holder refreshes it every quarter of that). A stale lock is taken over by creating the
  next generation; ``--break-lock`` takes over a lock that looks alive.
- The holder checks at every heartbeat that it is still the newest generation; if another driver
  took over (it looked stale), the holder stops its round with a `RoundError`.

On object stores without an atomic create-if-absent, two drivers that race within one heartbeat
may both believe they hold the lock; the one with the older generation notices at its next
heartbeat and stops. Outputs stay correct either way (writes are idempotent).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from datetime import datetime, timezone

import psutil
import zarr
from pydantic import Field, ValidationError
from typing_extensions import Self
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from semisam.schemas import RoundError, StoreError, StrictModel, round_path

log = logging.getLogger(__name__)

LOCK_ATTR = "semisam_lock"
_GEN_WIDTH = 8  # zero-padded generation names sort like numbers


class LockInfo(StrictModel):
    """Who holds (or held) a round's lock."""

    host: str
    pid: int
    pid_started: float = Field(description="holder process start time, epoch seconds")
    started_at: str = Field(description="when the lock was taken, ISO-8601 UTC")
    heartbeat: float = Field(description="last refresh, epoch seconds (holder's clock)")
    token: str = Field(description="random id of this holding")
    command: str = ""
    released: bool = False

    def describe(self, now: float | None = None) -> str:
        """``host H, pid P, started T (last heartbeat N s ago)`` on one line; a heartbeat
        ahead of this host's clock says so (the two clocks differ)."""
        age = (now or time.time()) - self.heartbeat
        beat = (f"last heartbeat {age:.0f} s ago" if age > -1.0 else
                f"its heartbeat is {-age:.0f} s in the future by this host's clock: the clocks "
                f"of {self.host} and {socket.gethostname()} differ")
        return f"host {self.host}, pid {self.pid}, started {self.started_at} ({beat})"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).replace(microsecond=0).isoformat()


def _own_info(command: str) -> LockInfo:
    now = time.time()
    return LockInfo(host=socket.gethostname(), pid=os.getpid(),
                    pid_started=psutil.Process().create_time(), started_at=_iso(now),
                    heartbeat=now, token=uuid.uuid4().hex, command=command)


def stale_reason(info: LockInfo | None, timeout_s: float, now: float | None = None) -> str | None:
    """Why a lock may be taken over (None: it is held).

    A lock is free when released, unreadable, held by a process of this host that is gone (or
    whose pid now belongs to another process), or without a heartbeat for ``timeout_s``.
    """
    if info is None:
        return "the lock object is unreadable"
    if info.released:
        return "released"
    now = time.time() if now is None else now
    if info.host == socket.gethostname():
        try:
            started = psutil.Process(info.pid).create_time()
        except psutil.NoSuchProcess:
            return f"process {info.pid} is gone from this host"
        if abs(started - info.pid_started) > 1.0:
            return f"pid {info.pid} now belongs to another process"
    age = now - info.heartbeat
    if age > timeout_s:
        return f"no heartbeat for {age:.0f} s (> runtime.lock_timeout_s = {timeout_s:g} s)"
    return None


class _LockKeys:
    """Reads and writes of one round's lock generations through the zarr store API."""

    def __init__(self, root: zarr.Group, round_index: int) -> None:
        self.store = root.store
        base = f"{root.path}/" if root.path else ""
        self.root_key = f"{base}zarr.json"
        self.prefix = f"{base}{round_path(round_index)}/lock"
        root.require_group(f"{round_path(round_index)}/lock").attrs.update(
            {"description": "run-round driver lock: one subgroup per generation, see semisam "
                            "docs/reliability.md"})

    def store_exists(self) -> bool:
        """Whether the store's root group is still there (not deleted or moved mid-round)."""
        return bool(sync(self.store.exists(self.root_key)))

    def key(self, gen: int) -> str:
        return f"{self.prefix}/{gen:0{_GEN_WIDTH}d}/zarr.json"

    def generations(self) -> list[int]:
        async def _names() -> list[str]:
            return [name async for name in self.store.list_dir(self.prefix)]

        return sorted(int(n) for n in sync(_names()) if n.isdigit())

    def read(self, gen: int) -> LockInfo | None:
        buf = sync(self.store.get(self.key(gen), prototype=default_buffer_prototype()))
        if buf is None:
            return None
        try:
            return LockInfo.model_validate(json.loads(buf.to_bytes())["attributes"][LOCK_ATTR])
        except (ValueError, KeyError, TypeError, ValidationError):
            return None

    @staticmethod
    def _doc(info: LockInfo) -> object:
        doc = {"zarr_format": 3, "node_type": "group", "attributes": {LOCK_ATTR: info.model_dump()}}
        return default_buffer_prototype().buffer.from_bytes(json.dumps(doc).encode())

    def create(self, gen: int, info: LockInfo) -> bool:
        """Create generation ``gen`` if absent; True when this call's ``info`` is what is there."""
        sync(self.store.set_if_not_exists(self.key(gen), self._doc(info)))
        stored = self.read(gen)
        return stored is not None and stored.token == info.token

    def write(self, gen: int, info: LockInfo) -> None:
        sync(self.store.set(self.key(gen), self._doc(info)))

    def delete(self, gen: int) -> None:
        sync(self.store.delete(self.key(gen)))
        try:  # the generation's (now empty) directory on a local disk
            sync(self.store.delete_dir(f"{self.prefix}/{gen:0{_GEN_WIDTH}d}"))
        except (NotImplementedError, OSError):
            pass


class RoundLock:
    """A held round lock with its heartbeat thread. Use `acquire_round_lock` to get one.

    ``with lock:`` (or `release`) marks it released; `check` raises when it was lost.
    """

    def __init__(self, keys: _LockKeys, round_index: int, gen: int, info: LockInfo,
                 timeout_s: float, where: str = "the store") -> None:
        self.keys, self.round, self.gen, self.info = keys, round_index, gen, info
        self.timeout_s, self.where = timeout_s, where
        self.lost: str | None = None
        self.store_gone = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"round-{round_index}-lock",
                                        daemon=True)
        self._thread.start()

    @property
    def interval_s(self) -> float:
        """Heartbeat period: a quarter of the stale timeout, between 0.2 s and 30 s."""
        return min(30.0, max(0.2, self.timeout_s / 4))

    def refresh(self) -> None:
        """Write a new heartbeat, or record that another driver took the lock over."""
        newest = max(self.keys.generations(), default=0)
        current = self.keys.read(self.gen)
        if current is None and max(self.keys.generations(), default=0) <= self.gen:
            # gone, and no newer generation (a takeover makes one before deleting ours)
            self.store_gone = True
            what = ("the store was deleted or moved (its root zarr.json is gone)"
                    if not self.keys.store_exists() else
                    f"round {self.round}'s lock was deleted from the store (was the store "
                    "deleted or moved?)")
            self.lost = f"{self.where}: {what} while round {self.round} ran"
            self._stop.set()
            return
        if newest > self.gen or current is None or current.token != self.info.token:
            other = self.keys.read(newest) if newest else None
            who = other.describe() if other else "an unknown driver"
            self.lost = f"round {self.round}: the lock was taken over by {who}"
            self._stop.set()
            return
        self.info.heartbeat = time.time()
        self.keys.write(self.gen, self.info)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - a flaky store must not kill the thread
                log.warning("round %d: lock heartbeat failed (%s); retrying", self.round, exc)

    def check(self) -> None:
        """Raise `RoundError` when another driver has taken the lock over (`StoreError` when
        the store itself is gone)."""
        if self.lost and self.store_gone:
            raise StoreError(f"{self.lost}; this run stops (nothing more is written there)")
        if self.lost:
            raise RoundError(f"{self.lost}; this run stops (its finished volumes are kept)")

    def confirm(self) -> None:
        """`refresh` now (not at the next heartbeat), then `check`: before the round is
        summarized and marked finished, the lock is still ours and the store still there."""
        if not self.lost:
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - a failed heartbeat write is not a lost lock
                log.debug("round %d: lock refresh failed (%s)", self.round, exc)
        self.check()

    def release(self) -> None:
        """Stop the heartbeat and mark the lock released (if it is still ours)."""
        self._stop.set()
        self._thread.join(timeout=5)
        if self.lost:
            return
        try:
            newest = max(self.keys.generations(), default=0)
            current = self.keys.read(self.gen)
            if newest == self.gen and current is not None and current.token == self.info.token:
                self.info.released = True
                self.info.heartbeat = time.time()
                try:
                    self.keys.write(self.gen, self.info)
                except OSError:  # a full or quota-bound disk: deleting needs no space
                    self.keys.delete(self.gen)
                    log.info("round %d: lock generation %d deleted (could not be marked "
                             "released: the store takes no writes)", self.round, self.gen)
        except Exception as exc:  # noqa: BLE001 - the next driver sees a dead pid or old heartbeat
            log.warning("round %d: could not release the lock (%s)", self.round, exc)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _refusal(store: str, round_index: int, info: LockInfo, timeout_s: float) -> RoundError:
    if info.heartbeat - time.time() > timeout_s:  # another host's clock is ahead of ours
        return RoundError(
            f"round {round_index} of {store} is locked by another run-round: {info.describe()} "
            f"by more than runtime.lock_timeout_s = {timeout_s:g} s, so its age cannot be told; "
            "if that process is gone use --break-lock (and fix the clocks: NTP)")
    return RoundError(
        f"round {round_index} of {store} is locked by another run-round: {info.describe()}; "
        f"wait for it, or if that process is gone rerun after {timeout_s:g} s without heartbeat "
        "(runtime.lock_timeout_s), or use --break-lock"
    )


def read_settled(keys: _LockKeys, gen: int, tries: int = 20, pause_s: float = 0.05) -> LockInfo | None:
    """Generation ``gen``'s record, read again for up to ``tries * pause_s`` seconds while it
    is unreadable: another driver may be between creating the file (``set_if_not_exists``) and
    writing its bytes, and such a lock must not be taken for an unreadable (stale) one."""
    for attempt in range(tries):
        info = keys.read(gen)
        if info is not None or gen not in keys.generations():
            return info
        if attempt + 1 < tries:
            time.sleep(pause_s)
    return None


def acquire_round_lock(root: zarr.Group, store: str, round_index: int, timeout_s: float,
                       break_lock: bool = False, attempts: int = 5) -> RoundLock:
    """Take round ``round_index``'s lock (see the module docstring for the rules).

    Args:
        root: the store's root group (opened for writing).
        store: the store's location, for messages.
        timeout_s: heartbeat age after which a lock is stale (``runtime.lock_timeout_s``).
        break_lock: take over a lock that looks alive.
        attempts: tries when other drivers race for the same generation.

    Returns:
        The held `RoundLock` (its heartbeat thread runs until it is released).

    Raises:
        RoundError: one line naming the holder (host, pid, start time), when the lock is held.
    """
    keys = _LockKeys(root, round_index)
    command = " ".join(["semisam", *sys.argv[1:]])[:500]
    for _ in range(attempts):
        newest = max(keys.generations(), default=0)
        if newest:
            info = read_settled(keys, newest)
            reason = stale_reason(info, timeout_s)
            if reason is None and not break_lock:
                raise _refusal(store, round_index, info, timeout_s)  # type: ignore[arg-type]
            if info is not None and not info.released:
                log.warning("round %d: taking over the lock of %s: %s", round_index,
                            info.describe(), reason or "--break-lock")
        mine = _own_info(command)
        gen = newest + 1
        if keys.create(gen, mine) and max(keys.generations(), default=0) == gen:
            for old in (g for g in keys.generations() if g < gen):
                keys.delete(old)
            log.debug("round %d: lock generation %d taken", round_index, gen)
            return RoundLock(keys, round_index, gen, mine, timeout_s, where=store)
        created = keys.read(gen)  # read once: another driver may delete it between two reads
        if created is not None and created.token == mine.token:
            keys.delete(gen)  # created, but a newer generation appeared meanwhile: withdraw
        time.sleep(0.05)
    raise RoundError(f"round {round_index} of {store}: could not take the lock "
                     f"({attempts} tries, other drivers kept taking it)")
