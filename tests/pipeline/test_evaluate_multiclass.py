"""`semisam evaluate` on a two-structure store: per-class metrics, class means, students whose
channels map back to the store's class values, and one-structure output left as it was."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from semisam.pipeline.cli import app
from semisam.pipeline.evaluate import evaluate_round, evaluate_student
from semisam.schemas import ClassMap, InputError, RoundConfig, RoundMeta, VolumeRecord, VolumeStatus
from semisam.store import (
    list_metas,
    open_store,
    read_reference,
    sha256_file,
    write_class_map,
    write_outputs,
    write_record,
    write_round_meta,
)
from semisam.training import train_student
from semisam.workers.student import build_student, load_student, save_student
from tests.conftest import TEST_SPEC
from tests.pipeline.test_evaluate import write_round as write_binary_round
from tests.training.test_multiclass_train import _config, build_multiclass_store
from tests.training.test_train import SMALL

VALUES = (1, 3)  # not contiguous: channel 2 is label value 3
CLASSES = ClassMap(names={1: "a", 3: "b"})


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> tuple[Path, Path]:
    """A 4-volume two-structure store (2 labeled, 2 with references) and a 3-channel student
    trained on it for 2 iterations."""
    base = tmp_path_factory.mktemp("mc")
    store = build_multiclass_store(base / "store.zarr", values=VALUES, names=("a", "b"))
    student = train_student(store, base / "student.pt", _config(iterations=2)).checkpoint
    return store, student


@pytest.fixture
def mc_store(template, tmp_path) -> tuple[Path, Path]:
    store, student = template
    shutil.copytree(store, tmp_path / "store.zarr")
    return tmp_path / "store.zarr", student


def swap(label: np.ndarray) -> np.ndarray:
    """The two structures exchanged (1 <-> 3)."""
    out = label.copy()
    out[label == VALUES[0]], out[label == VALUES[1]] = VALUES[1], VALUES[0]
    return out


def write_round(store: Path, student: Path, round_index: int,
                transform: Callable[[np.ndarray], np.ndarray] = lambda x: x) -> None:
    """A round whose pseudo-labels are ``transform(reference)`` with full confidence."""
    root = open_store(store)
    write_round_meta(root, RoundMeta(
        round=round_index, config=RoundConfig(masker={"kind": "random_walker"}).model_dump(mode="json"),
        fingerprint="f" * 64, student_checkpoint=str(student), student_sha256=sha256_file(student)))
    for meta in list_metas(root):
        if not meta.labeled:
            pseudo = transform(read_reference(root, meta.volume_id)).astype(np.uint8)
            sums = write_outputs(root, round_index, meta.volume_id, pseudo,
                                 np.full_like(pseudo, 255), 2)
            write_record(root, round_index, VolumeRecord(volume_id=meta.volume_id,
                                                         status=VolumeStatus.done, checksums=sums))


def test_reference_scores_one_per_class_and_swapped_classes_zero(mc_store):
    store, student = mc_store
    write_round(store, student, 1)
    write_round(store, student, 2, swap)
    right = evaluate_round(store, 1, device="cpu").pseudo_label
    assert right.classes == {1: "a", 3: "b"} and len(right.cases) == 2
    for case in right.cases:
        assert sorted(case.classes) == [1, 3]
        assert all(c.dice == 1.0 and c.jaccard == 1.0 and c.hd95_mm == 0.0 for c in case.classes.values())
        assert all(c.reference_voxels > 100 for c in case.classes.values())
        assert case.dice == 1.0
        assert case.reference_voxels == sum(c.reference_voxels for c in case.classes.values())
    assert {v: right.class_summary[v]["dice"].mean for v in VALUES} == {1: 1.0, 3: 1.0}
    swapped = evaluate_round(store, 2, device="cpu")
    for case in swapped.pseudo_label.cases:
        assert all(c.dice < 0.05 for c in case.classes.values()), case
    assert swapped.pseudo_label.mean("dice") < 0.05
    assert all(swapped.pseudo_label.class_summary[v]["dice"].mean < 0.05 for v in VALUES)
    own = swapped.student  # the student's report is per class too, its Dice the class mean
    for case in own.cases:
        assert case.dice == pytest.approx(np.mean([c.dice for c in case.classes.values()]))
    assert own.mean("dice") == pytest.approx(np.mean([c.dice for c in own.cases]))


def test_student_channels_map_back_to_the_class_values(mc_store, tmp_path):
    """A student whose channel 2 wins everywhere predicts label value 3 (not 2) everywhere."""
    store, student = mc_store
    model, spec, meta = load_student(student)
    with torch.no_grad():
        model.state_dict()["model.2.conv.bias"][2] += 100.0  # the last conv of the UNet
    save_student(tmp_path / "b.pt", model, spec, meta)
    report = evaluate_student(store, tmp_path / "b.pt", ["ph00", "ph03"], device="cpu")
    assert [c.volume_id for c in report.cases] == ["ph00", "ph03"]  # a label, a reference
    root = open_store(store, read_only=True)
    for case in report.cases:
        ref = read_reference(root, case.volume_id)
        assert case.classes[1].predicted_voxels == 0 and case.classes[1].dice == 0.0
        assert case.classes[3].predicted_voxels == ref.size
        expected = 2 * int((ref == 3).sum()) / (ref.size + int((ref == 3).sum()))
        assert case.classes[3].dice == pytest.approx(expected)


def test_student_must_fit_the_store_classes(mc_store, tmp_path):
    store, student = mc_store
    binary = tmp_path / "binary.pt"
    save_student(binary, build_student(SMALL), SMALL)  # 2 channels: one structure
    with pytest.raises(InputError, match="2 output channels.*needs 3") as err:
        evaluate_student(store, binary, device="cpu")
    assert "\n" not in str(err.value)
    write_class_map(open_store(store), ClassMap(names={1: "b", 3: "a"}))  # same values, renamed
    with pytest.raises(InputError, match=r"trained on classes \(1=a, 3=b\), but store .* has \(1=b, 3=a\)"):
        evaluate_student(store, student, device="cpu")


def test_cli_prints_class_rows_and_a_classes_section(mc_store):
    store, student = mc_store
    write_round(store, student, 1)
    runner = CliRunner()
    proc = runner.invoke(app, ["evaluate", str(store), "--round", "1", "--device", "cpu"])
    assert proc.exit_code == 0, proc.output
    assert ("round 1 pseudo-labels: mean +- std over 2 volumes: Dice 1.000 +- 0.000" in proc.stdout)
    assert "(mean of 2 classes); Dice per class: a (1) 1.000 +- 0.000, b (3) 1.000 +- 0.000" in proc.stdout
    assert "a (1)" in proc.stdout and "b (3)" in proc.stdout and "2 classes" in proc.stdout
    proc = runner.invoke(app, ["evaluate", str(store), "--round", "1", "--device", "cpu", "--json",
                               "--largest-component"])
    assert proc.exit_code == 0, proc.output
    out = json.loads(proc.stdout)["pseudo_label"]
    assert out["classes"] == {"1": "a", "3": "b"}
    assert set(out["class_summary"]) == {"1", "3"} and out["class_summary"]["3"]["dice"]["mean"] == 1.0
    assert out["cases"][0]["classes"]["3"]["dice"] == 1.0 and out["largest_component"]


def test_binary_store_output_has_no_class_keys(phantom_store, tmp_path):
    """A one-structure store's JSON holds exactly the keys it held before class maps."""
    student = tmp_path / "binary.pt"
    torch.manual_seed(0)
    save_student(student, build_student(TEST_SPEC), TEST_SPEC)
    write_binary_round(phantom_store, student)
    proc = CliRunner().invoke(app, ["evaluate", str(phantom_store), "--round", "1", "--json",
                                    "--volumes", "ph03", "--device", "cpu"])
    assert proc.exit_code == 0, proc.output
    out = json.loads(proc.stdout)
    for part in (out["pseudo_label"], out["student"]):
        assert list(part) == ["store", "source", "largest_component", "cases", "summary"]
        assert list(part["cases"][0]) == ["volume_id", "dice", "jaccard", "hd95_voxels", "asd_voxels",
                                          "hd95_mm", "asd_mm", "predicted_voxels", "reference_voxels"]
    assert out["pseudo_label"]["summary"]["dice"]["mean"] == 1.0
