"""`semisam export --format ome-zarr`: NGFF 0.5 images, labels and confidence that
ome-zarr-models, ngff-zarr and ome-zarr-py read, equal to the store.

One store like the demo's (NIfTI phantoms, axis-aligned, 1 x 1 x 1.5 mm, shifted origin) plus
one oblique phantom (rotated, flipped, anisotropic), one round on a local Ray, exported.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import zarr

from semisam.pipeline.export.ngff import downsample, ngff_geometry, pyramid_factors
from semisam.pipeline.export.nifti import export_round
from semisam.pipeline.ingest import ingest
from semisam.pipeline.phantoms import make_phantom, write_phantom_set
from semisam.pipeline.rounds.driver import run_round
from semisam.schemas import InputError, RoundConfig
from semisam.store import open_store, read_output
from tests.pipeline.cli_invoke import invoke
from tests.pipeline.ome_readers import check_volume
from tests.pipeline.test_export import oblique_affine
from tests.pipeline.test_s3 import BUCKET, s3_endpoint  # noqa: F401  (the moto S3 fixture)

DEMO_IDS = ("phantom_000", "phantom_001", "phantom_002")


@pytest.fixture(scope="module")
def ome_round(local_ray, trained_student, tmp_path_factory):
    """The store (3 demo phantoms + 1 oblique one, all unlabeled), round 1, exported."""
    tmp = tmp_path_factory.mktemp("ome")
    images, labels = write_phantom_set(tmp / "phantoms", count=len(DEMO_IDS))
    image, label = make_phantom((48, 48, 32), seed=41)
    nib.save(nib.Nifti1Image(image, oblique_affine()), images / "oblique.nii.gz")
    nib.save(nib.Nifti1Image(label, oblique_affine()), labels / "oblique.nii.gz")
    store = tmp / "s.zarr"
    # paths recorded (ingest --record-paths): export --record-paths copies them
    assert ingest(store, [images], labels_dir=labels, labeled=set(), record_paths=True).ok
    summary = run_round(store, 1, trained_student, RoundConfig(masker={"kind": "random_walker"}),
                        show_progress=False)
    assert summary.done == len(DEMO_IDS) + 1
    out = tmp / "ome"
    result = invoke("export", str(store), "--round", "1", "--to", str(out), "--format",
                    "ome-zarr", "--json")
    return store, out, json.loads(result.stdout)


def test_every_demo_volume_reads_back_in_three_readers(ome_round):
    store, out, report = ome_round
    assert report["format"] == "ome-zarr" and len(report["volumes"]) == len(DEMO_IDS) + 1
    root = open_store(store, read_only=True)
    for vid in DEMO_IDS:
        attrs = check_volume(root, out, 1, vid, world=True)
        assert attrs["geometry"] == "world" and attrs["round"] == 1
        assert attrs["source_file"] == f"{vid}.nii.gz" and attrs["source_path"] is None
        assert attrs["labels"]["round1"] == {"0": "background", "1": "foreground"}
    saved = json.loads((out / "export.json").read_text())
    assert sorted(v["volume_id"] for v in saved["volumes"]) == ["oblique", *DEMO_IDS]


def test_oblique_volume_is_written_in_its_voxel_frame(ome_round):
    store, out, report = ome_round
    root = open_store(store, read_only=True)
    attrs = check_volume(root, out, 1, "oblique", world=False)
    assert attrs["geometry"] == "voxel-frame"
    np.testing.assert_allclose(attrs["affine"], oblique_affine(), atol=1e-5)
    np.testing.assert_allclose(attrs["spacing"], (0.8, 1.1, 2.5), atol=1e-5)
    item = next(v for v in report["volumes"] if v["volume_id"] == "oblique")
    assert item["geometry"] == "voxel-frame"


def test_oblique_refused_in_one_line_when_asked(ome_round, tmp_path):
    store, _, _ = ome_round
    result = invoke("export", str(store), "--round", "1", "--to", str(tmp_path / "x"),
                    "--format", "ome-zarr", "--oblique", "refuse", code=2)
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "volume 'oblique'" in lines[0] and "NGFF" in lines[0], lines
    assert "Traceback" not in result.output
    assert not (tmp_path / "x").exists()  # refused before anything was written
    # axis-aligned volumes pass under refuse
    root = open_store(store, read_only=True)
    report = export_round(root, 1, tmp_path / "y", fmt="ome-zarr", volumes=["phantom_000"],
                          options={"oblique": "refuse"})
    assert report.written == 1


def test_pyramid_levels_are_downsampled_copies(ome_round):
    store, out, _ = ome_round
    root = open_store(store, read_only=True)
    group = zarr.open_group(str(out / "phantom_001.ome.zarr"), mode="r")
    label = read_output(root, 1, "pseudo_label", "phantom_001").transpose(2, 1, 0)
    image = np.asarray(root["volumes/phantom_001/image"][...]).transpose(2, 1, 0)
    datasets = dict(group.attrs)["ome"]["multiscales"][0]["datasets"]
    assert [d["path"] for d in datasets] == ["0", "1"]
    # 64 x 64 x 40 at 1 x 1 x 1.5 mm (zyx: 40, 64, 64): 1.5 mm < twice 1 mm, all axes halve
    assert group["1"].shape == (20, 32, 32)
    blocks = image.reshape(20, 2, 32, 2, 32, 2).astype(np.float64).mean(axis=(1, 3, 5))
    np.testing.assert_allclose(group["1"][...], blocks, rtol=1e-5, atol=1e-6)
    lab = group["labels/round1"]
    np.testing.assert_array_equal(lab["1"][...], label[::2, ::2, ::2])
    t1 = datasets[1]["coordinateTransformations"]
    assert t1[0]["scale"] == [3.0, 2.0, 2.0]
    # the block mean's centre is half a source voxel in: origin (zyx 5, 20, -10) + (0.75, 0.5, 0.5)
    np.testing.assert_allclose(t1[1]["translation"], [5.75, 20.5, -9.5])


def test_record_paths_only_when_asked(ome_round, tmp_path):
    store, _, _ = ome_round
    invoke("export", str(store), "--round", "1", "--to", str(tmp_path), "--format", "ome-zarr",
           "--volume", "phantom_000", "--record-paths")
    attrs = dict(zarr.open_group(str(tmp_path / "phantom_000.ome.zarr"), mode="r").attrs)
    assert attrs["semisam"]["source_path"].endswith("/phantoms/images/phantom_000.nii.gz")
    assert attrs["semisam"]["source_path"].startswith("/")


def test_nifti_export_refuses_an_object_store_destination(ome_round):
    store, _, _ = ome_round
    root = open_store(store, read_only=True)
    with pytest.raises(InputError, match="NIfTI export writes local files"):
        export_round(root, 1, "s3://bucket/out", volumes=["phantom_000"])


def test_geometry_and_pyramid_rules():
    affine = np.diag([0.5, 0.6, 3.0, 1.0])
    affine[:3, 3] = [1.0, 2.0, 3.0]
    assert ngff_geometry(affine) == ([3.0, 0.6, 0.5], [3.0, 2.0, 1.0], "world")
    flipped = np.diag([-0.5, 0.6, 3.0, 1.0])
    assert ngff_geometry(flipped)[2] == "voxel-frame"
    with pytest.raises(InputError, match="flips an axis"):
        ngff_geometry(flipped, oblique="refuse", where="volume 'v'")
    # anisotropic: the fine axes halve until they reach the coarse one
    assert pyramid_factors((20, 256, 256), [3.0, 0.5, 0.5], None) == [
        (1, 1, 1), (1, 2, 2), (1, 4, 4), (2, 8, 8)]
    assert pyramid_factors((40, 64, 64), [1.0, 1.0, 1.0], 3) == [(1, 1, 1), (2, 2, 2), (4, 4, 4)]
    odd = np.arange(3 * 3 * 3, dtype=np.int16).reshape(3, 3, 3)
    assert downsample(odd, (2, 2, 2), average=True).shape == (2, 2, 2)
    assert downsample(odd, (2, 2, 2), average=False).tolist() == odd[::2, ::2, ::2].tolist()


def test_s3_store_to_s3_output(ome_round, s3_endpoint):  # noqa: F811
    """The round's store copied to S3 (moto), exported from ``s3://`` to ``s3://``, read back
    through fsspec: valid NGFF, the same arrays."""
    import fsspec
    from ome_zarr_models.v05.image import Image
    from ome_zarr_models.v05.image_label import ImageLabel

    from semisam.store import fsspec_options

    store, _, _ = ome_round
    url, out = f"s3://{BUCKET}/ome-src.zarr", f"s3://{BUCKET}/ome-out"
    fs, _ = fsspec.url_to_fs(url, **fsspec_options(url))
    fs.put(str(store), f"{BUCKET}/ome-src.zarr", recursive=True)
    invoke("export", url, "--round", "1", "--to", out, "--format", "ome-zarr", "--volume",
           "phantom_002")
    local = open_store(store, read_only=True)
    group = zarr.open_group(f"{out}/phantom_002.ome.zarr", mode="r",
                            storage_options=fsspec_options(out))
    Image.from_zarr(group)
    ImageLabel.from_zarr(group["labels/round1"])
    image = np.asarray(local["volumes/phantom_002/image"][...])
    np.testing.assert_array_equal(group["0"][...], image.transpose(2, 1, 0))
    np.testing.assert_array_equal(group["labels/round1/0"][...],
                                  read_output(local, 1, "pseudo_label", "phantom_002").T)
    conf = zarr.open_group(f"{out}/confidence/round1/phantom_002.ome.zarr", mode="r",
                           storage_options=fsspec_options(out))
    np.testing.assert_array_equal(conf["0"][...],
                                  read_output(local, 1, "confidence", "phantom_002").T)
    report = json.loads(fs.cat_file(f"{BUCKET}/ome-out/export.json"))
    assert [v["volume_id"] for v in report["volumes"] if v["written"]] == ["phantom_002"]


def test_napari_ome_zarr_opens_image_and_labels(ome_round):
    """napari's OME-Zarr reader (headless: layers, no window) where napari installs."""
    reader_mod = pytest.importorskip("napari_ome_zarr")
    layers_mod = pytest.importorskip("napari.layers")
    store, out, _ = ome_round
    root = open_store(store, read_only=True)
    path = str(out / "phantom_001.ome.zarr")
    layers = [layers_mod.Layer.create(*d) for d in reader_mod.napari_get_reader(path)(path)]
    kinds = {type(layer).__name__: layer for layer in layers}
    assert set(kinds) == {"Image", "Labels"}
    image, labels = kinds["Image"], kinds["Labels"]
    assert image.multiscale and len(image.data) == 2
    np.testing.assert_array_equal(np.asarray(image.data[0]),
                                  np.asarray(root["volumes/phantom_001/image"][...]).T)
    np.testing.assert_array_equal(np.asarray(labels.data[0]),
                                  read_output(root, 1, "pseudo_label", "phantom_001").T)
    np.testing.assert_allclose(image.scale, [1.5, 1.0, 1.0])
    np.testing.assert_allclose(labels.scale, [1.5, 1.0, 1.0])
    assert list(labels.properties["name"]) == ["background", "foreground"]
    # napari-ome-zarr 0.10 reads only the first (scale) transform of a dataset: the
    # translation is not applied, image and labels stay aligned with each other
    np.testing.assert_allclose(image.data_to_world([0, 0, 0]), labels.data_to_world([0, 0, 0]))


