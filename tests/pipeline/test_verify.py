"""`semisam inspect STORE --round R --verify`: every array re-read and checked against the
checksum its worker recorded; damage of each kind is reported, one line naming it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from semisam.pipeline.presentation.verify import verify_round
from semisam.pipeline.rounds.state import plan_round
from semisam.schemas import RoundConfig, VolumeStatus
from semisam.store import clear_record, open_store
from semisam.workers.volume import VolumeProcessor
from tests.conftest import build_phantom_store

SEMISAM = str(Path(sys.executable).with_name("semisam"))


def verify_cli(store: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([SEMISAM, "inspect", str(store), "--round", "1", "--verify", *extra],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def round_template(tmp_path_factory, trained_student) -> Path:
    """A store with round 1 written by the worker code itself (no Ray needed for this)."""
    store = build_phantom_store(tmp_path_factory.mktemp("verify") / "store.zarr", count=6, labeled=2)
    config = RoundConfig(masker={"kind": "random_walker"})
    plan = plan_round(open_store(store), 1, config, trained_student)
    threads = torch.get_num_threads()  # the processor sets its own thread count
    try:
        processor = VolumeProcessor(str(store), 1, config, trained_student)
        for vid in plan.todo:
            assert processor.process(vid).status == VolumeStatus.done
    finally:
        torch.set_num_threads(threads)
    return store


@pytest.fixture
def round_store(round_template, tmp_path) -> Path:
    dst = tmp_path / "store.zarr"
    shutil.copytree(round_template, dst)
    return dst


def _chunk_files(store: Path, kind: str, vid: str) -> list[Path]:
    return sorted((store / "rounds" / "1" / kind / vid / "c").rglob("*"), key=lambda p: str(p))


def test_clean_round_verifies(round_store):
    proc = verify_cli(round_store)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert "verified 8 arrays" in last and "of 4 done volumes" in last and last.endswith("OK")


def test_each_kind_of_damage_is_reported(round_store):
    files = [f for f in _chunk_files(round_store, "confidence", "ph02") if f.is_file()]
    files[1].unlink()  # a lost chunk (confidence is non-zero almost everywhere)
    chunk = max((f for f in _chunk_files(round_store, "pseudo_label", "ph03") if f.is_file()),
                key=lambda f: f.stat().st_size)
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2:] = bytes(len(data) - len(data) // 2)
    chunk.write_bytes(bytes(data))  # a torn / scrambled chunk
    root = open_store(round_store)
    arr = root["rounds/1/confidence/ph04"]
    arr[:, :, 5] = 0  # valid chunks, changed content (e.g. a stray second writer)
    shutil.rmtree(round_store / "rounds" / "1" / "pseudo_label" / "ph05")  # a lost array

    proc = verify_cli(round_store)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stdout.strip().splitlines()
    by_volume = {vid: [ln for ln in lines if f"'{vid}'" in ln] for vid in ("ph02", "ph03", "ph04", "ph05")}
    assert all(len(v) == 1 for v in by_volume.values()), lines
    rel = files[1].relative_to(round_store / "rounds/1/confidence/ph02").as_posix()
    assert by_volume["ph02"][0].startswith("confidence of volume 'ph02': missing chunk(s) " + rel)
    assert by_volume["ph03"][0].startswith("pseudo_label of volume 'ph03': ")
    assert "unreadable" in by_volume["ph03"][0] or "content changed" in by_volume["ph03"][0]
    assert by_volume["ph04"][0].startswith("confidence of volume 'ph04': content changed: sha256")
    assert by_volume["ph05"][0] == "pseudo_label of volume 'ph05': array missing (the record says done)"
    assert lines[-1].endswith("4 problem(s)")


def test_json_report_and_unchecked_volumes(round_store):
    root = open_store(round_store)
    clear_record(root, 1, "ph02")  # as if killed before its record: pending, not checked
    report = json.loads(verify_cli(round_store, "--json").stdout)
    assert report["done"] == 3 and report["pending"] == 1 and report["problems"] == []
    assert report["chunks"] == 3 * 2 * 4  # 32 slices in chunks of 8, two arrays each


def test_verify_needs_a_round(round_store):
    proc = subprocess.run([SEMISAM, "inspect", str(round_store), "--verify"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == "error: --verify needs --round R"


def test_library_verify_matches_written_arrays(round_store):
    root = open_store(round_store, read_only=True)
    report = verify_round(root, str(round_store), 1)
    assert report.ok and report.arrays == 8
    assert np.asarray(root["rounds/1/pseudo_label/ph02"][...]).any()
