"""Stores on S3: a real S3-compatible server (moto) on loopback, started by the tests.

One store, one round: ingest, a `run-round` driver killed with SIGKILL and resumed, inspect,
export and a plain zarr-python read, all on ``s3://``. Credentials and endpoint reach the
driver subprocess through the environment and the workers through ``runtime_env``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time

import boto3
import nibabel as nib
import numpy as np
import pytest
import zarr
from moto.server import ThreadedMotoServer
from pydantic import ValidationError

from semisam.pipeline.ingest import ingest
from semisam.pipeline.phantoms import write_phantom_set
from semisam.pipeline.rounds.actor import actor_options
from semisam.pipeline.rounds.driver import run_round
from semisam.schemas import RoundConfig, StorageConfig, StoreError, VolumeStatus
from semisam.store import (
    array_sha256,
    fsspec_options,
    list_metas,
    open_store,
    read_output,
    read_record,
)
from tests.pipeline.test_resume import SEMISAM, _done, _wait_group_quiet
from tests.pipeline.test_review import invoke

BUCKET = "semisam-test"
SHAPE = (48, 48, 32)


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's S3 server on 127.0.0.1 (a free port), a bucket, and the AWS_* environment."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN", "SEMISAM_STORAGE"):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", "semisam-test")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "semisam-test-secret")
        mp.setenv("AWS_ENDPOINT_URL", endpoint)
        mp.setenv("AWS_REGION", "us-east-1")
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint
    server.stop()


def test_open_store_checks_on_urls(s3_endpoint, monkeypatch):
    with pytest.raises(StoreError, match="no semisam store here"):
        open_store(f"s3://{BUCKET}/missing.zarr")
    with pytest.raises(StoreError, match="does not exist"):
        open_store("s3://semisam-no-such-bucket/s.zarr", create=True)
    zarr.open_group(f"s3://{BUCKET}/plain.zarr", mode="w")
    with pytest.raises(StoreError, match="not a semisam store"):
        open_store(f"s3://{BUCKET}/plain.zarr")
    url = f"s3://{BUCKET}/checks.zarr"
    open_store(url, create=True).attrs["schema_version"] = 99
    with pytest.raises(StoreError, match="newer than this semisam understands"):
        open_store(url)
    # the endpoint from the config field instead of the environment
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    cfg = StorageConfig(endpoint_url=s3_endpoint)
    root = open_store(f"s3://{BUCKET}/missing.zarr", create=True, storage=cfg)
    assert root.attrs["schema_version"] == 1
    monkeypatch.setenv("SEMISAM_STORAGE", json.dumps({"endpoint_url": s3_endpoint}))
    assert open_store(f"s3://{BUCKET}/missing.zarr", read_only=True).attrs["schema_version"] == 1
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    with pytest.raises(StoreError, match="no storage credentials"):  # s3fs caches filesystems
        open_store(url, storage=StorageConfig(options={"skip_instance_cache": True}))


@pytest.mark.parametrize("args", [
    ("inspect",), ("export", "--round", "1", "--to", "{tmp}/out"),
    ("run-round", "--round", "1", "--student", "{student}", "--masker", "random_walker",
     "--no-progress"),
    ("train", "--out", "{tmp}/student.pt", "--no-progress"), ("evaluate", "--student", "{student}"),
], ids=lambda a: a[0])
def test_missing_bucket_named_by_every_command(s3_endpoint, trained_student, tmp_path, args):
    """A missing bucket: the same one line from every command that opens a store (ingest's
    "bucket or location does not exist"), not "no semisam store here"."""
    url = "s3://semisam-no-such-bucket/la.zarr"
    filled = [a.format(tmp=tmp_path, student=trained_student) for a in args]
    proc = subprocess.run([SEMISAM, filled[0], url, *filled[1:]], capture_output=True, text=True,
                          timeout=300, check=False)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("INFO ")]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0] == (f"error: {url}: bucket or location does not exist "
                        "(no bucket 'semisam-no-such-bucket')"), lines[0]
    assert not (tmp_path / "out").exists() and not (tmp_path / "student.pt").exists()


def test_storage_settings_and_worker_environment(monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
                 "AWS_PROFILE", "SEMISAM_STORAGE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValidationError, match="credentials do not belong"):
        StorageConfig(options={"secret": "x"})
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://env:9000")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    opts = fsspec_options("s3://b/p", StorageConfig(endpoint_url="http://cfg:9000"))
    assert opts["endpoint_url"] == "http://cfg:9000" and opts["use_listings_cache"] is False
    assert opts["client_kwargs"] == {"region_name": "eu-west-1"}
    assert fsspec_options("s3://b/p")["endpoint_url"] == "http://env:9000"
    assert fsspec_options("memory://x") == {}
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    config = RoundConfig(masker={"kind": "random_walker"})
    options = actor_options(config)
    assert options["scheduling_strategy"] == "SPREAD"
    assert options["runtime_env"]["env_vars"] == {"AWS_ENDPOINT_URL": "http://env:9000",
                                                  "AWS_REGION": "eu-west-1"}
    config.runtime.storage.forward_credentials = True
    assert actor_options(config)["runtime_env"]["env_vars"]["AWS_SECRET_ACCESS_KEY"] == "s"


def _ingest_phantoms(tmp_path, url: str) -> tuple[list[str], dict[str, np.ndarray]]:
    images, labels = write_phantom_set(tmp_path / "in", count=6, shape=SHAPE,
                                       spacing=(0.9, 0.8, 2.0))
    report = ingest(url, [images], labels_dir=labels, labeled={"phantom_000", "phantom_001"})
    assert report.ok and report.count("added") == 6
    ids = [f"phantom_{i:03d}" for i in range(2, 6)]
    affines = {vid: nib.load(images / f"{vid}.nii.gz").affine for vid in ids}
    return ids, affines


def _kill_after_first_done(url: str, ids: list[str], student, cfg) -> tuple[str, list[str]]:
    """SIGKILL a `run-round` subprocess once a volume is done; (that volume, all done once quiet)."""
    proc = subprocess.Popen(
        [SEMISAM, "run-round", url, "--round", "1", "--student", str(student), "--config", str(cfg),
         "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not (seen := _done(url, ids)):
            assert proc.poll() is None, "run-round ended before it could be killed"
            assert time.monotonic() < deadline, "no volume finished in time"
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        _wait_group_quiet(proc.pid)
    # requests the killed workers sent may still be in the server's hands: wait until quiet
    done = _done(url, ids)
    while (time.sleep(1.0), again := _done(url, ids))[1] != done:
        done = again
    return seen[0], done


def test_round_on_s3_killed_resumed_inspected_exported(s3_endpoint, local_ray, trained_student,
                                                       tmp_path):
    url = f"s3://{BUCKET}/la.zarr"
    ids, affines = _ingest_phantoms(tmp_path, url)
    cfg_file = tmp_path / "round.json"
    cfg_file.write_text(json.dumps({"masker": {"kind": "random_walker"}, "runtime": {"workers": 1, "tasks_in_flight": 1}}))
    first, done_before = _kill_after_first_done(url, ids, trained_student, cfg_file)
    # one worker, one volume in flight: the first one seen done, plus at most the one the
    # orphaned worker was running when the driver was killed
    assert first in done_before and len(done_before) <= 2, (first, done_before)
    root = open_store(url, read_only=True)
    kept = {v: read_record(root, 1, v).finished_at for v in done_before}

    # resume in this process on the session's Ray, which started before these AWS_* variables:
    # the workers get them through runtime_env (credentials only because the config says so)
    config = RoundConfig.model_validate(json.loads(cfg_file.read_text()))
    config.runtime.storage.forward_credentials = True
    summary = run_round(url, 1, trained_student, config, show_progress=False)
    assert summary.skipped == len(done_before) and summary.done == len(ids) and summary.failed == 0
    assert summary.status == "finished"
    root = open_store(url, read_only=True)
    assert {v: read_record(root, 1, v).finished_at for v in done_before} == kept
    for vid in ids:
        record = read_record(root, 1, vid)
        assert record.status == VolumeStatus.done
        for kind in ("pseudo_label", "confidence"):  # stored bytes = what the worker computed
            assert array_sha256(read_output(root, 1, kind, vid)) == record.checksums[kind]
        ref = np.asarray(root[f"volumes/{vid}/reference"][...]) > 0
        pl = read_output(root, 1, "pseudo_label", vid) > 0
        assert 2 * (pl & ref).sum() / (pl.sum() + ref.sum()) > 0.5, vid

    out = json.loads(invoke("inspect", url, "--round", "1", "--json").stdout)
    assert out["done"] == len(ids) and all(row["node"] for row in out["volumes"])

    export_dir = tmp_path / "export"
    invoke("export", url, "--round", "1", "--to", str(export_dir))
    for vid in ids:
        img = nib.load(export_dir / "pseudo_label" / f"{vid}.nii.gz")
        np.testing.assert_allclose(img.affine, affines[vid], atol=1e-6)
        np.testing.assert_array_equal(np.asarray(img.dataobj),
                                      read_output(root, 1, "pseudo_label", vid))

    # any zarr-python reader, with the consolidated metadata written when the round finished
    plain = zarr.open_group(url, mode="r", storage_options={"endpoint_url": s3_endpoint})
    assert plain.metadata.consolidated_metadata is not None
    assert [m.volume_id for m in list_metas(root) if not m.labeled] == ids
    np.testing.assert_array_equal(plain[f"rounds/1/confidence/{ids[0]}"][...],
                                  read_output(root, 1, "confidence", ids[0]))