def test_image_label_metadata_of_several_classes():
    from ome_zarr_models.v05.image_label_types import Label

    from semisam.pipeline.export.ome import image_label_attrs

    attrs = image_label_attrs({0: "background", 1: "anterior", 2: "posterior"})
    label = Label.model_validate(attrs)
    assert [(p.label_value, p.name) for p in label.properties] == [
        (0, "background"), (1, "anterior"), (2, "posterior")]
    rgba = {c.label_value: c.rgba for c in label.colors}
    assert rgba[0][3] == 0 and rgba[1] != rgba[2] and rgba[1][3] == rgba[2][3] == 255


def test_second_round_adds_its_labels_beside_the_first(ome_round, trained_student, tmp_path):
    """Round 2 exported into the directory of round 1: the image is kept, labels/round1 and
    labels/round2 both there (each equal to its round), one confidence image per round."""
    import shutil

    from ome_zarr_models.v05.image import Image

    store = tmp_path / "s.zarr"
    shutil.copytree(ome_round[0], store)
    summary = run_round(store, 2, trained_student,
                        RoundConfig(masker={"kind": "random_walker"}, prompts={"box_margin": 9}),
                        show_progress=False)
    assert summary.done == len(DEMO_IDS) + 1
    out = tmp_path / "ome"
    root = open_store(store, read_only=True)
    export_round(root, 1, out, fmt="ome-zarr", volumes=["phantom_000"])
    image_array = zarr.open_array(str(out / "phantom_000.ome.zarr" / "0"), mode="r")
    first_chunk = (out / "phantom_000.ome.zarr" / "0" / "zarr.json").stat().st_mtime_ns
    export_round(root, 2, out, fmt="ome-zarr", volumes=["phantom_000"])
    group = zarr.open_group(str(out / "phantom_000.ome.zarr"), mode="r")
    assert (out / "phantom_000.ome.zarr" / "0" / "zarr.json").stat().st_mtime_ns == first_chunk
    assert image_array.shape == group["0"].shape
    model = Image.from_zarr(group)
    assert model.labels.attributes.ome.labels == ["round1", "round2"]
    for r in (1, 2):
        np.testing.assert_array_equal(group[f"labels/round{r}/0"][...],
                                      read_output(root, r, "pseudo_label", "phantom_000").T)
        conf = zarr.open_group(str(out / "confidence" / f"round{r}" / "phantom_000.ome.zarr"),
                               mode="r")
        np.testing.assert_array_equal(conf["0"][...],
                                      read_output(root, r, "confidence", "phantom_000").T)
    assert not np.array_equal(group["labels/round1/0"][...], group["labels/round2/0"][...])
    attrs = dict(group.attrs)["semisam"]
    assert attrs["round"] == 2 and set(attrs["labels"]) == {"round1", "round2"}
