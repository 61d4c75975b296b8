"""`semisam predict` with a multi-class student: a class-valued label (the argmax of the K + 1
softmax channels mapped to the checkpoint's class values, nothing swapped), the winning
channel's probability as the confidence map, ``classes.json`` beside the outputs, per-class
voxel counts in the report; bad students and options refused in one line; one-structure
students unchanged.

The store's class values are deliberately not 1..K (2, 5, 7), so a prediction that wrote the
channel index instead of the class value fails.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from semisam.pipeline.ingest import ingest
from semisam.pipeline.phantoms import write_phantom_set
from semisam.pipeline.predict import (
    PredictItem,
    PredictOptions,
    PredictStatus,
    predict,
    segment_classes,
)
from semisam.schemas import CheckpointError, ClassMap, ConfigError, StudentInferenceConfig
from semisam.training import train_student
from semisam.workers.student import load_student, predict_probabilities
from tests.conftest import supervised_config, untrained_student
from tests.pipeline.cli_invoke import invoke

NAMES = {2: "left", 5: "middle", 7: "right"}
VALUES = (2, 5, 7)
LUT = np.asarray([0, *VALUES], np.uint8)  # phantom structure k (1..3) -> store class value
HELD_OUT = ("phantom_003", "phantom_004")


@pytest.fixture(scope="module")
def mc(tmp_path_factory) -> dict:
    """A 4-channel student trained (80 supervised steps, ~5 s) on 3 labeled 3-structure phantoms
    of class values 2/5/7, and 2 held-out scans with their reference labels.

    The structures lie side by side along axis 0 and the student is trained without flips, so
    test-time flips are along axis 2 only (a flip along 0 would swap left and right)."""
    base = tmp_path_factory.mktemp("mc_predict")
    images, labels = write_phantom_set(base / "src", count=5, shape=(48, 48, 32), classes=3)
    for path in labels.glob("*.nii.gz"):  # 1, 2, 3 -> 2, 5, 7
        src = nib.load(path)
        nib.save(nib.Nifti1Image(LUT[np.asarray(src.dataobj)], src.affine), path)
    store = base / "s.zarr"
    assert ingest(store, [images], labels_dir=labels,
                  labeled={"phantom_000", "phantom_001", "phantom_002"},
                  classes=ClassMap(names=NAMES)).ok
    student = train_student(store, base / "student.pt", supervised_config(80)).checkpoint
    scans = base / "scans"
    scans.mkdir()
    for vid in HELD_OUT:
        shutil.copy(images / f"{vid}.nii.gz", scans / f"{vid}.nii.gz")
    return {"student": student, "scans": scans, "labels": labels, "base": base}


def _softmax(student: Path, image: np.ndarray, flip_axes=()) -> np.ndarray:
    model, spec, _ = load_student(student)
    return predict_probabilities(model, image, spec, StudentInferenceConfig(flip_axes=flip_axes))


def _overlap(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``overlap[a, b]``: voxels of predicted class ``VALUES[a]`` in reference class ``VALUES[b]``."""
    return np.array([[np.logical_and(pred == a, ref == b).sum() for b in VALUES] for a in VALUES])


