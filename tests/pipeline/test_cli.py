"""The CLI as a user runs it: subprocesses of the installed `semisam` console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

SEMISAM = str(Path(sys.executable).with_name("semisam"))


def run(*args: str, check: bool = False, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([SEMISAM, *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"semisam {' '.join(args)} -> {proc.returncode}\n{proc.stderr}")
    return proc


@pytest.mark.parametrize("command", ["ingest", "run-round", "inspect", "train", "demo", "export", "evaluate", "loop"])
def test_help(command):
    proc = run(command, "--help", check=True)
    assert "Usage" in proc.stdout


def test_missing_student_checkpoint_one_line(phantom_store, tmp_path):
    missing = tmp_path / "nope.pt"
    proc = run("run-round", str(phantom_store), "--round", "1", "--student", str(missing))
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln]
    assert len(lines) == 1 and str(missing) in lines[0] and "not found" in lines[0]
    assert "Traceback" not in proc.stderr


def test_missing_sam_checkpoint_one_line(phantom_store, trained_student, tmp_path):
    missing = tmp_path / "sam_vit_b.pth"
    proc = run("run-round", str(phantom_store), "--round", "1", "--student", str(trained_student),
               "--sam-checkpoint", str(missing))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and str(missing) in proc.stderr


def test_bad_config_field_one_line(phantom_store, trained_student, tmp_path):
    cfg = tmp_path / "round.json"
    cfg.write_text(json.dumps({"prompts": {"slice_axis": 5}}))
    proc = run("run-round", str(phantom_store), "--round", "1", "--student", str(trained_student),
               "--config", str(cfg))
    assert proc.returncode == 2 and "prompts.slice_axis" in proc.stderr and str(cfg) in proc.stderr


def test_truncated_nifti_names_the_file(tmp_path):
    good = tmp_path / "in" / "good.nii.gz"
    good.parent.mkdir()
    img = np.random.default_rng(0).normal(size=(20, 20, 12)).astype(np.float32)
    nib.save(nib.Nifti1Image(img, np.eye(4)), good)
    bad = tmp_path / "in" / "cut.nii.gz"
    data = good.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    proc = run("ingest", str(good.parent), "--store", str(tmp_path / "s.zarr"), "--json")
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    by_id = {v["volume_id"]: v for v in report["volumes"]}
    assert by_id["good"]["status"] == "added"
    assert by_id["cut"]["status"] == "failed" and "cut.nii.gz" in by_id["cut"]["reason"]
    inspect = json.loads(run("inspect", str(tmp_path / "s.zarr"), "--json", check=True).stdout)
    assert inspect["volumes"] == 1


def test_inspect_json_and_png(local_ray, phantom_store, trained_student, tmp_path):
    from semisam.pipeline.rounds.driver import run_round
    from semisam.schemas import RoundConfig

    run_round(phantom_store, 1, trained_student, RoundConfig(masker={"kind": "random_walker"}), show_progress=False)
    out = json.loads(run("inspect", str(phantom_store), "--round", "1", "--json", check=True).stdout)
    assert out["done"] == 4 and out["status"] == "finished"
    row = out["volumes"][0]
    assert row["slices_prompted"] > 0 and 0 <= row["mean_confidence"] <= 1
    png = tmp_path / "m.png"
    run("inspect", str(phantom_store), "--round", "1", "--volume", "ph02", "--png", str(png), check=True)
    from PIL import Image

    with Image.open(png) as im:
        assert im.size[0] > 3 * im.size[1]  # four panels side by side (student panel included)
    overview = json.loads(run("inspect", str(phantom_store), "--json", check=True).stdout)
    assert overview["labeled"] == 2 and overview["rounds"][0]["done"] == 4
    missing = run("inspect", str(phantom_store), "--round", "7")
    assert missing.returncode == 2 and "round 7" in missing.stderr
