"""`semisam evaluate`: a student, or a round's pseudo-labels against its student, on phantoms."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from semisam.pipeline.cli import app
from semisam.pipeline.evaluate import (
    evaluate_round,
    evaluate_student,
    evaluate_student_both,
    read_volume_list,
)
from semisam.schemas import (
    CheckpointError,
    ConfigError,
    InputError,
    RoundConfig,
    RoundMeta,
    VolumeRecord,
    VolumeStatus,
)
from semisam.store import (
    list_metas,
    open_store,
    read_reference,
    sha256_file,
    write_outputs,
    write_record,
    write_round_meta,
)
from tests.conftest import SPACING


def write_round(store, student: Path, round_index: int = 1) -> None:
    """A round whose pseudo-labels are the references (perfect), made by ``student``."""
    root = open_store(store)
    write_round_meta(root, RoundMeta(round=round_index, config=RoundConfig(masker={"kind": "random_walker"}).model_dump(mode="json"),
                                     fingerprint="f" * 64, student_checkpoint=str(student),
                                     student_sha256=sha256_file(student)))
    for meta in list_metas(root):
        if not meta.labeled:
            ref = read_reference(root, meta.volume_id)
            sums = write_outputs(root, round_index, meta.volume_id, ref, np.full_like(ref, 255), 2)
            write_record(root, round_index, VolumeRecord(volume_id=meta.volume_id,
                                                         status=VolumeStatus.done, checksums=sums))


def test_evaluate_student(phantom_store, trained_student):
    report = evaluate_student(phantom_store, trained_student, device="cpu")
    assert [c.volume_id for c in report.cases] == [f"ph{i:02d}" for i in range(6)]  # labels + references
    for case in report.cases:
        assert 0.0 <= case.dice <= 1.0 and 0.0 <= case.jaccard <= case.dice
        if case.hd95_voxels is not None:
            assert case.hd95_mm >= min(SPACING) * case.hd95_voxels - 1e-9
    summary = report.summary["dice"]
    assert summary.n == 6 and summary.mean == pytest.approx(np.mean([c.dice for c in report.cases]))
    assert report.mean("dice") > 0.5  # a trained student, not merely well-formed numbers
    subset = evaluate_student(phantom_store, trained_student, ["ph03"], largest_component=True)
    assert [c.volume_id for c in subset.cases] == ["ph03"] and subset.largest_component
    with pytest.raises(InputError, match="nope"):
        evaluate_student(phantom_store, trained_student, ["nope"])


def test_evaluate_student_both_equals_two_evaluations(phantom_store, trained_student):
    plain, largest = evaluate_student_both(phantom_store, trained_student, device="cpu")
    for lcc, report in ((False, plain), (True, largest)):
        alone = evaluate_student(phantom_store, trained_student, largest_component=lcc, device="cpu")
        assert report.largest_component is lcc
        assert [c.model_dump() for c in report.cases] == [c.model_dump() for c in alone.cases]


def test_volume_list(tmp_path):
    assert read_volume_list("a,b , c") == ["a", "b", "c"]
    path = tmp_path / "ids.txt"
    path.write_text("x\n\n# comment\ny\n")
    assert read_volume_list(path) == ["x", "y"]
    with pytest.raises(ConfigError, match="missing.txt"):
        read_volume_list(tmp_path / "missing.txt")


def test_evaluate_round_compares_pseudo_labels_with_the_student(phantom_store, trained_student, tmp_path):
    with pytest.raises(ConfigError, match="round 1"):
        evaluate_round(phantom_store, 1)
    write_round(phantom_store, trained_student)
    result = evaluate_round(phantom_store, 1, device="cpu")
    assert len(result.pseudo_label.cases) == len(result.student.cases) == 4
    assert result.pseudo_label.mean("dice") == 1.0 and result.pseudo_label.mean("hd95_mm") == 0.0
    assert result.gain["dice"] == pytest.approx(1.0 - result.student.mean("dice"))
    root = open_store(phantom_store, read_only=True)
    own = next(c for c in result.student.cases if c.volume_id == "ph02")
    assert 0.0 < own.dice < 1.0 and own.reference_voxels == int(read_reference(root, "ph02").sum())
    moved = tmp_path / "moved.pt"
    moved.write_bytes(b"other bytes")
    with pytest.raises(CheckpointError, match="sha256"):
        evaluate_round(phantom_store, 1, student=moved)


def test_evaluate_cli(phantom_store, trained_student):
    runner = CliRunner()
    write_round(phantom_store, trained_student)
    proc = runner.invoke(app, ["evaluate", str(phantom_store), "--student", str(trained_student),
                               "--volumes", "ph00,ph04", "--json"])
    assert proc.exit_code == 0, proc.output
    out = json.loads(proc.stdout)
    assert [c["volume_id"] for c in out["cases"]] == ["ph00", "ph04"]
    assert set(out["summary"]) >= {"dice", "jaccard", "hd95_voxels", "asd_voxels", "hd95_mm", "asd_mm"}
    proc = runner.invoke(app, ["evaluate", str(phantom_store), "--round", "1"])
    assert proc.exit_code == 0, proc.output
    assert "round 1 pseudo-labels: mean +- std over 4 volumes: Dice 1.000 +- 0.000" in proc.stdout
    assert "pseudo-label - student (means): dice +" in proc.stdout
    proc = runner.invoke(app, ["evaluate", str(phantom_store)])
    assert proc.exit_code == 2 and "--student" in proc.output