def test_class_valued_labels_confidence_and_classes_json(mc, tmp_path):
    out = tmp_path / "out"
    report = predict(mc["student"], [mc["scans"]], out,
                     options=PredictOptions(probabilities=True, flip_axes=(2,)))
    assert [it.status for it in report.items] == [PredictStatus.written] * 2
    assert report.classes == NAMES
    assert json.loads((out / "classes.json").read_text()) == {"2": "left", "5": "middle",
                                                             "7": "right"}
    for it in report.items:
        src = nib.load(mc["scans"] / f"{it.volume_id}.nii.gz")
        seg = nib.load(it.label)
        assert seg.get_data_dtype() == np.uint8 and seg.header.get_intent()[0] == "label"
        np.testing.assert_allclose(seg.affine, src.affine, atol=1e-5)
        label = np.asarray(seg.dataobj)
        ref = np.asarray(nib.load(mc["labels"] / f"{it.volume_id}.nii.gz").dataobj)
        assert set(np.unique(label).tolist()) == {0, *VALUES}
        # each predicted class overlaps the reference class of the same value most: nothing
        # swapped, values (not channel indices) written
        overlap = _overlap(label, ref)
        assert (overlap.argmax(axis=1) == [0, 1, 2]).all(), overlap
        assert (overlap.argmax(axis=0) == [0, 1, 2]).all(), overlap
        for v in VALUES:
            dice = 2 * np.sum((label == v) & (ref == v)) / (np.sum(label == v) + np.sum(ref == v))
            assert dice > 0.5, (it.volume_id, v, dice)
        # exactly the argmax of the flip-averaged softmax mapped to the class values, and the
        # confidence map its winning probability
        probs = _softmax(mc["student"], src.get_fdata().astype(np.float32), (2,))
        np.testing.assert_array_equal(label, LUT[probs.argmax(axis=0)])
        conf = np.asarray(nib.load(it.probability).dataobj)
        assert conf.dtype == np.float32
        np.testing.assert_allclose(conf, probs.max(axis=0), atol=1e-6)
        assert conf.min() >= 0.25 - 1e-6 and conf.max() <= 1.0
        assert it.class_voxels == {v: int((label == v).sum()) for v in VALUES}
        assert it.foreground_voxels == int(np.count_nonzero(label))  # not the sum of values
    # the per-class counts survive a Ray task's JSON round trip (keys back to ints)
    item = report.items[0]
    assert PredictItem.model_validate(item.model_dump(mode="json")) == item


def test_cli_largest_component_per_class_and_table(mc, tmp_path):
    out = tmp_path / "lcc"
    args = ("predict", str(mc["scans"] / "phantom_003.nii.gz"), "--student", str(mc["student"]),
            "--out", str(out), "--no-progress")
    data = json.loads(invoke(*args, "--largest-component", "--json").stdout)
    assert data["classes"] == {"2": "left", "5": "middle", "7": "right"}
    item = data["items"][0]
    label = np.asarray(nib.load(item["label"]).dataobj)
    assert item["class_voxels"] == {str(v): int((label == v).sum()) for v in VALUES}
    image = nib.load(mc["scans"] / "phantom_003.nii.gz").get_fdata().astype(np.float32)
    probs = _softmax(mc["student"], image)
    plain = LUT[probs.argmax(axis=0)]
    for v in VALUES:
        mask = label == v
        _, count = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
        assert count == 1, (v, count)
        assert not (mask & (plain != v)).any()  # only ever removes voxels of its own class
    dropped = (plain > 0) & (label == 0)
    assert set(np.unique(plain[dropped]).tolist()) <= set(VALUES)
    np.testing.assert_array_equal(label[label > 0], plain[label > 0])
    # the table names the classes and counts each one's voxels
    table = invoke("predict", str(mc["scans"]), "--student", str(mc["student"]), "--out",
                   str(tmp_path / "t"), "--no-progress").stdout
    assert "2 written" in table and "voxels per class" in table
    assert "classes 2=left, 5=middle, 7=right" in table and "middle" in table


def test_multiclass_over_local_ray_matches_in_process(mc, tmp_path, local_ray):
    here = predict(mc["student"], [mc["scans"] / "phantom_004.nii.gz"], tmp_path / "here")
    fanned = predict(mc["student"], [mc["scans"] / "phantom_004.nii.gz"], tmp_path / "ray",
                     address="local")
    assert fanned.items[0].status == PredictStatus.written
    assert fanned.items[0].class_voxels == here.items[0].class_voxels
    assert fanned.classes == NAMES
    np.testing.assert_array_equal(np.asarray(nib.load(here.items[0].label).dataobj),
                                  np.asarray(nib.load(fanned.items[0].label).dataobj))
    assert (tmp_path / "ray" / "classes.json").is_file()


