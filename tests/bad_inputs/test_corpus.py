"""The bad-input corpus through the CLI as a user runs it (subprocesses of `semisam`).

Every case: a non-zero exit, one stderr line that names the file/volume/field and the problem,
no traceback (unless ``--debug``), nothing of the bad input marked done or ingested, and the
good inputs of the same command processed. Files are generated in ``tmp_path`` (corpus.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from semisam.store import list_volumes, open_store, read_record
from tests.conftest import build_phantom_store

from .corpus import (
    GOOD_CASES,
    INGEST_CASES,
    break_store_volumes,
    save_nifti,
    scaled_raw,
    true_label,
    volume,
    write_code_pickle,
    write_ingest_corpus,
    write_not_state_dict,
    write_truncated_checkpoint,
    write_wrong_sam_type,
)

SEMISAM = str(Path(sys.executable).with_name("semisam"))


def semisam(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([SEMISAM, *args], capture_output=True, text=True, cwd=cwd, check=False,
                          timeout=timeout)


def lines_naming(stderr: str, needle: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if needle in ln]


def assert_one_line_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 2 and a stderr of exactly one line ``error: ...`` holding every word."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


# -- ingest: one run over a folder of every broken file plus two good ones --------------------
@pytest.fixture(scope="module")
def ingest_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("corpus")
    write_ingest_corpus(base)
    proc = semisam("ingest", "images", "--labels", "labels", "--store", "s.zarr", "--json",
                   cwd=base)
    return base, proc, json.loads(proc.stdout)


def _shown(name: str) -> str:
    return name.encode("unicode_escape").decode("ascii") if not name.isprintable() else name


@pytest.mark.parametrize("name", sorted(INGEST_CASES))
def test_ingest_bad_file(ingest_run, name):
    base, proc, report = ingest_run
    case, shown = INGEST_CASES[name], _shown(name)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    entry = next(v for v in report["volumes"] if v["source"].endswith(shown))
    assert entry["status"] == "failed", entry
    lines = lines_naming(proc.stderr, shown)
    assert len(lines) == 1, proc.stderr
    for word in case.words:
        assert word in lines[0] and word in entry["reason"], (word, lines[0])
    stored = list_volumes(open_store(base / "s.zarr", read_only=True))
    assert entry["volume_id"] not in stored


def test_ingest_good_files_unaffected(ingest_run):
    base, _, report = ingest_run
    added = {v["volume_id"] for v in report["volumes"] if v["status"] == "added"}
    assert {"good_a", "good_b"} <= added
    root = open_store(base / "s.zarr", read_only=True)
    assert root["volumes/good_a/image"].shape == (24, 24, 12)


@pytest.mark.parametrize("name", sorted(GOOD_CASES))
def test_ingest_awkward_but_valid(ingest_run, name):
    """Scaled integers, a NaN slope (no scaling), NIfTI-2, mixed dtypes, and labels stored in
    another axis order/direction of the same world grid: ingested, with the right voxels."""
    base, proc, report = ingest_run
    entry = next(v for v in report["volumes"] if v["source"].endswith(name))
    assert entry["status"] == "added", entry
    root = open_store(base / "s.zarr", read_only=True)
    vid = entry["volume_id"]
    image = root[f"volumes/{vid}/image"][...]
    if name == "scaled_int16.nii.gz":
        np.testing.assert_allclose(image, scaled_raw() * 0.5 - 1024.0)
    elif name == "slope_nan.nii.gz":  # NaN slope: no scaling, as nibabel and niftilib read it
        np.testing.assert_array_equal(image, scaled_raw().astype(np.float32))
    elif name == "nifti2.nii.gz":
        np.testing.assert_array_equal(image, volume(38))
    if GOOD_CASES[name].label is not None:
        label = root[f"volumes/{vid}/label"][...]
        np.testing.assert_array_equal(label, true_label())  # on the image's grid, not mirrored
    meta = root[f"volumes/{vid}"].attrs["meta"]
    assert meta["spacing"] == pytest.approx([0.8, 0.8, 2.0])


@pytest.mark.parametrize("name", ["label_mirrored.nii.gz", "label_permuted.nii.gz"])
def test_reoriented_label_says_so(ingest_run, name):
    _, proc, _ = ingest_run
    lines = lines_naming(proc.stderr, f"labels/{name}")
    assert len(lines) == 1 and "WARNING" in lines[0], proc.stderr
    assert "label reoriented onto its image's voxel grid" in lines[0]
    assert ("reversed along i" if "mirrored" in name else "axes (i, k, j)") in lines[0]


def test_duplicate_id_across_formats(ingest_run):
    base, proc, report = ingest_run
    rows = {v["source"].rsplit("/", 1)[-1]: v for v in report["volumes"]}
    assert rows["dup.nii.gz"]["status"] == "added"
    assert rows["dup.nrrd"]["status"] == "failed"
    assert "duplicate volume id 'dup' (also from images/dup.nii.gz" in rows["dup.nrrd"]["reason"]
    assert len(lines_naming(proc.stderr, "images/dup.nrrd")) == 1


def test_hidden_appledouble_file_is_skipped(ingest_run):
    _, proc, report = ingest_run
    assert "._good_a" not in proc.stderr
    assert not [v for v in report["volumes"] if "._good_a" in v["source"]]


def test_volume_id_with_slash_in_labeled_list(tmp_path):
    (tmp_path / "images").mkdir()
    save_nifti(tmp_path / "images" / "good_a.nii.gz", volume(1))
    listing = tmp_path / "labeled.txt"
    listing.write_text("good_a\nsub/vol\n")
    proc = semisam("ingest", str(tmp_path / "images"), "--store", str(tmp_path / "s.zarr"),
                   "--labeled", str(listing))
    assert_one_line_error(proc, str(listing), "'sub/vol'", "not a safe path segment")


def test_unwritable_store_path(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    image = save_nifti(tmp_path / "good_a.nii.gz", volume(1))
    proc = semisam("ingest", str(image), "--store", str(blocker / "s.zarr"))
    assert_one_line_error(proc, str(blocker / "s.zarr"), "not writable")


# -- run-round refusals before any worker starts ----------------------------------------------
def _run_round(store: Path, student: Path, *extra: str) -> subprocess.CompletedProcess:
    """run-round with the fast weight-free masker, unless the case is about a SAM checkpoint."""
    masker = () if "--masker-checkpoint" in extra else ("--masker", "random_walker")
    return semisam("run-round", str(store), "--round", "1", "--student", str(student),
                   "--no-progress", *masker, *extra)


def _no_round(store: Path) -> None:
    assert "rounds/1" not in zarr.open_group(store, mode="r", use_consolidated=False)


@pytest.mark.parametrize("content, words", [
    ({"runtime": {"wrkers": 2}}, ("field 'runtime.wrkers'", "Extra inputs")),
    ({"prompts": {"box_margin": "five"}}, ("field 'prompts.box_margin'", "integer")),
], ids=["unknown_field", "wrong_type"])
def test_bad_config_file(phantom_store, trained_student, tmp_path, content, words):
    cfg = tmp_path / "round.json"
    cfg.write_text(json.dumps(content))
    proc = _run_round(phantom_store, trained_student, "--config", str(cfg))
    assert_one_line_error(proc, str(cfg), *words)
    _no_round(phantom_store)


def test_debug_shows_the_traceback(phantom_store, trained_student, tmp_path):
    cfg = tmp_path / "round.json"
    cfg.write_text(json.dumps({"runtime": {"wrkers": 2}}))
    proc = semisam("--debug", "run-round", str(phantom_store), "--round", "1", "--student",
                   str(trained_student), "--config", str(cfg))
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "ConfigError" in proc.stderr


def test_store_with_newer_schema(phantom_store, trained_student):
    zarr.open_group(phantom_store, mode="a", use_consolidated=False).attrs["schema_version"] = 99
    proc = _run_round(phantom_store, trained_student)
    assert_one_line_error(proc, str(phantom_store), "schema_version 99 is newer")


@pytest.mark.parametrize("kind", ["not_state_dict", "runs_code"])
def test_bad_student_checkpoint(phantom_store, tmp_path, kind):
    marker = tmp_path / "pwned"
    path = tmp_path / "student.pt"
    if kind == "runs_code":
        write_code_pickle(path, marker, wrap="student")
        words: tuple[str, ...] = ("refused", "weights_only=True")
    else:
        write_not_state_dict(path)
        words = ("not a semisam student checkpoint",)
    proc = _run_round(phantom_store, path)
    assert_one_line_error(proc, str(path), *words)
    assert not marker.exists(), "unpickling ran code"
    _no_round(phantom_store)


@pytest.mark.parametrize("kind, words", [
    ("not_state_dict", ("not a state dict",)),
    ("wrong_type", ("does not fit SAM vit_b", "[1024]", "expects [768]")),
    ("runs_code", ("refused", "weights_only=True")),
    ("truncated", ("corrupt or truncated",)),
])
def test_bad_sam_checkpoint(phantom_store, trained_student, tmp_path, kind, words):
    marker = tmp_path / "pwned"
    path = tmp_path / "sam_vit_b.pth"
    {"not_state_dict": write_not_state_dict, "wrong_type": write_wrong_sam_type,
     "truncated": write_truncated_checkpoint,
     "runs_code": lambda p: write_code_pickle(p, marker)}[kind](path)
    proc = _run_round(phantom_store, trained_student, "--masker-checkpoint", str(path),
                      "--sam-type", "vit_b")
    assert_one_line_error(proc, str(path), *words)
    assert not marker.exists(), "unpickling ran code"
    _no_round(phantom_store)


# -- bad volumes inside a store (written by another tool): one round over all of them ---------
@pytest.fixture(scope="module")
def bad_store_round(tmp_path_factory, trained_student):
    base = tmp_path_factory.mktemp("badstore")
    store = build_phantom_store(base / "store.zarr", count=8, labeled=2, seed=4)
    expected = break_store_volumes(store)
    proc = _run_round(store, trained_student, "--json")
    return store, expected, proc, json.loads(proc.stdout)


@pytest.mark.parametrize("vid", ["ph02", "ph03", "ph04", "ph05"],
                         ids=["nan_voxels", "inf_voxels", "image_2d", "zero_length_axis"])
def test_bad_volume_in_store(bad_store_round, vid):
    store, expected, proc, summary = bad_store_round
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    rows = {v["volume_id"]: v for v in summary["volumes"]}
    assert rows[vid]["status"] == "failed"
    lines = lines_naming(proc.stderr, f"'{vid}'")
    assert len(lines) == 1, proc.stderr
    for word in (f"volume '{vid}'", *expected[vid]):
        assert word in lines[0] and word in rows[vid]["error"], (word, lines[0])
    root = open_store(store, read_only=True)
    assert read_record(root, 1, vid).status.value == "failed"
    assert f"rounds/1/pseudo_label/{vid}" not in root
    # the rest of the round is unaffected
    assert {rows[v]["status"] for v in ("ph06", "ph07")} == {"done"}
    assert summary["done"] == 2 and summary["failed"] == 4 and summary["pending"] == 0

