"""Second corpus, the store side: full disks, read-only stores, a store deleted mid-round, lock
clocks, a student of another architecture, interrupted commands. Real CLI subprocesses.

A full disk is a real one: a small tmpfs mounted for the test (skipped where mounting is not
permitted), filled with a file so that the round's own writes hit ENOSPC.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import zarr

from semisam.schemas import VolumeStatus
from semisam.store import open_store, read_record
from semisam.training.checkpoint import HOLD_ENV
from tests.conftest import build_phantom_store

from .test_corpus import SEMISAM, semisam

FAST = ("--masker", "random_walker", "--no-progress")
UNLABELED = ("ph02", "ph03")  # build_phantom_store(count=4, labeled=2)


def run_round(store: Path, student: Path, *extra: str, timeout: float = 300):
    return semisam("run-round", str(store), "--round", "1", "--student", str(student), *FAST,
                   *extra, timeout=timeout)


def error_line(proc: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 2 and exactly one ``error: ...`` line holding every word; log lines (INFO/WARNING)
    may surround it, and the driver itself prints no traceback. Lines a Ray worker forwards
    (``(VolumeActor pid=...)``) are the worker's log, not the command's message."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    own = [ln for ln in proc.stderr.splitlines() if "(VolumeActor pid=" not in ln]
    errors = [ln for ln in own if ln.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    assert not any("Traceback" in ln for ln in own), proc.stderr
    for word in words:
        assert word in errors[0], (word, errors[0])
    return errors[0]


def lock_infos(store: Path) -> list[dict]:
    base = store / "rounds" / "1" / "lock"
    docs = [json.loads(p.read_text()) for p in sorted(base.glob("*/zarr.json"))]
    return [d["attributes"]["semisam_lock"] for d in docs]


def checksums(store: Path) -> dict[str, dict]:
    root = open_store(store, read_only=True)
    return {vid: read_record(root, 1, vid).checksums for vid in UNLABELED}


@contextlib.contextmanager
def small_fs(path: Path, size_kb: int) -> Iterator[Path]:
    """A tmpfs of ``size_kb`` KiB at ``path``: a real filesystem that fills up (root only)."""
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(fs: Path, leave_kb: int) -> Path:
    """Fill ``fs`` with one file, then free ``leave_kb`` KiB of it."""
    filler = fs / "filler"
    with open(filler, "wb", buffering=0) as fh:  # unbuffered: close() has nothing left to flush
        try:
            while True:
                fh.write(b"\xff" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    size = filler.stat().st_size
    os.truncate(filler, max(0, size - leave_kb * 1024))
    return filler


def reference_checksums(tmp_path: Path, student: Path) -> dict[str, dict]:
    """The outputs of an uninterrupted round over the same phantoms, computed in this process
    by the worker code itself (what every Ray worker runs; no Ray start-up)."""
    from semisam.schemas import RoundConfig
    from semisam.workers.volume import VolumeProcessor

    store = build_phantom_store(tmp_path / "reference.zarr", count=4, labeled=2)
    config = RoundConfig.model_validate({"masker": {"kind": "random_walker"}})
    processor = VolumeProcessor(str(store), 1, config, student)
    records = {vid: processor.process(vid) for vid in UNLABELED}
    assert all(r.status == VolumeStatus.done for r in records.values()), records
    return {vid: r.checksums for vid, r in records.items()}


def plant_lock(store: Path, host: str, heartbeat: float, gen: int = 1) -> None:
    root = zarr.open_group(store, mode="a", use_consolidated=False)
    root.require_group("rounds/1/lock")
    info = {"host": host, "pid": 4242, "pid_started": heartbeat - 60, "heartbeat": heartbeat,
            "started_at": "2026-01-01T00:00:00+00:00", "token": "f" * 32,
            "command": "semisam run-round", "released": False}
    doc = {"zarr_format": 3, "node_type": "group", "attributes": {"semisam_lock": info}}
    target = store / "rounds" / "1" / "lock" / f"{gen:08d}"
    target.mkdir(parents=True)
    (target / "zarr.json").write_text(json.dumps(doc))


# -- locks and clocks --------------------------------------------------------------------------
def test_lock_with_a_heartbeat_from_the_future_is_refused_clearly(tmp_path, trained_student):
    """A driver on a host whose clock is an hour ahead: its age cannot be told; refused with
    the reason and the way out, never taken over silently."""
    store = build_phantom_store(tmp_path / "store.zarr", count=4, labeled=2)
    plant_lock(store, host="fast-clock.example", heartbeat=time.time() + 3600)
    proc = run_round(store, trained_student)
    line = error_line(proc, str(store), "fast-clock.example", "in the future", "clocks",
                      "--break-lock")
    assert "-3600" not in line
    assert lock_infos(store)[0]["host"] == "fast-clock.example"
    assert "meta" not in zarr.open_group(store, mode="r")["rounds/1"].attrs


# -- a full disk ---------------------------------------------------------------------------------
def test_disk_full_during_run_round(tmp_path, trained_student):
    """ENOSPC mid-round: one line naming the store and "no space left", exit 2, the lock
    released, no volume marked failed for it; after freeing space the resumed round equals the
    uninterrupted one byte for byte. The round starts over a stale lock of a driver on another
    host whose clock is behind (or that died two hours ago): that lock is taken over."""
    expected = reference_checksums(tmp_path, trained_student)
    with small_fs(tmp_path / "fs", 4096) as fs:
        store = build_phantom_store(fs / "store.zarr", count=4, labeled=2)
        plant_lock(store, host="other-host.example", heartbeat=time.time() - 7200)
        filler = fill(fs, leave_kb=160)
        proc = run_round(store, trained_student)
        line = error_line(proc, str(store), "no space left on device",
                          "left to do (retryable, not bad data)", "rerun")
        assert "Traceback" not in proc.stderr, proc.stderr  # nor a worker's, forwarded by Ray
        warned = [ln for ln in proc.stderr.splitlines() if "taking over the lock" in ln]
        assert len(warned) == 1 and "other-host.example" in warned[0], proc.stderr
        assert all(i["released"] for i in lock_infos(store)), lock_infos(store)  # or deleted
        root = open_store(store, read_only=True)
        records = {vid: read_record(root, 1, vid) for vid in UNLABELED}
        assert any(r is None or r.status != VolumeStatus.done for r in records.values()), line
        for record in records.values():  # done, never started, or failed but retryable
            assert record is None or record.status == VolumeStatus.done or record.retryable
        filler.unlink()
        again = run_round(store, trained_student)
        assert again.returncode == 0, again.stderr
        assert checksums(store) == expected
        verify = semisam("inspect", str(store), "--round", "1", "--verify")
        assert verify.returncode == 0, verify.stdout + verify.stderr


def test_disk_full_at_ingest_and_before_a_round(tmp_path, trained_student):
    """ENOSPC while ingesting: one line naming the store, the volumes before it kept, the one
    that hit it not marked ingested. A round started on the full disk: one line, no traceback."""
    from .corpus import save_nifti, volume

    images = tmp_path / "images"
    images.mkdir()
    for i in range(10):
        save_nifti(images / f"scan_{i}.nii.gz", volume(60 + i))
    with small_fs(tmp_path / "fs", 4096) as fs:
        store = build_phantom_store(fs / "store.zarr", count=4, labeled=2)
        fill(fs, leave_kb=120)
        target = fs / "ingest.zarr"
        proc = semisam("ingest", str(images), "--store", str(target))
        line = error_line(proc, str(target), "no space left on device",
                          "while writing volume from", "rerun the same command")
        ingested = set(zarr.open_group(target, mode="r")["volumes"].group_keys())
        complete = {v for v in ingested
                    if "meta" in zarr.open_group(target, mode="r")[f"volumes/{v}"].attrs}
        assert 0 < len(complete) < 10 and f"{len(complete)} volume(s) were ingested" in line
        fill(fs, leave_kb=0)
        proc = run_round(store, trained_student)
        error_line(proc, str(store), "no space left on device", "round 1")


# -- read-only and deleted stores --------------------------------------------------------------
def test_store_on_a_read_only_mount(tmp_path, trained_student):
    with small_fs(tmp_path / "fs", 8192) as fs:
        store = build_phantom_store(fs / "store.zarr", count=4, labeled=2)
        image = tmp_path / "new.nii.gz"
        from .corpus import save_nifti, volume

        save_nifti(image, volume(70))
        subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
        proc = run_round(store, trained_student)
        error_line(proc, str(store), "read-only file system", "make the store writable")
        proc = semisam("ingest", str(image), "--store", str(store))
        error_line(proc, str(store), "read-only file system")
        assert "rounds" not in zarr.open_group(store, mode="r")


def test_store_deleted_mid_round(tmp_path, trained_student):
    """The store is moved away (or deleted) while the round runs: the driver stops at its next
    lock heartbeat with one line saying so (it said "the lock was taken over by an unknown
    driver")."""
    store = build_phantom_store(tmp_path / "store.zarr", count=8, labeled=2)
    cfg = tmp_path / "round.json"
    cfg.write_text(json.dumps({"runtime": {"lock_timeout_s": 2}}))
    proc = subprocess.Popen(
        [SEMISAM, "run-round", str(store), "--round", "1", "--student", str(trained_student),
         *FAST, "--config", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        records = store / "rounds" / "1" / "records"
        deadline = time.monotonic() + 240
        while not list(records.glob("*/zarr.json")) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        store.rename(tmp_path / "moved_away.zarr")  # atomic, unlike rmtree racing the workers
        t_moved = time.monotonic()
        _, err = proc.communicate(timeout=120)
        stopped_after = time.monotonic() - t_moved
    finally:
        if proc.poll() is None:
            proc.kill()
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert proc.returncode == 2 and len(errors) == 1, err
    assert str(store) in errors[0] and "deleted" in errors[0], errors[0]
    assert "taken over" not in err and "Traceback" not in err
    # workers that were mid-volume may have recreated a skeleton there (zarr writes parent
    # groups); it is no semisam store, so a rerun there says so instead of resuming into it
    if (store / "zarr.json").exists():
        attrs = json.loads((store / "zarr.json").read_text()).get("attributes", {})
        assert "schema_version" not in attrs
        assert "not a semisam store" in run_round(store, trained_student).stderr
    assert stopped_after < 30, stopped_after  # the next heartbeat, plus stopping Ray


# -- checkpoints and interrupted commands ------------------------------------------------------
def test_student_checkpoint_of_another_architecture(phantom_store, trained_student, tmp_path):
    """A semisam student whose weights are for other channel widths than its spec says (an
    edited or mixed-up checkpoint): refused on the driver, before Ray starts."""
    payload = torch.load(trained_student, weights_only=True)
    payload["spec"] = {**payload["spec"], "channels": [16, 32, 64]}
    other = tmp_path / "other_arch.pt"
    torch.save(payload, other)
    proc = run_round(phantom_store, other)
    error_line(proc, str(other), "weights do not fit the spec")
    assert "rounds/1" not in zarr.open_group(phantom_store, mode="r", use_consolidated=False)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_train_interrupted_then_resumed(tmp_path, sig):
    """Ctrl-C or a scheduler's SIGTERM during `semisam train`: one line that says how to resume
    (--resume), exit 128 + the signal, the resume state of the last checkpoint kept and no
    student written; `--resume` finishes from that state.

    The run is held after its first resume checkpoint (``$SEMISAM_HOLD_AFTER_CHECKPOINT`` names a
    file that exists for the whole first run), so the signal always lands mid-training whatever
    the machine's speed or load: timing alone once let all 600 iterations finish first."""
    store = build_phantom_store(tmp_path / "train.zarr", count=3, labeled=3, seed=7)
    cfg = tmp_path / "train.json"
    spec = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0,
            "patch_size": [16, 16, 16]}
    cfg.write_text(json.dumps({"student": spec, "iterations": 8, "checkpoint_every": 2,
                               "batch": {"labeled": 1, "unlabeled": 0}, "seed": 11}))
    out = tmp_path / "student.pt"
    state = out.with_name(out.name + ".state.pt")
    hold = tmp_path / "hold"
    hold.touch()
    cmd = [SEMISAM, "train", str(store), "--out", str(out), "--config", str(cfg),
           "--no-progress"]
    env = {**os.environ, HOLD_ENV: str(hold)}
    # SIGINT back to its default in the child: a test run started as a background job (`make
    # test &`, nohup) passes SIGINT as ignored, and Python then installs no Ctrl-C handler
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, preexec_fn=_default_sigint)
    try:
        deadline = time.monotonic() + 300
        while not state.exists() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        assert proc.poll() is None, "the held run ended before the signal"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("INFO ")]
    assert proc.returncode == 128 + sig, err
    assert len(lines) == 1 and lines[0].startswith(f"interrupted ({sig.name})"), err
    assert "--resume" in lines[0] and "run-round" not in lines[0], err
    assert state.exists() and not out.exists()
    assert torch.load(state, weights_only=True)["iteration"] == 2
    hold.unlink()
    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=300,
                             check=False, env=env)
    assert resumed.returncode == 0 and out.exists(), resumed.stderr
    assert "resuming" in resumed.stderr.lower() and "iteration 2 of 8" in resumed.stderr, \
        resumed.stderr