def test_flips_along_the_axis_that_orders_the_structures_are_left_out(mc, tmp_path, caplog):
    """The structures lie side by side along axis 0: training records ``ordered_axes`` [0],
    and ``--flip 0,2`` predicts what ``--flip 2`` does (a flip of 0 would swap left and right),
    with a warning naming the axis. A checkpoint without the record drops nothing."""
    _, _, meta = load_student(mc["student"])
    assert meta["ordered_axes"] == [0]
    scan = [mc["scans"] / "phantom_003.nii.gz"]
    with caplog.at_level("WARNING", logger="semisam.pipeline.predict"):
        both = predict(mc["student"], scan, tmp_path / "both", options=PredictOptions(flip_axes=(0, 2)))
    assert any("leaving out axis 0" in r.getMessage() for r in caplog.records)
    only2 = predict(mc["student"], scan, tmp_path / "two", options=PredictOptions(flip_axes=(2,)))
    assert both.fingerprint == only2.fingerprint
    np.testing.assert_array_equal(np.asarray(nib.load(both.items[0].label).dataobj),
                                  np.asarray(nib.load(only2.items[0].label).dataobj))
    # without the record (a checkpoint from before it): axis 0 is flipped too, and it hurts
    payload = torch.load(mc["student"], weights_only=True)
    del payload["meta"]["ordered_axes"]
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    unsafe = predict(old, scan, tmp_path / "old", options=PredictOptions(flip_axes=(0, 2)))
    assert unsafe.fingerprint != only2.fingerprint
    image = nib.load(scan[0]).get_fdata().astype(np.float32)
    assert not np.array_equal(_softmax(old, image, (0, 2)), _softmax(old, image, (2,)))


def test_students_and_options_that_do_not_fit_are_refused(mc, tmp_path):
    scans = [mc["scans"]]
    bad = untrained_student(tmp_path / "three.pt", 3, NAMES)  # 3 channels for 3 classes
    with pytest.raises(CheckpointError, match="3 output channels, but its class map .* needs 4"):
        predict(bad, scans, tmp_path / "o1")
    unnamed = untrained_student(tmp_path / "unnamed.pt", 4, None)
    with pytest.raises(CheckpointError, match="4 output channels but no class map"):
        predict(unnamed, scans, tmp_path / "o2")
    with pytest.raises(ConfigError, match="--threshold 0.3: .* argmax"):
        predict(mc["student"], scans, tmp_path / "o3", options=PredictOptions(threshold=0.3))
    for out in ("o1", "o2", "o3"):
        assert not (tmp_path / out).exists()  # refused before any scan or classes.json
    proc = invoke("predict", str(mc["scans"]), "--student", str(mc["student"]), "--out",
                  str(tmp_path / "o4"), "--threshold", "0.3", "--no-progress", code=2)
    assert "threshold" in proc.output and len(proc.output.strip().splitlines()) == 1


def test_one_structure_under_another_value_keeps_the_threshold():
    """K = 1 with class value 4: the one-structure rule (probability > threshold) in value 4."""
    probs = np.zeros((2, 4, 4, 4), np.float32)
    probs[1, :2] = 0.4
    probs[1, 2:] = 0.9
    probs[0] = 1 - probs[1]
    label, conf = segment_classes(probs, ClassMap(names={4: "liver"}), PredictOptions(threshold=0.3))
    assert set(np.unique(label).tolist()) == {4}
    label, conf = segment_classes(probs, ClassMap(names={4: "liver"}), PredictOptions())
    np.testing.assert_array_equal(label, np.where(probs[1] > 0.5, 4, 0))
    np.testing.assert_array_equal(conf, probs[1])
    with pytest.raises(ValueError, match="expected a 2xXxYxZ softmax"):
        segment_classes(probs[:1], ClassMap(names={4: "liver"}), PredictOptions())


def test_one_structure_student_output_unchanged(trained_student, mc, tmp_path):
    """No classes.json, no class keys in the JSON, {0,1} labels: as before class maps."""
    out = tmp_path / "one"
    data = json.loads(invoke("predict", str(mc["scans"]), "--student", str(trained_student),
                             "--out", str(out), "--no-progress", "--json").stdout)
    assert "classes" not in data and all("class_voxels" not in it for it in data["items"])
    assert not (out / "classes.json").exists()
    for it in data["items"]:
        label = np.asarray(nib.load(it["label"]).dataobj)
        assert set(np.unique(label).tolist()) <= {0, 1}
        assert it["foreground_voxels"] == int(label.sum())
