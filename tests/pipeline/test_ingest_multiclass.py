"""Ingest of multi-class labels: class values kept, the class map in the store root, and
one-structure stores exactly as before."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from semisam.pipeline.ingest import ingest
from semisam.schemas import ClassMap, InputError
from semisam.store import open_store, read_class_map, read_label, read_reference

from .cli_invoke import invoke
from .test_ingest import phantom, write_nifti


def three_structures(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The phantom's ellipsoid cut into three touching parts: values 1, 2 and 4."""
    image, label = phantom(seed=seed)
    classes = np.zeros_like(label)
    x = np.arange(label.shape[0])[:, None, None]
    classes[(label > 0) & (x < 5)] = 1
    classes[(label > 0) & (x >= 5) & (x < 7)] = 2
    classes[(label > 0) & (x >= 7)] = 4
    return image, classes


@pytest.fixture()
def sources(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir(), labels.mkdir()
    truth = {}
    for i, vid in enumerate(["m1", "m2"]):
        image, label = three_structures(seed=i)
        write_nifti(images / f"{vid}.nii.gz", image)
        write_nifti(labels / f"{vid}.nii.gz", label.astype(np.float32))  # float, as MSD ships
        truth[vid] = label
    return images, labels, truth


def test_named_classes_keep_their_values(tmp_path: Path, sources) -> None:
    images, labels, truth = sources
    store = tmp_path / "s.zarr"
    classes = ClassMap(names={1: "left", 2: "middle", 4: "right"})
    report = ingest(store, [images], labels_dir=labels, labeled={"m1"}, classes=classes)
    assert report.ok, report.failed
    root = open_store(store, read_only=True)
    assert read_class_map(root).names == {1: "left", 2: "middle", 4: "right"}
    assert root.attrs["schema_version"] == 2  # older semisam refuses it instead of binarizing
    label, ref = read_label(root, "m1"), read_reference(root, "m2")
    assert label is not None and ref is not None
    np.testing.assert_array_equal(label, truth["m1"])
    np.testing.assert_array_equal(ref, truth["m2"])  # the unlabeled one's reference too


def test_auto_names_and_a_value_outside_the_map(tmp_path: Path, sources) -> None:
    images, labels, truth = sources
    store = tmp_path / "s.zarr"
    assert ingest(store, [images], labels_dir=labels, classes="auto").ok
    assert read_class_map(open_store(store)).names == {1: "class_1", 2: "class_2", 4: "class_4"}
    # a later ingest without --classes keeps using the store's map, and refuses a new value
    extra = truth["m1"].copy()
    extra[0, 0, 0] = 7
    (tmp_path / "more").mkdir(), (tmp_path / "more_labels").mkdir()
    write_nifti(tmp_path / "more" / "m3.nii.gz", phantom(seed=3)[0])
    bad = write_nifti(tmp_path / "more_labels" / "m3.nii.gz", extra)
    report = ingest(store, [tmp_path / "more"], labels_dir=tmp_path / "more_labels")
    reason = report.failed[0].reason
    assert reason.startswith(f"{bad}: label has class value(s) [7]") and "--classes" in reason
    assert "m3" not in open_store(store)["volumes"]  # nothing half-written
    report = ingest(store, [tmp_path / "more"], labels_dir=tmp_path / "more_labels", classes="auto")
    assert report.ok and read_class_map(open_store(store)).names[7] == "class_7"


def test_a_class_map_that_contradicts_the_store_is_refused(tmp_path: Path, sources) -> None:
    images, labels, _ = sources
    store = tmp_path / "s.zarr"
    assert ingest(store, [images], labels_dir=labels, classes="auto").ok
    with pytest.raises(InputError, match="names class 1 'left'; the store calls it 'class_1'"):
        ingest(store, [images], labels_dir=labels, classes=ClassMap(names={1: "left"}))
    with pytest.raises(InputError, match="--binarize: the store keeps classes"):
        ingest(store, [images], labels_dir=labels, binarize=True)


def test_one_structure_stores_are_unchanged(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    image, label = phantom()
    write_nifti(tmp_path / "src" / "b.nii.gz", image)
    (tmp_path / "lab").mkdir()
    write_nifti(tmp_path / "lab" / "b.nii.gz", label)
    store = tmp_path / "s.zarr"
    assert ingest(store, [tmp_path / "src"], labels_dir=tmp_path / "lab").ok
    attrs = dict(zarr.open_group(store, mode="r", use_consolidated=False).attrs)
    assert attrs == {"schema_version": 1, "description": "semisam store"}
    assert read_class_map(open_store(store)).names == {1: "foreground"}


def test_cli_classes_option_and_json_file(tmp_path: Path, sources) -> None:
    images, labels, _ = sources
    spec = tmp_path / "classes.json"
    spec.write_text(json.dumps({"1": "left", "2": "middle", "4": "right"}))
    invoke("ingest", str(images), "--labels", str(labels), "--store", str(tmp_path / "a.zarr"),
           "--classes", str(spec))
    assert read_class_map(open_store(tmp_path / "a.zarr")).names[4] == "right"
    invoke("ingest", str(images), "--labels", str(labels), "--store", str(tmp_path / "b.zarr"),
           "--classes", "1=left,2=middle,4=right")
    assert read_class_map(open_store(tmp_path / "b.zarr")).names[2] == "middle"
    result = invoke("ingest", str(images), "--labels", str(labels), "--store",
                    str(tmp_path / "c.zarr"), "--classes", "1=left,2=left", code=2)
    assert "same name 'left'" in result.output
    # without --classes a multi-class label is still refused, with the way out named
    result = invoke("ingest", str(images), "--labels", str(labels), "--store",
                    str(tmp_path / "d.zarr"), code=1)
    assert "--classes to keep the classes" in result.output
