"""Worker faults and bad data in real Ray rounds; every result is compared with an
uninterrupted round of the same store, byte for byte.

The template store has 16 unlabeled phantoms, one of them (``BAD``) with a NaN voxel. The
config retries bad data twice (``max_attempts_bad_input=2``) and tolerates four attempts per
volume, so three worker kills can never fail a volume, whichever volumes they hit.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from semisam.pipeline.phantoms import make_phantom
from semisam.pipeline.presentation.verify import verify_round
from semisam.pipeline.rounds.driver import run_round
from semisam.schemas import RoundConfig, VolumeRecord, VolumeStatus
from semisam.store import (
    clear_record,
    list_metas,
    open_store,
    read_output,
    read_record,
    write_outputs,
)
from semisam.workers.volume import VolumeProcessor
from tests.conftest import PHANTOM_SHAPE, build_phantom_store

SEED, COUNT, BAD = 5, 18, "ph17"


def fault_config() -> RoundConfig:
    cfg = RoundConfig(masker={"kind": "random_walker"})
    cfg.runtime.workers = 2
    cfg.runtime.max_attempts = 4
    cfg.runtime.max_attempts_bad_input = 2
    return cfg


def records(store: Path) -> dict[str, VolumeRecord]:
    root = open_store(store, read_only=True)
    return {m.volume_id: read_record(root, 1, m.volume_id) for m in list_metas(root) if not m.labeled}


def assert_same_outputs(store: Path, reference: Path) -> None:
    """Same done/failed volumes, same checksums, same array bytes, and every array verifies."""
    got, want = records(store), records(reference)
    assert {v: r.status for v, r in got.items()} == {v: r.status for v, r in want.items()}
    root, ref = open_store(store, read_only=True), open_store(reference, read_only=True)
    for vid, rec in want.items():
        if rec.status != VolumeStatus.done:
            assert got[vid].error == rec.error
            continue
        assert got[vid].checksums == rec.checksums, vid
        for kind in ("pseudo_label", "confidence"):
            np.testing.assert_array_equal(read_output(root, 1, kind, vid), read_output(ref, 1, kind, vid))
    assert verify_round(root, str(store), 1).ok


@pytest.fixture(scope="module")
def fault_template(tmp_path_factory) -> Path:
    store = build_phantom_store(tmp_path_factory.mktemp("faults") / "tpl.zarr", count=COUNT,
                                labeled=2, seed=SEED)
    root = open_store(store)
    image = root[f"volumes/{BAD}/image"]
    data = image[...]
    data[5, 6, 7] = np.nan
    image[...] = data  # as another tool might have written it (ingest would refuse it)
    return store


@pytest.fixture(scope="module")
def reference(fault_template, tmp_path_factory, local_ray, trained_student) -> Path:
    """The uninterrupted round."""
    store = tmp_path_factory.mktemp("reference") / "store.zarr"
    shutil.copytree(fault_template, store)
    run_round(store, 1, trained_student, fault_config(), show_progress=False)
    return store


def test_bad_data_retried_n_times_then_failed(reference):
    recs = records(reference)
    bad = recs.pop(BAD)
    assert bad.status == VolumeStatus.failed and bad.attempt == 2 and not bad.retryable
    assert bad.error.startswith(f"volume '{BAD}': ") and "NaN" in bad.error
    assert all(r.status == VolumeStatus.done and r.attempt == 1 for r in recs.values())
    root = open_store(reference, read_only=True)
    assert f"rounds/1/pseudo_label/{BAD}" not in root


class ActorKiller(threading.Thread):
    """SIGKILLs a worker of *this* test's Ray while it is inside ``process`` (mid-volume)."""

    def __init__(self, kills: int) -> None:
        super().__init__(daemon=True)
        self.kills, self.killed = kills, []
        self.stop = threading.Event()
        self.rng = random.Random(0)

    @staticmethod
    def _title(pid: int) -> str:
        try:
            return (psutil.Process(pid).cmdline() or [""])[0]
        except psutil.Error:
            return ""

    def _actors(self) -> list[int]:
        """Worker processes descended from this process (never another session's Ray)."""
        kids = psutil.Process().children(recursive=True)
        return [p.pid for p in kids if self._title(p.pid).startswith("ray::VolumeActor")]

    def run(self) -> None:
        actors, scanned = [], 0.0
        while len(self.killed) < self.kills and not self.stop.is_set():
            if time.monotonic() - scanned > 0.25:
                actors, scanned = self._actors(), time.monotonic()
            for pid in (p for p in actors if p not in self.killed):
                if self._title(pid).startswith("ray::VolumeActor.process"):
                    time.sleep(self.rng.uniform(0.02, 0.12))  # somewhere inside the volume
                    if self._title(pid).startswith("ray::VolumeActor.process"):
                        os.kill(pid, signal.SIGKILL)
                        self.killed.append(pid)
                        break
            time.sleep(0.01)


