"""One `run-round` per round: the lock object in the store, its stale rule and takeover."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from semisam.pipeline.rounds.lock import LockInfo, _LockKeys, acquire_round_lock, stale_reason
from semisam.schemas import RoundConfig, RoundError
from semisam.store import open_store

SEMISAM = str(Path(sys.executable).with_name("semisam"))


def _info(**changes) -> LockInfo:
    now = time.time()
    base = {"host": socket.gethostname(), "pid": os.getpid(),
            "pid_started": psutil.Process().create_time(),
            "started_at": "2026-01-01T00:00:00+00:00", "heartbeat": now, "token": "t0"}
    return LockInfo(**{**base, **changes})


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def root(phantom_store):
    return open_store(phantom_store)


def test_second_driver_is_refused_naming_the_holder(root, phantom_store):
    with acquire_round_lock(root, str(phantom_store), 1, timeout_s=60) as held:
        with pytest.raises(RoundError) as err:
            acquire_round_lock(root, str(phantom_store), 1, timeout_s=60)
        msg = str(err.value)
        assert "\n" not in msg and "locked by another run-round" in msg
        assert f"host {socket.gethostname()}, pid {os.getpid()}, started {held.info.started_at}" in msg
    again = acquire_round_lock(root, str(phantom_store), 1, timeout_s=60)  # released: free
    assert again.gen == held.gen + 1
    again.release()
    assert _LockKeys(root, 1).generations() == [again.gen]  # older generations are cleaned up


@pytest.mark.parametrize("case, stale", [
    ("dead_pid_same_host", True),
    ("pid_reused", True),
    ("old_heartbeat_other_host", True),
    ("fresh_heartbeat_other_host", False),
    ("alive_same_host", False),
    ("released", True),
])
def test_stale_rule(case, stale):
    info = {
        "dead_pid_same_host": lambda: _info(pid=_dead_pid()),
        "pid_reused": lambda: _info(pid_started=1.0),
        "old_heartbeat_other_host": lambda: _info(host="elsewhere", heartbeat=time.time() - 61),
        "fresh_heartbeat_other_host": lambda: _info(host="elsewhere"),
        "alive_same_host": lambda: _info(heartbeat=time.time() - 3600),
        "released": lambda: _info(released=True),
    }[case]()
    reason = stale_reason(info, timeout_s=60)
    if case == "alive_same_host":  # alive but silent for an hour: stale by heartbeat
        assert reason is not None and "no heartbeat" in reason
        return
    assert (reason is not None) == stale, reason


def test_stale_lock_of_a_dead_driver_is_taken_over(root, phantom_store, caplog):
    keys = _LockKeys(root, 1)
    dead = _info(pid=_dead_pid(), token="dead")
    assert keys.create(1, dead)
    with acquire_round_lock(root, str(phantom_store), 1, timeout_s=60) as lock:
        assert lock.gen == 2 and keys.generations() == [2]
    assert f"pid {dead.pid}" in caplog.text and "is gone" in caplog.text


def test_other_host_refused_until_its_heartbeat_times_out(root, phantom_store):
    keys = _LockKeys(root, 1)
    assert keys.create(1, _info(host="node-7", pid=4242, token="other"))
    with pytest.raises(RoundError, match="host node-7, pid 4242"):
        acquire_round_lock(root, str(phantom_store), 1, timeout_s=60)
    keys.write(1, _info(host="node-7", pid=4242, token="other", heartbeat=time.time() - 120))
    acquire_round_lock(root, str(phantom_store), 1, timeout_s=60).release()
    forced = acquire_round_lock(root, str(phantom_store), 1, timeout_s=60, break_lock=True)
    forced.release()


def test_holder_that_lost_the_lock_stops(root, phantom_store):
    first = acquire_round_lock(root, str(phantom_store), 1, timeout_s=60)
    second = acquire_round_lock(root, str(phantom_store), 1, timeout_s=60, break_lock=True)
    first.refresh()
    with pytest.raises(RoundError, match="taken over by"):
        first.check()
    first.release()  # must not touch the new holder's generation
    assert not _LockKeys(root, 1).read(second.gen).released
    second.release()


def test_a_lock_being_written_is_not_taken_for_unreadable(root, phantom_store):
    """Between another driver creating its generation's file and writing its bytes the record
    reads as nothing: that is a lock being taken, not an unreadable (stale) one to take over."""
    first = acquire_round_lock(root, str(phantom_store), 1, timeout_s=60)
    path = Path(phantom_store) / _LockKeys(root, 1).key(first.gen)
    written = path.read_bytes()
    path.write_bytes(b"")  # created, not yet written
    writer = threading.Timer(0.3, path.write_bytes, args=(written,))
    writer.start()
    try:
        with pytest.raises(RoundError, match="locked by another run-round"):
            acquire_round_lock(root, str(phantom_store), 1, timeout_s=60)
    finally:
        writer.join()
        first.release()


def test_racing_drivers_exactly_one_wins(root, phantom_store):
    barrier, results = threading.Barrier(6), []

    def contend() -> None:
        barrier.wait()
        try:
            results.append(acquire_round_lock(root, str(phantom_store), 1, timeout_s=60))
        except RoundError as exc:
            results.append(exc)

    threads = [threading.Thread(target=contend) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if not isinstance(r, Exception)]
    assert len(winners) == 1, results
    winners[0].release()


def _lock_holder_pid(store: Path) -> int | None:
    keys = _LockKeys(open_store(store), 1)
    gens = keys.generations()
    info = keys.read(gens[-1]) if gens else None
    return None if info is None or info.released else info.pid


def _kill_tree(pid: int) -> None:
    """SIGKILL a (stopped) driver, everything it started and its process group."""
    try:
        victims = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        victims = []
    for proc in victims:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_two_run_round_processes(phantom_store, trained_student, tmp_path):
    """A second `run-round` is refused naming the first; once the first is SIGKILLed its lock
    is stale (same host, pid gone) and the next driver takes it over. (That a rerun after a
    killed driver then finishes the round is test_resume.py's SIGKILL test.)"""
    cfg = tmp_path / "round.json"
    cfg.write_text(json.dumps({"masker": {"kind": "random_walker"}, "runtime": {"workers": 1}}))
    args = [SEMISAM, "run-round", str(phantom_store), "--round", "1", "--student",
            str(trained_student), "--config", str(cfg), "--no-progress"]
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while _lock_holder_pid(phantom_store) != first.pid:
            assert first.poll() is None and time.monotonic() < deadline, "first run took no lock"
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGSTOP)  # holds the lock, does nothing more
        second = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert f"host {socket.gethostname()}, pid {first.pid}, started 20" in lines[0]
    finally:
        _kill_tree(first.pid)
        first.wait()
    with acquire_round_lock(open_store(phantom_store), str(phantom_store), 1,
                            timeout_s=RoundConfig(masker={"kind": "random_walker"}).runtime.lock_timeout_s) as lock:
        assert _lock_holder_pid(phantom_store) == os.getpid() and lock.gen == 2
    assert _lock_holder_pid(phantom_store) is None  # released
