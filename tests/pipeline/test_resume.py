"""Kill the `run-round` driver mid-round (SIGKILL); the rerun finishes only the rest and the
final arrays equal an uninterrupted run's."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil

from semisam.pipeline.rounds.driver import run_round
from semisam.schemas import RoundConfig, VolumeStatus
from semisam.store import list_metas, open_store, read_output, read_record
from tests.conftest import build_phantom_store

SEMISAM = str(Path(sys.executable).with_name("semisam"))


def _done(store: Path, ids: list[str]) -> list[str]:
    root = open_store(store, read_only=True)
    return [v for v in ids if (r := read_record(root, 1, v)) is not None and r.status == VolumeStatus.done]


def _wait_group_quiet(pgid: int, timeout: float = 30.0) -> None:
    """Wait for the killed driver's actors to stop, then end what Ray left of that group."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        actors = [p for p in psutil.process_iter(["name", "cmdline"])
                  if _pgid(p) == pgid and "VolumeActor" in " ".join(p.info["cmdline"] or [])]
        if not actors:
            break
        time.sleep(0.2)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _kill_orphaned_actors(store: Path, ids: list[str], timeout: float = 30.0) -> None:
    """SIGKILL the killed driver's actors (the pids its done records name): Ray may have put
    them outside the driver's process group, and an orphaned actor can still finish the
    volume it holds (a valid done record, but written after the test counted)."""
    root = open_store(store, read_only=True)
    pids = {r.worker_pid for v in ids if (r := read_record(root, 1, v)) is not None and r.worker_pid}
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.Error:
            continue
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(procs, timeout=timeout)


def _pgid(proc: psutil.Process) -> int | None:
    try:
        return os.getpgid(proc.pid)
    except (ProcessLookupError, psutil.Error):
        return None


def _start_run_round(store: Path, student: Path, tmp_path: Path,
                     stderr=subprocess.DEVNULL) -> subprocess.Popen:
    """`semisam run-round` on round 1 of ``store`` in its own session: one worker, one volume in
    flight (so a signal lands with at most one volume running)."""
    cfg = tmp_path / "round.json"
    cfg.write_text(json.dumps({"masker": {"kind": "random_walker"}, "runtime": {"workers": 1, "tasks_in_flight": 1}}))
    return subprocess.Popen(
        [SEMISAM, "run-round", str(store), "--round", "1", "--student", str(student),
         "--config", str(cfg), "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=stderr, text=True, start_new_session=True)


def _wait_for_done(proc: subprocess.Popen, store: Path, ids: list[str], count: int,
                   timeout: float = 240) -> list[str]:
    """Wait until ``count`` volumes of round 1 are done while ``proc`` still runs; returns them."""
    deadline = time.monotonic() + timeout
    while len(done := _done(store, ids)) < count:
        assert proc.poll() is None, "run-round ended before it could be signalled"
        assert time.monotonic() < deadline, "no volume finished in time"
        time.sleep(0.05)
    return done


def test_sigkill_driver_then_resume(local_ray, tmp_path, trained_student):
    template = build_phantom_store(tmp_path / "tpl.zarr", count=10, labeled=2, seed=3)
    killed, reference = tmp_path / "killed.zarr", tmp_path / "reference.zarr"
    shutil.copytree(template, killed)
    shutil.copytree(template, reference)
    ids = [m.volume_id for m in list_metas(open_store(template, read_only=True)) if not m.labeled]
    proc = _start_run_round(killed, trained_student, tmp_path)
    try:
        _wait_for_done(proc, killed, ids, 2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        _kill_orphaned_actors(killed, ids)
    finally:
        _wait_group_quiet(proc.pid)
    done_before = _done(killed, ids)
    assert 2 <= len(done_before) < len(ids), done_before
    root = open_store(killed, read_only=True)
    finished_at = {v: (read_record(root, 1, v).finished_at, read_record(root, 1, v).worker_pid) for v in done_before}

    config = RoundConfig(masker={"kind": "random_walker"})
    config.runtime.workers = 1
    rerun = run_round(killed, 1, trained_student, config, show_progress=False)
    assert rerun.skipped == len(done_before) and rerun.done == len(ids)
    root = open_store(killed, read_only=True)
    assert {v: (read_record(root, 1, v).finished_at, read_record(root, 1, v).worker_pid) for v in done_before} == finished_at

    run_round(reference, 1, trained_student, config, show_progress=False)
    ref_root = open_store(reference, read_only=True)
    for vid in ids:
        for kind in ("pseudo_label", "confidence"):
            np.testing.assert_array_equal(read_output(root, 1, kind, vid), read_output(ref_root, 1, kind, vid),
                                          err_msg=f"{kind} of {vid} differs after resume")


def test_sigterm_stops_the_round_cleanly_then_resume(local_ray, tmp_path, trained_student):
    """SIGTERM (what batch schedulers send) mid-round: the driver stops its workers, marks its
    lock released (so a driver on another host need not wait for it to go stale), says so in
    one line and exits 128 + 15; the rerun finishes only the rest."""
    from semisam.pipeline.rounds.lock import _LockKeys

    store = build_phantom_store(tmp_path / "s.zarr", count=10, labeled=2, seed=6)
    ids = [m.volume_id for m in list_metas(open_store(store, read_only=True)) if not m.labeled]
    proc = _start_run_round(store, trained_student, tmp_path, stderr=subprocess.PIPE)
    try:
        seen = _wait_for_done(proc, store, ids, 1)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        _wait_group_quiet(proc.pid)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "interrupted (SIGTERM)" in stderr and "Traceback" not in stderr, stderr[-2000:]
    keys = _LockKeys(open_store(store), 1)
    assert keys.read(keys.generations()[-1]).released
    done_before = _done(store, ids)
    # one worker with one volume in flight: at most that volume finished after the signal
    assert set(seen) <= set(done_before) and len(done_before) <= len(seen) + 1, (seen, done_before)
    assert len(done_before) < len(ids), done_before

    config = RoundConfig(masker={"kind": "random_walker"})
    config.runtime.workers = 1
    rerun = run_round(store, 1, trained_student, config, show_progress=False)
    assert rerun.skipped == len(done_before) and rerun.done == len(ids)
