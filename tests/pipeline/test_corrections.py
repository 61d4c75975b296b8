"""`semisam correct` and `semisam suggest` on a real round (local Ray, Zarr on disk).

Round trip: oblique NIfTI sources -> ingest (one labeled) -> round 1 -> `export` (NIfTI) ->
edit the pseudo-label with nibabel as a viewer would save it -> `correct`: the volume is labeled
with exactly the edited voxels, its provenance recorded, every other byte of the store the same;
a rerun writes nothing; the next training run counts it as labeled.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from semisam.pipeline.corrections import read_correction
from semisam.pipeline.ingest import ingest
from semisam.pipeline.phantoms import make_phantom
from semisam.pipeline.rounds.driver import run_round
from semisam.pipeline.suggest import rank_unlabeled
from semisam.schemas import CONFIDENCE_SCALE, RoundConfig
from semisam.store import open_store, read_label, read_meta, read_output, read_record
from semisam.training.dataset import open_training_data
from tests.conftest import supervised_config
from tests.pipeline.cli_invoke import invoke
from tests.pipeline.test_export import SHAPE, oblique_affine


@pytest.fixture(scope="module")
def round_template(local_ray, trained_student, tmp_path_factory) -> Path:
    """Oblique NIfTI phantoms v0 (labeled), v1..v3 (unlabeled, references kept), round 1."""
    tmp = tmp_path_factory.mktemp("corr")
    images, labels = tmp / "images", tmp / "labels"
    images.mkdir()
    labels.mkdir()
    for i in range(4):
        image, label = make_phantom(SHAPE, seed=60 + i)
        nib.save(nib.Nifti1Image(image, oblique_affine()), images / f"v{i}.nii.gz")
        nib.save(nib.Nifti1Image(label, oblique_affine()), labels / f"v{i}.nii.gz")
    store = tmp / "s.zarr"
    assert ingest(store, [images], labels_dir=labels, labeled={"v0"}).ok
    summary = run_round(store, 1, trained_student, RoundConfig(masker={"kind": "random_walker"}),
                        show_progress=False)
    assert summary.done == 3
    return store


@pytest.fixture
def exported(round_template, tmp_path) -> tuple[Path, Path]:
    """A fresh copy of the round's store and its NIfTI export."""
    store = tmp_path / "s.zarr"
    shutil.copytree(round_template, store)
    out = tmp_path / "export"
    invoke("export", str(store), "--round", "1", "--to", str(out))
    return store, out


def snapshot(store: Path) -> dict[str, bytes]:
    """Every file of the store: relative path -> bytes."""
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def edit(exported_file: Path, dst: Path, region: tuple[slice, ...], value: int = 1) -> np.ndarray:
    """Save ``exported_file`` with ``region`` set to ``value`` under ``dst`` (header kept, as
    ITK-SNAP/Slicer keep the geometry); the edited array."""
    img = nib.load(exported_file)
    data = np.asarray(img.dataobj).copy()
    data[region] = value
    dst.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, img.affine, img.header), dst)
    return data


def test_corrected_label_round_trip_exact_and_nothing_else_changes(exported, tmp_path):
    store, out = exported
    edited = edit(out / "pseudo_label" / "v1.nii.gz", tmp_path / "corrected" / "v1.nii.gz",
                  (slice(10, 20), slice(12, 30), slice(4, 9)))
    before = snapshot(store)
    pseudo = read_output(open_store(store, read_only=True), 1, "pseudo_label", "v1")
    result = invoke("correct", str(store), str(tmp_path / "corrected"))
    assert "v1: added (v1.nii.gz from round 1" in result.stdout

    root = open_store(store, read_only=True)
    np.testing.assert_array_equal(read_label(root, "v1"), edited)
    meta = read_meta(root, "v1")
    sha = hashlib.sha256((tmp_path / "corrected" / "v1.nii.gz").read_bytes()).hexdigest()
    assert meta.labeled and meta.label_sha256 == sha
    corr = read_correction(root, "v1")
    assert corr.round == 1 and corr.sha256 == sha and corr.source_name == "v1.nii.gz"
    assert corr.changed_voxels == int(np.count_nonzero(edited != pseudo)) > 0
    assert corr.pseudo_label_sha256 == read_record(root, 1, "v1").checksums["pseudo_label"]

    after = snapshot(store)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed and all(k.startswith("volumes/v1/label/") or k == "volumes/v1/zarr.json"
                           for k in changed), changed

    rerun = invoke("correct", str(store), str(tmp_path / "corrected"))
    assert "v1: unchanged" in rerun.stdout
    assert snapshot(store) == after

    data = open_training_data(open_store(store, read_only=True), supervised_config(2), None)
    assert sorted(s.meta.volume_id for s in data.labeled) == ["v0", "v1"]
    assert "v1" not in [s.meta.volume_id for s in data.unlabeled]