def test_worker_killed_three_times(fault_template, reference, tmp_path, trained_student, caplog):
    store = tmp_path / "store.zarr"
    shutil.copytree(fault_template, store)
    caplog.set_level(logging.WARNING, logger="semisam.pipeline.rounds.dispatch")
    killer = ActorKiller(kills=3)
    killer.start()
    try:
        summary = run_round(store, 1, trained_student, fault_config(), show_progress=False)
    finally:
        killer.stop.set()
        killer.join()
    assert len(killer.killed) == 3, killer.killed
    assert summary.done == COUNT - 3 and summary.failed == 1 and summary.pending == 0
    # the driver's word for each attempt a death cost: "volume <id>: attempt N failed (worker died ...)"
    charged = [m.split(":")[0].removeprefix("volume ") for m in caplog.messages
               if "failed (worker died" in m]
    # every kill landed inside `process`: exactly one attempt each, the queued volumes none
    assert len(charged) == 3, caplog.messages
    recs = records(store)
    extra = {v: r.attempt - 1 for v, r in recs.items() if v != BAD and r.attempt > 1}
    # the good volumes' extra attempts are exactly the charged ones (the bad volume's attempts
    # are capped by its bad-input limit, so a charge on it does not show in its record)
    assert extra == {v: charged.count(v) for v in set(charged) if v != BAD}, (extra, charged)
    assert_same_outputs(store, reference)


def test_retry_failed_redoes_only_the_failed(reference, tmp_path, trained_student):
    store = tmp_path / "store.zarr"
    shutil.copytree(reference, store)
    before = {v: r.finished_at for v, r in records(store).items()}
    again = run_round(store, 1, trained_student, fault_config(), show_progress=False)
    assert again.skipped == COUNT - 2 and again.failed == 1  # failed volumes are left alone
    image, _ = make_phantom(PHANTOM_SHAPE, seed=SEED * 100 + int(BAD[2:]))
    open_store(store)[f"volumes/{BAD}/image"][...] = image  # the data is fixed
    summary = run_round(store, 1, trained_student, fault_config(), retry_failed=True,
                        show_progress=False)
    assert summary.done == COUNT - 2 and summary.failed == 0 and summary.skipped == COUNT - 3
    after = records(store)
    assert after[BAD].status == VolumeStatus.done
    assert {v: t for v, t in before.items() if v != BAD} == \
        {v: r.finished_at for v, r in after.items() if v != BAD}
    assert verify_round(open_store(store, read_only=True), str(store), 1).ok


def _chunk_keys(store: Path, kind: str, vid: str) -> set[str]:
    base = store / "rounds" / "1" / kind / vid
    return {p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()}


def test_killed_attempt_then_retry_leaves_exactly_the_uninterrupted_arrays(
        fault_template, reference, tmp_path, trained_student):
    """A first attempt killed mid-write left chunks of its own (every chunk, other values) and
    no record; the retry must leave the uninterrupted bytes and no chunk of the first attempt."""
    store, vid = tmp_path / "store.zarr", "ph05"
    shutil.copytree(fault_template, store)
    root = open_store(store)
    rng = np.random.default_rng(1)
    write_outputs(root, 1, vid, np.ones(PHANTOM_SHAPE, np.uint8),
                  rng.integers(1, 255, PHANTOM_SHAPE).astype(np.uint8), slice_axis=2)
    clear_record(root, 1, vid)
    threads = torch.get_num_threads()
    try:
        record = VolumeProcessor(str(store), 1, fault_config(), trained_student).process(vid, 2)
    finally:
        torch.set_num_threads(threads)
    want = read_record(open_store(reference, read_only=True), 1, vid)
    assert record.status == VolumeStatus.done and record.checksums == want.checksums
    for kind in ("pseudo_label", "confidence"):
        assert _chunk_keys(store, kind, vid) == _chunk_keys(reference, kind, vid)
        np.testing.assert_array_equal(read_output(root, 1, kind, vid),
                                      read_output(open_store(reference), 1, kind, vid))
