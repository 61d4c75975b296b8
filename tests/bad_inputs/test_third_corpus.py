"""Third corpus (issue 26, items 8-14 and 17): tracebacks that became one line, outputs checked
before the work, lists checked before training. Real CLI subprocesses on phantom stores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from semisam.schemas import VolumeStatus
from semisam.store import open_store, read_record

from .corpus import (
    save_nifti,
    truncate_chunk,
    volume,
    write_text_checkpoint,
    write_undecodable_dicom_series,
)
from .test_corpus import assert_one_line_error, semisam

FAST = ("--masker", "random_walker", "--no-progress")
TINY = {"student": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0,
                    "patch_size": [16, 16, 16]},
        "iterations": 2, "checkpoint_every": 2, "batch": {"labeled": 1, "unlabeled": 0}}


def _scan(tmp_path: Path) -> Path:
    scans = tmp_path / "scans"
    scans.mkdir(exist_ok=True)
    save_nifti(scans / "a.nii.gz", volume(1))
    return scans


# -- 8: a text file named student.pt ------------------------------------------------------------
@pytest.mark.parametrize("command", ["predict", "run-round", "evaluate"])
def test_text_file_as_student_checkpoint(phantom_store, tmp_path, command):
    student = write_text_checkpoint(tmp_path / "student.pt")
    if command == "predict":
        proc = semisam("predict", str(_scan(tmp_path)), "--student", str(student), "--out",
                       str(tmp_path / "out"), "--no-progress")
    elif command == "run-round":
        proc = semisam("run-round", str(phantom_store), "--round", "1", "--student",
                       str(student), *FAST)
    else:
        proc = semisam("evaluate", str(phantom_store), "--student", str(student))
    assert_one_line_error(proc, str(student), "not a readable PyTorch checkpoint")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("*.nii.gz"))


# -- 9: --device cuda on a machine without a GPU ------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_predict_on_cuda_without_a_gpu(trained_student, tmp_path):
    out = tmp_path / "out"
    proc = semisam("predict", str(_scan(tmp_path)), "--student", str(trained_student), "--out",
                   str(out), "--device", "cuda", "--no-progress")
    assert_one_line_error(proc, "device 'cuda'", "no usable CUDA GPU")
    assert not any(out.glob("*.nii.gz")) if out.exists() else True


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_train_on_cuda_without_a_gpu(phantom_store, tmp_path):
    cfg = tmp_path / "train.json"
    cfg.write_text(json.dumps({**TINY, "device": "cuda"}))
    out = tmp_path / "student.pt"
    proc = semisam("train", str(phantom_store), "--out", str(out), "--config", str(cfg),
                   "--no-progress")
    assert_one_line_error(proc, "device 'cuda'", "no usable CUDA GPU")
    assert not out.exists()


# -- 10: outputs that exist and are the wrong kind, refused before the work ---------------------
def test_predict_out_is_a_file(trained_student, tmp_path):
    out = tmp_path / "out.nii.gz"
    out.write_bytes(b"not a folder")
    proc = semisam("predict", str(_scan(tmp_path)), "--student", str(trained_student), "--out",
                   str(out), "--no-progress")
    line = assert_one_line_error(proc, f"--out {out}", "not a directory")
    assert "Traceback" not in proc.stderr and line
    assert out.read_bytes() == b"not a folder"


def test_train_out_is_a_directory(phantom_store, tmp_path):
    cfg = tmp_path / "train.json"
    cfg.write_text(json.dumps({**TINY, "iterations": 100000}))  # refused before any of them
    out = tmp_path / "student.pt"
    out.mkdir()
    proc = semisam("train", str(phantom_store), "--out", str(out), "--config", str(cfg),
                   "--no-progress", timeout=120)
    assert_one_line_error(proc, f"--out {out}", "not a file")
    assert not (tmp_path / "student.pt.state.pt").exists()


def test_export_to_is_a_file(phantom_store, tmp_path):
    to = tmp_path / "exported"
    to.write_text("keep me")
    proc = semisam("export", str(phantom_store), "--round", "1", "--to", str(to))
    assert_one_line_error(proc, f"--to {to}", "not a directory")
    assert to.read_text() == "keep me"


# -- 11, 13: a truncated chunk in the store ------------------------------------------------------
def test_train_truncated_chunk_of_a_labeled_image(phantom_store, tmp_path):
    """`train` meets a chunk cut in half (a zstd decode error): one line naming the volume."""
    truncate_chunk(phantom_store / "volumes" / "ph00" / "image")
    cfg = tmp_path / "train.json"
    cfg.write_text(json.dumps(TINY))
    out = tmp_path / "student.pt"
    proc = semisam("train", str(phantom_store), "--out", str(out), "--config", str(cfg),
                   "--no-progress")
    assert_one_line_error(proc, "volume 'ph00'", "image in the store cannot be read",
                          "train.exclude")
    assert not out.exists()


def test_round_worker_meets_a_truncated_chunk(phantom_store, trained_student):
    """A worker reading a volume whose image chunk is truncated: the volume fails once with its
    reason (bad data is not retried), no traceback reaches the terminal, the others are done."""
    truncate_chunk(phantom_store / "volumes" / "ph03" / "image")
    proc = semisam("run-round", str(phantom_store), "--round", "1", "--student",
                   str(trained_student), *FAST)
    assert proc.returncode == 1, proc.stderr
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output and "retrying" not in output, output
    root = open_store(phantom_store, read_only=True)
    record = read_record(root, 1, "ph03")
    assert record.status == VolumeStatus.failed and record.attempt == 1, record
    assert "volume 'ph03'" in record.error and "cannot be read" in record.error, record.error
    assert "Zstd" in record.error and not record.retryable
    for vid in ("ph02", "ph04", "ph05"):
        assert read_record(root, 1, vid).status == VolumeStatus.done, vid


# -- 12: a DICOM series in a compressed transfer syntax that nothing installed decodes ----------
def _decoder_missing(syntax: str) -> bool:
    from pydicom.pixels import get_decoder

    return not get_decoder(syntax).is_available


@pytest.mark.skipif(not _decoder_missing("1.2.840.10008.1.2.4.70"),
                    reason="a JPEG Lossless decoder (gdcm / pylibjpeg-libjpeg) is installed")
def test_dicom_without_a_decoder_named_and_the_others_go_on(trained_student, tmp_path):
    images = tmp_path / "images"
    series = write_undecodable_dicom_series(images / "ct_jpeg")
    save_nifti(images / "good.nii.gz", volume(3))
    words = ("ct_jpeg", "JPEG Lossless", "1.2.840.10008.1.2.4.70", "no installed package",
             "pylibjpeg-libjpeg")
    proc = semisam("ingest", str(images), "--store", str(tmp_path / "s.zarr"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    failed = [ln for ln in proc.stderr.splitlines() if "ct_jpeg" in ln]
    assert len(failed) == 1 and all(w in failed[0] for w in words), proc.stderr
    root = open_store(tmp_path / "s.zarr", read_only=True)
    assert "volumes/good" in root and "volumes/ct_jpeg" not in root
    out = tmp_path / "pred"
    proc = semisam("predict", str(series), str(images / "good.nii.gz"), "--student",
                   str(trained_student), "--out", str(out), "--no-progress")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert (out / "good.nii.gz").is_file()
    text = proc.stdout + proc.stderr
    assert all(w in text for w in words), text


# -- 14: loop --holdout naming an id that is not in the store -----------------------------------
def test_loop_holdout_checked_before_training(phantom_store, tmp_path):
    """`ph0O` (letter O) for `ph00`: refused before student 0 trains (100000 iterations would
    outlast the test's timeout if the check came after training)."""
    cfg = tmp_path / "loop.json"
    cfg.write_text(json.dumps({"train": {**TINY, "iterations": 100000}}))
    workdir = tmp_path / "loop"
    proc = semisam("loop", str(phantom_store), "--rounds", "1", "--config", str(cfg),
                   "--workdir", str(workdir), "--holdout", "ph00,ph0O", "--no-progress",
                   timeout=120)
    assert_one_line_error(proc, "--holdout", "'ph0O'", "not in the store")
    assert not list(workdir.glob("student_*")), "student 0 trained before the check"
