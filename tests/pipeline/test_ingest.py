"""Ingest into a Zarr store: labeled/unlabeled split, re-ingest, overwrite, labels, bad inputs."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest

from semisam.pipeline.image_io.validate import display_path
from semisam.pipeline.ingest import IngestReport, IngestStatus, ingest
from semisam.schemas import InputError
from semisam.store import list_metas, open_store, read_image, read_meta
from semisam.store import read_label as store_read_label

SHAPE = (12, 10, 8)


def phantom(shape: tuple[int, ...] = SHAPE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy float32 image with a bright ellipsoid, and the ellipsoid as a uint8 label."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    label = ((grid**2).sum(0) < 0.4).astype(np.uint8)
    image = (rng.normal(0, 0.1, shape) + label).astype(np.float32)
    return image, label


def write_h5(path: Path, image: np.ndarray, label: np.ndarray | None = None) -> Path:
    with h5py.File(path, "w") as fh:
        fh["image"] = image
        if label is not None:
            fh["label"] = label
    return path


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def write_npy(path: Path, data: np.ndarray) -> Path:
    np.save(path, data)
    return path


def by_id(report: IngestReport) -> dict[str, object]:
    return {v.volume_id: v for v in report.volumes}


def reference(store: Path, vid: str) -> np.ndarray | None:
    root = open_store(store)
    path = f"volumes/{vid}/reference"
    return np.asarray(root[path][...]) if path in root else None


def stored_ids(store: Path) -> set[str]:
    return {m.volume_id for m in list_metas(open_store(store))}


# --------------------------------------------------------------------------- labeled / unlabeled


@pytest.fixture()
def three(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """src/a.h5 and src/b.h5 with labels, src/c.npy without, plus an unsupported notes file."""
    src = tmp_path / "src"
    src.mkdir()
    arrays = {}
    for i, name in enumerate(["a", "b"]):
        image, label = phantom(seed=i)
        write_h5(src / f"{name}.h5", image, label)
        arrays[f"{name}_image"], arrays[f"{name}_label"] = image, label
    arrays["c_image"] = phantom(seed=5)[0]
    write_npy(src / "c.npy", arrays["c_image"])
    (src / "volumes.list").write_text("a\nb\n")
    (src / ".hidden.npy").write_bytes(b"junk")
    return src, arrays


def test_labeled_and_unlabeled_are_recorded(tmp_path: Path, three) -> None:
    src, arrays = three
    store = tmp_path / "s.zarr"
    seen: list[tuple[str, str]] = []
    report = ingest(store, [src], labeled={"a"}, on_volume=lambda v, s: seen.append((v, s)))
    assert report.ok, report.failed
    assert seen == [("a", "added"), ("b", "added"), ("c", "added")]
    root = open_store(store)
    metas = {m.volume_id: m for m in list_metas(root)}
    assert {k: m.labeled for k, m in metas.items()} == {"a": True, "b": False, "c": False}
    np.testing.assert_array_equal(store_read_label(root, "a"), arrays["a_label"])
    assert store_read_label(root, "b") is None and store_read_label(root, "c") is None
    np.testing.assert_array_equal(reference(store, "b"), arrays["b_label"])
    assert reference(store, "a") is None and reference(store, "c") is None
    assert by_id(report)["b"].has_reference and not by_id(report)["c"].has_reference
    np.testing.assert_array_equal(read_image(root, "c"), arrays["c_image"])
    assert metas["a"].source_format == "h5" and metas["a"].shape == SHAPE
    assert metas["a"].label_sha256 == metas["a"].sha256 and metas["c"].label_sha256 is None


def test_default_every_volume_with_a_label_is_labeled(tmp_path: Path, three) -> None:
    src, _ = three
    store = tmp_path / "s.zarr"
    report = ingest(store, [src])
    assert report.count("added") == 3 and report.missing_labeled == []
    assert {m.volume_id: m.labeled for m in list_metas(open_store(store))} == {
        "a": True,
        "b": True,
        "c": False,
    }


def test_reingest_is_a_noop(tmp_path: Path, three) -> None:
    src, _ = three
    store = tmp_path / "s.zarr"
    ingest(store, [src], labeled={"a"})
    before = {m.volume_id: m.ingested_at for m in list_metas(open_store(store))}
    report = ingest(store, [src], labeled={"a"})
    assert [v.status for v in report.volumes] == [IngestStatus.unchanged] * 3
    assert by_id(report)["b"].has_reference
    after = {m.volume_id: m.ingested_at for m in list_metas(open_store(store))}
    assert before == after


def test_changed_file_is_refused_then_overwrite_replaces(tmp_path: Path, three) -> None:
    src, arrays = three
    store = tmp_path / "s.zarr"
    ingest(store, [src])
    new_image = arrays["c_image"] * 2 + 1
    write_npy(src / "c.npy", new_image)
    report = ingest(store, [src])
    c = by_id(report)["c"]
    assert c.status == IngestStatus.failed
    assert c.reason == (
        f"{src / 'c.npy'}: volume 'c' already exists from c.npy "  # the stored name, no path
        "with a different sha256; use --overwrite"
    )
    assert by_id(report)["a"].status == IngestStatus.unchanged
    np.testing.assert_array_equal(read_image(open_store(store), "c"), arrays["c_image"])

    report = ingest(store, [src], overwrite=True)
    assert by_id(report)["c"].status == IngestStatus.replaced
    assert by_id(report)["a"].status == IngestStatus.unchanged
    np.testing.assert_array_equal(read_image(open_store(store), "c"), new_image)


def test_changing_the_labeled_flag_needs_overwrite(tmp_path: Path, three) -> None:
    src, arrays = three
    store = tmp_path / "s.zarr"
    ingest(store, [src], labeled={"a"})
    report = ingest(store, [src], labeled={"a", "b"})
    assert by_id(report)["b"].status == IngestStatus.failed
    assert (
        "labeled=False" in by_id(report)["b"].reason and "--overwrite" in by_id(report)["b"].reason
    )
    report = ingest(store, [src], labeled={"a", "b"}, overwrite=True)
    assert by_id(report)["b"].status == IngestStatus.replaced
    root = open_store(store)
    assert read_meta(root, "b").labeled
    np.testing.assert_array_equal(store_read_label(root, "b"), arrays["b_label"])
    assert reference(store, "b") is None  # a labeled volume's ground truth is its label


def test_labeled_list_file(tmp_path: Path, three) -> None:
    src, _ = three
    listing = tmp_path / "labeled.txt"
    listing.write_text("# the first N ids of the split\nb\n\n  ghost  \n")
    store = tmp_path / "s.zarr"
    with pytest.raises(InputError, match=r"labeled.txt: 1 labeled id\(s\) match no source file: 'ghost'"):
        ingest(store, [src], labeled=listing)
    assert not store.exists()  # refused before the store is created
    report = ingest(store, [src], labeled=listing, allow_missing_labeled=True)
    assert report.missing_labeled == ["ghost"]
    assert {m.volume_id: m.labeled for m in list_metas(open_store(store))} == {
        "a": False,
        "b": True,
        "c": False,
    }


def test_labeled_volume_without_label_fails(tmp_path: Path, three) -> None:
    src, _ = three
    store = tmp_path / "s.zarr"
    report = ingest(store, [src], labeled={"a", "c"})
    c = by_id(report)["c"]
    assert c.status == IngestStatus.failed
    assert c.reason.startswith(str(src / "c.npy"))
    assert "volume 'c' is in the labeled list but has no label" in c.reason
    assert stored_ids(store) == {"a", "b"}
    assert report.missing_labeled == []


def test_bad_labeled_list_raises(tmp_path: Path, three) -> None:
    src, _ = three
    listing = tmp_path / "labeled.txt"
    listing.write_text("ok\n../evil\n")
    with pytest.raises(InputError, match=r"labeled\.txt: volume id '\.\./evil'"):
        ingest(tmp_path / "s.zarr", [src], labeled=listing)
    with pytest.raises(InputError, match="labels directory does not exist"):
        ingest(tmp_path / "s.zarr", [src], labels_dir=tmp_path / "nope")


# --------------------------------------------------------------------------- labels directory


def test_labels_dir_pairing(tmp_path: Path) -> None:
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir(), labels.mkdir()
    affine = np.diag([0.7, 0.8, 2.5, 1.0])
    img1, lab1 = phantom(seed=1)
    write_nifti(images / "p1.nii.gz", img1, affine)
    write_nifti(labels / "p1.nii.gz", lab1, affine)
    write_nifti(images / "p2.nii.gz", phantom(seed=2)[0], affine)  # no label file
    store = tmp_path / "s.zarr"
    report = ingest(store, [images], labels_dir=labels)
    assert report.ok, report.failed
    root = open_store(store)
    m1, m2 = read_meta(root, "p1"), read_meta(root, "p2")
    assert m1.labeled and not m2.labeled
    assert m1.spacing == pytest.approx((0.7, 0.8, 2.5))
    assert m1.label_sha256 is not None and m1.label_sha256 != m1.sha256
    np.testing.assert_array_equal(store_read_label(root, "p1"), lab1)


def test_hippocampus_style_labels_need_binarize(tmp_path: Path) -> None:
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir(), labels.mkdir()
    image, label = phantom()
    three_class = (label * 2).astype(np.float32)
    three_class[:6] *= 0.5  # values {0, 1, 2}, float32 as in two MSD files
    write_nifti(images / "hippocampus_003.nii.gz", image)
    lab_path = write_nifti(labels / "hippocampus_003.nii.gz", three_class)
    store = tmp_path / "s.zarr"
    report = ingest(store, [images], labels_dir=labels)
    failed = report.failed[0]
    assert failed.reason.startswith(f"{lab_path}: label has values {{0, 1, 2}}")
    assert "--binarize" in failed.reason
    assert stored_ids(store) == set()
    report = ingest(store, [images], labels_dir=labels, binarize=True)
    assert report.ok, report.failed
    np.testing.assert_array_equal(store_read_label(open_store(store), "hippocampus_003"), label)


def test_fractional_or_negative_labels_fail(tmp_path: Path) -> None:
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir(), labels.mkdir()
    image, label = phantom()
    write_npy(images / "f.npy", image)
    write_npy(labels / "f.npy", label * 0.5)
    write_npy(images / "n.npy", image)
    write_npy(labels / "n.npy", label.astype(np.int16) - 1)
    report = ingest(tmp_path / "s.zarr", [images], labels_dir=labels, binarize=True)
    reasons = {v.volume_id: v.reason for v in report.volumes}
    assert "non-integer voxels" in reasons["f"] and str(labels / "f.npy") in reasons["f"]
    assert "negative values" in reasons["n"] and str(labels / "n.npy") in reasons["n"]


def test_duplicate_id_in_one_ingest(tmp_path: Path) -> None:
    image, _ = phantom()
    a_npy = write_npy(tmp_path / "a.npy", image)
    a_nii = write_nifti(tmp_path / "a.nii.gz", image)
    report = ingest(tmp_path / "s.zarr", [a_npy, a_nii, a_npy])
    assert [v.status for v in report.volumes] == [IngestStatus.added, IngestStatus.failed]
    assert "duplicate volume id 'a'" in report.volumes[1].reason


# --------------------------------------------------------------------------- bad inputs


def _truncated_nifti(d: Path) -> Path:
    path = write_nifti(d / "trunc.nii.gz", phantom((40, 40, 40))[0])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _garbage(d: Path) -> Path:
    path = d / "garbage.nii.gz"
    path.write_bytes(np.random.default_rng(0).bytes(2000))
    return path


def _bad_nrrd(d: Path) -> Path:
    path = d / "hdr.nrrd"
    path.write_bytes(
        b"NRRD0004\ntype: float\ndimension: 3\nsizes: 12 10\nencoding: raw\n\n" + bytes(3840)
    )
    return path


def _h5_no_image(d: Path) -> Path:
    path = d / "noimg.h5"
    with h5py.File(path, "w") as fh:
        fh["data"] = phantom()[0]
    return path


def _with(value: float, count: int, name: str) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        image = phantom()[0]
        image.flat[:count] = value
        return write_nifti(d / name, image)

    return make


def _h5_label(label: np.ndarray, name: str) -> Callable[[Path], Path]:
    return lambda d: write_h5(d / name, phantom()[0], label)


BAD_CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "truncated": (_truncated_nifti, r"cannot read nifti file, truncated or corrupt\? \(EOFError"),
    "garbage": (_garbage, r"cannot read nifti file, truncated or corrupt\?"),
    "nrrd_header": (_bad_nrrd, r"bad NRRD header or data \(.*sizes"),
    "h5_no_image": (_h5_no_image, r"h5 file has no 'image' dataset \(found: \['data'\]\)"),
    "nan": (_with(np.nan, 3, "nan.nii.gz"), r"image has 3 NaN voxels"),
    "inf": (_with(np.inf, 2, "inf.nii.gz"), r"image has 2 Inf voxels"),
    "constant": (
        lambda d: write_npy(d / "const.npy", np.full(SHAPE, 7, np.int16)),
        r"image is constant \(every voxel = 7\): nothing to segment",
    ),
    "2d": (lambda d: write_npy(d / "flat.npy", phantom()[0][:, :, 0]), r"image is 2D"),
    "4d": (
        lambda d: write_nifti(d / "two.nii.gz", np.stack([phantom()[0]] * 2, -1)),
        r"image is 4D with shape \(12, 10, 8, 2\); need one 3D volume",
    ),
    "zero_axis": (
        lambda d: write_npy(d / "empty.npy", np.zeros((4, 0, 3), np.float32)),
        r"image has a zero-length axis, shape \(4, 0, 3\)",
    ),
    "label_shape": (
        _h5_label(np.zeros((12, 10, 7), np.uint8), "lshape.h5"),
        r"label shape \(12, 10, 7\) differs from image shape \(12, 10, 8\)",
    ),
    "non_binary": (
        _h5_label(np.arange(960).reshape(SHAPE) % 3, "three.h5"),
        r"label has values \{0, 1, 2\}; a binary label \{0, 1\} is required",
    ),
    "complex": (
        lambda d: write_npy(d / "cplx.npy", phantom()[0].astype(np.complex64)),
        r"image has unsupported dtype complex64",
    ),
    "bool": (
        lambda d: write_npy(d / "mask.npy", phantom()[1].astype(bool)),
        r"image has unsupported dtype bool",
    ),
    "dotdot": (
        lambda d: write_npy(d / "a..b.npy", phantom()[0]),
        r"volume id 'a\.\.b' is not a safe path segment",
    ),
    "control": (
        lambda d: write_npy(d / "bad\x01id.npy", phantom()[0]),
        r"volume id 'bad\\x01id' is not a safe path segment",
    ),
    "suffix": (
        lambda d: (d / "scan.mha").write_bytes(b"x") and d / "scan.mha",
        r"unsupported file type",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_fails_alone(tmp_path: Path, case: str) -> None:
    make, problem = BAD_CASES[case]
    src = tmp_path / "src"
    src.mkdir()
    good_image, good_label = phantom(seed=3)
    good1 = write_h5(src / "good1.h5", good_image, good_label)
    bad = make(src)
    good2 = write_nifti(src / "good2.nii.gz", phantom(seed=4)[0])
    store = tmp_path / "s.zarr"
    report = ingest(store, [good1, bad, good2])  # explicit files: even unsupported ones are tried
    statuses = [v.status for v in report.volumes]
    assert statuses == [IngestStatus.added, IngestStatus.failed, IngestStatus.added]
    reason = report.volumes[1].reason
    assert reason.startswith(display_path(bad) + ": "), reason
    assert "\n" not in reason and "\x01" not in reason
    assert re.search(problem, reason), reason
    assert stored_ids(store) == {"good1", "good2"}


def test_bad_file_in_directory_does_not_stop_the_rest(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        write_nifti(src / f"v{i}.nii.gz", phantom(seed=i)[0])
    bad = _truncated_nifti(src)
    store = tmp_path / "s.zarr"
    report = ingest(store, [src])
    assert report.count(IngestStatus.added) == 3 and len(report.failed) == 1
    assert report.failed[0].volume_id == "trunc" and report.failed[0].source == str(bad)
    assert stored_ids(store) == {"v0", "v1", "v2"}
    root = open_store(store)
    assert "volumes/trunc" not in root or "meta" not in root["volumes/trunc"].attrs


def test_label_dir_shape_mismatch_names_the_label_file(tmp_path: Path) -> None:
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir(), labels.mkdir()
    write_nifti(images / "m.nii.gz", phantom()[0])
    lab = write_nifti(labels / "m.nii.gz", np.zeros((12, 10, 9), np.uint8))
    report = ingest(tmp_path / "s.zarr", [images], labels_dir=labels)
    assert report.failed[0].reason == (
        f"{lab}: label shape (12, 10, 9) differs from image shape (12, 10, 8)"
    )


def test_unexpected_error_is_one_failed_volume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the package re-exports the function `ingest`, which shadows the submodule's name
    ingest_module = importlib.import_module("semisam.pipeline.ingest.ingest")
    real_write = ingest_module.write_volume

    def flaky_write(root, meta, image, label):
        if meta.volume_id == "boom":
            raise ZeroDivisionError("disk\nfull")
        real_write(root, meta, image, label)

    monkeypatch.setattr(ingest_module, "write_volume", flaky_write)
    boom = write_npy(tmp_path / "boom.npy", phantom()[0])
    fine = write_npy(tmp_path / "fine.npy", phantom(seed=1)[0])
    store = tmp_path / "s.zarr"
    report = ingest(store, [boom, fine])
    assert report.volumes[0].reason == f"{boom}: unexpected ZeroDivisionError: disk full"
    assert report.volumes[1].status == IngestStatus.added
    assert stored_ids(store) == {"fine"}