def test_export_folder_accepted_and_replacement_recorded(exported, tmp_path):
    """The export folder itself (its pseudo_label/) comes back unedited: labeled with the
    pseudo-labels, 0 voxels changed; a later edit of one file replaces that label."""
    store, out = exported
    invoke("correct", str(store), str(out), "--round", "1")
    root = open_store(store, read_only=True)
    for vid in ("v1", "v2", "v3"):
        np.testing.assert_array_equal(read_label(root, vid), read_output(root, 1, "pseudo_label", vid))
        assert read_correction(root, vid).changed_voxels == 0
    edited = edit(out / "pseudo_label" / "v2.nii.gz", tmp_path / "fix" / "v2.nii.gz",
                  (slice(0, 5), slice(0, 5), slice(0, 5)))
    result = invoke("correct", str(store), str(tmp_path / "fix" / "v2.nii.gz"), "--json")
    assert json.loads(result.stdout)[0]["status"] == "replaced"
    np.testing.assert_array_equal(read_label(open_store(store, read_only=True), "v2"), edited)


def test_reversed_axis_file_is_reoriented(exported, tmp_path):
    """A viewer that saves the same grid with the first axis reversed (and its affine
    mirrored to match) lands voxel for voxel on the stored image."""
    store, out = exported
    img = nib.load(out / "pseudo_label" / "v3.nii.gz")
    data = np.asarray(img.dataobj).copy()
    data[20:25, 20:25, 10:12] = 1
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1, SHAPE[0] - 1
    dst = tmp_path / "c" / "v3.nii.gz"
    dst.parent.mkdir()
    nib.save(nib.Nifti1Image(data[::-1].copy(), img.affine @ flip), dst)
    invoke("correct", str(store), str(dst))
    np.testing.assert_array_equal(read_label(open_store(store, read_only=True), "v3"), data)


@pytest.mark.parametrize("case", ["shifted", "shape", "class", "unknown", "ingest-labeled", "round"])
def test_bad_corrections_refused_in_one_line_store_untouched(exported, tmp_path, case):
    store, out = exported
    src = out / "pseudo_label" / "v1.nii.gz"
    img = nib.load(src)
    data = np.asarray(img.dataobj).copy()
    name, affine, args = "v1.nii.gz", img.affine, []
    if case == "shifted":
        affine = img.affine.copy()
        affine[:3, 3] += 3.0
    elif case == "shape":
        data = data[:-2]
    elif case == "class":
        data[0, 0, 0] = 3
    elif case == "unknown":
        name = "nosuch.nii.gz"
    elif case == "ingest-labeled":
        name = "v0.nii.gz"
    elif case == "round":
        args = ["--round", "4"]
    dst = tmp_path / "bad" / name
    dst.parent.mkdir()
    nib.save(nib.Nifti1Image(data, affine), dst)
    good = tmp_path / "bad" / "v2.nii.gz"  # a valid file beside it is not written either
    shutil.copy(out / "pseudo_label" / "v2.nii.gz", good)
    before = snapshot(store)
    result = invoke("correct", str(store), str(tmp_path / "bad"), *args, code=2)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    expected = {"shifted": "not on its image's world grid", "shape": "shape",
                "class": "not classes of the store", "unknown": "no volume 'nosuch'",
                "ingest-labeled": "labeled at ingest", "round": "round 4 has no finished"}[case]
    assert expected in lines[0]
    assert snapshot(store) == before


def test_suggest_ranks_by_documented_formula(exported):
    store, _ = exported
    root = open_store(store, read_only=True)
    r, ranked = rank_unlabeled(root)
    assert r == 1 and [s.rank for s in ranked] == [1, 2, 3]
    expected = {}
    for vid in ("v1", "v2", "v3"):
        stats = read_record(root, 1, vid).stats
        pl = read_output(root, 1, "pseudo_label", vid)
        conf = read_output(root, 1, "confidence", vid).astype(float) / CONFIDENCE_SCALE
        u = 1.0 - conf[pl > 0].mean() if (pl > 0).any() else 1.0
        d = 1.0 if stats.student_masker_dice is None else 1.0 - stats.student_masker_dice
        expected[vid] = d + u + float(stats.masker_rejected)
    for s in ranked:
        assert s.score == pytest.approx(expected[s.volume_id], abs=1e-5)
    assert [s.volume_id for s in ranked] == sorted(expected, key=lambda v: (-expected[v], v))
    top = invoke("suggest", str(store), "--round", "1", "-k", "1").stdout
    assert ranked[0].volume_id in top and ranked[1].volume_id not in top.split("\n", 2)[2]
    js = json.loads(invoke("suggest", str(store), "-k", "0", "--json").stdout)
    assert [s["volume_id"] for s in js["suggestions"]] == [s.volume_id for s in ranked]

    invoke("correct", str(store), str(Path(_) / "pseudo_label" / f"{ranked[0].volume_id}.nii.gz"))
    _, after = rank_unlabeled(open_store(store, read_only=True), 1)
    assert ranked[0].volume_id not in [s.volume_id for s in after]  # labeled now


def test_suggest_without_round_is_one_line(phantom_store):
    result = invoke("suggest", str(phantom_store), code=2)
    assert result.output.strip() == "error: store has no round yet: run `semisam run-round` first"
