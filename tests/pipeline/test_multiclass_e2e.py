"""Three touching structures, every stage end to end on the real parts: ingest with a class
map, training (4 output channels), a round on a local Ray, per-class evaluation and export;
labels never swapped between classes."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from semisam.pipeline.evaluate import evaluate_round
from semisam.pipeline.ingest import ingest
from semisam.pipeline.loop import pseudo_label_dice
from semisam.pipeline.phantoms import write_phantom_set
from semisam.pipeline.rounds.driver import run_round
from semisam.schemas import ClassMap, RoundConfig
from semisam.store import open_store, read_output, read_reference
from semisam.training import train_student
from tests.conftest import supervised_config

NAMES = {1: "left", 2: "middle", 3: "right"}


def test_three_structures_end_to_end(local_ray, tmp_path: Path, caplog) -> None:
    images, labels = write_phantom_set(tmp_path / "src", count=5, shape=(48, 48, 32), classes=3)
    labeled = {"phantom_000", "phantom_001", "phantom_002"}
    store = tmp_path / "s.zarr"
    assert ingest(store, [images], labels_dir=labels, labeled=labeled,
                  classes=ClassMap(names=NAMES)).ok
    result = train_student(store, tmp_path / "student.pt", supervised_config(120))
    cfg = RoundConfig(masker={"kind": "random_walker"})
    cfg.runtime.workers = 1
    summary = run_round(store, 1, result.checkpoint, cfg, show_progress=False)
    assert summary.done == 2 and summary.failed == 0
    root = open_store(store, read_only=True)
    class_dice = []
    for vid in ("phantom_003", "phantom_004"):
        pseudo, ref = read_output(root, 1, "pseudo_label", vid), read_reference(root, vid)
        assert ref is not None and set(np.unique(pseudo)) <= {0, 1, 2, 3}
        class_dice.append(np.mean([2 * np.sum((pseudo == v) & (ref == v))
                                   / (np.sum(pseudo == v) + np.sum(ref == v)) for v in (1, 2, 3)]))
        overlap = np.array([[np.logical_and(pseudo == a, ref == b).sum() for b in (1, 2, 3)]
                            for a in (1, 2, 3)])
        # each pseudo-label class overlaps its own reference class most: nothing swapped
        assert (overlap.argmax(axis=1) == [0, 1, 2]).all(), overlap
    # the loop's pseudo-label Dice is per class (the mean over classes), not foreground vs
    # foreground: a swapped class would count as right in the latter
    assert abs(pseudo_label_dice(store, 1) - float(np.mean(class_dice))) < 1e-9
    report = evaluate_round(store, 1, device="cpu")
    per_class = report.pseudo_label.class_summary
    assert per_class is not None and sorted(per_class) == [1, 2, 3]
    for value in (1, 2, 3):
        assert per_class[value]["dice"].mean > 0.5, (value, per_class[value]["dice"])
    assert report.pseudo_label.classes == NAMES

    from semisam.pipeline.export.nifti import export_round

    out = tmp_path / "review"
    export_round(open_store(store, read_only=True), 1, out)
    files = sorted(out.rglob("*.nii.gz"))
    label_file = out / "pseudo_label" / "phantom_003.nii.gz"
    assert label_file in files
    data = np.asarray(nib.load(label_file).dataobj)
    np.testing.assert_array_equal(data, read_output(root, 1, "pseudo_label", "phantom_003"))
    assert json.loads((out / "classes.json").read_text()) == {str(k): v for k, v in NAMES.items()}

    # the round's test-time flips leave out the axis the structures are ordered along (the
    # checkpoint records it): averaging in a flip along it would swap left and right
    from semisam.workers.student import load_student
    from semisam.workers.volume import VolumeProcessor

    ordered = load_student(result.checkpoint)[2]["ordered_axes"]
    assert ordered == [0]  # the phantoms' structures lie side by side along axis 0
    flips = RoundConfig(masker={"kind": "random_walker"}, student={"flip_axes": (0, 1, 2)})
    with caplog.at_level("WARNING", logger="semisam.workers.volume"):
        processor = VolumeProcessor(str(store), 2, flips, result.checkpoint)
    assert processor.student_inference.flip_axes == (1, 2)
    assert any("leaving out the flips of axis 0" in r.getMessage() for r in caplog.records)
